package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// TestRoundRobinE2E: 4 TMs in namespaces, short TCP connections through
// the XDP program: round-robin gives each TM the same share, weighted
// round-robin (weights 1:2:3:4) shares by weight. Each CPU walks the ring
// on its own, so a share is exact only per ring's worth of new flows per
// CPU: the tolerance is ±0.03 of the whole (a hash would give ±0.04 at
// 4σ over 1,500 connections).
func TestRoundRobinE2E(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		weights map[string]int
	}{
		{config.PolicyRoundRobin, map[string]int{"tm1": 1, "tm2": 2, "tm3": 3, "tm4": 4}},
		{config.PolicyWeightedRoundRobin, map[string]int{"tm1": 1, "tm2": 2, "tm3": 3, "tm4": 4}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
			d := startDist(t, e, lab.ConfigOptions{Weights: tc.weights, Mutate: func(c *config.Config) {
				for i := range c.Services {
					c.Services[i].Policy = tc.policy
				}
			}})
			rep := runLoad(t, e, false, loadgen.Options{Short: 16}, 4*time.Second)
			if rep.Errors != 0 {
				t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
			}
			var total uint64
			for _, c := range rep.PerTM {
				total += c.ShortConns
			}
			if total < 1500 {
				t.Fatalf("only %d short connections: too few to judge", total)
			}
			for id, w := range tc.weights {
				want := 0.25
				if tc.policy == config.PolicyWeightedRoundRobin {
					want = float64(w) / 10
				}
				got := float64(rep.PerTM[id].ShortConns) / float64(total)
				t.Logf("%s: weight %d, share %.3f (want %.3f)", id, w, got, want)
				if got < want-0.03 || got > want+0.03 {
					t.Errorf("%s: share %.3f, want %.3f ± 0.03", id, got, want)
				}
			}
			if s := stats(t, d); len(s.Services) == 0 {
				t.Fatal("no services in stats")
			}
		})
	}
}

// TestFastestRTTE2E: 4 TMs in namespaces with fastest-rtt over an HTTP
// health check of their own (port healthPort, in each TM's namespace);
// tm1's health endpoint answers 40 ms late. Its share of real short
// connections falls far below the others' (weights from damped RTTs);
// no connection fails.
func TestFastestRTTE2E(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	for _, h := range e.Topo.TMs {
		delay := time.Duration(0)
		if h.Name == "tm1" {
			delay = 40 * time.Millisecond
		}
		addr := netip.AddrPortFrom(lab.TMAddr4(h), healthPort).String()
		var l net.Listener
		if err := h.NS.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
			t.Fatalf("health endpoint on %s: %v", addr, err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(delay) }), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { srv.Close() })
	}
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
		for i := range c.Services {
			if c.Services[i].Name == "web" {
				c.Services[i].Policy = config.PolicyFastestRTT
				c.Services[i].Health = &config.Health{Type: config.HealthHTTP, Port: healthPort, Path: "/", IntervalMS: 100, TimeoutMS: 100, Rise: 1, Fall: 3}
			}
		}
	}})
	// Wait for the measured weights to be written: tm1's weight falls.
	waitFor(t, 15*time.Second, "measured weights in the log", func() bool { return strings.Contains(d.Output(), "measured weights") })
	time.Sleep(2 * time.Second) // a few more probes: the damped RTTs settle
	rep := runLoad(t, e, false, loadgen.Options{Short: 16}, 4*time.Second)
	if rep.Errors != 0 {
		t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
	}
	var total uint64
	for _, c := range rep.PerTM {
		total += c.ShortConns
	}
	if total < 1000 {
		t.Fatalf("only %d connections", total)
	}
	slowShare := float64(rep.PerTM["tm1"].ShortConns) / float64(total)
	t.Logf("slow tm1's share %.3f of %d connections; per TM %v", slowShare, total, rep.PerTM)
	if slowShare > 0.1 {
		t.Errorf("slow tm1 got %.3f of new connections, want < 0.1 (a quarter without the policy)", slowShare)
	}
	for _, id := range []string{"tm2", "tm3", "tm4"} {
		if sh := float64(rep.PerTM[id].ShortConns) / float64(total); sh < 0.25 {
			t.Errorf("%s got %.3f, want > 0.25", id, sh)
		}
	}
}

