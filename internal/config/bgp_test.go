package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

const bgpOK = `bgp:
  asn: 65001
  router_id: 10.0.1.1
  next_hop: 10.0.1.1
  next_hop6: 'fd00:1::1'
  communities: ['65001:100']
  neighbors:
    - {address: 10.0.1.254, asn: 65000}
    - {address: 'fd00:1::fe', asn: 65000, port: 1179, password: s3cret}
`

// TestBGPConfig: the bgp section's defaults, and one error per bad value
// with its line.
func TestBGPConfig(t *testing.T) {
	c, err := Parse([]byte(minimal+bgpOK), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	if !b.Enabled() || b.HoldTime != 3 || b.Keepalive != 1 || b.DrainDeadline != 60 || b.AnnounceDelayMS != 0 || b.BFDIntervalMS != 0 || b.BFDMultiplier != 3 ||
		b.Neighbors[0].Port != 179 || b.Neighbors[1].Port != 1179 || b.NextHop6 != netip.MustParseAddr("fd00:1::1") {
		t.Fatalf("bgp %+v", b)
	}
	if v, err := ParseCommunity(b.Communities[0]); err != nil || v != 65001<<16|100 {
		t.Fatalf("community %v %v", v, err)
	}
	// Off without neighbors: no other key is required.
	if c, err := Parse([]byte(minimal+"bgp: {hold_time: 9}\n"), "config.yaml"); err != nil || c.BGP.Enabled() {
		t.Fatalf("bgp without neighbors: %v %+v", err, c)
	}
	base := strings.Count(minimal, "\n")
	for _, tc := range []struct {
		old, new, path string
		line           int
		want           string
	}{
		{"  asn: 65001\n", "", "bgp.asn", base + 1, "missing"},
		{"  router_id: 10.0.1.1\n", "  router_id: 'fd00::1'\n", "bgp.router_id", base + 3, "IPv4"},
		{"  next_hop: 10.0.1.1\n", "  next_hop: 'fd00::2'\n", "bgp.next_hop", base + 4, "IPv4 unicast"},
		{"  next_hop6: 'fd00:1::1'\n", "  next_hop6: 10.0.0.1\n", "bgp.next_hop6", base + 5, "IPv6 unicast"},
		{"  asn: 65001\n", "  asn: 65001\n  hold_time: 2\n", "bgp.hold_time", base + 3, "3..65535"},
		{"  asn: 65001\n", "  asn: 65001\n  hold_time: 6\n  keepalive: 3\n", "bgp.keepalive", base + 4, "hold_time/3"},
		{"  asn: 65001\n", "  asn: 65001\n  drain_deadline: 0\n", "bgp.drain_deadline", base + 3, "1..86400"},
		{"  asn: 65001\n", "  asn: 65001\n  bfd_interval_ms: 5\n", "bgp.bfd_interval_ms", base + 3, "10..10000"},
		{"  asn: 65001\n", "  asn: 65001\n  bfd_multiplier: 1\n", "bgp.bfd_multiplier", base + 3, "2..255"},
		{"  asn: 65001\n", "  asn: 65001\n  announce_delay_ms: 600001\n", "bgp.announce_delay_ms", base + 3, "0..600000"},
		{"['65001:100']", "['65536:1']", "bgp.communities[0]", base + 6, "ASN:VALUE"},
		{"{address: 10.0.1.254, asn: 65000}", "{address: 224.0.0.5, asn: 65000}", "bgp.neighbors[0].address", base + 8, "unicast"},
		{"{address: 10.0.1.254, asn: 65000}", "{address: 10.0.1.254}", "bgp.neighbors[0].asn", base + 8, "missing"},
		{"'fd00:1::fe'", "10.0.1.254", "bgp.neighbors[1].address", base + 9, "also bgp.neighbors[0]"},
		{"password: s3cret", "password: " + strings.Repeat("x", 81), "bgp.neighbors[1].password", base + 9, "81 characters"},
		{"port: 1179", "port: 0", "bgp.neighbors[1].port", base + 9, "1..65535"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			y := minimal + strings.Replace(bgpOK, tc.old, tc.new, 1)
			_, err := Parse([]byte(y), "config.yaml")
			var e *Error
			for _, x := range Errors(err) {
				if x.Path == tc.path {
					e = x
				}
			}
			if e == nil {
				t.Fatalf("no error at %s in %v\n%s", tc.path, err, y)
			}
			if e.Line != tc.line || !strings.Contains(e.Msg, tc.want) {
				t.Fatalf("got line %d %q, want line %d and %q", e.Line, e.Msg, tc.line, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "xxxxxxxx") {
				t.Fatalf("an error quotes the password: %v", err)
			}
		})
	}
}

// TestBGPRestartNeeded: a reload may change announce_delay_ms and
// drain_deadline, nothing else of bgp.
func TestBGPRestartNeeded(t *testing.T) {
	cur, err := Parse([]byte(minimal+bgpOK), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		old, new string
		restart  bool
	}{
		{"  asn: 65001\n", "  asn: 65001\n  drain_deadline: 9\n  announce_delay_ms: 100\n", false},
		{"  asn: 65001\n", "  asn: 65002\n", true},
		{"asn: 65000}\n", "asn: 65009}\n", true},
		{"['65001:100']", "['65001:101']", true},
		{"  asn: 65001\n", "  asn: 65001\n  hold_time: 9\n", true},
		{"  asn: 65001\n", "  asn: 65001\n  bfd_interval_ms: 300\n", true},
	} {
		next, err := Parse([]byte(minimal+strings.Replace(bgpOK, tc.old, tc.new, 1)), "b.yaml")
		if err != nil {
			t.Fatal(err)
		}
		err = RestartNeeded(cur, next)
		if (err != nil) != tc.restart || err != nil && !strings.Contains(err.Error(), "bgp changed") {
			t.Errorf("%q → %q: %v", tc.old, tc.new, err)
		}
	}
	if err := RestartNeeded(cur, cur); err != nil {
		t.Errorf("same config needs a restart: %v", err)
	}
}

// FuzzParseCommunity: any string parses or is refused; what parses
// prints back the same.
func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{"65001:100", "0:0", "65535:65535", "65536:1", ":", "1:", "+1:2", "1:2:3", "", "٣:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseCommunity(s)
		if err != nil {
			return
		}
		if back, err := ParseCommunity(formatCommunity(v)); err != nil || back != v {
			t.Fatalf("%q → %d → %q → %d %v", s, v, formatCommunity(v), back, err)
		}
	})
}

func formatCommunity(v uint32) string { return fmt.Sprintf("%d:%d", v>>16, v&0xffff) }
