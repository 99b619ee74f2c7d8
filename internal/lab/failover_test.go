package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/signal"
)

// Failover end to end (issue 9): two distributors mirror each other, one
// dies, the other takes all its traffic, for each kind of flow no hash can
// recompute; then the dead one comes back behind its start gate.

// pairKey is the peers' shared key in these tests.
var pairKey = []byte("failover-key-0123456789abcdef012")

// pair is two distributors, d1 and d2, mirroring each other.
type pair struct {
	t    testing.TB
	e    *lab.Env
	ds   [2]*lab.Distributor
	cfgs [2]string
	vip  *net.IPNet
}

func peerAddr(h *netlab.Host) string {
	return netip.AddrPortFrom(h.Links["int0"].Addr4.Addr(), 7947).String()
}

// startPair starts d1 and d2 with peers: each other; mut, if set, changes
// distributor i's options.
func startPair(t testing.TB, spec netlab.Spec, mut func(i int, o *lab.ConfigOptions)) *pair {
	spec.Distributors = 2
	labtest.Require(t)
	e, err := lab.NewEnv(context.Background(), spec, t.TempDir(), binary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close env: %v", err)
		}
	})
	p := &pair{t: t, e: e, vip: &net.IPNet{IP: net.IP(e.Topo.VIP4.AsSlice()), Mask: net.CIDRMask(32, 32)}}
	for i := range e.Topo.Distributors {
		p.cfgs[i] = p.config(i, mut)
	}
	// Both at once: each one's start gate waits for the other's table.
	var wg sync.WaitGroup
	var errs [2]error
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.run(i)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("distributor %d: %v", i+1, err)
		}
	}
	return p
}

// config builds distributor i's config: peers: the other one; mut, if set,
// changes the options.
func (p *pair) config(i int, mut func(i int, o *lab.ConfigOptions)) string {
	e := p.e
	h, other := e.Topo.Distributors[i], e.Topo.Distributors[1-i]
	o := lab.ConfigOptions{ID: h.Name, APIPath: lab.APIPath(e.Dir, h)}
	if mut != nil {
		mut(i, &o)
	}
	inner := o.Mutate
	o.Mutate = func(c *config.Config) {
		c.Peers = config.Peers{ID: uint32(i + 1), Listen: peerAddr(h), Addresses: []string{peerAddr(other)}, Key: pairKey, Mirror: "all"}
		if inner != nil {
			inner(c)
		}
	}
	return e.Config(o)
}

// run starts distributor i with its config (any goroutine).
func (p *pair) run(i int) error {
	t := p.t
	h := p.e.Topo.Distributors[i]
	d, err := p.e.StartDistributorOn(context.Background(), h, p.cfgs[i])
	if err != nil {
		return err
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", h.Name, d.Output())
		}
	})
	p.ds[i] = d
	return nil
}

// start runs distributor i with its config.
func (p *pair) start(i int) *lab.Distributor {
	if err := p.run(i); err != nil {
		p.t.Fatalf("distributor %s: %v", p.e.Topo.Distributors[i].Name, err)
	}
	return p.ds[i]
}

// gw returns distributor i's address on a segment's link.
func (p *pair) gw(i int, link string) net.IP {
	return net.IP(p.e.Topo.Distributors[i].Links[link].Addr4.Addr().AsSlice())
}

// spread routes every client's traffic to the VIP over both distributors
// (a multipath route with the L4 hash: the router of the issue).
func (p *pair) spread() {
	for _, c := range p.e.Topo.Clients {
		if err := c.NS.Sysctl("net.ipv4.fib_multipath_hash_policy", "1"); err != nil {
			p.t.Fatal(err)
		}
		eth0 := c.Links["eth0"].Index
		err := c.NS.Netlink().RouteReplace(&netlink.Route{Dst: p.vip, MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: eth0, Gw: p.gw(0, "ext0")},
			{LinkIndex: eth0, Gw: p.gw(1, "ext0")},
		}})
		if err != nil {
			p.t.Fatalf("multipath route in %s: %v", c.Name, err)
		}
	}
}