// TestLeastConnectionsE2E: 4 TMs in namespaces, long-lived keep-alive TCP
// connections through the distributor. least-connections spreads them
// evenly, weighted-least-connections by weight 1:2:3:4 (both within ±0.05
// of the promised share). Loaded: tm1 alone holds 60 UDP flows of the echo
// service (its pool is tm1 only) while 60 connections of the web service
// (least-connections over all four) open: tm1 gets a new one only when
// both choices are tm1 (1/16 of them), against a quarter without the
// policy.
func TestLeastConnectionsE2E(t *testing.T) {
	shares := func(rep loadgen.Report) (map[string]float64, uint64) {
		var total uint64
		for _, c := range rep.PerTM {
			total += c.KeepAliveConns
		}
		out := map[string]float64{}
		for id, c := range rep.PerTM {
			out[id] = float64(c.KeepAliveConns) / float64(max(total, 1))
		}
		return out, total
	}
	weights := map[string]int{"tm1": 1, "tm2": 2, "tm3": 3, "tm4": 4}
	for _, tc := range []struct {
		policy string
		conns  int
	}{{config.PolicyLeastConnections, 80}, {config.PolicyWeightedLeastConnections, 100}} {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
			startDist(t, e, lab.ConfigOptions{Weights: weights, Mutate: func(c *config.Config) {
				for i := range c.Services {
					c.Services[i].Policy = tc.policy
				}
			}})
			rep := runLoad(t, e, false, loadgen.Options{KeepAlive: tc.conns, Interval: 50 * time.Millisecond}, 3*time.Second)
			if rep.Errors != 0 {
				t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
			}
			got, total := shares(rep)
			if total != uint64(tc.conns) {
				t.Fatalf("%d connections answered, want %d", total, tc.conns)
			}
			for id, w := range weights {
				want := 0.25
				if tc.policy == config.PolicyWeightedLeastConnections {
					want = float64(w) / 10
				}
				t.Logf("%s: weight %d, %d connections, share %.3f (want %.3f)", id, w, rep.PerTM[id].KeepAliveConns, got[id], want)
				if got[id] < want-0.05 || got[id] > want+0.05 {
					t.Errorf("%s: share %.3f, want %.3f ± 0.05", id, got[id], want)
				}
			}
		})
	}
	t.Run("loaded", func(t *testing.T) {
		e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
		startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
			for i := range c.Services {
				switch c.Services[i].Name {
				case "web":
					c.Services[i].Policy = config.PolicyLeastConnections
				case "echo":
					c.Services[i].TrafficManagers = []string{"tm1"}
				}
			}
		}})
		udp := loadgen.Options{UDPFlows: 60, Interval: 100 * time.Millisecond}
		e.ClientDialer(0, &udp)
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		held := loadgen.Start(ctx, e.Target(false), udp)
		time.Sleep(1500 * time.Millisecond) // the UDP flows open in their first interval; the report checks them
		rep := runLoad(t, e, false, loadgen.Options{KeepAlive: 60, Interval: 50 * time.Millisecond}, 3*time.Second)
		cancel()
		urep := held.Wait()
		if u := urep.PerTM["tm1"].UDPFlows; u != 60 {
			t.Fatalf("tm1 held %d UDP flows, want 60 (%v)", u, urep.ErrorSamples)
		}
		if rep.Errors != 0 {
			t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
		}
		got, total := shares(rep)
		t.Logf("loaded tm1's share %.3f of %d connections; per TM %v", got["tm1"], total, rep.PerTM)
		if total != 60 {
			t.Fatalf("%d connections answered, want 60", total)
		}
		if got["tm1"] > 0.15 {
			t.Errorf("loaded tm1 got %.3f of new connections, want < 0.15 (1/16 expected; a quarter without the policy)", got["tm1"])
		}
		for _, id := range []string{"tm2", "tm3", "tm4"} {
			if got[id] < 0.25 {
				t.Errorf("%s got %.3f, want > 0.25", id, got[id])
			}
		}
	})
}

