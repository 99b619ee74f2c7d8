package lab_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// TestMirrorBetweenDistributors: two real daemons with peers: mirror each
// other over the internal segment. The clients' traffic goes through d1
// (their route); every flow d1's data path makes appears in d2's BPF flow
// table, with its TM and origin, marked from-peer; both peers report synced.
func TestMirrorBetweenDistributors(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 2, TMs: 3})
	key := []byte("mirror-test-key-0123456789abcdef")
	addr := func(h *netlab.Host) string {
		return netip.AddrPortFrom(h.Links["int0"].Addr4.Addr(), 7947).String()
	}
	var ds []*lab.Distributor
	for i, h := range e.Topo.Distributors {
		other := e.Topo.Distributors[1-i]
		cfg := e.Config(lab.ConfigOptions{ID: h.Name, APIPath: lab.APIPath(e.Dir, h), Mutate: func(c *config.Config) {
			c.Peers = config.Peers{ID: uint32(i + 1), Listen: addr(h), Addresses: []string{addr(other)}, Key: key, Mirror: "all"}
		}})
		d, err := e.StartDistributorOn(context.Background(), h, cfg)
		if err != nil {
			t.Fatalf("distributor %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s output:\n%s", h.Name, d.Output())
			}
		})
		ds = append(ds, d)
	}
	rep := runLoad(t, e, false, loadgen.Options{KeepAlive: 50, Short: 4, UDPFlows: 8, Interval: 5 * time.Millisecond}, 3*time.Second)
	if rep.Errors != 0 {
		t.Fatalf("load errors %d %v", rep.Errors, rep.ErrorSamples)
	}
	flows := func(d *lab.Distributor) map[string]api.Flow {
		m := map[string]api.Flow{}
		err := d.API.Flows(context.Background(), api.FlowFilter{}, func(f api.Flow) error {
			m[f.Proto+" "+f.Src+" "+f.Dst] = f
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var why string
	waitFor(t, 20*time.Second, "d1's flows on d2", func() bool {
		f1, f2 := flows(ds[0]), flows(ds[1])
		own, missing := 0, 0
		for k, f := range f1 {
			if slices.Contains(f.Origin, "peer") {
				continue
			}
			own++
			g, ok := f2[k]
			if !ok || g.TM != f.TM || !slices.Contains(g.Origin, "peer") || !slices.Contains(g.Origin, f.Origin[0]) {
				missing++
			}
		}
		why = fmt.Sprintf("%d of d1's %d own flows not on d2 as from-peer with the same TM", missing, own)
		return own >= 50 && missing == 0
	})
	t.Log(why)
	for _, d := range ds {
		st, err := d.API.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) != 1 || st.Peers[0].State != "synced" {
			t.Fatalf("%s: peers %+v", d.Host.Name, st.Peers)
		}
		if st.Mirror["refused_auth"]+st.Mirror["refused_malformed"]+st.Mirror["install_errors"] != 0 {
			t.Fatalf("%s: mirror counters %v", d.Host.Name, st.Mirror)
		}
		t.Logf("%s: peer %+v; inserted %d, sent %d", d.Host.Name, st.Peers[0], st.Mirror["inserted"], st.Mirror["sent"])
	}
}

// routeVia points h's default IPv4 route at gw (the router's failover,
// done by hand).
func routeVia(t *testing.T, h *netlab.Host, gw netip.Addr) {
	t.Helper()
	l := h.Links["eth0"]
	rt := &netlink.Route{LinkIndex: l.Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: net.IP(gw.AsSlice())}
	if err := h.NS.Netlink().RouteReplace(rt); err != nil {
		t.Fatalf("route via %s in %s: %v", gw, h.Name, err)
	}
}

// TestFailoverToPeer: a router (the client's namespace, a multipath route
// to the VIP over d1 and d2 with the L4 hash) spreads 500 long-lived
// connections over both distributors, which mirror each other. d1 is killed
// with SIGKILL and its links go down; the router's route and the TMs' return
// route move to d2: 0 connections break. "maglev": both have the same
// config; "ring-differs": tm1 weighs 4 on d2, so no hash on d2 could
// recompute where d1's connections go (without mirroring, 71 of 200 broke).
func TestFailoverToPeer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights map[string]int
	}{
		{"maglev", nil},
		{"ring-differs", map[string]int{"tm1": 4}},
	} {
		t.Run(tc.name, func(t *testing.T) { failover(t, tc.weights) })
	}
}

