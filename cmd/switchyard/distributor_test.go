package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckInterfaces runs `distributor --check`: a config whose interfaces
// exist (lo exists in every network namespace) passes; one naming absent
// interfaces fails with one error per interface, each with file, line and key.
func TestCheckInterfaces(t *testing.T) {
	dir := t.TempDir()
	run := func(ifaces string) (string, error) {
		src := "distributor:\n  id: d1\n  api: unix:" + dir + "/d1.sock\n  interfaces:\n" + ifaces +
			"traffic_managers: [{id: tm1, address: 10.1.0.11}]\n" +
			"services: [{name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1]}]\n"
		path := filepath.Join(dir, "d1.yaml")
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := newDistributorCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"--config", path, "--check"})
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run("    - {name: lo, role: external}\n")
	if err != nil || !strings.Contains(out, "OK (1 services, 1 traffic managers, 1 interfaces present)") {
		t.Errorf("--check with lo: %v\n%s", err, out)
	}
	_, err = run("    - {name: lo, role: external}\n    - {name: sy-absent0, role: internal}\n    - {name: sy-absent1, role: external}\n")
	if err == nil {
		t.Fatal("--check accepted absent interfaces")
	}
	for _, want := range []string{
		`d1.yaml:6: distributor.interfaces[1].name: no interface "sy-absent0" on this host: Link not found (expected an existing network interface`,
		`d1.yaml:7: distributor.interfaces[2].name: no interface "sy-absent1" on this host`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\ndoes not contain\n%s", err, want)
		}
	}
	if n := strings.Count(err.Error(), "no interface"); n != 2 {
		t.Errorf("%d interface errors, want 2:\n%v", n, err)
	}
}