// via routes everything through distributor i: the clients' VIP route,
// the TMs' and servers' default routes.
func (p *pair) via(i int) {
	for _, c := range p.e.Topo.Clients {
		l := c.Links["eth0"]
		if err := c.NS.Netlink().RouteReplace(&netlink.Route{Dst: p.vip, LinkIndex: l.Index, Gw: p.gw(i, "ext0")}); err != nil {
			p.t.Fatalf("VIP route in %s: %v", c.Name, err)
		}
	}
	for _, h := range p.e.Topo.TMs {
		p.defaultVia(h, p.gw(i, "int0"))
	}
	for _, h := range p.e.Topo.Servers {
		p.defaultVia(h, p.gw(i, "srv0"))
	}
}

// defaultVia points h's default IPv4 route at gw.
func (p *pair) defaultVia(h *netlab.Host, gw net.IP) {
	rt := &netlink.Route{LinkIndex: h.Links["eth0"].Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw}
	if err := h.NS.Netlink().RouteReplace(rt); err != nil {
		p.t.Fatalf("route via %s in %s: %v", gw, h.Name, err)
	}
}

// links sets distributor i's links up or down.
func (p *pair) links(i int, up bool) {
	h := p.e.Topo.Distributors[i]
	for _, ifname := range []string{"ext0", "int0", "srv0"} {
		l, err := h.NS.Netlink().LinkByName(ifname)
		if err == nil {
			if up {
				err = h.NS.Netlink().LinkSetUp(l)
			} else {
				err = h.NS.Netlink().LinkSetDown(l)
			}
		}
		if err != nil {
			p.t.Fatalf("%s %s up=%v: %v", h.Name, ifname, up, err)
		}
	}
}

// fail kills distributor i (SIGKILL), takes its links down and routes
// everything through the other one, as fast as the test can; it returns
// when that was done.
func (p *pair) fail(i int) time.Duration {
	start := time.Now()
	p.ds[i].Kill()
	p.links(i, false)
	p.via(1 - i)
	took := time.Since(start)
	p.t.Logf("%s killed, links down, routes moved to %s in %v", p.e.Topo.Distributors[i].Name, p.e.Topo.Distributors[1-i].Name, took)
	return took
}

// comeBack starts distributor i again as after a reboot: its pinned data
// path removed (--unpin), its links up, a fresh daemon that must resync
// from its peer before it attaches. Routes are left to the caller.
func (p *pair) comeBack(i int) *lab.Distributor {
	h := p.e.Topo.Distributors[i]
	out, err := h.NS.Command(context.Background(), p.e.Bin, "distributor", "--config", p.ds[i].CfgPath, "--unpin").CombinedOutput()
	if err != nil {
		p.t.Fatalf("%s --unpin: %v\n%s", h.Name, err, out)
	}
	p.links(i, true)
	return p.start(i)
}

func mirrorStats(t *testing.T, d *lab.Distributor) map[string]uint64 {
	t.Helper()
	return stats(t, d).Mirror
}

// tmConns are connections TMs opened from the shared SNAT address to a
// server behind the distributors (server-side flows the distributors
// learned from the TMs' SYNs), each exchanging a line now and then.
type tmConn struct {
	tm string
	c  net.Conn
	br *bufio.Reader
}

