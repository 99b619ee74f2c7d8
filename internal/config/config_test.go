package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
)

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMinimal(t *testing.T) {
	c, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := c.Distributor
	if d.ID != "d1" || d.API != "unix:/run/switchyard/d1.sock" || d.XDPMode != "auto" {
		t.Errorf("distributor = %+v", d)
	}
	if len(d.Interfaces) != 2 || d.Interfaces[0] != (Interface{"ext0", "external"}) || d.Interfaces[1] != (Interface{"int0", "internal"}) {
		t.Errorf("interfaces = %+v", d.Interfaces)
	}
	if c.FlowTable.MaxFlows != 1000000 {
		t.Errorf("max_flows = %d", c.FlowTable.MaxFlows)
	}
	if c.Selection != (Selection{RingSize: 65537, MaxServices: 64}) {
		t.Errorf("selection = %+v", c.Selection)
	}
	if len(c.TrafficManagers) != 2 {
		t.Fatalf("traffic managers = %+v", c.TrafficManagers)
	}
	tm1, tm2 := c.TrafficManagers[0], c.TrafficManagers[1]
	if tm1.ID != "tm1" || tm1.Address != netip.MustParseAddr("10.1.0.11") || tm1.Weight != 1 || tm1.State != "active" || tm1.MAC != nil {
		t.Errorf("tm1 = %+v", tm1)
	}
	if tm2.ID != "tm2" || tm2.Address != netip.MustParseAddr("10.1.0.12") || tm2.Weight != 2 || tm2.State != "active" {
		t.Errorf("tm2 = %+v", tm2)
	}
	if len(c.Services) != 1 {
		t.Fatalf("services = %+v", c.Services)
	}
	s := c.Services[0]
	if s.Name != "web" || s.VIP != netip.MustParseAddr("10.0.0.100") || s.Port != 80 || s.Protocol != "tcp" ||
		strings.Join(s.TrafficManagers, ",") != "tm1,tm2" {
		t.Errorf("service = %+v", s)
	}
	if tm, ok := c.TM("tm2"); !ok || tm.Weight != 2 {
		t.Errorf("TM(tm2) = %+v, %v", tm, ok)
	}
	if _, ok := c.TM("tm9"); ok {
		t.Error("TM(tm9) found")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate of a parsed config: %v", err)
	}
}

func TestIPv6(t *testing.T) {
	src := `distributor:
  id: d6
  interfaces: [{name: ext0, role: external}, {name: int0, role: internal}]
  api: "[::1]:9100"
  api_token_file: /etc/switchyard/d6.token
traffic_managers:
  - {id: tm1, address: 2001:db8:1::11}
  - {id: tm2, address: "2001:db8:1::12", mac: "02:00:00:00:00:12"}
services:
  - {name: web6, vip: "2001:db8::100", port: 443, protocol: tcp, traffic_managers: [tm1, tm2]}
  - {name: all6, vip: 2001:db8::101, protocol: udp, traffic_managers: [tm2]}
`
	c, err := Parse([]byte(src), "v6.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Distributor.API != "[::1]:9100" {
		t.Errorf("api = %q", c.Distributor.API)
	}
	if a := c.TrafficManagers[0].Address; a != netip.MustParseAddr("2001:db8:1::11") || !a.Is6() {
		t.Errorf("tm1 address = %v", a)
	}
	if m := c.TrafficManagers[1].MAC; m.String() != "02:00:00:00:00:12" {
		t.Errorf("tm2 mac = %v", m)
	}
	if s := c.Services[0]; s.VIP != netip.MustParseAddr("2001:db8::100") || s.Port != 443 {
		t.Errorf("web6 = %+v", s)
	}
	if s := c.Services[1]; s.Port != 0 || s.Protocol != "udp" {
		t.Errorf("all6 = %+v", s)
	}
	if c.FlowTable.MaxFlows != DefaultMaxFlows {
		t.Errorf("max_flows default = %d", c.FlowTable.MaxFlows)
	}
}

func TestFull(t *testing.T) {
	// Parse, not Load: the token file full.yaml names is not on this machine
	// (TestAPITokenFile tests Load's file checks).
	c, err := Parse([]byte(readFile(t, "testdata/full.yaml")), "testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Distributor.API != "127.0.0.1:9100" || c.Distributor.APITokenFile != "/etc/switchyard/edge-d1.token" || c.Distributor.XDPMode != "native" {
		t.Errorf("distributor = %+v", c.Distributor)
	}
	if c.FlowTable.MaxFlows != 4000000 || c.Selection.RingSize != 131071 || c.Selection.MaxServices != 16 {
		t.Errorf("sizes = %+v %+v", c.FlowTable, c.Selection)
	}
	tm1, _ := c.TM("tm1")
	if want, _ := net.ParseMAC("02:00:0a:01:00:0b"); tm1.MAC.String() != want.String() {
		t.Errorf("tm1 mac = %v", tm1.MAC)
	}
	if tm3, _ := c.TM("tm3"); tm3.State != StateDraining || tm3.Weight != 1 {
		t.Errorf("tm3 = %+v", tm3)
	}
	if tm7, _ := c.TM("tm7"); fmt.Sprint(tm7.AllAddresses()) != "[10.1.0.17 2001:db8:1::17]" || tm7.Address.IsValid() {
		t.Errorf("tm7 = %+v", tm7)
	}
	if tm1.AllAddresses()[0] != netip.MustParseAddr("10.1.0.11") || len(tm1.AllAddresses()) != 1 {
		t.Errorf("tm1 addresses = %v", tm1.AllAddresses())
	}
	var all, web bool
	for _, s := range c.Services {
		all = all || s.Name == "catch-all" && s.Port == 0
		web = web || s.Name == "web" && s.Port == 80
	}
	if !all || !web {
		t.Errorf("an all-ports and a port-80 service on one VIP should coexist: %+v", c.Services)
	}
	if want := (Timeouts{TCP: 3600, TCPSyn: 20, TCPFin: 60, TCPClose: 5, UDP: 120, Other: 60, SecondKey: 600}); c.Timeouts != want {
		t.Errorf("timeouts = %+v, want %+v", c.Timeouts, want)
	}
	if got := fmt.Sprint(c.SecondKeys.Masks); got != "[[proto src dst dport] [proto dst dport] [proto src dst] [src]]" || c.SecondKeys.MaxEntries != 262144 {
		t.Errorf("second_keys = %+v", c.SecondKeys)
	}
	if got := fmt.Sprint(c.Learning.SNATAddresses); got != "[10.1.0.200 2001:db8:1::200]" {
		t.Errorf("snat_addresses = %s", got)
	}
	if c.Signals.MulticastMAC.String() != "03:53:59:47:00:01" || c.Signals.UDPListen != "10.1.0.2:7946" {
		t.Errorf("signals = %+v", c.Signals)
	}
	if tm2, _ := c.TM("tm2"); fmt.Sprintf("%x", tm2.SignalKey) != "000102030405060708090a0b0c0d0e0f" {
		t.Errorf("tm2 signal_key = %x", tm2.SignalKey)
	}
	for _, s := range c.Services {
		switch {
		case s.Name == "web-tls":
			if p := s.Persistence; p == nil || p.Timeout != 1800 || strings.Join(p.Mask, ",") != "proto,src,dst" {
				t.Errorf("web-tls persistence = %+v", p)
			}
		case s.Persistence != nil:
			t.Errorf("%s persistence = %+v, want none", s.Name, s.Persistence)
		}
	}
}

