package lab_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

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

// TestFailoverToPeer: a router (the client's namespace, a multipath route
// to the VIP over d1 and d2 with the L4 hash) spreads 500 long-lived
// connections over both distributors, which mirror each other. d1 is killed
// with SIGKILL and its links go down; the router's route and the TMs' return
// route move to d2 (pair.fail): 0 connections break. "maglev": both have the same
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
	p := startPair(t, netlab.Spec{Clients: 1, TMs: 3}, func(i int, o *lab.ConfigOptions) {
		if i == 1 {
			o.Weights = d2Weights
		}
	})
	e, ds := p.e, p.ds
	p.spread()
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
	p.fail(0)
	rep := run.Wait()
	t.Logf("load: %s", rep)
	if rep.Errors != 0 || rep.FlowsMoved != 0 {
		t.Fatalf("after failover: %d errors %v, %d flows moved %v", rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples)
	}
	if rep.Connections != conns {
		t.Fatalf("%d TCP connections opened, want the %d long-lived ones (more: some broke and reopened)", rep.Connections, conns)
	}
}
