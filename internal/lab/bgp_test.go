package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// The BGP lab: FRR (zebra + bgpd of the Debian package) in a router
// namespace r1 on segment ext, with a client rc1 behind it; distributors
// d1..dN dial it from their ext0 and announce the VIPs; FRR installs an
// ECMP route over them (maximum-paths) and the kernel spreads flows by
// their 5-tuple (fib_multipath_hash_policy=1). The distributors mirror
// each other over segment int (peers:).

const (
	routerASN = 65000
	distASN   = 65001
	bgpHold   = 3
	bgpKeep   = 1
	bfdMS     = 200 // BFD interval, both ends; detection after 3 intervals
	peerPort  = 7947
)

var bgpPeerKey = []byte("bgp-lab-peer-key-0123456789abcde")

// bfddConfig is the router's bfdd config: the BFD profile its BGP
// sessions use (docs/bgp.md shows it).
func bfddConfig() string {
	return fmt.Sprintf(`bfd
 profile fast
  detect-multiplier 3
  receive-interval %d
  transmit-interval %d
 !
!
`, bfdMS, bfdMS)
}

// frrConfig is the bgpd config of the router (docs/bgp.md shows it): any
// distributor on 10.0.1.0/24 may connect (dynamic neighbors of one peer
// group), timers hold 3 s / keepalive 1 s, BFD (profile fast) when bfd,
// up to 16 equal paths per VIP, IPv6 unicast over the same sessions.
func frrConfig(routerID netip.Addr, bfd bool) string {
	bfdLines := ""
	if bfd {
		bfdLines = " neighbor DIST bfd\n neighbor DIST bfd profile fast\n"
	}
	return fmt.Sprintf(`frr defaults datacenter
hostname r1
log stdout informational
!
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor DIST peer-group
 neighbor DIST remote-as %d
 neighbor DIST timers %d %d
 neighbor DIST timers connect 1
%s bgp listen range 10.0.1.0/24 peer-group DIST
 !
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor DIST activate
  maximum-paths 16
 exit-address-family
!
`, routerASN, routerID, distASN, bgpKeep, bgpHold, bfdLines)
}

// bgpLab is a running BGP lab.
type bgpLab struct {
	e      *lab.Env
	r      *netlab.Router
	frr    *netlab.FRR
	mu     sync.Mutex
	ds     map[string]*lab.Distributor
	all    []*netlab.Host // every distributor host, started or not
	states map[string]map[string]string
	bfd    bool
}

func newBGPLab(t testing.TB, distributors int, bfd bool) *bgpLab {
	t.Helper()
	labtest.Require(t)
	if why := netlab.FRRAvailable(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: not skipping)", why)
		}
		t.Skip(why)
	}
	e, err := lab.NewEnv(context.Background(), netlab.Spec{Clients: 1, Distributors: distributors, TMs: 3}, t.TempDir(), binary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close env: %v", err)
		}
	})
	r, err := e.Topo.AddRouter(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := netlab.StartFRR(context.Background(), r.Host.NS, frrConfig(r.Ext4(), bfd), bfddConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FRR output:\n%s", f.Output())
		}
		if err := f.Close(); err != nil {
			t.Errorf("stop FRR: %v", err)
		}
	})
	return &bgpLab{e: e, r: r, frr: f, ds: map[string]*lab.Distributor{}, all: e.Topo.Distributors, states: map[string]map[string]string{}, bfd: bfd}
}

// config is distributor h's config: every other distributor of the lab is
// a peer; BGP to the router with next hops on ext0.
func (l *bgpLab) config(h *netlab.Host) string {
	addr := func(x *netlab.Host) string {
		return netip.AddrPortFrom(x.Links["int0"].Addr4.Addr(), peerPort).String()
	}
	var peers []string
	id := 0
	for i, x := range l.all {
		if x == h {
			id = i + 1
			continue
		}
		peers = append(peers, addr(x))
	}
	ext := h.Links["ext0"]
	return l.e.Config(lab.ConfigOptions{ID: h.Name, APIPath: lab.APIPath(l.e.Dir, h), IPv6: true, States: l.states[h.Name],
		Mutate: func(c *config.Config) {
			c.Peers = config.Peers{ID: uint32(id), Listen: addr(h), Addresses: peers, Key: bgpPeerKey, Mirror: "all"}
			c.BGP = config.BGP{ASN: distASN, RouterID: ext.Addr4.Addr(), NextHop: ext.Addr4.Addr(), NextHop6: ext.Addr6.Addr(),
				HoldTime: bgpHold, Keepalive: bgpKeep, BFDMultiplier: 3,
				Neighbors: []config.BGPNeighbor{{Address: l.r.Ext4(), ASN: routerASN}}}
			if l.bfd {
				c.BGP.BFDIntervalMS = bfdMS
			}
		}})
}

