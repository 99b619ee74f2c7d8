package bgp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAnnounceWithdraw runs two real speakers on loopback: a "router"
// that listens and a distributor that dials it and announces host
// routes, IPv4 and IPv6; the router receives exactly what Set asks for,
// and nothing once the distributor stops.
func TestAnnounceWithdraw(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lo := netip.MustParseAddr("127.0.0.1")
	port := freePort(t)
	router, err := Start(log, Config{ASN: 65000, RouterID: netip.MustParseAddr("10.255.0.1"), ListenPort: port,
		NextHop6: netip.MustParseAddr("fd00::1"), HoldTime: 3, Keepalive: 1,
		Neighbors: []Neighbor{{Address: lo, ASN: 65001, Port: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer router.Stop()
	d, err := Start(log, Config{ASN: 65001, RouterID: netip.MustParseAddr("10.255.0.2"),
		NextHop4: netip.MustParseAddr("10.0.1.1"), NextHop6: netip.MustParseAddr("fd00:1::1"), HoldTime: 3, Keepalive: 1,
		Communities: []uint32{65001<<16 | 100},
		Neighbors:   []Neighbor{{Address: lo, ASN: 65000, Port: port}}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop()
		}
	}()
	ctx := context.Background()
	waitFor(t, "the session", func() bool {
		ss, err := d.Sessions(ctx)
		return err == nil && len(ss) == 1 && ss[0].State == "established"
	})
	ss, _ := d.Sessions(ctx)
	if ss[0].HoldTime != 3 || ss[0].Since == "" {
		t.Fatalf("session %+v", ss[0])
	}
	v4 := netip.MustParsePrefix("10.0.0.100/32")
	v6 := netip.MustParsePrefix("fd00:100::100/128")
	received := func() []netip.Prefix {
		p, err := router.Received(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := d.Set([]netip.Prefix{v4, v6}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both prefixes at the router", func() bool { return slices.Equal(received(), []netip.Prefix{v4, v6}) })
	if err := d.Set([]netip.Prefix{v6}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the IPv4 prefix withdrawn", func() bool { return slices.Equal(received(), []netip.Prefix{v6}) })
	if got := d.Announced(); !slices.Equal(got, []netip.Prefix{v6}) {
		t.Fatalf("announced %v", got)
	}
	if err := d.Set([]netip.Prefix{v4, v6}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both again", func() bool { return slices.Equal(received(), []netip.Prefix{v4, v6}) })
	d.Stop()
	stopped = true
	waitFor(t, "everything withdrawn at stop", func() bool { return len(received()) == 0 })
	if err := d.Set([]netip.Prefix{v4}); err == nil {
		t.Fatal("Set after Stop succeeded")
	}
}

// TestSetRefuses: too many prefixes, an IPv6 prefix without an IPv6 next
// hop.
func TestSetRefuses(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := Start(log, Config{ASN: 65001, RouterID: netip.MustParseAddr("10.255.0.2"), HoldTime: 3, Keepalive: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if err := d.Set([]netip.Prefix{netip.MustParsePrefix("fd00::1/128")}); err == nil {
		t.Fatal("IPv6 prefix announced without bgp.next_hop6")
	}
	many := make([]netip.Prefix, MaxPrefixes+1)
	if err := d.Set(many); err == nil {
		t.Fatal("more than MaxPrefixes accepted")
	}
	if _, err := Start(log, Config{ASN: 1, RouterID: netip.MustParseAddr("::1")}); err == nil {
		t.Fatal("IPv6 router id accepted")
	}
}