// TestPacketRateE2E: 4 TMs in namespaces; web with packet-rate. tm1 alone
// serves the echo service (its pool is tm1 only) under a heavy UDP load,
// so the data path sees it take far more packets than the others: its
// measured weight falls and it gets far less than a quarter of the web's
// new connections.
func TestPacketRateE2E(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
		for i := range c.Services {
			switch c.Services[i].Name {
			case "web":
				c.Services[i].Policy = config.PolicyPacketRate
			case "echo":
				c.Services[i].TrafficManagers = []string{"tm1"}
			}
		}
	}})
	udp := loadgen.Options{UDPFlows: 32}
	e.ClientDialer(0, &udp)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	held := loadgen.Start(ctx, e.Target(false), udp)
	waitFor(t, 10*time.Second, "measured weights in the log", func() bool { return strings.Contains(d.Output(), "measured weights") })
	time.Sleep(2 * time.Second) // a few more samples: the damped rates settle
	rep := runLoad(t, e, false, loadgen.Options{Short: 8}, 3*time.Second)
	cancel()
	urep := held.Wait()
	if urep.PerTM["tm1"].Requests == 0 {
		t.Fatalf("no UDP load on tm1: %v", urep.ErrorSamples)
	}
	if rep.Errors != 0 {
		t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
	}
	var total uint64
	for _, c := range rep.PerTM {
		total += c.ShortConns
	}
	if total < 500 {
		t.Fatalf("only %d connections", total)
	}
	share := float64(rep.PerTM["tm1"].ShortConns) / float64(total)
	t.Logf("tm1 under %d UDP requests: share %.3f of %d web connections; per TM %v", urep.PerTM["tm1"].Requests, share, total, rep.PerTM)
	if share > 0.15 {
		t.Errorf("loaded tm1 got %.3f of new connections, want < 0.15 (a quarter without the policy)", share)
	}
	for _, id := range []string{"tm2", "tm3", "tm4"} {
		if sh := float64(rep.PerTM[id].ShortConns) / float64(total); sh < 0.25 {
			t.Errorf("%s got %.3f, want > 0.25", id, sh)
		}
	}
}

// crPort is the completion-rate test's service port: a line server of the
// test's own in each TM's namespace.
const crPort = 8082

// TestCompletionRateE2E: 4 TMs in namespaces, each with a line server of
// the test's own on crPort that answers its name and closes; tm1's closes
// with a reset (SO_LINGER 0). The distributor sees tm1's flows end by
// reset, the others' by FIN: with completion-rate tm1's weight falls and
// it gets far less than a quarter of the new connections.
func TestCompletionRateE2E(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	for _, h := range e.Topo.TMs {
		var l net.Listener
		if err := h.NS.Do(func() (err error) { l, err = net.Listen("tcp", fmt.Sprintf(":%d", crPort)); return err }); err != nil {
			t.Fatalf("line server in %s: %v", h.Name, err)
		}
		t.Cleanup(func() { l.Close() })
		reset := h.Name == "tm1"
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
						fmt.Fprintf(c, "%s\n", h.Name)
					}
					if reset {
						_ = c.(*net.TCPConn).SetLinger(0)
					}
					c.Close()
				}()
			}
		}()
	}
	d := startDist(t, e, lab.ConfigOptions{Timeouts: &config.Timeouts{TCPFin: 1, TCPClose: 1},
		ExtraServices: []config.Service{{Name: "cr", VIP: e.Topo.VIP4, Port: crPort, Protocol: config.ProtocolTCP,
			TrafficManagers: []string{"tm1", "tm2", "tm3", "tm4"}, Policy: config.PolicyCompletionRate}}})
	var o loadgen.Options
	e.ClientDialer(0, &o)
	// round opens n connections one after the other and counts the TM
	// names answered (tm1's answer may be lost to its reset: counted
	// under "").
	round := func(n int) map[string]int {
		got := map[string]int{}
		addr := netip.AddrPortFrom(e.Topo.VIP4, crPort).String()
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := o.Dial(ctx, "tcp", addr)
			cancel()
			if err != nil {
				got["(error)"]++
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "hello\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			got[strings.TrimSpace(line)]++
		}
		return got
	}
	before := round(400)
	t.Logf("before the measured weights: %v", before)
	waitFor(t, 10*time.Second, "measured weights in the log", func() bool { return strings.Contains(d.Output(), "measured weights") })
	for range 3 { // more samples: the damped shares settle
		round(100)
		time.Sleep(time.Second)
	}
	after := round(400)
	t.Logf("after: %v", after)
	good := after["tm2"] + after["tm3"] + after["tm4"]
	if good < 300 {
		t.Errorf("tm2..tm4 answered %d of 400 connections, want > 300", good)
	}
	// tm1's connections: answered (its line may arrive before the reset)
	// or lost to the reset.
	if bad := 400 - good; bad > 40 {
		t.Errorf("tm1 (resets) got about %d of 400 new connections, want < 40 (a quarter without the policy)", bad)
	}
}