func failover(t *testing.T, d2Weights map[string]int) {
	const conns = 500
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 2, TMs: 3})
	key := []byte("failover-key-0123456789abcdef012")
	addr := func(h *netlab.Host) string {
		return netip.AddrPortFrom(h.Links["int0"].Addr4.Addr(), 7947).String()
	}
	var ds []*lab.Distributor
	for i, h := range e.Topo.Distributors {
		other := e.Topo.Distributors[1-i]
		o := lab.ConfigOptions{ID: h.Name, APIPath: lab.APIPath(e.Dir, h), Mutate: func(c *config.Config) {
			c.Peers = config.Peers{ID: uint32(i + 1), Listen: addr(h), Addresses: []string{addr(other)}, Key: key, Mirror: "all"}
		}}
		if i == 1 {
			o.Weights = d2Weights
		}
		d, err := e.StartDistributorOn(context.Background(), h, e.Config(o))
		if err != nil {
			t.Fatalf("distributor %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s output:\n%s", h.Name, d.Output())
			}
		})
		ds = append(ds, d)
	}
	d1, d2 := e.Topo.Distributors[0], e.Topo.Distributors[1]
	router := e.Topo.Clients[0]
	if err := router.NS.Sysctl("net.ipv4.fib_multipath_hash_policy", "1"); err != nil {
		t.Fatal(err)
	}
	eth0 := router.Links["eth0"].Index
	vip := &net.IPNet{IP: net.IP(e.Topo.VIP4.AsSlice()), Mask: net.CIDRMask(32, 32)}
	if err := router.NS.Netlink().RouteReplace(&netlink.Route{Dst: vip, MultiPath: []*netlink.NexthopInfo{
		{LinkIndex: eth0, Gw: net.IP(d1.Links["ext0"].Addr4.Addr().AsSlice())},
		{LinkIndex: eth0, Gw: net.IP(d2.Links["ext0"].Addr4.Addr().AsSlice())},
	}}); err != nil {
		t.Fatalf("multipath route: %v", err)
	}
	o := loadgen.Options{KeepAlive: conns, Interval: 100 * time.Millisecond}
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	run := loadgen.Start(ctx, e.Target(false), o)
	var on [2]uint64
	waitFor(t, 30*time.Second, "each distributor's connections on the other", func() bool {
		for i, d := range ds {
			st, err := d.API.Stats(context.Background())
			if err != nil {
				return false
			}
			on[i] = st.Mirror["inserted"]
		}
		return on[0]+on[1] >= conns && on[0] > 0 && on[1] > 0
	})
	t.Logf("mirrored: %d entries into d1 (d2's connections), %d into d2 (d1's)", on[0], on[1])
	time.Sleep(time.Second)
	killed := time.Now()
	ds[0].Kill()
	for _, ifname := range []string{"ext0", "int0"} {
		l, err := d1.NS.Netlink().LinkByName(ifname)
		if err == nil {
			err = d1.NS.Netlink().LinkSetDown(l)
		}
		if err != nil {
			t.Fatalf("%s down: %v", ifname, err)
		}
	}
	if err := router.NS.Netlink().RouteReplace(&netlink.Route{Dst: vip, LinkIndex: eth0, Gw: net.IP(d2.Links["ext0"].Addr4.Addr().AsSlice())}); err != nil {
		t.Fatalf("route to d2: %v", err)
	}
	for _, tm := range e.Topo.TMs {
		routeVia(t, tm, d2.Links["int0"].Addr4.Addr())
	}
	t.Logf("d1 killed, routes moved in %v", time.Since(killed))
	rep := run.Wait()
	t.Logf("load: %s", rep)
	if rep.Errors != 0 || rep.FlowsMoved != 0 {
		t.Fatalf("after failover: %d errors %v, %d flows moved %v", rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples)
	}
	if rep.Connections != conns {
		t.Fatalf("%d TCP connections opened, want the %d long-lived ones (more: some broke and reopened)", rep.Connections, conns)
	}
}