// start runs the distributors on hosts hs at once (each waits up to its
// start gate's timeout for peers that are not running).
func (l *bgpLab) start(t testing.TB, hs ...*netlab.Host) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(hs))
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := l.e.StartDistributorOn(context.Background(), h, l.config(h))
			if err != nil {
				errs[i] = err
				return
			}
			l.mu.Lock()
			l.ds[h.Name] = d
			l.mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hs {
		d := l.ds[h.Name]
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s output:\n%s", h.Name, d.Output())
			}
		})
	}
}

// fib returns the next hops of the router's kernel route to vip (the
// FIB: what forwarding uses), sorted.
func (l *bgpLab) fib(vip netip.Addr) []string {
	var out []string
	routes, err := l.r.Host.NS.Netlink().RouteListFiltered(familyOf(vip), &netlink.Route{Dst: &net.IPNet{IP: net.IP(vip.AsSlice()), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil
	}
	for _, r := range routes {
		if r.Gw != nil {
			out = append(out, r.Gw.String())
		}
		for _, nh := range r.MultiPath {
			out = append(out, nh.Gw.String())
		}
	}
	sort.Strings(out)
	return out
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// rib returns the next hops of FRR's selected route to vip (vtysh).
func (l *bgpLab) rib(t testing.TB, vip netip.Addr) []string {
	t.Helper()
	cmd := "show ip route " + vip.String() + "/32 json"
	if vip.Is6() {
		cmd = "show ipv6 route " + vip.String() + "/128 json"
	}
	out, err := l.frr.Vtysh(context.Background(), cmd)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string][]struct {
		Protocol string `json:"protocol"`
		Selected bool   `json:"selected"`
		Nexthops []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("vtysh %s: %v: %s", cmd, err, out)
	}
	var hops []string
	for _, rs := range m {
		for _, r := range rs {
			if r.Protocol != "bgp" || !r.Selected {
				continue
			}
			for _, nh := range r.Nexthops {
				if nh.Active {
					hops = append(hops, nh.IP)
				}
			}
		}
	}
	sort.Strings(hops)
	return hops
}

// bfdUp reports whether FRR's BFD session with peer is up.
func (l *bgpLab) bfdUp(t testing.TB, peer netip.Addr) bool {
	out, err := l.frr.Vtysh(context.Background(), "show bfd peers json")
	if err != nil {
		t.Fatal(err)
	}
	var ps []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("show bfd peers json: %v: %s", err, out)
	}
	for _, p := range ps {
		if p.Peer == peer.String() && p.Status == "up" {
			return true
		}
	}
	return false
}

func ext4(hs ...*netlab.Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Links["ext0"].Addr4.Addr().String())
	}
	sort.Strings(out)
	return out
}

func ext6(hs ...*netlab.Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Links["ext0"].Addr6.Addr().String())
	}
	sort.Strings(out)
	return out
}

// dialer opens sockets in the router's client.
func (l *bgpLab) dialer(o *loadgen.Options) {
	o.Dial, o.ListenPacket = loadgen.NSDialer(l.r.Clients[0].NS.Do)
}

// newFlows returns the web service's new-flow counter of each running
// distributor.
func (l *bgpLab) newFlows(t testing.TB, names ...string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, n := range names {
		st, err := l.ds[n].API.Stats(context.Background())
		if err != nil {
			t.Fatalf("%s stats: %v", n, err)
		}
		for _, s := range st.Services {
			if s.Name == "web" {
				out[n] = s.NewFlows
			}
		}
	}
	return out
}