// agentStatsPort is where the ratio-dynamic test's agents answer stats.
const agentStatsPort = 7070

// TestRatioDynamicE2E: 4 TMs in namespaces, each with a real agent whose
// stats listener the distributor polls (agent_stats). tm1 alone serves the
// echo service (its pool is tm1 only) and holds 60 UDP flows, which its
// agent reports as owned: with ratio-dynamic on the web service tm1's
// weight falls and it gets far less than a quarter of the web's new
// keep-alive connections.
func TestRatioDynamicE2E(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	stats := map[string]string{}
	for _, h := range e.Topo.TMs {
		addr := netip.AddrPortFrom(lab.TMAddr4(h), agentStatsPort).String()
		a, err := e.StartAgent(context.Background(), h, "--stats-listen", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Stop() })
		stats[h.Name] = addr
	}
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
		for i := range c.TrafficManagers {
			c.TrafficManagers[i].AgentStats = stats[c.TrafficManagers[i].ID]
		}
		for i := range c.Services {
			switch c.Services[i].Name {
			case "web":
				c.Services[i].Policy = config.PolicyRatioDynamic
			case "echo":
				c.Services[i].TrafficManagers = []string{"tm1"}
			}
		}
	}})
	udp := loadgen.Options{UDPFlows: 60, Interval: 100 * time.Millisecond}
	e.ClientDialer(0, &udp)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	held := loadgen.Start(ctx, e.Target(false), udp)
	waitFor(t, 15*time.Second, "measured weights with tm1 light in the log", func() bool {
		return strings.Contains(d.Output(), "measured weights") && !strings.Contains(lastLine(d.Output(), "measured weights"), "tm1:100")
	})
	time.Sleep(2 * time.Second) // a few more reports: the damped loads settle
	t.Logf("%s", lastLine(d.Output(), "measured weights"))
	rep := runLoad(t, e, false, loadgen.Options{KeepAlive: 60, Interval: 100 * time.Millisecond}, 2*time.Second)
	cancel()
	if u := held.Wait().PerTM["tm1"].UDPFlows; u != 60 {
		t.Fatalf("tm1 held %d UDP flows, want 60", u)
	}
	if rep.Errors != 0 {
		t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
	}
	var total uint64
	for _, c := range rep.PerTM {
		total += c.KeepAliveConns
	}
	share := float64(rep.PerTM["tm1"].KeepAliveConns) / float64(max(total, 1))
	t.Logf("loaded tm1: %.3f of %d connections; per TM %v", share, total, rep.PerTM)
	if total != 60 {
		t.Fatalf("%d connections answered, want 60", total)
	}
	if share > 0.15 {
		t.Errorf("loaded tm1 got %.3f of new connections, want < 0.15 (a quarter without the policy)", share)
	}
}