// echoLines runs a TCP server on h that sends every line back.
func echoLines(t *testing.T, h *netlab.Host, port int) {
	t.Helper()
	var l net.Listener
	err := h.NS.Do(func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

func (c *tmConn) ping(i int) error {
	if err := c.c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s %s %d\n", c.tm, c.c.LocalAddr(), i)
	if _, err := io.WriteString(c.c, msg); err != nil {
		return fmt.Errorf("%s %s: write: %w", c.tm, c.c.LocalAddr(), err)
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", c.tm, c.c.LocalAddr(), err)
	}
	if line != msg {
		return fmt.Errorf("%s %s: got %q, want %q", c.tm, c.c.LocalAddr(), line, msg)
	}
	return nil
}

// dialFromTMs opens perTM connections from each TM's shared SNAT address
// to target, each TM in its own source port range.
func dialFromTMs(t *testing.T, e *lab.Env, target netip.AddrPort, perTM int) []*tmConn {
	t.Helper()
	var out []*tmConn
	for i, h := range e.Topo.TMs {
		lo := 20000 + i*2000
		if err := h.NS.Sysctl("net.ipv4.ip_local_port_range", fmt.Sprintf("%d %d", lo, lo+1999)); err != nil {
			t.Fatal(err)
		}
		for range perTM {
			var c net.Conn
			err := h.NS.Do(func() (err error) {
				dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: e.Topo.SNAT4.AsSlice()}}
				c, err = dl.Dial("tcp", target.String())
				return err
			})
			if err != nil {
				t.Fatalf("%s: dial %s: %v", h.Name, target, err)
			}
			t.Cleanup(func() { c.Close() })
			out = append(out, &tmConn{tm: h.Name, c: c, br: bufio.NewReader(c)})
		}
	}
	return out
}

// pingAll exchanges one line on every connection (20 at a time) and
// returns the failures.
func pingAll(conns []*tmConn, round int) []error {
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.ping(round); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// pinned is a client connection from a chosen source port, held open.
type pinned struct {
	*heldConn
	port int
	want string // the TM that must answer it
}

// dialPort opens a keep-alive HTTP connection from client h's source port
// to target and reads one answer.
func dialPort(h *netlab.Host, port int, target netip.AddrPort) (*heldConn, error) {
	var c net.Conn
	err := h.NS.Do(func() (err error) {
		d := net.Dialer{
			Timeout:   5 * time.Second,
			LocalAddr: &net.TCPAddr{Port: port},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) }); err != nil {
					return err
				}
				return serr
			},
		}
		c, err = d.Dial("tcp", target.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	hc := &heldConn{c: c, br: bufio.NewReader(c)}
	if hc.tm, err = hc.get(); err != nil {
		c.Close()
		return nil, err
	}
	return hc, nil
}

// getAll sends one request on every connection (20 at a time) and returns
// the failures and the connections answered by another TM than they must.
func getAll(conns []*pinned) (errs []error, moved []string) {
	var mu sync.Mutex
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tm, err := c.get()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("port %d: %w", c.port, err))
			case tm != c.want:
				moved = append(moved, fmt.Sprintf("port %d: %s, want %s", c.port, tm, c.want))
			}
		}()
	}
	wg.Wait()
	return errs, moved
}

