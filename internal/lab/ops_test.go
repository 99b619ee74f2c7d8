package lab_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

func stats(t *testing.T, d *lab.Distributor) api.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := d.API.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tmNewFlows(s api.Stats) map[string]uint64 {
	m := map[string]uint64{}
	for _, tm := range s.TrafficManagers {
		m[tm.ID] = tm.NewFlows
	}
	return m
}

// TestDistributionFollowsWeights opens a few thousand short connections and
// compares each TM's share of new flows with its share of the weights.
func TestDistributionFollowsWeights(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3})
	weights := map[string]int{"tm1": 1, "tm2": 2, "tm3": 3}
	d := startDist(t, e, lab.ConfigOptions{Weights: weights})
	rep := runLoad(t, e, false, loadgen.Options{Short: 16}, 4*time.Second)
	if rep.Errors != 0 {
		t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
	}
	var total uint64
	for _, c := range rep.PerTM {
		total += c.ShortConns
	}
	if total < 1500 {
		t.Fatalf("only %d short connections: too few to judge the distribution", total)
	}
	for id, w := range weights {
		got := float64(rep.PerTM[id].ShortConns) / float64(total)
		want := float64(w) / 6
		t.Logf("%s: weight %d, share %.3f (want %.3f)", id, w, got, want)
		// 1500+ samples: a binomial share is within ±0.04 of p at >4σ.
		if got < want-0.04 || got > want+0.04 {
			t.Errorf("%s: share %.3f, want %.3f ± 0.04", id, got, want)
		}
	}
	// The distributor's own counters follow the weights too. A client that
	// reuses the source port of a closed connection makes a new flow (its
	// SYN on a closing entry is selected afresh), so new flows and
	// connections agree, give or take a few stray packets of closed
	// connections.
	nf := tmNewFlows(stats(t, d))
	var nfTotal uint64
	for _, n := range nf {
		nfTotal += n
	}
	if nfTotal < total*98/100 || nfTotal > total*102/100 {
		t.Fatalf("distributor counted %d new flows for %d connections", nfTotal, total)
	}
	for id, w := range weights {
		got, want := float64(nf[id])/float64(nfTotal), float64(w)/6
		if got < want-0.04 || got > want+0.04 {
			t.Errorf("%s: distributor's new-flow share %.3f, want %.3f ± 0.04", id, got, want)
		}
	}
}

