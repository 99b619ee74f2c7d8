package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestLeavesCoverSchema checks that leaves (what each field expects) and the
// Config structs name the same fields, so that a new field cannot be added
// without saying what it expects.
func TestLeavesCoverSchema(t *testing.T) {
	fields := map[string]bool{}
	var walk func(tp reflect.Type, path string)
	walk = func(tp reflect.Type, path string) {
		switch {
		case tp == addrType || tp == macType || tp == bytesType:
			fields[path] = true
		case tp.Kind() == reflect.Pointer:
			walk(tp.Elem(), path)
		case tp.Kind() == reflect.Struct:
			for i := 0; i < tp.NumField(); i++ {
				k := yamlKey(tp.Field(i))
				if k == "" {
					t.Errorf("%s.%s has no yaml key", tp, tp.Field(i).Name)
					continue
				}
				walk(tp.Field(i).Type, join(path, k))
			}
		case tp.Kind() == reflect.Slice:
			fields[path] = true
			walk(tp.Elem(), path+"[]")
		default:
			fields[path] = true
		}
	}
	walk(configType, "")
	for f := range fields {
		if _, ok := leaves[f]; !ok {
			t.Errorf("leaves has no entry for %s", f)
		}
	}
	for l := range leaves {
		if !fields[l] {
			t.Errorf("leaves has %s, which is no field of Config", l)
		}
	}
}

// TestAPITokenFile checks distributor.api_token_file: required with a TCP
// API, and the file checks of Load.
func TestAPITokenFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("s3cr3t-t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	load := func(api, tokenFile string) error {
		src := "  id: d1\n  api: " + api + "\n"
		if tokenFile != "" {
			src += "  api_token_file: " + tokenFile + "\n"
		}
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, []byte(edit(t, "  id: d1\n", src)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		return err
	}
	if err := load("127.0.0.1:9100", good); err != nil {
		t.Errorf("TCP API with a good token file: %v", err)
	}
	if err := load("unix:/run/sy.sock", ""); err != nil {
		t.Errorf("unix API without a token file: %v", err)
	}
	if err := load("unix:/run/sy.sock", good); err != nil {
		t.Errorf("unix API with a token file: %v", err)
	}
	for _, tc := range []struct {
		name, api, file, want string
		line                  int
	}{
		{"missing with TCP", "127.0.0.1:9100", "", `config.yaml:3: distributor.api_token_file: missing: the admin API listens on TCP 127.0.0.1:9100`, 3},
		{"missing with TCP v6", "\"[::1]:9100\"", "", `distributor.api_token_file: missing: the admin API listens on TCP [::1]:9100`, 3},
		{"relative", "127.0.0.1:9100", "token", `config.yaml:4: distributor.api_token_file: "token" is not an absolute path (expected an absolute path`, 4},
		{"absent", "127.0.0.1:9100", filepath.Join(dir, "nope"), `no such file or directory (expected an absolute path`, 4},
		{"group readable", "127.0.0.1:9100", write("g", "tok", 0o640), `mode 0640 gives its group or others access; chmod 600 it`, 4},
		{"other writable", "unix:/run/sy.sock", write("o", "tok", 0o602), `mode 0602 gives its group or others access`, 4},
		{"empty", "127.0.0.1:9100", write("e", " \n", 0o600), `: empty (expected`, 4},
		{"too big", "127.0.0.1:9100", write("b", strings.Repeat("x", 4097), 0o400), `longer than 4096 bytes`, 4},
		{"directory", "127.0.0.1:9100", dir, `: not a regular file`, 4},
		{"device", "127.0.0.1:9100", "/dev/zero", `/dev/zero: not a regular file`, 4},
	} {
		err := load(tc.api, tc.file)
		es := Errors(err)
		if len(es) != 1 || !strings.Contains(es[0].Error(), tc.want) || es[0].Line != tc.line {
			t.Errorf("%s: err = %v, want one error at line %d containing %q", tc.name, err, tc.line, tc.want)
		}
		if strings.Contains(err.Error(), "tok\n") || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error quotes the token: %v", tc.name, err)
		}
	}
	// Parse reads no files: the docs' examples name files of other machines.
	if _, err := Parse([]byte(edit(t, "  id: d1\n", "  id: d1\n  api: 127.0.0.1:1\n  api_token_file: /nonexistent/token\n")), "c.yaml"); err != nil {
		t.Errorf("Parse with an absent token file: %v", err)
	}
}