// flowsByOrigin counts a distributor's flows by their first origin, and
// those from a peer.
func flowsByOrigin(t *testing.T, d *lab.Distributor) (map[string]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	by := map[string]int{}
	peer := 0
	err := d.API.Flows(ctx, api.FlowFilter{}, func(f api.Flow) error {
		if len(f.Origin) > 0 {
			by[f.Origin[0]]++
		}
		if strings.Contains(strings.Join(f.Origin, ","), "peer") {
			peer++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return by, peer
}

// TestFailoverMemorized: a TM memorizes 300 client flows (MEMORIZE frames
// to d1 only) to itself although the policy would pick another TM; d1
// mirrors them, so the connections the router spreads over d1 and d2 all
// reach their memorizing TM; d1 dies: all 300 keep working on d2, none
// changes TM.
func TestFailoverMemorized(t *testing.T) {
	const n = 300
	p := startPair(t, netlab.Spec{Clients: 1, TMs: 3}, nil)
	p.spread()
	e := p.e
	client := e.Topo.Clients[0]
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	byName := map[string]*netlab.Host{}
	for _, h := range e.Topo.TMs {
		byName[h.Name] = h
	}
	ops := map[string][]signal.Op{}
	var conns []*pinned
	for i := range n {
		src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), uint16(41000+i))
		policy := policyTM(t, 3, src, vip)
		owner := fmt.Sprintf("tm%d", (int(policy[2]-'0'))%3+1) // the next one: never the policy's
		ops[owner] = append(ops[owner], signal.Memorize{Key: signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: vip.Port(), Proto: flow.ProtoTCP}})
		conns = append(conns, &pinned{port: int(src.Port()), want: owner})
	}
	for owner, list := range ops {
		for len(list) > 0 {
			k := min(len(list), datapath.SigMaxOps)
			sendFrame(t, byName[owner], distMAC(e), list[:k]...)
			list = list[k:]
		}
	}
	var on [2]map[string]int
	waitFor(t, 20*time.Second, "the memorized entries on d1 and, mirrored, on d2", func() bool {
		for i, d := range p.ds {
			on[i], _ = flowsByOrigin(t, d)
		}
		return on[0]["memorized"] >= n && on[1]["memorized"] >= n
	})
	t.Logf("memorized entries: d1 %v, d2 %v", on[0], on[1])
	for _, c := range conns {
		hc, err := dialPort(client, c.port, vip)
		if err != nil {
			t.Fatalf("port %d: %v", c.port, err)
		}
		t.Cleanup(func() { hc.c.Close() })
		c.heldConn = hc
		if hc.tm != c.want {
			t.Fatalf("port %d answered by %s, want the memorizing %s", c.port, hc.tm, c.want)
		}
	}
	st := [2]api.Stats{stats(t, p.ds[0]), stats(t, p.ds[1])}
	t.Logf("packets to TMs before the failover: d1 %d, d2 %d (both carry the connections)", toTMs(st[0]), toTMs(st[1]))
	if toTMs(st[0]) == 0 || toTMs(st[1]) == 0 {
		t.Fatalf("the router did not spread the connections: %d packets through d1, %d through d2", toTMs(st[0]), toTMs(st[1]))
	}
	if errs, moved := getAll(conns); len(errs)+len(moved) > 0 {
		t.Fatalf("before the failover: %d errors %v, %d moved %v", len(errs), first(errs), len(moved), moved[:min(5, len(moved))])
	}
	p.fail(0)
	for round := range 3 {
		errs, moved := getAll(conns)
		if len(errs)+len(moved) > 0 {
			t.Fatalf("round %d after the failover: %d of %d connections broken %v, %d moved %v", round, len(errs), n, first(errs), len(moved), moved[:min(5, len(moved))])
		}
	}
	t.Logf("%d memorized connections: 0 broken, 0 moved after d1 died", n)
}

func first(errs []error) []error { return errs[:min(5, len(errs))] }

// toTMs is how many packets a distributor forwarded to TMs.
func toTMs(s api.Stats) uint64 {
	var n uint64
	for _, tm := range s.TrafficManagers {
		n += tm.Packets
	}
	return n
}