// TestAddAndDrainMoveNothing keeps 200 long-lived connections busy while a
// TM is added and another drained: none may break or change TM, new flows
// must reach the new TM and never the drained one.
func TestAddAndDrainMoveNothing(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3})
	d := startDist(t, e, lab.ConfigOptions{})

	o := loadgen.Options{KeepAlive: 200, UDPFlows: 20, Interval: 50 * time.Millisecond}
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := loadgen.Start(ctx, e.Target(false), o)
	time.Sleep(2 * time.Second)

	before := run.Snapshot()
	if before.Errors != 0 {
		t.Fatalf("errors before any change: %v", before.ErrorSamples)
	}
	if _, err := e.AddTM(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := e.Config(lab.ConfigOptions{States: map[string]string{"tm1": "draining"}})
	if err := d.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	// Wait for the reload and tm4's MAC to take effect.
	waitFor(t, 10*time.Second, "tm4 eligible and tm1 draining", func() bool {
		for _, s := range stats(t, d).Services {
			if s.Name == "web" {
				el := strings.Join(s.Eligible, ",")
				return el == "tm2,tm3,tm4"
			}
		}
		return false
	})
	nfBefore := tmNewFlows(stats(t, d))

	// New flows after the change: short connections from a second load.
	so := loadgen.Options{Short: 8}
	e.ClientDialer(0, &so)
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	short := loadgen.Start(sctx, e.Target(false), so).Wait()
	scancel()
	t.Logf("after the change: %s", short)

	time.Sleep(time.Second)
	cancel()
	rep := run.Wait()
	t.Logf("long-lived: %s", rep)
	if rep.Errors != 0 || rep.FlowsMoved != 0 {
		t.Fatalf("long-lived connections: %d errors %v, %d moved %v", rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples)
	}
	var conns uint64
	for _, c := range rep.PerTM {
		conns += c.KeepAliveConns
	}
	if conns != 200 {
		t.Errorf("%d keep-alive connections answered, want 200", conns)
	}
	if rep.PerTM["tm1"].KeepAliveConns == 0 {
		t.Errorf("tm1 had no long-lived connection to keep through its drain")
	}
	if short.Errors != 0 {
		t.Errorf("new connections after the change: %d errors %v", short.Errors, short.ErrorSamples)
	}
	if n := short.PerTM["tm1"].ShortConns; n != 0 {
		t.Errorf("drained tm1 got %d new connections", n)
	}
	if short.PerTM["tm4"].ShortConns == 0 {
		t.Errorf("added tm4 got no new connections")
	}
	nfAfter := tmNewFlows(stats(t, d))
	if nfAfter["tm1"] != nfBefore["tm1"] {
		t.Errorf("distributor gave drained tm1 %d new flows", nfAfter["tm1"]-nfBefore["tm1"])
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNonVIPTrafficReachesHost checks that the distributor host's own
// services stay reachable with the program attached.
func TestNonVIPTrafficReachesHost(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	startDist(t, e, lab.ConfigOptions{IPv6: true})
	dh := e.Topo.Distributors[0]
	for _, addr := range []netip.Addr{dh.Links["ext0"].Addr4.Addr(), dh.Links["ext0"].Addr6.Addr()} {
		var l net.Listener
		err := dh.NS.Do(func() (err error) {
			l, err = net.Listen("tcp", netip.AddrPortFrom(addr, 2222).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "host %s\n", addr)
				c.Close()
			}
		}()
		var got []byte
		err = e.Topo.Clients[0].NS.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(addr, 2222).String(), 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			got, err = io.ReadAll(c)
			return err
		})
		l.Close()
		if err != nil {
			t.Fatalf("connect to the distributor host at %s: %v", addr, err)
		}
		if want := fmt.Sprintf("host %s\n", addr); string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	// And the kernel still forwards a TM's traffic to a server address.
	s := stats(t, e.Dist()[0])
	var pass uint64
	for _, c := range s.Counters {
		if c.Name == "pass_not_vip" {
			pass = c.Packets
		}
	}
	if pass == 0 {
		t.Errorf("pass_not_vip counted nothing")
	}
}

// TestBadConfig checks that a bad config is refused with a clear message,
// at start and on reload, and that a refused reload leaves the running
// daemon as it was.
func TestBadConfig(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	bad := e.Config(lab.ConfigOptions{Weights: map[string]int{"tm1": 1001}})

	// At start: the process exits non-zero and says where and what.
	path := t.TempDir() + "/bad.yaml"
	if err := writeFile(path, bad); err != nil {
		t.Fatal(err)
	}
	out, err := e.Topo.Distributors[0].NS.Command(context.Background(), e.Bin, "distributor", "--config", path).CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !asExit(err, &ee) {
		t.Fatalf("bad config accepted: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "traffic_managers[0].weight") || !strings.Contains(string(out), "expected 1..1000") {
		t.Fatalf("error does not say where and what: %s", out)
	}

	// On reload: refused, reported, and traffic carries on.
	d := startDist(t, e, lab.ConfigOptions{})
	if err := d.Reload(bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refused reload", func() bool {
		st, err := d.API.Status(context.Background())
		return err == nil && st.Reloads == 1
	})
	st, err := d.API.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastReloadError, "traffic_managers[0].weight") {
		t.Fatalf("reload error not reported: %q", st.LastReloadError)
	}

	// An alias bomb: 30 KB that expand to 4 million nodes. Refused at once,
	// without the memory its expansion would take.
	var bomb strings.Builder
	bomb.WriteString(e.Config(lab.ConfigOptions{}))
	bomb.WriteString("  - &s {name: x, vip: 10.0.0.1, protocol: tcp, traffic_managers: [")
	for i := range 1000 {
		fmt.Fprintf(&bomb, "t%d, ", i)
	}
	bomb.WriteString("t]}\n" + strings.Repeat("  - *s\n", 4000))
	if err := d.Reload(bomb.String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refused alias bomb", func() bool {
		st, err := d.API.Status(context.Background())
		return err == nil && st.Reloads == 2
	})
	if st, err = d.API.Status(context.Background()); err != nil || !strings.Contains(st.LastReloadError, "YAML nodes") {
		t.Fatalf("alias bomb: reload error %q, %v", st.LastReloadError, err)
	}
	rep := runLoad(t, e, false, loadgen.Options{KeepAlive: 4, Short: 2, Interval: 10 * time.Millisecond}, 2*time.Second)
	if rep.Errors != 0 || len(rep.PerTM) != 2 {
		t.Fatalf("after a refused reload: %d errors %v, TMs %v", rep.Errors, rep.ErrorSamples, rep.PerTM)
	}
	if d.Exited() {
		t.Fatalf("daemon exited after a bad reload:\n%s", d.Output())
	}
}