// TestBGPWithFRR: FRR as the router with BGP sessions to the
// distributors, ECMP to the VIP, and the distributors' life:
//
//   - spread: 3 distributors announce (IPv4 /32 and IPv6 /128, FRR
//     installs 3 paths); 2,000 connections from the client behind FRR
//     spread over all three, 0 fail;
//   - added: with 300 long-lived connections open, d4 (stopped after
//     the four first came up) starts afresh, resyncs from its peers, then
//     announces (FRR: 4 paths): 0 break;
//   - drained: `switchyard drain` on d4: FRR drops its path, d4 gets no
//     new flow after that, ends by itself (idle): 0 break;
//   - killed: d3's link goes silent and the process is SIGKILLed: FRR
//     routes around it when BFD (200 ms × 3) goes down: 0 break;
//   - TMs gone: every TM of d2 disabled by reload: d2 withdraws the VIP
//     (FRR's RIB, via vtysh), and announces it again when they are back.
func TestBGPWithFRR(t *testing.T) {
	l := newBGPLab(t, 4, true)
	d := l.all
	// All four start together, so that each finds its peers at once (a
	// peer that is not running holds the start gate for its timeout);
	// then d4 stops (SIGTERM: it withdraws and removes its data path) to
	// be added back later.
	l.start(t, d...)
	vip4, vip6 := l.e.Topo.VIP4, l.e.Topo.VIP6
	waitFor(t, 30*time.Second, "FRR's ECMP route over d1..d4", func() bool {
		return slices.Equal(l.fib(vip4), ext4(d...))
	})
	if err := l.ds["d4"].Stop(); err != nil {
		t.Fatalf("stop d4: %v", err)
	}
	waitFor(t, 30*time.Second, "FRR's ECMP route over d1..d3", func() bool {
		return slices.Equal(l.fib(vip4), ext4(d[0], d[1], d[2]))
	})
	waitFor(t, 10*time.Second, "FRR's IPv6 route over d1..d3", func() bool {
		return slices.Equal(l.rib(t, vip6), ext6(d[0], d[1], d[2]))
	})
	st, err := l.ds["d1"].API.BGP(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "announcing" || len(st.Sessions) != 1 || st.Sessions[0].State != "established" || st.Sessions[0].HoldTime != bgpHold {
		t.Fatalf("d1 bgp: %+v", st)
	}
	waitFor(t, 20*time.Second, "BFD up between d1 and FRR", func() bool {
		st, err := l.ds["d1"].API.BGP(context.Background())
		return err == nil && st.Sessions[0].BFD == "up"
	})
	if out, err := l.frr.Vtysh(context.Background(), "show bfd peers brief"); err == nil {
		t.Logf("FRR's BFD peers:\n%s", out)
	}
	t.Logf("d1: first announcement %.3fs after its speaker started; VIPs %+v", st.AnnounceAfterSeconds, st.VIPs)

	t.Run("spread", func(t *testing.T) {
		before := l.newFlows(t, "d1", "d2", "d3")
		o := loadgen.Options{Short: 16}
		l.dialer(&o)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		run := loadgen.Start(ctx, l.e.Target(false), o)
		waitFor(t, 2*time.Minute, "2,000 connections", func() bool { return run.Snapshot().Connections >= 2000 })
		cancel()
		rep := run.Wait()
		t.Logf("load: %s", rep)
		if rep.Errors != 0 || rep.Connections < 2000 {
			t.Fatalf("%d connections, %d errors %v", rep.Connections, rep.Errors, rep.ErrorSamples)
		}
		after := l.newFlows(t, "d1", "d2", "d3")
		var total uint64
		for _, n := range []string{"d1", "d2", "d3"} {
			total += after[n] - before[n]
		}
		for _, n := range []string{"d1", "d2", "d3"} {
			got := after[n] - before[n]
			t.Logf("%s: %d new flows (%.1f%%)", n, got, 100*float64(got)/float64(total))
			if got == 0 {
				t.Errorf("%s got none of the %d connections", n, rep.Connections)
			}
		}
	})

	// Long-lived connections across the next three phases.
	o := loadgen.Options{KeepAlive: 300, Interval: 100 * time.Millisecond, Timeout: 15 * time.Second}
	l.dialer(&o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := loadgen.Start(ctx, l.e.Target(false), o)
	waitFor(t, 30*time.Second, "300 connections open", func() bool { return held.Snapshot().Connections >= 300 })
	check := func(t *testing.T, phase string) {
		rep := held.Snapshot()
		t.Logf("after %s: %s", phase, rep)
		if rep.Errors != 0 || rep.FlowsMoved != 0 || rep.Connections != 300 {
			t.Fatalf("after %s: %d errors %v, %d moved %v, %d connections (want 300: more means some broke)",
				phase, rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples, rep.Connections)
		}
	}

	t.Run("added", func(t *testing.T) {
		l.start(t, d[3])
		waitFor(t, 30*time.Second, "FRR's route over d1..d4", func() bool {
			return slices.Equal(l.fib(vip4), ext4(d[0], d[1], d[2], d[3]))
		})
		st, err := l.ds["d4"].API.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.State != "synced" {
				t.Errorf("d4 announced with peer %s %s", p.Addr, p.State)
			}
		}
		time.Sleep(2 * time.Second) // traffic over the new path
		check(t, "d4 added")
	})

	t.Run("drained", func(t *testing.T) {
		sh := loadgen.Options{Short: 8, Interval: 10 * time.Millisecond}
		l.dialer(&sh)
		sctx, scancel := context.WithCancel(context.Background())
		short := loadgen.Start(sctx, l.e.Target(false), sh)
		defer func() {
			scancel()
			if rep := short.Wait(); rep.Errors != 0 {
				t.Errorf("short connections during the drain: %d errors %v", rep.Errors, rep.ErrorSamples)
			}
		}()
		d4 := l.ds["d4"]
		waitFor(t, 20*time.Second, "new flows on d4", func() bool { return l.newFlows(t, "d4")["d4"] > 0 })
		st, err := d4.API.Drain(context.Background(), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "draining" {
			t.Fatalf("d4 after drain: %+v", st)
		}
		waitFor(t, 10*time.Second, "d4 gone from FRR's route", func() bool {
			return slices.Equal(l.fib(vip4), ext4(d[0], d[1], d[2]))
		})
		// SYNs already on the wire when the route changed still arrive.
		time.Sleep(300 * time.Millisecond)
		var first, last uint64
		reads := 0
		for !d4.Exited() {
			st, err := d4.API.Stats(context.Background())
			if err != nil {
				break
			}
			for _, s := range st.Services {
				if s.Name == "web" {
					last = s.NewFlows
				}
			}
			if reads == 0 {
				first = last
			}
			reads++
			time.Sleep(200 * time.Millisecond)
		}
		waitFor(t, 40*time.Second, "d4 to stop after its drain", d4.Exited)
		t.Logf("d4 after the withdrawal: new flows %d → %d over %d reads; output tail: %s", first, last, reads, tail(d4.Output(), 3))
		if reads < 2 || last != first {
			t.Fatalf("d4 got %d new flows after FRR dropped it (%d reads)", last-first, reads)
		}
		if !strings.Contains(d4.Output(), "ended_by=idle") {
			t.Errorf("d4's drain did not end idle:\n%s", tail(d4.Output(), 10))
		}
		check(t, "d4 drained")
	})

	t.Run("killed", func(t *testing.T) {
		d3 := l.ds["d3"]
		// A silent death: d3's switch port goes down first (FRR hears no
		// FIN), then the process is killed; its pinned data path would
		// forward on, but nothing reaches it.
		port, err := l.e.Topo.Switch.Netlink().LinkByName(d[2].Links["ext0"].Port)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "FRR's BFD session with d3 up", func() bool { return l.bfdUp(t, d[2].Links["ext0"].Addr4.Addr()) })
		killed := time.Now()
		if err := l.e.Topo.Switch.Netlink().LinkSetDown(port); err != nil {
			t.Fatal(err)
		}
		d3.Kill()
		waitFor(t, 30*time.Second, "FRR to route around d3", func() bool {
			return slices.Equal(l.fib(vip4), ext4(d[0], d[1]))
		})
		t.Logf("FRR routed around d3 %v after its death (BFD %d ms × 3, hold time %ds)", time.Since(killed).Round(time.Millisecond), bfdMS, bgpHold)
		var events []string
		for _, line := range strings.Split(l.frr.Output(), "\n") {
			if strings.Contains(line, "ADJCHANGE") || strings.Contains(line, "NOTIFICATION") {
				events = append(events, line)
			}
		}
		t.Logf("FRR's session changes so far (death at %s):\n%s", killed.UTC().Format("15:04:05.000"), strings.Join(events, "\n"))
		time.Sleep(3 * time.Second) // requests keep flowing over the rest
		check(t, "d3 killed")
	})
	cancel()
	rep := held.Wait()
	t.Logf("long-lived load: %s", rep)
	if rep.Errors != 0 || rep.FlowsMoved != 0 {
		t.Fatalf("long-lived connections: %d errors %v, %d moved", rep.Errors, rep.ErrorSamples, rep.FlowsMoved)
	}

	t.Run("tms-gone", func(t *testing.T) {
		d2 := l.ds["d2"]
		l.states["d2"] = map[string]string{"tm1": config.StateDisabled, "tm2": config.StateDisabled, "tm3": config.StateDisabled}
		if err := d2.Reload(l.config(d[1])); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "d2's path gone from FRR's RIB", func() bool {
			return slices.Equal(l.rib(t, vip4), ext4(d[0])) && slices.Equal(l.rib(t, vip6), ext6(d[0]))
		})
		st, err := d2.API.BGP(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range st.VIPs {
			if v.Announced || v.Reason != "no eligible traffic manager" {
				t.Errorf("d2 VIP %+v", v)
			}
		}
		// The command shows it too.
		out, err := exec.Command(l.e.Bin, "bgp", "--api", "unix:"+lab.APIPath(l.e.Dir, d[1])).CombinedOutput()
		t.Logf("switchyard bgp on d2:\n%s", out)
		if err != nil || !strings.Contains(string(out), "no eligible traffic manager") || !strings.Contains(string(out), "established") {
			t.Errorf("switchyard bgp: %v", err)
		}
		delete(l.states, "d2")
		if err := d2.Reload(l.config(d[1])); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "d2's path back in FRR's RIB", func() bool {
			return slices.Equal(l.rib(t, vip4), ext4(d[0], d[1]))
		})
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BenchmarkBGPFailover measures, over runs deaths of one of three
// distributors behind FRR (hold 3 s, keepalive 1 s; BFD 200 ms × 3 unless
// BGP_BENCH_BFD=0):
//
//   - kill: the process is SIGKILLed (its kernel closes the BGP session:
//     FRR hears it at once);
//   - silent: its link goes silent first (a host or link death: FRR
//     notices when the hold timer expires);
//
// the time from the death until the router's kernel route to the VIP no
// longer points at it (traffic flows through the others only), and the
// time from starting the distributor again until the route includes it
// (start → announce: MAC resolution, the start gate with its peers'
// resync, the BGP session, FRR's and the kernel's update). Run with
// -benchtime=1x; BGP_BENCH_RUNS sets the runs per mode (default 5).
func BenchmarkBGPFailover(b *testing.B) {
	runs := 5
	if v := os.Getenv("BGP_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	bfd := os.Getenv("BGP_BENCH_BFD") != "0"
	l := newBGPLab(b, 3, bfd)
	d := l.all
	l.start(b, d...)
	vip4 := l.e.Topo.VIP4
	waitForTB(b, 60*time.Second, "route over d1..d3", func() bool { return slices.Equal(l.fib(vip4), ext4(d...)) })
	victim := d[2]
	port, err := l.e.Topo.Switch.Netlink().LinkByName(victim.Links["ext0"].Port)
	if err != nil {
		b.Fatal(err)
	}
	poll := func(cond func() bool) time.Duration {
		t0 := time.Now()
		for !cond() {
			if time.Since(t0) > 60*time.Second {
				b.Fatal("no route change after 60s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		return time.Since(t0)
	}
	deaths := map[string][]time.Duration{}
	var starts []time.Duration
	for b.Loop() {
		for _, mode := range []string{"kill", "silent"} {
			for range runs {
				dv := l.ds[victim.Name]
				if bfd {
					// FRR tears the session down on BFD only once BFD is up.
					waitForTB(b, 30*time.Second, "FRR's BFD session with the victim up", func() bool {
						return l.bfdUp(b, victim.Links["ext0"].Addr4.Addr())
					})
				}
				t0 := time.Now()
				if mode == "silent" {
					if err := l.e.Topo.Switch.Netlink().LinkSetDown(port); err != nil {
						b.Fatal(err)
					}
				}
				dv.Kill()
				deaths[mode] = append(deaths[mode], time.Since(t0)+poll(func() bool { return slices.Equal(l.fib(vip4), ext4(d[0], d[1])) }))
				if err := l.e.Topo.Switch.Netlink().LinkSetUp(port); err != nil {
					b.Fatal(err)
				}
				// Back: the restarted daemon adopts its pinned data path
				// (a SIGKILL leaves it) and resyncs from its peers.
				t1 := time.Now()
				l.start(b, victim)
				starts = append(starts, time.Since(t1)+poll(func() bool { return slices.Equal(l.fib(vip4), ext4(d...)) }))
			}
		}
	}
	for _, mode := range []string{"kill", "silent"} {
		p50, p99 := quantiles(deaths[mode])
		b.Logf("death (%s, bfd %v) → route without it: n=%d median %v p99 %v all %v", mode, bfd, len(deaths[mode]), p50, p99, deaths[mode])
		b.ReportMetric(float64(p50.Milliseconds()), "ms-"+mode+"-p50")
		b.ReportMetric(float64(p99.Milliseconds()), "ms-"+mode+"-p99")
	}
	p50, p99 := quantiles(starts)
	b.Logf("start → route with it: n=%d median %v p99 %v all %v", len(starts), p50, p99, starts)
	b.ReportMetric(float64(p50.Milliseconds()), "ms-start-p50")
	b.ReportMetric(float64(p99.Milliseconds()), "ms-start-p99")
}

// quantiles returns the median and the 99th percentile (nearest rank).
func quantiles(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return rank(0.5), rank(0.99)
}