// TestFailoverLearned: each of 3 TMs opens 100 connections from the
// shared SNAT address to a server behind the distributors (server-side
// flows d1 learns from the TMs' SYNs: no hash could recompute which TM a
// server's reply belongs to); d1 mirrors them; d1 dies and the TMs' and
// the server's routes move to d2: every connection keeps exchanging data.
func TestFailoverLearned(t *testing.T) {
	const perTM = 100
	p := startPair(t, netlab.Spec{Clients: 1, TMs: 3, Servers: 1}, func(_ int, o *lab.ConfigOptions) { o.SNAT = true })
	e := p.e
	srv := e.Topo.Servers[0]
	echoLines(t, srv, 9100)
	target := netip.AddrPortFrom(srv.Links["eth0"].Addr4.Addr(), 9100)
	conns := dialFromTMs(t, e, target, perTM)
	if errs := pingAll(conns, 0); len(errs) > 0 {
		t.Fatalf("before the failover: %d broken %v", len(errs), first(errs))
	}
	var on [2]map[string]int
	var peer int
	waitFor(t, 20*time.Second, "the learned entries on d1 and, mirrored, on d2", func() bool {
		on[0], _ = flowsByOrigin(t, p.ds[0])
		on[1], peer = flowsByOrigin(t, p.ds[1])
		return on[0]["learned"] >= 3*perTM && on[1]["learned"] >= 3*perTM && peer >= 3*perTM
	})
	t.Logf("learned entries: d1 %v; d2 %v, %d from its peer", on[0], on[1], peer)
	p.fail(0)
	for round := 1; round <= 3; round++ {
		if errs := pingAll(conns, round); len(errs) > 0 {
			t.Fatalf("round %d after the failover: %d of %d server-side connections broken %v", round, len(errs), len(conns), first(errs))
		}
	}
	if l := counter(t, p.ds[1], "learned"); l != 0 {
		t.Logf("d2 learned %d flows itself (TM packets of known flows)", l)
	}
	t.Logf("%d learned server-side connections: 0 broken after d1 died", len(conns))
}

// TestFailoverPersistence: source persistence on both distributors, with
// rings that disagree: d1 gives tm1 almost no slots (tm2 and tm3 weigh
// 1000), d2 gives it almost all (tm1 weighs 1000). Each of 3 clients'
// first connection goes through d1, which picks tm2 or tm3, writes the
// client's persistence second key and mirrors it; then the router spreads
// 100 long-lived connections per client over d1 and d2: all of a client's
// connections reach its TM, whichever distributor they cross (without the
// mirrored second key, d2 would pick tm1 for them: a control run with
// second keys not mirrored failed so). d1 dies: 0 connections break, and
// each client's new connections on d2 still go to its TM.
func TestFailoverPersistence(t *testing.T) {
	const perClient = 100
	p := startPair(t, netlab.Spec{Clients: 3, TMs: 3}, func(i int, o *lab.ConfigOptions) {
		o.Weights = map[string]int{"tm2": 1000, "tm3": 1000}
		if i == 1 {
			o.Weights = map[string]int{"tm1": 1000}
		}
		o.Mutate = func(c *config.Config) {
			for i := range c.Services {
				c.Services[i].Persistence = &config.Persistence{Timeout: 600}
			}
		}
	})
	e := p.e
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	p.via(0)
	persisted := map[string]string{}
	for _, c := range e.Topo.Clients {
		tm, err := getFrom(c, 0, vip)
		if err != nil {
			t.Fatal(err)
		}
		persisted[c.Name] = tm
	}
	t.Logf("persisted TMs: %v", persisted)
	waitFor(t, 20*time.Second, "d1's persistence second keys on d2", func() bool {
		return mirrorStats(t, p.ds[1])["second_inserted"] >= uint64(len(e.Topo.Clients))
	})
	p.spread()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs []*loadgen.Run
	for i := range e.Topo.Clients {
		o := loadgen.Options{KeepAlive: perClient, Interval: 100 * time.Millisecond}
		e.ClientDialer(i, &o)
		runs = append(runs, loadgen.Start(ctx, e.Target(false), o))
	}
	waitFor(t, 30*time.Second, "every client's connections", func() bool {
		for _, r := range runs {
			n := uint64(0)
			for _, c := range r.Snapshot().PerTM {
				n += c.KeepAliveConns
			}
			if n < perClient {
				return false
			}
		}
		return true
	})
	st := [2]api.Stats{stats(t, p.ds[0]), stats(t, p.ds[1])}
	t.Logf("packets to TMs before the failover: d1 %d, d2 %d", toTMs(st[0]), toTMs(st[1]))
	if toTMs(st[1]) == 0 {
		t.Fatalf("the router sent no connection through d2")
	}
	for i, r := range runs {
		c := e.Topo.Clients[i].Name
		for tm, n := range r.Snapshot().PerTM {
			if tm != persisted[c] && n.KeepAliveConns > 0 {
				t.Fatalf("%s: %d connections on %s, want all on its persisted %s", c, n.KeepAliveConns, tm, persisted[c])
			}
		}
	}
	time.Sleep(time.Second)
	p.fail(0)
	time.Sleep(3 * time.Second) // every connection makes requests through d2
	cancel()
	for i, r := range runs {
		rep := r.Wait()
		c := e.Topo.Clients[i].Name
		t.Logf("%s: %s", c, rep)
		if rep.Errors != 0 || rep.FlowsMoved != 0 || rep.Connections != perClient {
			t.Errorf("%s after the failover: %d errors %v, %d moved, %d connections (want %d)", c, rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.Connections, perClient)
		}
	}
	for _, c := range e.Topo.Clients {
		for range 5 {
			tm, err := getFrom(c, 0, vip)
			if err != nil {
				t.Fatalf("%s: a new connection after the failover: %v", c.Name, err)
			}
			if tm != persisted[c.Name] {
				t.Fatalf("%s: a new connection after the failover went to %s, want its persisted %s", c.Name, tm, persisted[c.Name])
			}
		}
	}
}