// lastLine is the last line of out that holds s ("" if none).
func lastLine(out, s string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// TestPriorityGroupsE2E: 4 TMs in namespaces with health checks; web has
// three priority groups: [tm1, tm2] (min_eligible 2), [tm3], [tm4]. Real
// short connections go to tm1 and tm2 only; with tm1's health endpoint
// stopped, to tm3 only (the pool has 1 < 2); with tm3's stopped too, to
// tm4 only; with tm1's back, to tm1 and tm2 again.
func TestPriorityGroupsE2E(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	hls := map[string]*healthListener{}
	for _, h := range e.Topo.TMs {
		hl := &healthListener{h: h}
		hl.start(t)
		hls[h.Name] = hl
		t.Cleanup(hl.stop)
	}
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
		for i := range c.Services {
			if c.Services[i].Name == "web" {
				s := &c.Services[i]
				s.TrafficManagers, s.MinEligible = []string{"tm1", "tm2"}, 2
				s.Policy = config.PolicyPriorityGroups
				s.PriorityGroups = []config.PriorityGroup{{TrafficManagers: []string{"tm3"}, MinEligible: 1}, {TrafficManagers: []string{"tm4"}, MinEligible: 1}}
				s.Health = &config.Health{Type: config.HealthTCP, Port: healthPort, IntervalMS: 200, TimeoutMS: 200, Rise: 2, Fall: 2}
			}
		}
	}})
	for _, step := range []struct {
		stop, start string
		eligible    string
		want        []string
	}{
		{"", "", "tm1,tm2", []string{"tm1", "tm2"}},
		{"tm1", "", "tm3", []string{"tm3"}},
		{"tm3", "", "tm4", []string{"tm4"}},
		{"", "tm1", "tm1,tm2", []string{"tm1", "tm2"}},
	} {
		if step.stop != "" {
			hls[step.stop].stop()
		}
		if step.start != "" {
			hls[step.start].start(t)
		}
		waitFor(t, 10*time.Second, "eligible "+step.eligible, func() bool { return eligibleOf(t, d, "web") == step.eligible })
		rep := runLoad(t, e, false, loadgen.Options{Short: 4}, time.Second)
		if rep.Errors != 0 {
			t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
		}
		var total uint64
		for id, c := range rep.PerTM {
			total += c.ShortConns
			if c.ShortConns > 0 && !slices.Contains(step.want, id) {
				t.Errorf("stop %q start %q: %s got %d connections, want only %v", step.stop, step.start, id, c.ShortConns, step.want)
			}
		}
		for _, id := range step.want {
			if rep.PerTM[id].ShortConns == 0 {
				t.Errorf("stop %q start %q: %s got no connection of %d", step.stop, step.start, id, total)
			}
		}
		t.Logf("stop %q start %q: eligible %s, %d connections %v", step.stop, step.start, step.eligible, total, rep.PerTM)
	}
}

// TestTopologyAndHopMetricE2E: 4 TMs in namespaces with TCP health checks
// and real short connections. hop-metric: the distributor's routes give
// tm1 and tm2 metric 10, tm3 and tm4 metric 100 (host routes on int0, read
// through netlink); with min_eligible 2 connections go to tm1 and tm2, and
// to tm3 and tm4 once tm1's health endpoint stops. topology: zone a, tm1
// and tm2 tagged a: connections stay in the zone, and spill over to tm3
// and tm4 when both zone TMs are down.
func TestTopologyAndHopMetricE2E(t *testing.T) {
	for _, tc := range []struct {
		policy string
		min    uint32
		stop   []string
	}{
		{config.PolicyHopMetric, 2, []string{"tm1"}},
		{config.PolicyTopology, 1, []string{"tm1", "tm2"}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
			hls := map[string]*healthListener{}
			for _, h := range e.Topo.TMs {
				hl := &healthListener{h: h}
				hl.start(t)
				hls[h.Name] = hl
				t.Cleanup(hl.stop)
			}
			if tc.policy == config.PolicyHopMetric {
				err := e.Topo.Distributors[0].NS.Do(func() error {
					link, err := netlink.LinkByName("int0")
					if err != nil {
						return err
					}
					for _, h := range e.Topo.TMs {
						metric := 100
						if h.Name == "tm1" || h.Name == "tm2" {
							metric = 10
						}
						a := lab.TMAddr4(h)
						r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)},
							Scope: netlink.SCOPE_LINK, Priority: metric}
						if err := netlink.RouteAdd(r); err != nil {
							return fmt.Errorf("route to %s: %w", a, err)
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
				c.Distributor.Zone = "a"
				for i := range c.TrafficManagers {
					if id := c.TrafficManagers[i].ID; id == "tm1" || id == "tm2" {
						c.TrafficManagers[i].Tags = []string{"a"}
					} else {
						c.TrafficManagers[i].Tags = []string{"b"}
					}
				}
				for i := range c.Services {
					if c.Services[i].Name == "web" {
						s := &c.Services[i]
						s.Policy, s.MinEligible = tc.policy, tc.min
						s.Health = &config.Health{Type: config.HealthTCP, Port: healthPort, IntervalMS: 200, TimeoutMS: 200, Rise: 2, Fall: 2}
					}
				}
			}})
			check := func(eligible string, want ...string) {
				t.Helper()
				waitFor(t, 10*time.Second, "eligible "+eligible, func() bool { return eligibleOf(t, d, "web") == eligible })
				rep := runLoad(t, e, false, loadgen.Options{Short: 4}, time.Second)
				if rep.Errors != 0 {
					t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
				}
				for id, c := range rep.PerTM {
					if c.ShortConns > 0 && !slices.Contains(want, id) {
						t.Errorf("%s got %d connections, want only %v", id, c.ShortConns, want)
					}
				}
				for _, id := range want {
					if rep.PerTM[id].ShortConns == 0 {
						t.Errorf("%s got no connection", id)
					}
				}
				t.Logf("eligible %s: %v", eligible, rep.PerTM)
			}
			check("tm1,tm2", "tm1", "tm2")
			for _, id := range tc.stop {
				hls[id].stop()
			}
			check("tm3,tm4", "tm3", "tm4")
		})
	}
}

