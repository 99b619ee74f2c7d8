package lab_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/signal"
)

// TestTMHostBothFamilies: each TM is configured as one host with an IPv4
// and an IPv6 address (traffic_managers[].addresses). Both resolve to the
// TM's one MAC, IPv4 and IPv6 connections go through it, and its signal
// frames are accepted. (Before, a TM with both families took two entries
// that shared a MAC, and their signals were refused.)
func TestTMHostBothFamilies(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	d := startDist(t, e, lab.ConfigOptions{IPv6: true, Mutate: func(c *config.Config) {
		for i := range c.TrafficManagers {
			tm := &c.TrafficManagers[i]
			h := e.Topo.TMs[i]
			tm.Address = netip.Addr{}
			tm.Addresses = []netip.Addr{lab.TMAddr4(h), h.Links["eth0"].Addr6.Addr()}
		}
	}})
	waitFor(t, 10*time.Second, "both TMs ready", func() bool {
		st := stats(t, d)
		for _, tm := range st.TrafficManagers {
			if !tm.Ready || len(tm.Addresses) != 2 {
				return false
			}
		}
		return len(st.TrafficManagers) == 2
	})
	for _, tm := range stats(t, d).TrafficManagers {
		h := e.Topo.TMs[0]
		if tm.ID == "tm2" {
			h = e.Topo.TMs[1]
		}
		if tm.MAC != h.Links["eth0"].MAC.String() {
			t.Errorf("%s: MAC %s, want its host's %s", tm.ID, tm.MAC, h.Links["eth0"].MAC)
		}
	}
	for _, v6 := range []bool{false, true} {
		rep := runLoad(t, e, v6, loadgen.Options{KeepAlive: 4, Short: 2, UDPFlows: 4, Interval: 5 * time.Millisecond}, 2*time.Second)
		if rep.Errors != 0 || rep.FlowsMoved != 0 || len(rep.PerTM) != 2 || rep.HTTPRequests == 0 {
			t.Fatalf("ipv6 %v: errors %d %v, moved %d, TMs %v, %d HTTP requests", v6, rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.PerTM, rep.HTTPRequests)
		}
	}
	// A signal frame from tm1's host is tm1's.
	src := netip.AddrPortFrom(e.Topo.Clients[0].Links["eth0"].Addr6.Addr(), 35200)
	vip := netip.AddrPortFrom(e.Topo.VIP6, 80)
	sendFrame(t, e.Topo.TMs[0], distMAC(e), signal.Memorize{Key: signal.Key{Src: src.Addr(), Dst: vip.Addr(),
		SrcPort: src.Port(), DstPort: vip.Port(), Proto: flow.ProtoTCP}})
	waitFor(t, 5*time.Second, "sig_memorize", func() bool { return counter(t, d, "sig_memorize") == 1 })
	if fl, ok := flowOf(t, d, src, vip); !ok || fl.TM != "tm1" {
		t.Fatalf("memorized flow: %+v, present %v", fl, ok)
	}
	for _, name := range []string{"sig_refused_unknown_mac", "sig_refused_not_ready", "sig_refused_wrong_port"} {
		if n := counter(t, d, name); n != 0 {
			t.Errorf("%s = %d", name, n)
		}
	}
}

// TestTMHostAddressesOfTwoHosts: a TM whose addresses belong to two hosts
// (two MACs) is not ready, and says which address has which MAC; it gets
// no flows.
func TestTMHostAddressesOfTwoHosts(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	h1, h2 := e.Topo.TMs[0], e.Topo.TMs[1]
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
		c.TrafficManagers[0].Address = netip.Addr{}
		c.TrafficManagers[0].Addresses = []netip.Addr{lab.TMAddr4(h1), h2.Links["eth0"].Addr6.Addr()}
	}})
	want := []string{h1.Links["eth0"].MAC.String(), h2.Links["eth0"].MAC.String(), "one TM is one host"}
	waitFor(t, 15*time.Second, "tm1 not ready, naming both MACs", func() bool {
		for _, tm := range stats(t, d).TrafficManagers {
			if tm.ID != "tm1" || tm.Ready {
				continue
			}
			for _, w := range want {
				if !strings.Contains(tm.Reason, w) {
					return false
				}
			}
			return true
		}
		return false
	})
	rep := runLoad(t, e, false, loadgen.Options{KeepAlive: 2, Short: 2, Interval: 5 * time.Millisecond}, time.Second)
	if rep.Errors != 0 || len(rep.PerTM) != 1 || rep.PerTM["tm2"].Requests == 0 {
		t.Fatalf("errors %d %v, TMs %v: want every flow on tm2", rep.Errors, rep.ErrorSamples, rep.PerTM)
	}
}