// TestFailoverComeBack: d2's ring differs from d1's (tm1 weighs 4 on d2),
// so no hash on d1 can recompute d2's choices. 300 long-lived connections
// spread over both; d1 dies; 200 more connections open through d2 alone.
// d1 comes back as after a reboot (its pinned data path removed): its
// start gate waits for d2's table before it attaches, and before any
// route points at it again its table has every connection with d2's TM
// (asserted from its flows and counters); then the router spreads the
// flows over both again: 0 of the 500 connections break or change TM.
func TestFailoverComeBack(t *testing.T) {
	p := startPair(t, netlab.Spec{Clients: 2, TMs: 3}, func(i int, o *lab.ConfigOptions) {
		if i == 1 {
			o.Weights = map[string]int{"tm1": 4}
		}
	})
	e := p.e
	p.spread()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(client, n int) *loadgen.Run {
		o := loadgen.Options{KeepAlive: n, Interval: 100 * time.Millisecond}
		e.ClientDialer(client, &o)
		r := loadgen.Start(ctx, e.Target(false), o)
		waitFor(t, 30*time.Second, fmt.Sprintf("%d connections of c%d", n, client+1), func() bool {
			return r.Snapshot().Connections >= uint64(n)
		})
		return r
	}
	before := start(0, 300)
	waitFor(t, 20*time.Second, "each distributor's connections on the other", func() bool {
		_, p1 := flowsByOrigin(t, p.ds[0])
		_, p2 := flowsByOrigin(t, p.ds[1])
		return p1 > 0 && p2 > 0 && p1+p2 >= 300
	})
	p.fail(0)
	during := start(1, 200) // through d2 only, by d2's ring

	// d2's client flows, by key: what d1 must know before it takes traffic.
	want := map[string]string{}
	for _, c := range e.Topo.Clients {
		for _, f := range flowsOf(t, p.ds[1], c.Links["eth0"].Addr4.Addr()) {
			want[f.Proto+" "+f.Src+" "+f.Dst] = f.TM
		}
	}
	if len(want) < 500 {
		t.Fatalf("d2 has %d client flows, want the 500 connections", len(want))
	}
	d1 := p.comeBack(0)
	out := d1.Output()
	synced, attached := strings.Index(out, `msg="peers synced"`), strings.Index(out, `msg="XDP attached"`)
	if synced < 0 || attached < 0 || synced > attached || strings.Contains(out, "taking traffic before") {
		t.Fatalf("d1 did not sync before it attached (synced at %d, attached at %d):\n%s", synced, attached, out)
	}
	// No route points at d1 yet: what it has came from d2.
	got := map[string]string{}
	for _, c := range e.Topo.Clients {
		for _, f := range flowsOf(t, d1, c.Links["eth0"].Addr4.Addr()) {
			if !strings.Contains(strings.Join(f.Origin, ","), "peer") {
				t.Fatalf("d1 has a flow of its own before any traffic: %+v", f)
			}
			got[f.Proto+" "+f.Src+" "+f.Dst] = f.TM
		}
	}
	missing := 0
	for k, tm := range want {
		if got[k] != tm {
			missing++
		}
	}
	ms := mirrorStats(t, d1)
	t.Logf("d1 back: %d of d2's %d client flows in its table with their TM; mirror inserted %d, resyncs asked %d", len(want)-missing, len(want), ms["inserted"], ms["resyncs_requested"])
	if missing > 0 || ms["inserted"] < uint64(len(want)) {
		t.Fatalf("d1 attached without %d of d2's %d flows (inserted %d)", missing, len(want), ms["inserted"])
	}

	// The router spreads the flows over both again; the TMs' and servers'
	// routes go back to d1 as at the start.
	p.via(0)
	p.spread()
	time.Sleep(3 * time.Second)
	st := stats(t, d1)
	if toTMs(st) == 0 {
		t.Fatalf("d1 forwarded nothing after the routes came back")
	}
	cancel()
	for _, x := range []struct {
		name string
		r    *loadgen.Run
		n    uint64
	}{{"opened before the failover", before, 300}, {"opened through d2 alone", during, 200}} {
		rep := x.r.Wait()
		t.Logf("%s: %s", x.name, rep)
		if rep.Errors != 0 || rep.FlowsMoved != 0 || rep.Connections != x.n {
			t.Errorf("%s: %d errors %v, %d moved %v, %d connections (want %d)", x.name, rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples, rep.Connections, x.n)
		}
	}
	t.Logf("d1 after the return: %d packets to TMs", toTMs(stats(t, d1)))
}