// TestQoSE2E: 4 TMs in namespaces, tm3 and tm4 tagged gold; web is a qos
// service whose class is DSCP 46 → gold (min_eligible 2, TCP health
// checks). Real short connections marked DSCP 46 (IP_TOS on the client's
// sockets) go to tm3 and tm4 only, unmarked ones to all four; with tm3's
// health endpoint stopped the class spills over to the eligible pool.
func TestQoSE2E(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	hls := map[string]*healthListener{}
	for _, h := range e.Topo.TMs {
		hl := &healthListener{h: h}
		hl.start(t)
		hls[h.Name] = hl
		t.Cleanup(hl.stop)
	}
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) {
		for i := range c.TrafficManagers {
			if id := c.TrafficManagers[i].ID; id == "tm3" || id == "tm4" {
				c.TrafficManagers[i].Tags = []string{"gold"}
			}
		}
		for i := range c.Services {
			if c.Services[i].Name == "web" {
				s := &c.Services[i]
				s.Policy, s.MinEligible = config.PolicyQoS, 2
				s.QoS = &config.QoS{DSCP: []uint32{46}, Tag: "gold"}
				s.Health = &config.Health{Type: config.HealthTCP, Port: healthPort, IntervalMS: 200, TimeoutMS: 200, Rise: 2, Fall: 2}
			}
		}
	}})
	ns := e.Topo.Clients[0].NS
	load := func(dscp int) loadgen.Report {
		o := loadgen.Options{Short: 4}
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() error {
				dl := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					if err := rc.Control(func(fd uintptr) {
						serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS, dscp<<2)
					}); err != nil {
						return err
					}
					return serr
				}}
				var err error
				c, err = dl.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rep := loadgen.Start(ctx, e.Target(false), o).Wait()
		if rep.Errors != 0 {
			t.Fatalf("DSCP %d: %d errors: %v", dscp, rep.Errors, rep.ErrorSamples)
		}
		t.Logf("DSCP %d: %v", dscp, rep.PerTM)
		return rep
	}
	only := func(rep loadgen.Report, want ...string) {
		t.Helper()
		for id, c := range rep.PerTM {
			if c.ShortConns > 0 && !slices.Contains(want, id) {
				t.Errorf("%s got %d connections, want only %v", id, c.ShortConns, want)
			}
		}
		for _, id := range want {
			if rep.PerTM[id].ShortConns == 0 {
				t.Errorf("%s got no connection", id)
			}
		}
	}
	waitFor(t, 10*time.Second, "all four eligible", func() bool { return eligibleOf(t, d, "web") == "tm1,tm2,tm3,tm4" })
	only(load(46), "tm3", "tm4")
	only(load(0), "tm1", "tm2", "tm3", "tm4")
	hls["tm3"].stop()
	waitFor(t, 10*time.Second, "tm3 out", func() bool { return eligibleOf(t, d, "web") == "tm1,tm2,tm4" })
	only(load(46), "tm1", "tm2", "tm4")
}