// TestIdleFlowsAge checks that the sweeper removes entries idle longer than
// their timeout, and keeps busy ones.
func TestIdleFlowsAge(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	d := startDist(t, e, lab.ConfigOptions{Timeouts: &config.Timeouts{UDP: 2, TCP: 600, TCPFin: 1, TCPClose: 1}})
	rep := runLoad(t, e, false, loadgen.Options{UDPFlows: 6, KeepAlive: 2, Interval: 20 * time.Millisecond}, time.Second)
	if rep.Errors != 0 {
		t.Fatalf("errors: %v", rep.ErrorSamples)
	}
	count := func() (udp, tcp int) {
		err := d.API.Flows(context.Background(), api.FlowFilter{}, func(f api.Flow) error {
			switch f.Proto {
			case "udp":
				udp++
			case "tcp":
				tcp++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return udp, tcp
	}
	udp, tcp := count()
	if udp != 6 || tcp == 0 {
		t.Fatalf("after the load: %d UDP and %d TCP entries, want 6 UDP and some TCP", udp, tcp)
	}
	// UDP entries idle for more than 2 s go at the next sweep (every 5 s);
	// the keep-alive connections were closed by the client (FIN: tcp_fin,
	// 1 s) and go too.
	waitFor(t, 15*time.Second, "idle entries to be swept", func() bool {
		udp, tcp := count()
		return udp == 0 && tcp == 0
	})
}

// TestInspectionCommands runs `switchyard stats` and `switchyard flows`
// against a running distributor.
func TestInspectionCommands(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	startDist(t, e, lab.ConfigOptions{})
	runLoad(t, e, false, loadgen.Options{KeepAlive: 3, UDPFlows: 2, Interval: 20 * time.Millisecond}, time.Second)
	apiAddr := "unix:" + lab.APIPath(e.Dir, e.Topo.Distributors[0])
	run := func(args ...string) string {
		out, err := exec.Command(e.Bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("switchyard %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	st := run("stats", "--api", apiAddr)
	for _, want := range []string{"SERVICE", "web", "echo", "tm1", "tm2", "fwd_new", "fwd_hit"} {
		if !strings.Contains(st, want) {
			t.Errorf("stats output lacks %q:\n%s", want, st)
		}
	}
	fl := run("flows", "--api", apiAddr, "--service", "echo")
	if !strings.Contains(fl, "udp") || !strings.Contains(fl, "selected") || !strings.Contains(fl, "2 flows") {
		t.Errorf("flows --service echo:\n%s", fl)
	}
	if strings.Contains(fl, "tcp ") {
		t.Errorf("flows --service echo lists TCP flows:\n%s", fl)
	}
	js := run("flows", "--api", apiAddr, "--json", "--limit", "1")
	if n := strings.Count(strings.TrimSpace(js), "\n") + 1; n != 1 || !strings.HasPrefix(js, "{") {
		t.Errorf("flows --json --limit 1 printed %d lines:\n%s", n, js)
	}
	out, err := exec.Command(e.Bin, "stats", "--api", "unix:/nonexistent/x.sock").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is the distributor running") {
		t.Errorf("stats against no distributor: %v\n%s", err, out)
	}
}

// TestTMMACChange: when a TM's MAC changes (and it announces it, with
// arp_notify), the distributor follows within seconds.
func TestTMMACChange(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1})
	d := startDist(t, e, lab.ConfigOptions{})
	h := e.Topo.TMs[0]
	if err := h.NS.Sysctl("net.ipv4.conf.eth0.arp_notify", "1"); err != nil {
		t.Fatal(err)
	}
	newMAC := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x99}
	err := h.NS.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, newMAC)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the distributor to learn the new MAC", func() bool {
		for _, tm := range stats(t, d).TrafficManagers {
			if tm.ID == h.Name {
				return tm.MAC == newMAC.String()
			}
		}
		return false
	})
	rep := runLoad(t, e, false, loadgen.Options{Short: 2, UDPFlows: 2, Interval: 10 * time.Millisecond}, time.Second)
	if rep.Errors != 0 || rep.Requests == 0 {
		t.Fatalf("after the MAC change: %d requests, %d errors %v", rep.Requests, rep.Errors, rep.ErrorSamples)
	}
}