// TestPeersTMListDiffers: a rolling config change: d2 is reloaded first
// with tm2 removed, so its TM list (which TM each index means) differs from
// d1's. Each then refuses the other's entries (counted), shows the other as
// tm-list-differs in `switchyard peers`; once d1 is reloaded with the same
// list, they agree again, resync, and d1's new flows reach d2.
func TestPeersTMListDiffers(t *testing.T) {
	p := startPair(t, netlab.Spec{Clients: 1, TMs: 3}, nil)
	without := func(_ int, o *lab.ConfigOptions) { o.TMs = []string{"tm1", "tm3"} }
	if err := p.ds[1].Reload(p.config(1, without)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "d1 and d2 to see their TM lists differ", func() bool {
		for _, d := range p.ds {
			if st := stats(t, d); len(st.Peers) != 1 || st.Peers[0].State != "tm-list-differs" {
				return false
			}
		}
		return true
	})
	inserted := mirrorStats(t, p.ds[1])["inserted"]
	rep := runLoad(t, p.e, false, loadgen.Options{KeepAlive: 20, Interval: 10 * time.Millisecond}, 2*time.Second)
	if rep.Errors != 0 {
		t.Fatalf("load errors %d %v", rep.Errors, rep.ErrorSamples)
	}
	waitFor(t, 10*time.Second, "d1's entries refused by d2", func() bool {
		return mirrorStats(t, p.ds[1])["refused_tm_list"] >= 20
	})
	for _, d := range p.ds {
		st := stats(t, d)
		if st.Mirror["tm_list_mismatch"] == 0 {
			t.Fatalf("%s: mirror %v", d.Host.Name, st.Mirror)
		}
		out, err := exec.Command(p.e.Bin, "peers", "--api", "unix:"+lab.APIPath(p.e.Dir, d.Host)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "tm-list-differs") || !strings.Contains(string(out), "tm_list_mismatch") {
			t.Fatalf("switchyard peers on %s: %v\n%s", d.Host.Name, err, out)
		}
	}
	if n := mirrorStats(t, p.ds[1])["inserted"]; n != inserted {
		t.Fatalf("d2 installed %d entries from a peer whose TM list differs", n-inserted)
	}

	if err := p.ds[0].Reload(p.config(0, without)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "d1 and d2 to agree and resync", func() bool {
		for _, d := range p.ds {
			if st := stats(t, d); len(st.Peers) != 1 || st.Peers[0].State != "synced" {
				return false
			}
		}
		return mirrorStats(t, p.ds[1])["inserted"] > inserted
	})
	c1 := p.e.Topo.Clients[0].Links["eth0"].Addr4.Addr()
	own := 0
	on2 := map[string]bool{}
	for _, f := range flowsOf(t, p.ds[1], c1) {
		on2[f.Proto+" "+f.Src+" "+f.Dst] = true
	}
	for _, f := range flowsOf(t, p.ds[0], c1) {
		if !strings.Contains(strings.Join(f.Origin, ","), "peer") {
			own++
			if !on2[f.Proto+" "+f.Src+" "+f.Dst] {
				t.Fatalf("d1's flow %s %s → %s not on d2 after the resync", f.Proto, f.Src, f.Dst)
			}
		}
	}
	t.Logf("after both reloaded: d2 has all %d of d1's own flows; d2 mirror %v", own, mirrorStats(t, p.ds[1]))
}