// TestMarshalRoundTrip checks that Marshal then Parse gives the same Config,
// for full.yaml, minimal.yaml and a config built in Go.
func TestMarshalRoundTrip(t *testing.T) {
	built := &Config{
		Distributor:     Distributor{ID: "1", Interfaces: []Interface{{Name: "eth0", Role: RoleExternal}}},
		TrafficManagers: []TrafficManager{{ID: "tm1", Address: netip.MustParseAddr("10.1.0.1"), SignalKey: []byte("0123456789abcdef")}},
		Services: []Service{{Name: "true", VIP: netip.MustParseAddr("2001:db8::1"), Protocol: ProtocolUDP,
			TrafficManagers: []string{"tm1"}, Persistence: &Persistence{Timeout: 5, Mask: []string{FieldSrc}}}},
		SecondKeys: SecondKeys{Masks: [][]string{{FieldSrc}, {FieldProto, FieldDst}}},
	}
	built.ApplyDefaults()
	for _, tc := range []struct {
		name string
		c    func(t *testing.T) *Config
	}{
		{"full.yaml", func(t *testing.T) *Config {
			c, err := Parse([]byte(readFile(t, "testdata/full.yaml")), "full.yaml")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"minimal.yaml", func(t *testing.T) *Config {
			c, err := Load("testdata/minimal.yaml")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"built in Go", func(t *testing.T) *Config { return built }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c(t)
			data, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(data, "marshalled.yaml")
			if err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			if !reflect.DeepEqual(back, c) {
				t.Errorf("round trip differs:\n got %+v\nwant %+v\n%s", back, c, data)
			}
		})
	}
	// WriteFile writes what Load reads, mode 0600.
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := built.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("WriteFile mode: %v %v", fi.Mode(), err)
	}
	if back, err := Load(p); err != nil || !reflect.DeepEqual(back, built) {
		t.Errorf("Load after WriteFile = %+v, %v", back, err)
	}
}

// TestRestartNeeded checks which changes a reload may make.
func TestRestartNeeded(t *testing.T) {
	base := func() *Config {
		c, err := Parse([]byte(readFile(t, "testdata/full.yaml")), "full.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := RestartNeeded(base(), base()); err != nil {
		t.Errorf("same config: %v", err)
	}
	for _, tc := range []struct {
		change func(c *Config)
		want   string // "" = reloadable
	}{
		{func(c *Config) { c.Distributor.ID = "x" }, "distributor.id changed"},
		{func(c *Config) { c.Distributor.Interfaces[1].Role = RoleExternal }, "distributor.interfaces changed"},
		{func(c *Config) { c.Distributor.API = "unix:/x" }, "distributor.api changed"},
		{func(c *Config) { c.Distributor.APITokenFile = "/x" }, "distributor.api_token_file changed"},
		{func(c *Config) { c.Distributor.XDPMode = XDPModeGeneric }, "distributor.xdp_mode changed"},
		{func(c *Config) { c.Distributor.StateDir = "/tmp/x" }, "distributor.state_dir changed"},
		{func(c *Config) { c.FlowTable.MaxFlows++ }, "flow_table changed"},
		{func(c *Config) { c.Selection.RingSize = 65537 }, "selection changed"},
		{func(c *Config) { c.Selection.MaxServices++ }, "selection changed"},
		{func(c *Config) { c.SecondKeys.MaxEntries++ }, "second_keys.max_entries changed"},
		{func(c *Config) { c.Signals.UDPListen = "" }, "signals.udp_listen changed"},
		{func(c *Config) { c.TrafficManagers[0].Weight = 9; c.TrafficManagers = c.TrafficManagers[1:] }, ""},
		{func(c *Config) { c.Services = c.Services[:1]; c.Services[0].Port = 8080 }, ""},
		{func(c *Config) { c.Timeouts.TCP = 5 }, ""},
		{func(c *Config) { c.SecondKeys.Masks = c.SecondKeys.Masks[:1] }, ""},
		{func(c *Config) { c.Learning.SNATAddresses = nil }, ""},
		{func(c *Config) { c.Signals.MulticastMAC = DefaultMulticastMAC(); c.Signals.MulticastMAC[5] = 7 }, ""},
	} {
		next := base()
		tc.change(next)
		err := RestartNeeded(base(), next)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("reloadable change refused: %v", err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n")):
			t.Errorf("err = %v, want one error %q", err, tc.want)
		}
	}
	next := base()
	next.Distributor.ID, next.FlowTable.MaxFlows = "x", 5000
	if err := RestartNeeded(base(), next); err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("two changes: err = %v, want two lines", err)
	}
}
