package distributor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/bgp"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBGPAnnouncements: the daemon (over the model) with a real GoBGP
// router on loopback: both VIPs announced once the gate is passed; the
// IPv4 VIP withdrawn when a reload disables every TM of its service and
// announced again when one is back; an IPv6 VIP held back without
// next_hop6 would say so; a drain withdraws everything and ends idle
// (the model forwards nothing).
func TestBGPAnnouncements(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	router, err := bgp.Start(log, bgp.Config{ASN: 65000, RouterID: netip.MustParseAddr("10.255.0.1"), ListenPort: port,
		NextHop6: netip.MustParseAddr("fd00::1"), HoldTime: 3, Keepalive: 1,
		Neighbors: []bgp.Neighbor{{Address: lo, ASN: 65001, Port: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer router.Stop()
	bgpYAML := fmt.Sprintf("bgp:\n  asn: 65001\n  router_id: 10.0.1.1\n  next_hop: 10.0.1.1\n  next_hop6: 'fd00:1::1'\n  drain_deadline: 60\n  neighbors: [{address: 127.0.0.1, asn: 65000, port: %d}]\n", port)
	const svcs = "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2]}\n" +
		"  - {name: web6, vip: 'fd00:100::100', port: 80, protocol: tcp, traffic_managers: [tm1]}\n"
	const tms = "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n"
	h := newHarness(t, tms, svcs, bgpYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.d.StartBGP(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	defer h.d.StopBGP()
	v4, v6 := netip.MustParsePrefix("10.0.0.100/32"), netip.MustParsePrefix("fd00:100::100/128")
	received := func() []netip.Prefix {
		p, err := router.Received(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	status := func() api.BGPStatus {
		st, err := h.d.BGP(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitUntil(t, "both VIPs at the router", func() bool { return slices.Equal(received(), []netip.Prefix{v4, v6}) })
	st := status()
	if st.State != "announcing" || st.FirstAnnounce == "" || len(st.VIPs) != 2 || !st.VIPs[0].Announced || !st.VIPs[1].Announced {
		t.Fatalf("status %+v", st)
	}

	// Every TM disabled: neither VIP has an eligible TM.
	h.reload(t, "  - {id: tm1, address: 10.1.0.11, state: disabled}\n  - {id: tm2, address: 10.1.0.12, state: disabled}\n", svcs)
	waitUntil(t, "both VIPs withdrawn", func() bool { return len(received()) == 0 })
	for _, v := range status().VIPs {
		if v.Announced || v.Reason != "no eligible traffic manager" {
			t.Fatalf("VIP %+v", v)
		}
	}
	// tm2 back: only the IPv4 VIP (web6's pool is tm1 alone).
	h.reload(t, "  - {id: tm1, address: 10.1.0.11, state: disabled}\n  - {id: tm2, address: 10.1.0.12}\n", svcs)
	waitUntil(t, "the IPv4 VIP back", func() bool { return slices.Equal(received(), []netip.Prefix{v4}) })
	st = status()
	if st.Announcements != 3 || st.Withdrawals != 2 {
		t.Fatalf("announcements %d withdrawals %d, want 3 and 2", st.Announcements, st.Withdrawals)
	}

	st, err = h.d.Drain(0)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "draining" || st.Drain == nil {
		t.Fatalf("after Drain: %+v", st)
	}
	waitUntil(t, "the drain's withdrawal", func() bool { return len(received()) == 0 })
	select {
	case <-h.d.Drained():
	case <-time.After(30 * time.Second):
		t.Fatal("drain did not end")
	}
	st = status()
	if st.State != "drained" || st.Drain.EndedBy != "idle" || st.Drain.Packets != 0 {
		t.Fatalf("after the drain: %+v %+v", st, st.Drain)
	}
	for _, v := range st.VIPs {
		if v.Announced || v.Reason != "draining" {
			t.Fatalf("VIP %+v during the drain", v)
		}
	}
}

// TestBGPOff: without neighbors there is no speaker, and the API's
// answer is ErrBGPOff (404).
func TestBGPOff(t *testing.T) {
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n", "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1]}\n", "")
	if err := h.d.StartBGP(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.BGP(context.Background()); err != api.ErrBGPOff {
		t.Fatalf("BGP() error %v, want ErrBGPOff", err)
	}
	if _, err := h.d.Drain(0); err != api.ErrBGPOff {
		t.Fatalf("Drain() error %v", err)
	}
	if h.d.Drained() != nil {
		t.Fatal("Drained without BGP is not nil")
	}
}