// TestMirrorOlderE2E: d1 mirrors with mirror: older, min_age: 2. Client 1
// holds 50 keep-alive connections, client 2 makes short ones (each ends
// with FINs in milliseconds) through d1: the 50 long-lived flows reach d2
// once they are 2 s old; no short one does (they have ended when they come
// of age: counted as ended young).
func TestMirrorOlderE2E(t *testing.T) {
	p := startPair(t, netlab.Spec{Clients: 2, TMs: 3}, func(i int, o *lab.ConfigOptions) {
		if i == 0 {
			o.Mutate = func(c *config.Config) { c.Peers.Mirror, c.Peers.MinAge = "older", 2 }
		}
	})
	e := p.e
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ka := loadgen.Options{KeepAlive: 50, Interval: 100 * time.Millisecond}
	e.ClientDialer(0, &ka)
	long := loadgen.Start(ctx, e.Target(false), ka)
	sh := loadgen.Options{Short: 2, Interval: 20 * time.Millisecond}
	e.ClientDialer(1, &sh)
	short := loadgen.Start(ctx, e.Target(false), sh)
	c1, c2 := e.Topo.Clients[0].Links["eth0"].Addr4.Addr(), e.Topo.Clients[1].Links["eth0"].Addr4.Addr()
	waitFor(t, 20*time.Second, "the 50 long-lived flows on d2", func() bool {
		return len(flowsOf(t, p.ds[1], c1)) >= 50
	})
	time.Sleep(3 * time.Second) // short flows made since have come of age too
	cancel()
	lr, sr := long.Wait(), short.Wait()
	if lr.Errors+sr.Errors != 0 || sr.Connections < 20 {
		t.Fatalf("load: long %s; short %s", lr, sr)
	}
	if n := len(flowsOf(t, p.ds[1], c2)); n != 0 {
		t.Fatalf("%d of %d short connections mirrored to d2 with mirror: older", n, sr.Connections)
	}
	ms := mirrorStats(t, p.ds[0])
	t.Logf("d1: %d short connections, %d long-lived; mirror: promoted %d, ended young %d, waiting %d", sr.Connections, lr.Connections, ms["older_promoted"], ms["older_ended_young"], ms["older_waiting"])
	if ms["older_promoted"] < 50 || ms["older_ended_young"] == 0 {
		t.Fatalf("d1 mirror counters %v", ms)
	}
}
