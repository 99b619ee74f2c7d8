package lab

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// gateways returns the next hops of the router's route to vip (nil: none).
func gateways(t *testing.T, r *netlab.EdgeRouter, vip netip.Addr) []string {
	t.Helper()
	family := netlink.FAMILY_V4
	if vip.Is6() {
		family = netlink.FAMILY_V6
	}
	rs, err := r.Host.NS.Netlink().RouteListFiltered(family, &netlink.Route{
		Dst: &net.IPNet{IP: net.IP(vip.AsSlice()), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	var gws []string
	for _, rt := range rs {
		if rt.Gw != nil {
			gws = append(gws, rt.Gw.String())
		}
		for _, nh := range rt.MultiPath {
			gws = append(gws, nh.Gw.String())
		}
	}
	slices.Sort(gws)
	return gws
}

// TestStaticRouter: the static router's route to each VIP has exactly the
// distributors joined and not lost, as next hops on their ext0 addresses,
// and the L4 hash is on.
func TestStaticRouter(t *testing.T) {
	topo := labtest.Topology(t, netlab.Spec{Distributors: 3, TMs: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nr, err := topo.AddEdgeRouter(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newStaticRouter(nr, topo.VIP4, topo.VIP6)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2, d3 := topo.Distributors[0], topo.Distributors[1], topo.Distributors[2]
	want := func(ds ...*netlab.Host) {
		t.Helper()
		for _, six := range []bool{false, true} {
			vip := topo.VIP4
			var gws []string
			for _, d := range ds {
				a := d.Links["ext0"].Addr4.Addr()
				if six {
					vip, a = topo.VIP6, d.Links["ext0"].Addr6.Addr()
				}
				gws = append(gws, a.String())
			}
			slices.Sort(gws)
			if got := gateways(t, nr, vip); !slices.Equal(got, gws) {
				t.Errorf("route to %s via %v, want %v", vip, got, gws)
			}
		}
	}
	for _, d := range []*netlab.Host{d2, d1, d3} {
		if err := r.join(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	want(d1, d2, d3)
	t.Logf("route to %s via %v; to %s via %v", topo.VIP4, gateways(t, nr, topo.VIP4), topo.VIP6, gateways(t, nr, topo.VIP6))
	if got := r.via(); !slices.Equal(got, []string{"d1", "d2", "d3"}) {
		t.Errorf("via %v", got)
	}
	if err := r.lost(ctx, d1); err != nil {
		t.Fatal(err)
	}
	want(d2, d3)
	if err := r.lost(ctx, d3); err != nil {
		t.Fatal(err)
	}
	want(d2)
	if err := r.join(ctx, d1); err != nil {
		t.Fatal(err)
	}
	want(d1, d2)
	if err := r.lost(ctx, d1); err != nil {
		t.Fatal(err)
	}
	if err := r.lost(ctx, d2); err != nil {
		t.Fatal(err)
	}
	want()
	for _, key := range []string{"ipv4", "ipv6"} {
		var b []byte
		if err := nr.Host.NS.Do(func() (err error) {
			b, err = os.ReadFile("/proc/sys/net/" + key + "/fib_multipath_hash_policy")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s fib_multipath_hash_policy %q, want 1 (L4)", key, b)
		}
	}
}

// TestDistCounters: a distributor's TM and service counters stay
// monotonic across a restart that starts them from 0, and rates are over
// at least minRateInterval.
func TestDistCounters(t *testing.T) {
	c := newDistCounters()
	st := func(tm, svc uint64) api.Stats {
		return api.Stats{TrafficManagers: []api.TMStats{{ID: "tm1", NewFlows: tm, Packets: 10 * tm}},
			Services: []api.ServiceStats{{Name: "web", NewFlows: svc, Packets: 10 * svc}}}
	}
	t0 := time.Unix(1000, 0)
	c.update(st(100, 100), t0)
	if n, _ := c.update(st(150, 150), t0.Add(time.Second)); n != 50 {
		t.Errorf("rate %v, want 50/s", n)
	}
	if n, _ := c.update(st(160, 160), t0.Add(time.Second+10*time.Millisecond)); n != 50 {
		t.Errorf("rate over 10ms: %v, want the last one (50/s)", n)
	}
	c.update(st(20, 20), t0.Add(3*time.Second)) // restarted: counters from 0
	if got := c.base["tm1"].NewFlows + c.last["tm1"].NewFlows; got != 180 {
		t.Errorf("tm1 new flows across the restart: %d, want 160+20", got)
	}
	if got := c.svcTotal()[0]; got != 180 {
		t.Errorf("service new flows across the restart: %d, want 180", got)
	}
	// A service missing from one answer (a reload) is not a restart.
	c.update(api.Stats{}, t0.Add(4*time.Second))
	if n, _ := c.update(st(30, 30), t0.Add(5*time.Second)); c.svcTotal()[0] != 190 || n != 10 {
		t.Errorf("after an answer without the service: total %d (want 190), rate %v (want 10 over 1s)", c.svcTotal()[0], n)
	}
}