// TestNewKeyDefaults checks the defaults of timeouts, second_keys, learning,
// signals, signal_key and persistence, from Parse and from ApplyDefaults.
func TestNewKeyDefaults(t *testing.T) {
	check := func(t *testing.T, c *Config) {
		t.Helper()
		if want := (Timeouts{TCP: 900, TCPSyn: 30, TCPFin: 120, TCPClose: 10, UDP: 300, Other: 60, SecondKey: 300}); c.Timeouts != want {
			t.Errorf("timeouts = %+v, want %+v", c.Timeouts, want)
		}
		if got := fmt.Sprint(c.SecondKeys.Masks); got != "[[proto src dst dport] [proto dst dport] [proto src dst] [src]]" {
			t.Errorf("masks = %s", got)
		}
		if c.SecondKeys.MaxEntries != 65536 {
			t.Errorf("max_entries = %d", c.SecondKeys.MaxEntries)
		}
		if c.Learning.SNATAddresses != nil {
			t.Errorf("snat_addresses = %v", c.Learning.SNATAddresses)
		}
		if c.Signals.MulticastMAC.String() != "03:53:59:47:00:01" || c.Signals.UDPListen != "" {
			t.Errorf("signals = %+v", c.Signals)
		}
		for _, tm := range c.TrafficManagers {
			if tm.SignalKey != nil {
				t.Errorf("%s signal_key = %x", tm.ID, tm.SignalKey)
			}
		}
	}
	c, err := Parse([]byte(minimal), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check(t, c)
	if c.Services[0].Persistence != nil {
		t.Errorf("persistence = %+v, want nil", c.Services[0].Persistence)
	}
	// Defaults are fresh copies: changing one config does not change another.
	c.SecondKeys.Masks[0][0] = "vlan"
	c.Signals.MulticastMAC[5] = 9
	c, err = Parse([]byte(minimal), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check(t, c)

	// Empty values count as omitted.
	c, err = Parse([]byte(minimal+"timeouts:\nsecond_keys:\nlearning:\nsignals:\n"), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check(t, c)

	// Keys set next to omitted ones; persistence mask default; a mask's
	// field order does not matter for persistence.
	src := edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 60}\n") + `  - name: dns
    vip: 10.0.0.53
    protocol: udp
    traffic_managers: [tm1]
    persistence: {timeout: 300, mask: [dst, src, proto]}
timeouts: {tcp: 100}
second_keys: {max_entries: 1024}
signals: {udp_listen: "[2001:db8::2]:7946"}
`
	c, err = Parse([]byte(src), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Timeouts{TCP: 100, TCPSyn: 30, TCPFin: 120, TCPClose: 10, UDP: 300, Other: 60, SecondKey: 300}); c.Timeouts != want {
		t.Errorf("timeouts = %+v, want %+v", c.Timeouts, want)
	}
	if len(c.SecondKeys.Masks) != 4 || c.SecondKeys.MaxEntries != 1024 {
		t.Errorf("second_keys = %+v", c.SecondKeys)
	}
	if c.Signals.MulticastMAC.String() != "03:53:59:47:00:01" || c.Signals.UDPListen != "[2001:db8::2]:7946" {
		t.Errorf("signals = %+v", c.Signals)
	}
	if p := c.Services[0].Persistence; p == nil || p.Timeout != 60 || strings.Join(p.Mask, ",") != "proto,src,dst,dport" {
		t.Errorf("web persistence = %+v", p)
	}
	if p := c.Services[1].Persistence; p == nil || p.Timeout != 300 || MaskBits(p.Mask) != MaskBits([]string{"proto", "src", "dst"}) {
		t.Errorf("dns persistence = %+v", p)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// ApplyDefaults fills the same defaults in a config built in Go.
	c = &Config{
		Distributor:     Distributor{ID: "d1", Interfaces: []Interface{{Name: "eth0", Role: RoleExternal}}},
		TrafficManagers: []TrafficManager{{ID: "tm1", Address: netip.MustParseAddr("10.1.0.1")}},
		Services: []Service{{Name: "web", VIP: netip.MustParseAddr("10.0.0.1"), Protocol: ProtocolTCP,
			TrafficManagers: []string{"tm1"}, Persistence: &Persistence{Timeout: 60}}},
	}
	c.ApplyDefaults()
	check(t, c)
	if p := c.Services[0].Persistence; strings.Join(p.Mask, ",") != "proto,src,dst,dport" {
		t.Errorf("persistence mask = %v", p.Mask)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after ApplyDefaults: %v", err)
	}
}

func TestMaskBits(t *testing.T) {
	for _, tc := range []struct {
		fields []string
		want   uint32
	}{
		{nil, 0},
		{[]string{"vlan"}, 0x1},
		{[]string{"proto"}, 0x2},
		{[]string{"src"}, 0x4},
		{[]string{"dst"}, 0x8},
		{[]string{"sport"}, 0x10},
		{[]string{"dport"}, 0x20},
		{[]string{"proto", "src", "dst", "dport"}, 0x2e},
		{[]string{"dport", "dst", "src", "proto"}, 0x2e},
		{[]string{"vlan", "proto", "src", "dst", "sport", "dport"}, 0x3f},
		{[]string{"src", "nonsense"}, 0x4},
	} {
		if got := MaskBits(tc.fields); got != tc.want {
			t.Errorf("MaskBits(%v) = %#x, want %#x", tc.fields, got, tc.want)
		}
	}
}

// TestMaskBitsMatchHeader checks the field bits and the mask limit against
// enum sy_field and SY_MAX_MASKS in bpf/switchyard.h.
func TestMaskBitsMatchHeader(t *testing.T) {
	h, err := os.ReadFile("../../bpf/switchyard.h")
	if err != nil {
		t.Skip(err)
	}
	for name, bit := range fieldBits {
		re := regexp.MustCompile(`\bSY_FIELD_` + strings.ToUpper(name) + `\s*=\s*(0x[0-9a-fA-F]+|\d+)`)
		m := re.FindSubmatch(h)
		if m == nil {
			t.Errorf("SY_FIELD_%s not found in bpf/switchyard.h", strings.ToUpper(name))
			continue
		}
		var v uint32
		if _, err := fmt.Sscan(string(m[1]), &v); err != nil || v != bit {
			t.Errorf("SY_FIELD_%s = %s, config has %#x", strings.ToUpper(name), m[1], bit)
		}
	}
	if m := regexp.MustCompile(`\bSY_MAX_MASKS\s*=\s*(\d+)`).FindSubmatch(h); m == nil {
		t.Error("SY_MAX_MASKS not found in bpf/switchyard.h")
	} else if string(m[1]) != fmt.Sprint(MaxSecondKeyMasks) {
		t.Errorf("SY_MAX_MASKS = %s, config has %d", m[1], MaxSecondKeyMasks)
	}
	if len(fieldNames) != len(fieldBits) {
		t.Errorf("fieldNames %v and fieldBits %v differ", fieldNames, fieldBits)
	}
}

// TestNoCascade checks that a bad mask or a bad key reports one error, not
// errors in what depends on it.
func TestNoCascade(t *testing.T) {
	for name, src := range map[string]string{
		"bad masks entry": edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 60, mask: [src, dst]}\n") +
			"second_keys:\n  masks: [[src, dst], [src, bogus]]\n",
		"masks not a list": edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 60, mask: [src, dst]}\n") +
			"second_keys:\n  masks: 5\n",
		"persistence mask not a list": edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 60, mask: src}\n"),
		"bad mac":                     minimal + "signals: {multicast_mac: nope}\n",
		"bad snat":                    minimal + "learning: {snat_addresses: [nope]}\n",
		"bad vip":                     edit(t, "vip: 10.0.0.100", "vip: nope") + "learning: {snat_addresses: [10.0.0.100]}\n",
	} {
		_, err := Parse([]byte(src), "config.yaml")
		if n := len(Errors(err)); n != 1 {
			t.Errorf("%s: %d errors, want 1:\n%v", name, n, err)
		}
	}
}

// TestSignalKeySecret checks that errors about a signal key do not quote it.
func TestSignalKeySecret(t *testing.T) {
	for _, key := range []string{"s3cr3ts3cr3ts3cr3ts3cr3ts3cr3tzz", "5ec2e7"} {
		src := edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, signal_key: "+key+"}")
		_, err := Parse([]byte(src), "config.yaml")
		if err == nil {
			t.Fatalf("key %s accepted", key)
		}
		if strings.Contains(err.Error(), key) {
			t.Errorf("error quotes the key: %v", err)
		}
	}
}

// TestDocExamples parses every complete example of docs/config.md.
func TestDocExamples(t *testing.T) {
	doc := readFile(t, "../../docs/config.md")
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	n := 0
	for _, b := range blocks {
		if !strings.HasPrefix(b[1], "distributor:") && !strings.HasPrefix(b[1], "#") {
			continue
		}
		n++
		if _, err := Parse([]byte(b[1]), fmt.Sprintf("docs example %d", n)); err != nil {
			t.Errorf("%v\n%s", err, b[1])
		}
	}
	if n < 2 {
		t.Errorf("found %d complete examples in docs/config.md, want at least 2", n)
	}
	if full := readFile(t, "testdata/full.yaml"); !strings.Contains(doc, full) {
		t.Error("docs/config.md does not contain testdata/full.yaml verbatim")
	}
}

// minimal is testdata/minimal.yaml; its lines:
//
//	 1 distributor:
//	 2   id: d1
//	 3   interfaces:
//	 4     - {name: ext0, role: external}
//	 5     - {name: int0, role: internal}
//	 6 flow_table:
//	 7   max_flows: 1000000
//	 8 traffic_managers:
//	 9   - {id: tm1, address: 10.1.0.11}
//	10   - {id: tm2, address: 10.1.0.12, weight: 2}
//	11 services:
//	12   - name: web
//	13     vip: 10.0.0.100
//	14     port: 80
//	15     protocol: tcp
//	16     traffic_managers: [tm1, tm2]
const minimal = `distributor:
  id: d1
  interfaces:
    - {name: ext0, role: external}
    - {name: int0, role: internal}
flow_table:
  max_flows: 1000000
traffic_managers:
  - {id: tm1, address: 10.1.0.11}
  - {id: tm2, address: 10.1.0.12, weight: 2}
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    traffic_managers: [tm1, tm2]
`

// edit replaces old, which must occur exactly once in minimal, by new.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := minimal
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.Count(s, pairs[i]) != 1 {
			t.Fatalf("%q does not occur exactly once", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

const secondService = `  - name: web2
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    traffic_managers: [tm1]
`

func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name string
		yaml func(t *testing.T) string
		line int
		path string
		want []string // substrings of the error
		n    int      // number of errors; 0 means 1
	}{
		{"bad vip", func(t *testing.T) string { return edit(t, "vip: 10.0.0.100", "vip: 10.0.0.300") },
			13, "services[0].vip", []string{`config.yaml:13: services[0].vip: "10.0.0.300" is not an IP address (expected an IPv4 or IPv6 address)`}, 0},
		{"weight 0", func(t *testing.T) string { return edit(t, "weight: 2", "weight: 0") },
			10, "traffic_managers[1].weight", []string{`config.yaml:10: traffic_managers[1].weight: 0 is out of range (expected 1..1000)`}, 0},
		{"weight too big", func(t *testing.T) string { return edit(t, "weight: 2", "weight: 1001") },
			10, "traffic_managers[1].weight", []string{`1001 is out of range (expected 1..1000)`}, 0},
		{"unknown tm in pool", func(t *testing.T) string { return edit(t, "[tm1, tm2]", "[tm1, tm2, tm9]") },
			16, "services[0].traffic_managers[2]", []string{`services[0].traffic_managers[2]: unknown traffic manager "tm9" (defined: tm1, tm2)`}, 0},
		{"unknown service key", func(t *testing.T) string { return edit(t, "protocol: tcp\n", "protocol: tcp\n    foo: bar\n") },
			16, "services[0].foo", []string{`config.yaml:16: unknown key "foo" in services[0]; expected one of: name, vip, port, protocol, traffic_managers`}, 0},
		{"unknown top-level key", func(t *testing.T) string { return minimal + "extra: 1\n" },
			17, "extra", []string{`unknown key "extra" in the top level; expected one of: distributor, flow_table, selection, traffic_managers, services`}, 0},
		{"unknown flow-style key", func(t *testing.T) string {
			return edit(t, "{name: ext0, role: external}", "{name: ext0, role: external, mtu: 1500}")
		},
			4, "distributor.interfaces[0].mtu", []string{`unknown key "mtu" in distributor.interfaces[0]; expected one of: name, role`}, 0},
		{"port not an integer", func(t *testing.T) string { return edit(t, "port: 80", "port: http") },
			14, "services[0].port", []string{`got the string "http" (expected an integer, 0..65535; 0 or omitted means all ports)`}, 0},
		{"port out of range", func(t *testing.T) string { return edit(t, "port: 80", "port: 70000") },
			14, "services[0].port", []string{`70000 is out of range (expected 0..65535`}, 0},
		{"bad protocol", func(t *testing.T) string { return edit(t, "protocol: tcp", "protocol: sctp") },
			15, "services[0].protocol", []string{`"sctp" is not a valid protocol (expected tcp or udp)`}, 0},
		{"missing protocol", func(t *testing.T) string { return edit(t, "    protocol: tcp\n", "") },
			12, "services[0].protocol", []string{`services[0].protocol: missing (expected tcp or udp)`}, 0},
		{"missing vip", func(t *testing.T) string { return edit(t, "    vip: 10.0.0.100\n", "") },
			12, "services[0].vip", []string{`missing (expected an IPv4 or IPv6 address)`}, 0},
		{"empty pool", func(t *testing.T) string { return edit(t, "[tm1, tm2]", "[]") },
			16, "services[0].traffic_managers", []string{`empty list (expected a list of at least one traffic manager id)`}, 0},
		{"missing pool", func(t *testing.T) string { return edit(t, "    traffic_managers: [tm1, tm2]\n", "") },
			12, "services[0].traffic_managers", []string{`missing (expected a list of at least one traffic manager id)`}, 0},
		{"pool not a list", func(t *testing.T) string { return edit(t, "[tm1, tm2]", "tm1") },
			16, "services[0].traffic_managers", []string{`got the string "tm1" (expected a list of at least one traffic manager id)`}, 0},
		{"duplicate in pool", func(t *testing.T) string { return edit(t, "[tm1, tm2]", "[tm1, tm2, tm1]") },
			16, "services[0].traffic_managers[2]", []string{`"tm1" is already in the pool at services[0].traffic_managers[0]`}, 0},
		{"duplicate tm id", func(t *testing.T) string { return edit(t, "id: tm2", "id: tm1", "[tm1, tm2]", "[tm1]") },
			10, "traffic_managers[1].id", []string{`"tm1" is already used by traffic_managers[0] (expected unique ids)`}, 0},
		{"duplicate tm address", func(t *testing.T) string { return edit(t, "10.1.0.12", "10.1.0.11") },
			10, "traffic_managers[1].address", []string{`10.1.0.11 is already the address of traffic_managers[0] "tm1"`}, 0},
		{"tm address is a vip", func(t *testing.T) string { return edit(t, "10.1.0.11", "10.0.0.100") },
			9, "traffic_managers[0].address", []string{`10.0.0.100 is also the VIP of services[0] "web" (expected a traffic manager address that is not a VIP)`}, 0},
		{"tm address multicast", func(t *testing.T) string { return edit(t, "10.1.0.11", "224.0.0.1") },
			9, "traffic_managers[0].address", []string{`224.0.0.1 is a multicast address (expected an IPv4 or IPv6 unicast address)`}, 0},
		{"tm address missing", func(t *testing.T) string { return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1}") },
			9, "traffic_managers[0].address", []string{`missing (expected an IPv4 or IPv6 unicast address; or addresses: a list of 1..4`}, 0},
		{"tm address and addresses", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, address: 10.1.0.11, addresses: [fd00::11]}")
		}, 9, "traffic_managers[0].addresses", []string{`both address and addresses are set (expected one of them`}, 0},
		{"tm addresses empty", func(t *testing.T) string { return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: []}") },
			9, "traffic_managers[0].addresses", []string{`0 addresses (expected a list of 1..4 IPv4 or IPv6 unicast addresses`}, 0},
		{"tm addresses too many", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: [10.1.0.1, 10.1.0.2, 10.1.0.3, 10.1.0.4, 10.1.0.5]}")
		}, 9, "traffic_managers[0].addresses", []string{`5 addresses (expected a list of 1..4`}, 0},
		{"tm addresses twice", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: [10.1.0.11, 10.1.0.11]}")
		}, 9, "traffic_managers[0].addresses[1]", []string{`10.1.0.11 is listed twice (expected each address once)`}, 0},
		{"tm addresses another TM's", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: [fd00::11, 10.1.0.12]}")
		}, 10, "traffic_managers[1].address", []string{`10.1.0.12 is already the address of traffic_managers[0] "tm1"`}, 0},
		{"tm addresses a vip", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: [fd00::11, 10.0.0.100]}")
		}, 9, "traffic_managers[0].addresses[1]", []string{`10.0.0.100 is also the VIP of services[0] "web"`}, 0},
		{"tm addresses bad entry", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: [fd00::11, \"ff02::1\"]}")
		}, 9, "traffic_managers[0].addresses[1]", []string{`ff02::1 is a multicast address (expected an IPv4 or IPv6 unicast address)`}, 0},
		{"tm state", func(t *testing.T) string { return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, state: drain}") },
			9, "traffic_managers[0].state", []string{`"drain" is not a valid state (expected active, draining or disabled)`}, 0},
		{"tm mac", func(t *testing.T) string { return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, mac: zz:00}") },
			9, "traffic_managers[0].mac", []string{`"zz:00" is not a MAC address (expected a unicast MAC address`}, 0},
		{"tm multicast mac", func(t *testing.T) string {
			return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, mac: \"01:00:5e:00:00:01\"}")
		},
			9, "traffic_managers[0].mac", []string{`01:00:5e:00:00:01 is a multicast MAC address`}, 0},
		{"distributor id", func(t *testing.T) string { return edit(t, "id: d1", "id: D1") },
			2, "distributor.id", []string{`"D1" is not a valid id (expected 1..32 characters of a-z, 0-9, '-', '_')`}, 0},
		{"distributor id too long", func(t *testing.T) string { return edit(t, "id: d1", "id: "+strings.Repeat("d", 33)) },
			2, "distributor.id", []string{`is not a valid id (expected 1..32 characters`}, 0},
		{"missing distributor", func(t *testing.T) string {
			return strings.Replace(minimal, minimal[:strings.Index(minimal, "flow_table")], "", 1)
		},
			1, "distributor", []string{`config.yaml:1: distributor: missing (expected a mapping with keys id, interfaces, api, api_token_file, xdp_mode, state_dir, pin_dir, zone)`}, 0},
		{"interface name", func(t *testing.T) string { return edit(t, "name: ext0", "name: averyverylongname0") },
			4, "distributor.interfaces[0].name", []string{`"averyverylongname0" is not a valid interface name (expected an interface name of 1..15 characters`}, 0},
		{"duplicate interface", func(t *testing.T) string { return edit(t, "name: int0", "name: ext0") },
			5, "distributor.interfaces[1].name", []string{`"ext0" is already used by distributor.interfaces[0]`}, 0},
		{"no external interface", func(t *testing.T) string { return edit(t, "role: external", "role: internal") },
			3, "distributor.interfaces", []string{`no interface has role external (expected at least one)`}, 0},
		{"bad role", func(t *testing.T) string { return edit(t, "role: external", "role: outside") },
			4, "distributor.interfaces[0].role", []string{`"outside" is not a valid role (expected external or internal)`}, 0},
		{"api not loopback", func(t *testing.T) string { return edit(t, "  id: d1\n", "  id: d1\n  api: 0.0.0.0:9100\n") },
			3, "distributor.api", []string{`0.0.0.0 is not a loopback address (expected unix:/absolute/path, 127.0.0.1:PORT or [::1]:PORT: the admin API is local-only)`}, 0},
		{"api relative unix", func(t *testing.T) string { return edit(t, "  id: d1\n", "  id: d1\n  api: unix:run/sock\n") },
			3, "distributor.api", []string{`"unix:run/sock" does not name an absolute socket path`}, 0},
		{"api host name", func(t *testing.T) string { return edit(t, "  id: d1\n", "  id: d1\n  api: localhost:9100\n") },
			3, "distributor.api", []string{`"localhost:9100" is not a unix socket or an IP address with port`}, 0},
		{"xdp mode", func(t *testing.T) string { return edit(t, "  id: d1\n", "  id: d1\n  xdp_mode: offload\n") },
			3, "distributor.xdp_mode", []string{`"offload" is not a valid XDP mode (expected auto, native or generic)`}, 0},
		{"state_dir relative", func(t *testing.T) string { return edit(t, "  id: d1\n", "  id: d1\n  state_dir: var/lib\n") },
			3, "distributor.state_dir", []string{`"var/lib" is not a clean absolute path (expected an absolute path of a directory`}, 0},
		{"state_dir unclean", func(t *testing.T) string { return edit(t, "  id: d1\n", "  id: d1\n  state_dir: /var/lib/../x/\n") },
			3, "distributor.state_dir", []string{`"/var/lib/../x/" is not a clean absolute path`}, 0},
		{"max_flows small", func(t *testing.T) string { return edit(t, "max_flows: 1000000", "max_flows: 100") },
			7, "flow_table.max_flows", []string{`100 is out of range (expected 1024..100000000)`}, 0},
		{"max_flows negative", func(t *testing.T) string { return edit(t, "max_flows: 1000000", "max_flows: -5") },
			7, "flow_table.max_flows", []string{`-5 is out of range (expected 1024..100000000)`}, 0},
		{"max_flows huge", func(t *testing.T) string { return edit(t, "max_flows: 1000000", "max_flows: 99999999999999999999999") },
			7, "flow_table.max_flows", []string{`99999999999999999999999 is out of range`}, 0},
		{"max_flows float", func(t *testing.T) string { return edit(t, "max_flows: 1000000", "max_flows: 1.5") },
			7, "flow_table.max_flows", []string{`1.5 is not an integer (expected 1024..100000000)`}, 0},
		{"ring_size not prime", func(t *testing.T) string {
			return edit(t, "flow_table:", "selection:\n  ring_size: 65536\nflow_table:")
		},
			7, "selection.ring_size", []string{`65536 is not prime (expected a prime in 1021..1000003; 65537 and 131071 are prime)`}, 0},
		{"ring_size too small", func(t *testing.T) string { return edit(t, "flow_table:", "selection:\n  ring_size: 13\nflow_table:") },
			7, "selection.ring_size", []string{`13 is out of range (expected a prime in 1021..1000003; 65537 and 131071 are prime)`}, 0},
		{"max_services 0", func(t *testing.T) string { return edit(t, "flow_table:", "selection:\n  max_services: 0\nflow_table:") },
			7, "selection.max_services", []string{`0 is out of range (expected 1..1024)`}, 0},
		{"too many services", func(t *testing.T) string {
			return edit(t, "flow_table:", "selection:\n  max_services: 1\nflow_table:", "port: 80", "port: 81") + strings.Replace(secondService, "port: 80", "port: 82", 1)
		},
			13, "services", []string{`2 services are more than selection.max_services allows (expected at most 1`}, 0},
		{"duplicate vip port proto", func(t *testing.T) string { return minimal + secondService },
			17, "services[1]", []string{`vip 10.0.0.100 port 80/tcp is already served by services[0] "web"`}, 0},
		{"duplicate all-ports service", func(t *testing.T) string {
			return edit(t, "    port: 80\n", "") + strings.Replace(secondService, "    port: 80\n", "", 1)
		},
			16, "services[1]", []string{`vip 10.0.0.100 all ports/tcp is already served by services[0] "web"`}, 0},
		{"duplicate service name", func(t *testing.T) string { return minimal + strings.Replace(secondService, "web2", "web", 1) },
			17, "services[1].name", []string{`"web" is already used by services[0]`}, 2},
		{"duplicate key", func(t *testing.T) string { return edit(t, "    port: 80\n", "    port: 80\n    port: 81\n") },
			15, "services[0].port", []string{`duplicate key "port" (first at line 14; expected each key once)`}, 0},
		{"boolean name", func(t *testing.T) string { return edit(t, "name: web", "name: true") },
			12, "services[0].name", []string{`got the boolean true (expected 1..64 characters`}, 0},
		{"service not a mapping", func(t *testing.T) string { return minimal + "  - web2\n" },
			17, "services[1]", []string{`got the string "web2" (expected a mapping with keys name, vip, port, protocol, traffic_managers, persistence, timeouts, health, fallback_traffic_managers, min_eligible, priority_groups, qos, policy, hash)`}, 0},
		{"distributor a list", func(t *testing.T) string {
			return "distributor: [d1]\n" + minimal[strings.Index(minimal, "flow_table"):]
		},
			1, "distributor", []string{`got a list (expected a mapping with keys id, interfaces, api, api_token_file, xdp_mode, state_dir, pin_dir, zone)`}, 0},
		{"too many tms", func(t *testing.T) string {
			var b strings.Builder
			for i := 0; i < 256; i++ {
				fmt.Fprintf(&b, "  - {id: x%d, address: 10.2.%d.%d}\n", i, i/200, i%200+1)
			}
			return edit(t, "traffic_managers:\n", "traffic_managers:\n"+b.String())
		},
			8, "traffic_managers", []string{`258 traffic managers are too many (expected at most 255)`}, 0},
		// timeouts (minimal has 16 lines: appended sections start at line 17)
		{"timeout 0", func(t *testing.T) string { return minimal + "timeouts:\n  tcp: 0\n" },
			18, "timeouts.tcp", []string{`config.yaml:18: timeouts.tcp: 0 is out of range (expected 1..604800 seconds)`}, 0},
		{"timeout too long", func(t *testing.T) string { return minimal + "timeouts:\n  udp: 60\n  tcp_fin: 604801\n" },
			19, "timeouts.tcp_fin", []string{`604801 is out of range (expected 1..604800 seconds)`}, 0},
		{"timeout a string", func(t *testing.T) string { return minimal + "timeouts:\n  other: 5m\n" },
			18, "timeouts.other", []string{`got the string "5m" (expected an integer, 1..604800 seconds)`}, 0},
		{"second_key timeout negative", func(t *testing.T) string { return minimal + "timeouts:\n  second_key: -1\n" },
			18, "timeouts.second_key", []string{`-1 is out of range (expected 1..604800 seconds)`}, 0},
		{"timeouts unknown key", func(t *testing.T) string { return minimal + "timeouts:\n  syn: 10\n" },
			18, "timeouts.syn", []string{`unknown key "syn" in timeouts; expected one of: tcp, tcp_syn, tcp_fin, tcp_close, udp, other, second_key`}, 0},
		{"timeouts a list", func(t *testing.T) string { return minimal + "timeouts: [900]\n" },
			17, "timeouts", []string{`got a list (expected a mapping with keys tcp, tcp_syn, tcp_fin, tcp_close, udp, other, second_key)`}, 0},
		// second_keys
		{"mask unknown field", func(t *testing.T) string {
			return minimal + "second_keys:\n  masks:\n    - [proto, src]\n    - [src, port]\n"
		},
			20, "second_keys.masks[1][1]", []string{`config.yaml:20: second_keys.masks[1][1]: "port" is not a field (expected one of vlan, proto, src, dst, sport, dport)`}, 0},
		{"mask duplicate field", func(t *testing.T) string { return minimal + "second_keys:\n  masks:\n    - [src, dst, src]\n" },
			19, "second_keys.masks[0][2]", []string{`"src" is already in the mask at second_keys.masks[0][0] (expected each field once)`}, 0},
		{"mask empty", func(t *testing.T) string { return minimal + "second_keys:\n  masks:\n    - [src]\n    - []\n" },
			20, "second_keys.masks[1]", []string{`empty list (expected a list of at least one field from vlan, proto, src, dst, sport, dport`}, 0},
		{"mask not a list", func(t *testing.T) string { return minimal + "second_keys:\n  masks:\n    - src\n" },
			19, "second_keys.masks[0]", []string{`got the string "src" (expected a list of at least one field`}, 0},
		{"mask field not a string", func(t *testing.T) string { return minimal + "second_keys:\n  masks:\n    - [src, [dst]]\n" },
			19, "second_keys.masks[0][1]", []string{`got a list (expected one of vlan, proto, src, dst, sport, dport)`}, 0},
		{"duplicate mask", func(t *testing.T) string {
			return minimal + "second_keys:\n  masks:\n    - [src, dst]\n    - [dst, src]\n"
		},
			20, "second_keys.masks[1]", []string{`[dst, src] is the same mask as second_keys.masks[0] [src, dst] (expected each mask once; the order of fields does not matter)`}, 0},
		{"too many masks", func(t *testing.T) string {
			return minimal + "second_keys:\n  masks: [[vlan], [proto], [src], [dst], [sport], [dport], [src, dst]]\n"
		},
			18, "second_keys.masks", []string{`7 masks are too many (expected at most 6)`}, 0},
		{"no masks", func(t *testing.T) string { return minimal + "second_keys:\n  masks: []\n" },
			18, "second_keys.masks", []string{`empty list (expected a list of 1..6 masks`}, 0},
		{"masks not a list", func(t *testing.T) string { return minimal + "second_keys:\n  masks: src\n" },
			18, "second_keys.masks", []string{`got the string "src" (expected a list of 1..6 masks`}, 0},
		{"max_entries 0", func(t *testing.T) string { return minimal + "second_keys:\n  max_entries: 0\n" },
			18, "second_keys.max_entries", []string{`0 is out of range (expected 1..10000000)`}, 0},
		{"max_entries too big", func(t *testing.T) string { return minimal + "second_keys:\n  max_entries: 10000001\n" },
			18, "second_keys.max_entries", []string{`10000001 is out of range (expected 1..10000000)`}, 0},
		{"second_keys unknown key", func(t *testing.T) string { return minimal + "second_keys:\n  mask: [[src]]\n" },
			18, "second_keys.mask", []string{`unknown key "mask" in second_keys; expected one of: masks, max_entries`}, 0},
		// learning
		{"snat multicast", func(t *testing.T) string { return minimal + "learning:\n  snat_addresses: [10.1.0.200, 224.0.0.5]\n" },
			18, "learning.snat_addresses[1]", []string{`config.yaml:18: learning.snat_addresses[1]: 224.0.0.5 is a multicast address (expected an IPv4 or IPv6 unicast address that is neither a VIP nor a traffic manager address)`}, 0},
		{"snat is a vip", func(t *testing.T) string { return minimal + "learning:\n  snat_addresses:\n    - 10.0.0.100\n" },
			19, "learning.snat_addresses[0]", []string{`10.0.0.100 is the VIP of services[0] "web" (expected an IPv4 or IPv6 unicast address`}, 0},
		{"snat is a tm address", func(t *testing.T) string { return minimal + "learning:\n  snat_addresses: [10.1.0.11]\n" },
			18, "learning.snat_addresses[0]", []string{`10.1.0.11 is the address of traffic_managers[0] "tm1", which learning covers anyway (expected`}, 0},
		{"snat is a tm's second address", func(t *testing.T) string {
			return edit(t, "{id: tm1, address: 10.1.0.11}", "{id: tm1, addresses: [10.1.0.11, \"fd00::11\"]}") + "learning:\n  snat_addresses: [\"fd00::11\"]\n"
		}, 18, "learning.snat_addresses[0]", []string{`fd00::11 is the address of traffic_managers[0] "tm1", which learning covers anyway`}, 0},
		{"snat duplicate", func(t *testing.T) string {
			return minimal + "learning:\n  snat_addresses:\n    - 10.1.0.200\n    - 2001:db8::200\n    - 10.1.0.200\n"
		},
			21, "learning.snat_addresses[2]", []string{`10.1.0.200 is already listed at learning.snat_addresses[0] (expected each address once)`}, 0},
		{"snat not an address", func(t *testing.T) string { return minimal + "learning:\n  snat_addresses: [10.1.0.300]\n" },
			18, "learning.snat_addresses[0]", []string{`"10.1.0.300" is not an IP address (expected an IPv4 or IPv6 unicast address`}, 0},
		{"snat not a list", func(t *testing.T) string { return minimal + "learning:\n  snat_addresses: 10.1.0.200\n" },
			18, "learning.snat_addresses", []string{`got the string "10.1.0.200" (expected a list of IPv4 or IPv6 unicast addresses)`}, 0},
		{"learning unknown key", func(t *testing.T) string { return minimal + "learning:\n  snat: [10.1.0.200]\n" },
			18, "learning.snat", []string{`unknown key "snat" in learning; expected one of: snat_addresses`}, 0},
		// signals
		{"signal mac unicast", func(t *testing.T) string { return minimal + "signals:\n  multicast_mac: \"02:00:00:00:00:01\"\n" },
			18, "signals.multicast_mac", []string{`02:00:00:00:00:01 is a unicast MAC address (expected a multicast MAC address of six hex octets, lowest bit of the first octet set`}, 0},
		{"signal mac broadcast", func(t *testing.T) string { return minimal + "signals:\n  multicast_mac: ff:ff:ff:ff:ff:ff\n" },
			18, "signals.multicast_mac", []string{`ff:ff:ff:ff:ff:ff is the broadcast MAC address (expected a multicast MAC address`}, 0},
		{"signal mac invalid", func(t *testing.T) string { return minimal + "signals:\n  multicast_mac: 03:53:59\n" },
			18, "signals.multicast_mac", []string{`"03:53:59" is not a MAC address (expected a multicast MAC address`}, 0},
		// peers
		{"peers without key", func(t *testing.T) string {
			return minimal + "peers:\n  id: 1\n  listen: 10.3.0.1:7947\n  addresses: [10.3.0.2:7947]\n"
		}, 17, "peers.key", []string{`the key is 0 bytes long (expected a key of at least 16 bytes`}, 0},
		{"peers own address", func(t *testing.T) string {
			return minimal + "peers:\n  id: 1\n  listen: 10.3.0.1:7947\n  addresses: [10.3.0.1:7947]\n  key: 000102030405060708090a0b0c0d0e0f\n"
		}, 20, "peers.addresses[0]", []string{`10.3.0.1:7947 is this distributor's own peers.listen (expected the other`}, 0},
		{"peers no id", func(t *testing.T) string {
			return minimal + "peers:\n  listen: 10.3.0.1:7947\n  addresses: [10.3.0.2:7947]\n  key: 000102030405060708090a0b0c0d0e0f\n"
		}, 17, "peers.id", []string{`missing (expected this distributor's number among its peers`}, 0},
		{"peers mirror", func(t *testing.T) string { return minimal + "peers:\n  mirror: some\n" },
			18, "peers.mirror", []string{`"some" (expected all, signalled or older)`}, 0},
		{"peers older without min_age", func(t *testing.T) string { return minimal + "peers:\n  mirror: older\n" },
			17, "peers.min_age", []string{`missing with mirror: older (expected seconds a flow must live`}, 0},
		{"peers min_age with all", func(t *testing.T) string { return minimal + "peers:\n  mirror: all\n  min_age: 5\n" },
			19, "peers.min_age", []string{`set with mirror: all (expected seconds`}, 0},
		{"peers min_age too long", func(t *testing.T) string { return minimal + "peers:\n  mirror: older\n  min_age: 86401\n" },
			19, "peers.min_age", []string{`86401`}, 0},
		{"peers address without port", func(t *testing.T) string {
			return minimal + "peers:\n  id: 1\n  listen: 10.3.0.1:7947\n  addresses: [10.3.0.2]\n  key: 000102030405060708090a0b0c0d0e0f\n"
		}, 20, "peers.addresses[0]", []string{`"10.3.0.2" is not an IP address with port`}, 0},
		{"udp_listen without port", func(t *testing.T) string { return minimal + "signals:\n  udp_listen: 10.1.0.2\n" },
			18, "signals.udp_listen", []string{`"10.1.0.2" is not an IP address with port (expected ADDRESS:PORT with a port in 1..65535`}, 0},
		{"udp_listen host name", func(t *testing.T) string { return minimal + "signals:\n  udp_listen: localhost:7946\n" },
			18, "signals.udp_listen", []string{`"localhost:7946" is not an IP address with port`}, 0},
		{"udp_listen port 0", func(t *testing.T) string { return minimal + "signals:\n  udp_listen: 10.1.0.2:0\n" },
			18, "signals.udp_listen", []string{`port 0 in "10.1.0.2:0" (expected ADDRESS:PORT with a port in 1..65535`}, 0},
		{"udp_listen multicast", func(t *testing.T) string { return minimal + "signals:\n  udp_listen: 239.1.1.1:7946\n" },
			18, "signals.udp_listen", []string{`239.1.1.1 is a multicast address (expected ADDRESS:PORT`}, 0},
		{"signals unknown key", func(t *testing.T) string { return minimal + "signals:\n  key: abc\n" },
			18, "signals.key", []string{`unknown key "key" in signals; expected one of: multicast_mac, udp_listen`}, 0},
		// traffic_managers[].signal_key
		{"signal_key not hex", func(t *testing.T) string {
			return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, signal_key: 00112233445566778899aabbccddeeXX}")
		},
			9, "traffic_managers[0].signal_key", []string{`config.yaml:9: traffic_managers[0].signal_key: not a hex string (expected a key of at least 16 bytes, written as at least 32 hex digits)`}, 0},
		{"signal_key odd length", func(t *testing.T) string {
			return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, signal_key: 00112233445566778899aabbccddeeff0}")
		},
			9, "traffic_managers[0].signal_key", []string{`not a hex string (expected a key of at least 16 bytes`}, 0},
		{"signal_key short", func(t *testing.T) string {
			return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, signal_key: \"0011223344556677\"}")
		},
			9, "traffic_managers[0].signal_key", []string{`the key is 8 bytes long (expected a key of at least 16 bytes, written as at least 32 hex digits)`}, 0},
		{"signal_key a list", func(t *testing.T) string {
			return edit(t, "address: 10.1.0.11}", "address: 10.1.0.11, signal_key: [1]}")
		},
			9, "traffic_managers[0].signal_key", []string{`got a list (expected a key of at least 16 bytes`}, 0},
		// services[].persistence (inserted as line 17, after the pool)
		{"persistence without timeout", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {mask: [proto, src, dst, dport]}\n")
		},
			17, "services[0].persistence.timeout", []string{`config.yaml:17: services[0].persistence.timeout: missing (expected 1..86400 seconds)`}, 0},
		{"persistence empty", func(t *testing.T) string { return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {}\n") },
			17, "services[0].persistence.timeout", []string{`missing (expected 1..86400 seconds)`}, 0},
		{"persistence timeout too long", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence:\n      timeout: 86401\n")
		},
			18, "services[0].persistence.timeout", []string{`86401 is out of range (expected 1..86400 seconds)`}, 0},
		{"persistence timeout 0", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 0}\n")
		},
			17, "services[0].persistence.timeout", []string{`0 is out of range (expected 1..86400 seconds)`}, 0},
		{"persistence mask not configured", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence:\n      timeout: 600\n      mask: [proto, src]\n")
		},
			19, "services[0].persistence.mask", []string{`config.yaml:19: services[0].persistence.mask: [proto, src] is not one of second_keys.masks (configured: [proto, src, dst, dport], [proto, dst, dport], [proto, src, dst], [src]; expected one of them, or add it to second_keys.masks)`}, 0},
		{"persistence mask not in custom masks", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 600}\n") + "second_keys:\n  masks: [[src, dst], [src]]\n"
		},
			17, "services[0].persistence.mask", []string{`[proto, src, dst, dport] is not one of second_keys.masks (configured: [src, dst], [src];`}, 0},
		{"persistence mask unknown field", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 600, mask: [proto, source]}\n")
		},
			17, "services[0].persistence.mask[1]", []string{`"source" is not a field (expected one of vlan, proto, src, dst, sport, dport)`}, 0},
		{"persistence mask empty", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 600, mask: []}\n")
		},
			17, "services[0].persistence.mask", []string{`empty list (expected a list of at least one field`}, 0},
		{"persistence unknown key", func(t *testing.T) string {
			return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 600, ttl: 5}\n")
		},
			17, "services[0].persistence.ttl", []string{`unknown key "ttl" in services[0].persistence; expected one of: timeout, mask`}, 0},
		{"persistence not a mapping", func(t *testing.T) string { return edit(t, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: 600\n") },
			17, "services[0].persistence", []string{`got the integer 600 (expected a mapping with keys timeout, mask)`}, 0},
		{"yaml syntax", func(t *testing.T) string { return edit(t, "[tm1, tm2]", "[tm1, tm2") },
			16, "", []string{`config.yaml:16: invalid YAML: did not find expected ',' or ']'`}, 0},
		{"two documents", func(t *testing.T) string { return minimal + "---\nfoo: 1\n" },
			17, "", []string{`a second YAML document (expected exactly one document)`}, 0},
		{"empty", func(t *testing.T) string { return "# nothing\n" },
			0, "", []string{`config.yaml: empty config (expected a mapping`}, 0},
		{"not a mapping", func(t *testing.T) string { return "- a\n- b\n" },
			1, "", []string{`the document is a list (expected a mapping`}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.yaml(t)
			c, err := Parse([]byte(src), "config.yaml")
			if err == nil {
				t.Fatalf("no error; config %+v\n%s", c, src)
			}
			if c != nil {
				t.Error("config returned with an error")
			}
			errs := Errors(err)
			n := tc.n
			if n == 0 {
				n = 1
			}
			if len(errs) != n {
				t.Errorf("%d errors, want %d:\n%v", len(errs), n, err)
			}
			var first *Error
			if !errors.As(err, &first) {
				t.Fatalf("error %v is not a *Error", err)
			}
			var e *Error
			for _, x := range errs {
				if x.Path == tc.path {
					e = x
					break
				}
			}
			if e == nil {
				t.Fatalf("no error for path %q in:\n%v", tc.path, err)
			}
			if e.Line != tc.line {
				t.Errorf("line %d, want %d: %v", e.Line, tc.line, e)
			}
			if e.Source != "config.yaml" {
				t.Errorf("source %q", e.Source)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Error(), w) {
					t.Errorf("error\n\t%v\ndoes not contain\n\t%s", e, w)
				}
			}
			if !strings.Contains(e.Msg, "expected") && !strings.Contains(e.Msg, "defined:") {
				t.Errorf("error %q does not say what was expected", e.Msg)
			}
		})
	}
}

// TestAllErrorsAtOnce checks that every problem is reported, one per line,
// in line order.
func TestAllErrorsAtOnce(t *testing.T) {
	src := edit(t,
		"id: d1", "id: D1",
		"max_flows: 1000000", "max_flows: 5",
		"weight: 2", "weight: 0",
		"vip: 10.0.0.100", "vip: 10.0.0.300",
		"[tm1, tm2]", "[tm1, tm9]",
	)
	_, err := Parse([]byte(src), "config.yaml")
	want := []string{
		`config.yaml:2: distributor.id: "D1" is not a valid id`,
		`config.yaml:7: flow_table.max_flows: 5 is out of range (expected 1024..100000000)`,
		`config.yaml:10: traffic_managers[1].weight: 0 is out of range (expected 1..1000)`,
		`config.yaml:13: services[0].vip: "10.0.0.300" is not an IP address (expected an IPv4 or IPv6 address)`,
		`config.yaml:16: services[0].traffic_managers[1]: unknown traffic manager "tm9" (defined: tm1, tm2)`,
	}
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
}

func TestAliases(t *testing.T) {
	src := edit(t, "traffic_managers: [tm1, tm2]", "traffic_managers: &pool [tm1, tm2]") + `  - name: web-alt
    vip: 10.0.0.101
    protocol: tcp
    traffic_managers: *pool
`
	c, err := Parse([]byte(src), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Services[1].TrafficManagers, ","); got != "tm1,tm2" {
		t.Errorf("pool via alias = %q", got)
	}
	// A self-referencing alias must not loop.
	if _, err := Parse([]byte("services: &a [*a]\n"), "x"); err == nil {
		t.Error("no error for a recursive alias")
	}
}

func TestValidateProgrammatic(t *testing.T) {
	c := &Config{
		Distributor:     Distributor{ID: "d1", Interfaces: []Interface{{Name: "eth0", Role: RoleExternal}}},
		TrafficManagers: []TrafficManager{{ID: "tm1", Address: netip.MustParseAddr("10.1.0.1")}},
		Services: []Service{{Name: "web", VIP: netip.MustParseAddr("10.0.0.1"), Protocol: ProtocolTCP,
			TrafficManagers: []string{"tm1"}}},
	}
	if err := c.Validate(); err == nil {
		t.Error("Validate accepted a config without defaults")
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate after ApplyDefaults: %v", err)
	}
	if c.Distributor.API != "unix:/run/switchyard/d1.sock" || c.TrafficManagers[0].Weight != 1 || c.TrafficManagers[0].State != StateActive {
		t.Errorf("defaults not applied: %+v", c)
	}
	c.Services[0].TrafficManagers = []string{"tm2"}
	err := c.Validate()
	var e *Error
	if !errors.As(err, &e) || e.Path != "services[0].traffic_managers[0]" || e.Line != 0 {
		t.Errorf("err = %#v", err)
	}
	if got := err.Error(); got != `services[0].traffic_managers[0]: unknown traffic manager "tm2" (defined: tm1)` {
		t.Errorf("err = %q", got)
	}
}

func TestValidateProgrammaticNewKeys(t *testing.T) {
	base := func() *Config {
		c := &Config{
			Distributor:     Distributor{ID: "d1", Interfaces: []Interface{{Name: "eth0", Role: RoleExternal}}},
			TrafficManagers: []TrafficManager{{ID: "tm1", Address: netip.MustParseAddr("10.1.0.1")}},
			Services: []Service{{Name: "web", VIP: netip.MustParseAddr("10.0.0.1"), Protocol: ProtocolTCP,
				TrafficManagers: []string{"tm1"}}},
		}
		c.ApplyDefaults()
		return c
	}
	for _, tc := range []struct {
		name   string
		modify func(c *Config)
		want   string
	}{
		{"timeout 0", func(c *Config) { c.Timeouts.UDP = 0 }, `timeouts.udp: 0 is out of range (expected 1..604800 seconds)`},
		{"short key", func(c *Config) { c.TrafficManagers[0].SignalKey = []byte("short") },
			`traffic_managers[0].signal_key: the key is 5 bytes long (expected a key of at least 16 bytes`},
		{"empty masks", func(c *Config) { c.SecondKeys.Masks = [][]string{} }, `second_keys.masks: empty list`},
		{"nil mask", func(c *Config) { c.SecondKeys.Masks = [][]string{{"src"}, nil} }, `second_keys.masks[1]: missing (expected a list of at least one field`},
		{"empty field", func(c *Config) { c.SecondKeys.Masks = [][]string{{"src", ""}} }, `second_keys.masks[0][1]: "" is not a field`},
		{"max entries", func(c *Config) { c.SecondKeys.MaxEntries = MaxSecondKeyMaxEntries + 1 }, `second_keys.max_entries: 10000001 is out of range`},
		{"unicast mac", func(c *Config) { c.Signals.MulticastMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1} }, `signals.multicast_mac: 02:00:00:00:00:01 is a unicast MAC address`},
		{"short mac", func(c *Config) { c.Signals.MulticastMAC = net.HardwareAddr{3, 0} }, `signals.multicast_mac: "03:00" is not a MAC address`},
		{"snat invalid", func(c *Config) { c.Learning.SNATAddresses = []netip.Addr{{}} }, `learning.snat_addresses[0]: missing (expected an IPv4 or IPv6 unicast address`},
		{"persistence without timeout", func(c *Config) { c.Services[0].Persistence = &Persistence{Mask: []string{"src"}} },
			`services[0].persistence.timeout: missing (expected 1..86400 seconds)`},
		{"persistence without mask", func(c *Config) { c.Services[0].Persistence = &Persistence{Timeout: 5} },
			`services[0].persistence.mask: missing (expected a list of at least one field`},
	} {
		c := base()
		if err := c.Validate(); err != nil {
			t.Fatalf("base: %v", err)
		}
		tc.modify(c)
		err := c.Validate()
		if err == nil || len(Errors(err)) != 1 || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one error starting %q", tc.name, err, tc.want)
		}
	}
}

func TestIsPrime(t *testing.T) {
	for n, want := range map[uint32]bool{1021: true, 1024: false, 65537: true, 131071: true, 65536: false, 1000003: true, 999999: false, 2: true, 1: false, 9: false} {
		if isPrime(n) != want {
			t.Errorf("isPrime(%d) = %v", n, !want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(readFile(f, "testdata/full.yaml")))
	f.Add([]byte("services: &a [*a]\n"))
	f.Add([]byte("distributor: {id: d1, interfaces: [{name: e, role: external}]}\ntraffic_managers: [{id: a, address: '::1', mac: 'ff'}]\n"))
	f.Add([]byte("a: [\n b"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte(minimal + "second_keys: {masks: [[src, dst], [dst, src]], max_entries: 7}\nlearning: {snat_addresses: [10.1.0.11]}\nsignals: {multicast_mac: '01:00:5e:00:00:01', udp_listen: ':1'}\ntimeouts: {tcp: 1}\n"))
	f.Add([]byte(strings.Replace(minimal, "[tm1, tm2]\n", "[tm1, tm2]\n    persistence: {timeout: 9, mask: [src]}\n", 1)))
	f.Add([]byte(aliasBomb(3)))
	f.Add([]byte(wideBomb(3, 3)))
	f.Add([]byte("a: &x {b: *x}\n"))
	f.Add([]byte(minimal[:40] + "\x00\xff" + minimal[40:]))
	f.Add([]byte(strings.Replace(minimal, "  id: d1\n", "  id: d1\n  api: 127.0.0.1:9\n  api_token_file: /t\n", 1)))
	f.Add([]byte(minimal + "    policy: fastest-rtt\n    hash: symmetric\n    min_eligible: 2\n    fallback_traffic_managers: [tm1]\n    health: {type: udp, send: x, expect: y, interval_ms: 10, timeout_ms: 10, rise: 1, fall: 100, on_unhealthy: reselect}\n"))
	f.Add([]byte(minimal + bgpOK))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c, err)
		}
		if err != nil {
			es := Errors(err)
			if len(es) == 0 {
				t.Fatalf("error %v holds no *Error", err)
			}
			if len(es) > MaxErrors+1 {
				t.Fatalf("%d errors, more than MaxErrors and a count", len(es))
			}
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("Parse panicked: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate refuses: %v", err)
		}
		// What Parse accepts, Marshal writes back to the same Config.
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := Parse(out, "marshalled.yaml")
		if err != nil {
			t.Fatalf("Parse of Marshal output: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v\n%s", back, c, out)
		}
	})
}

// TestHealthConfig checks services[].health and fallback_traffic_managers:
// defaults, and one error per bad value.
func TestHealthConfig(t *testing.T) {
	c, err := Parse([]byte(readFile(t, "testdata/full.yaml")), "full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	web, dns := c.Services[0], c.Services[4]
	if h := web.Health; h == nil || h.Type != HealthHTTP || h.Port != 80 || h.Path != "/healthz" || h.Status != 200 || h.OnUnhealthy != OnUnhealthyKeep {
		t.Errorf("web health = %+v", web.Health)
	}
	if strings.Join(web.FallbackTrafficManagers, ",") != "tm7" {
		t.Errorf("web fallback = %v", web.FallbackTrafficManagers)
	}
	if h := dns.Health; h == nil || h.Port != 53 || h.IntervalMS != DefaultHealthIntervalMS || h.TimeoutMS != DefaultHealthTimeoutMS ||
		h.Rise != DefaultHealthRise || h.Fall != DefaultHealthFall || h.Path != "" || h.OnUnhealthy != OnUnhealthyReselect {
		t.Errorf("dns health = %+v", dns.Health)
	}
	base := readFile(t, "testdata/minimal.yaml")
	for _, tc := range []struct{ name, add, want string }{
		{"no type", "    health: {port: 80}\n", "health.type: missing"},
		{"bad type", "    health: {type: icmp}\n", `"icmp" is not a health check type`},
		{"timeout over interval", "    health: {type: tcp, interval_ms: 100, timeout_ms: 200}\n", "health.timeout_ms: 200 is out of range"},
		{"rise zero", "    health: {type: tcp, rise: 0}\n", "health.rise"},
		{"path for tcp", "    health: {type: tcp, path: /x}\n", "path and status are for http"},
		{"bad path", "    health: {type: http, path: \"no slash\"}\n", "is not a valid path"},
		{"status low", "    health: {type: http, status: 42}\n", "health.status: 42 is out of range"},
		{"send for http", "    health: {type: http, send: x}\n", "send and expect are for udp"},
		{"on_unhealthy", "    health: {type: tcp, on_unhealthy: drop}\n", `"drop" is not valid`},
		{"fallback unknown", "    fallback_traffic_managers: [nope]\n", `unknown traffic manager "nope"`},
		{"fallback in pool", "    fallback_traffic_managers: [tm1]\n", `"tm1" is in the service's pool already`},
	} {
		_, err := Parse([]byte(base+tc.add), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestPolicyConfig checks services[].policy and services[].hash: defaults,
// the data path's bits, and errors.
func TestPolicyConfig(t *testing.T) {
	c, err := Parse([]byte(readFile(t, "testdata/full.yaml")), "full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Services[0]; s.Policy != PolicyMaglev || s.Hash != Hash5Tuple || HashBits(s.Hash) != 0 {
		t.Errorf("web: policy %q hash %q, want the defaults", s.Policy, s.Hash)
	}
	if s := c.Services[2]; s.Name != "nat-return" || s.Policy != PolicyHash || HashBits(s.Hash) != datapath.HashSymPort {
		t.Errorf("nat-return: %+v", s)
	}
	base := readFile(t, "testdata/minimal.yaml")
	for _, p := range []string{PolicyLeastConnections, PolicyWeightedLeastConnections, PolicyPacketRate, PolicyCompletionRate, PolicyHopMetric} {
		if c, err := Parse([]byte(base+"    policy: "+p+"\n"), "c.yaml"); err != nil || c.Services[0].Policy != p {
			t.Errorf("policy %s: err %v", p, err)
		}
	}
	groups := strings.Replace(strings.Replace(base, "traffic_managers: [tm1, tm2]", "traffic_managers: [tm1]", 1),
		"  - {id: tm2, address: 10.1.0.12, weight: 2}\n", "  - {id: tm2, address: 10.1.0.12, weight: 2}\n  - {id: tm3, address: 10.1.0.13}\n  - {id: tm4, address: 10.1.0.14}\n", 1)
	c, err = Parse([]byte(groups+"    policy: priority-groups\n    priority_groups:\n      - {traffic_managers: [tm2]}\n      - {traffic_managers: [tm3, tm4], min_eligible: 2}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []PriorityGroup{{[]string{"tm1"}, 1}, {[]string{"tm2"}, 1}, {[]string{"tm3", "tm4"}, 2}}
	if g := c.Services[0].Groups(); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("groups %v, want %v", g, want)
	}
	for _, tc := range []struct{ add, want string }{
		{"    policy: least-conns\n", `services[0].policy: "least-conns" is not a selection policy (expected maglev, hash, round-robin, weighted-round-robin, fastest-rtt, least-connections, weighted-least-connections, packet-rate, completion-rate, ratio-dynamic, priority-groups, topology, hop-metric or qos`},
		{"    hash: sip\n", `services[0].hash: "sip" is not a hash (expected 5-tuple, src-ip`},
		{"    policy: round-robin\n    hash: src-ip\n", `services[0].hash: "src-ip": a round-robin service hashes nothing`},
		{"    priority_groups: [{traffic_managers: [tm2]}]\n", `services[0].priority_groups[0].traffic_managers[0]: "tm2" is in the service's pool already`},
		{"    priority_groups: [{traffic_managers: [tm3]}]\n", `services[0].priority_groups[0].traffic_managers[0]: unknown traffic manager "tm3"`},
		{"    priority_groups: [{traffic_managers: []}]\n", `services[0].priority_groups[0].traffic_managers: empty list`},
		{"    priority_groups: [{traffic_managers: [tm9], min_eligible: 0}]\n", `services[0].priority_groups[0].min_eligible: 0 is out of range`},
		{"    fallback_traffic_managers: [tm9]\n    priority_groups: [{traffic_managers: [tm8]}]\n", `services[0].priority_groups: a service has either fallback_traffic_managers or priority_groups`},
		{"    policy: qos\n", `services[0].policy: qos needs its class: services[].qos`},
		{"    qos: {dscp: [46], tag: gold}\n", `services[0].qos: a class of a maglev service`},
		{"    policy: qos\n    qos: {dscp: [64, 46, 46], tag: Gold}\n", `services[0].qos.dscp[0]: 64 is out of range`},
		{"    policy: qos\n    qos: {dscp: [64, 46, 46], tag: Gold}\n", `services[0].qos.dscp[2]: 46 is listed twice`},
		{"    policy: qos\n    qos: {dscp: [64, 46, 46], tag: Gold}\n", `services[0].qos.tag: "Gold" is not a valid tag`},
		{"    policy: qos\n    qos: {dscp: [], tag: gold}\n", `services[0].qos.dscp: empty list`},
		{"    policy: topology\n", `services[0].policy: topology prefers the TMs tagged with the distributor's zone: distributor.zone is not set`},
		{"    policy: priority-groups\n", `services[0].policy: priority-groups needs priority_groups`},
		{"    policy: ratio-dynamic\n", `services[0].policy: ratio-dynamic weighs TMs by their agents' load reports: no traffic manager of the pool has agent_stats`},
		{"    policy: fastest-rtt\n", `services[0].policy: fastest-rtt weighs TMs by their health probes' round-trip times: the service needs health`},
	} {
		if _, err := Parse([]byte(base+tc.add), "c.yaml"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.add, err, tc.want)
		}
	}
}
