package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/sim"
)

// TestSimulateCmd: the flags reach the simulation, --json is the result,
// the table has its three parts, and bad values are refused with what is
// wrong.
func TestSimulateCmd(t *testing.T) {
	args := []string{"simulate", "--distributors", "4", "--tms", "16", "--flows", "2000", "--sample", "0", "--ring-size", "251", "--replicas", "1", "--ecmp", "resilient", "--mirror-n", "2,8"}
	out, err := runCmd(append(args, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var r sim.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if r.Params.Distributors != 4 || r.Params.TMs != 16 || r.Params.ECMP != sim.ECMPResilient || len(r.Events) != 7 || r.Events[0].Changed.Of != 2000 {
		t.Errorf("result %+v", r)
	}
	// N = 2, 8 and the simulated 4, four schemes each.
	if len(r.Mirroring) != 12 {
		t.Errorf("%d mirroring rows, want 12", len(r.Mirroring))
	}
	out, err = runCmd(args...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FLOW TABLE PER DISTRIBUTOR", "TM added, then distributor lost", "N=8 full mesh, divergent only"} {
		if !strings.Contains(out, want) {
			t.Errorf("table without %q:\n%s", want, out)
		}
	}
	for _, bad := range [][]string{{"--ring-size", "250"}, {"--ecmp", "random"}, {"--distributors", "1"}} {
		if _, err := runCmd(append([]string{"simulate"}, bad...)...); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(bad[0], "--")[:4]) {
			t.Errorf("simulate %v: %v", bad, err)
		}
	}
}
