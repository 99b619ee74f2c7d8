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