// TestStopDetaches checks that SIGTERM leaves no XDP program on any
// interface.
func TestStopDetaches(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1})
	d := startDist(t, e, lab.ConfigOptions{})
	attached := func() []string {
		var names []string
		err := e.Topo.Distributors[0].NS.Do(func() error {
			for _, n := range []string{"ext0", "int0", "srv0"} {
				l, err := netlink.LinkByName(n)
				if err != nil {
					return err
				}
				if x := l.Attrs().Xdp; x != nil && x.Attached {
					names = append(names, n)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := attached(); len(got) != 3 {
		t.Fatalf("XDP attached on %v, want ext0, int0, srv0", got)
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.Output())
	}
	if got := attached(); len(got) != 0 {
		t.Fatalf("XDP still attached on %v after SIGTERM", got)
	}
	if !strings.Contains(d.Output(), "detached") {
		t.Errorf("no detach message in the output:\n%s", d.Output())
	}
	// SIGTERM without --keep removes the pinned data path too.
	if _, err := os.Stat(filepath.Join(lab.PinRoot(e.Dir), "d1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after SIGTERM: %v", err)
	}
}

// xdpAttached lists the distributor's interfaces with an XDP program.
func xdpAttached(t *testing.T, e *lab.Env) []string {
	t.Helper()
	var names []string
	err := e.Topo.Distributors[0].NS.Do(func() error {
		for _, n := range []string{"ext0", "int0", "srv0"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if x := l.Attrs().Xdp; x != nil && x.Attached {
				names = append(names, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestPersistence: with persistence, a client's new connections follow its
// first one to the same TM, whatever their source ports.
func TestPersistence(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 2, Distributors: 1, TMs: 4})
	extra := []config.Service{{Name: "sticky", VIP: e.Topo.VIP4, Port: 80, Protocol: config.ProtocolTCP,
		TrafficManagers: []string{"tm1", "tm2", "tm3", "tm4"}, Persistence: &config.Persistence{Timeout: 60}}}
	d := startDist(t, e, lab.ConfigOptions{HTTPPort: 8080, ExtraServices: extra})
	vip := netip.AddrPortFrom(e.Topo.VIP4, 80)
	sticky := func(c *netlab.Host) string {
		seen := map[string]int{}
		for range 15 {
			id, err := getFrom(c, 0, vip)
			if err != nil {
				t.Fatal(err)
			}
			seen[id]++
		}
		if len(seen) != 1 {
			t.Fatalf("%s's connections went to %v, want one TM", c.Name, seen)
		}
		for id := range seen {
			return id
		}
		return ""
	}
	first := sticky(e.Topo.Clients[0])
	sticky(e.Topo.Clients[1])

	// Draining the client's TM ends its persistence: the client's new
	// connections go to one other TM.
	if err := d.Reload(e.Config(lab.ConfigOptions{HTTPPort: 8080, ExtraServices: extra, States: map[string]string{first: "draining"}})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, first+" draining", func() bool {
		for _, tm := range stats(t, d).TrafficManagers {
			if tm.ID == first {
				return tm.State == "draining"
			}
		}
		return false
	})
	if now := sticky(e.Topo.Clients[0]); now == first {
		t.Fatalf("client still sent to drained %s", first)
	}
}
