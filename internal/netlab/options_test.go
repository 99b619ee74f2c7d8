package netlab_test

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// TestTopologyOptions: MTU, queues and qdisc reach every veth end and the
// bridges, GRO is on at every end with a qdisc, and TCP works across the
// 9000-byte links (lab.TestJumboFramesEndToEnd checks the segment sizes).
func TestTopologyOptions(t *testing.T) {
	labtest.Require(t)
	topo := labtest.Topology(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1, MTU: 9000, Queues: 2, Qdisc: "pfifo"})
	if topo.MTU() != 9000 {
		t.Fatalf("topology MTU %d", topo.MTU())
	}
	check := func(ns *netlab.NS, name string, veth bool) {
		t.Helper()
		l, err := ns.Netlink().LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		a := l.Attrs()
		if a.MTU != 9000 {
			t.Errorf("%s/%s: MTU %d, want 9000", ns.Name, name, a.MTU)
		}
		if !veth {
			return
		}
		if a.NumTxQueues != 2 || a.NumRxQueues != 2 {
			t.Errorf("%s/%s: %d TX and %d RX queues, want 2 and 2", ns.Name, name, a.NumTxQueues, a.NumRxQueues)
		}
		qs, err := ns.Netlink().QdiscList(l)
		if err != nil {
			t.Fatal(err)
		}
		root := ""
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT {
				root = q.Type()
			}
		}
		if root != "pfifo" {
			t.Errorf("%s/%s: root qdisc %q, want pfifo", ns.Name, name, root)
		}
		var gro bool
		if err := ns.Do(func() error {
			var err error
			gro, err = netlab.GRO(name)
			return err
		}); err != nil || !gro {
			t.Errorf("%s/%s: GRO %v (%v), want on", ns.Name, name, gro, err)
		}
	}
	n := 0
	for _, h := range topo.Hosts() {
		for _, l := range h.Links {
			check(h.NS, l.Name, true)
			check(topo.Switch, l.Port, true)
			n += 2
		}
	}
	if n < 10 {
		t.Fatalf("checked %d veth ends, want the 10 of 1 client, 1 distributor (3 links) and 1 TM", n)
	}
	t.Logf("checked %d veth ends and 3 bridges", n)
	for _, seg := range []string{netlab.SegExt, netlab.SegInt, netlab.SegSrv} {
		check(topo.Switch, seg, false)
	}

	// A TCP exchange between c1 and d1 across the bridge.
	d1 := topo.Distributors[0]
	addr := netip.AddrPortFrom(d1.Links["ext0"].Addr4.Addr(), 7100)
	ln := listen(t, d1.NS, addr)
	if got := exchange(t, topo.Clients[0].NS, ln, addr); !got.IsValid() {
		t.Fatal("no exchange")
	}
}

// TestSpecRefused: out-of-range options are refused with a clear error
// before anything is made.
func TestSpecRefused(t *testing.T) {
	for _, s := range []netlab.Spec{{MTU: 67}, {MTU: 70000}, {Queues: -1}, {Queues: 65}, {Qdisc: "htb"}} {
		if _, err := netlab.Build(t.Context(), s); err == nil {
			t.Errorf("spec %+v accepted", s)
		}
	}
}
