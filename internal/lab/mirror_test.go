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

// TestFailoverToPeer: d1 carries 200 long-lived connections and mirrors them
// to d2, whose Maglev ring differs (tm1 weighs 4 there), so no hash on d2
// could recompute where they go; d1 is killed with SIGKILL and its links go
// down, the clients' and TMs' routes move to d2: 0 connections break.
func TestFailoverToPeer(t *testing.T) {
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
			o.Weights = map[string]int{"tm1": 4}
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
	o := loadgen.Options{KeepAlive: 200, Interval: 20 * time.Millisecond}
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	run := loadgen.Start(ctx, e.Target(false), o)
	waitFor(t, 20*time.Second, "d1's connections on d2", func() bool {
		st, err := ds[1].API.Stats(context.Background())
		return err == nil && st.Mirror["inserted"] >= 200
	})
	time.Sleep(time.Second)
	killed := time.Now()
	ds[0].Kill()
	d1 := e.Topo.Distributors[0]
	for _, ifname := range []string{"ext0", "int0"} {
		l, err := d1.NS.Netlink().LinkByName(ifname)
		if err == nil {
			err = d1.NS.Netlink().LinkSetDown(l)
		}
		if err != nil {
			t.Fatalf("%s down: %v", ifname, err)
		}
	}
	d2 := e.Topo.Distributors[1]
	for _, c := range e.Topo.Clients {
		routeVia(t, c, d2.Links["ext0"].Addr4.Addr())
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
	if rep.Connections < 200 || rep.Connections > 210 {
		t.Fatalf("%d TCP connections opened, want the 200 long-lived ones (reopened ones mean some broke)", rep.Connections)
	}
}
