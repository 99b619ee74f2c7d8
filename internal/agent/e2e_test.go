package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/signal"
)

// bin is the switchyard command these tests run, built once.
var bin lab.Binary

func TestMain(m *testing.M) {
	code := m.Run()
	bin.Remove()
	os.Exit(code)
}

// binary builds the switchyard command once per test binary.
func binary(t testing.TB) string { return bin.Path(t) }

// lab is a topology with a distributor (SNAT learning on) and an agent on
// every TM host.
type labEnv struct {
	e      *lab.Env
	d      *lab.Distributor
	agents map[string]*lab.Agent
}

func newLab(t testing.TB, spec netlab.Spec, o lab.ConfigOptions, agentArgs ...string) *labEnv {
	t.Helper()
	labtest.Require(t)
	bin := binary(t)
	e, err := lab.NewEnv(context.Background(), spec, t.TempDir(), bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close env: %v", err)
		}
	})
	o.SNAT = true
	d, err := e.StartDistributor(context.Background(), e.Config(o))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("distributor output:\n%s", d.Output())
		}
	})
	l := &labEnv{e: e, d: d, agents: map[string]*lab.Agent{}}
	for _, h := range e.Topo.TMs {
		// Short TIME_WAIT so that ended TCP flows leave conntrack (and are
		// forgotten) within the test's patience.
		if err := h.NS.Sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"); err != nil {
			t.Fatal(err)
		}
		l.startAgent(t, h, agentArgs...)
	}
	return l
}

func (l *labEnv) startAgent(t testing.TB, h *netlab.Host, extra ...string) *lab.Agent {
	t.Helper()
	a, err := l.e.StartAgent(context.Background(), h, extra...)
	if err != nil {
		t.Fatal(err)
	}
	l.agents[h.Name] = a
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent %s output:\n%s", h.Name, a.Output())
		}
		a.Kill()
	})
	return a
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func flowOf(t testing.TB, d *lab.Distributor, src, dst netip.AddrPort) (api.Flow, bool) {
	t.Helper()
	var found api.Flow
	ok := false
	err := d.API.Flows(context.Background(), api.FlowFilter{Addr: src.Addr()}, func(f api.Flow) error {
		if f.Src == src.String() && f.Dst == dst.String() {
			found, ok = f, true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found, ok
}

func counter(t testing.TB, d *lab.Distributor, name string) uint64 {
	t.Helper()
	s, err := d.API.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Counters {
		if c.Name == name {
			return c.Packets
		}
	}
	t.Fatalf("no counter %q", name)
	return 0
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// dialFrom opens a TCP connection from namespace h (from local, if valid).
func dialFrom(t testing.TB, h *netlab.Host, local netip.AddrPort, target netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	err := h.NS.Do(func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(local)
		}
		c, err = d.Dial("tcp", target.String())
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", target, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// askTM sends an HTTP request on c and returns the answering TM's id.
func askTM(t testing.TB, c net.Conn) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	body, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if name, v, ok := strings.Cut(line, ": "); ok && strings.EqualFold(name, "X-Switchyard-TM") {
			return v
		}
	}
	t.Fatalf("no TM id in %q", body)
	return ""
}

// TestAgentClientFlow: a client's connection to a VIP is memorized by the
// agent of the TM that accepted it (the entry's origin turns from selected
// to memorized), and forgotten when conntrack lets it go.
func TestAgentClientFlow(t *testing.T) {
	l := newLab(t, netlab.Spec{Clients: 1, TMs: 2}, lab.ConfigOptions{})
	client := l.e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 41000)
	vip := netip.AddrPortFrom(l.e.Topo.VIP4, lab.HTTPPort)
	mem0, fgt0 := counter(t, l.d, "sig_memorize"), counter(t, l.d, "sig_forget")

	c := dialFrom(t, client, src, vip)
	var f api.Flow
	waitFor(t, 5*time.Second, "the agent's MEMORIZE of the client's flow", func() bool {
		var ok bool
		f, ok = flowOf(t, l.d, src, vip)
		return ok && has(f.Origin, "memorized")
	})
	if got := askTM(t, c); got != f.TM {
		t.Fatalf("flow memorized for %s but answered by %s", f.TM, got)
	}
	if n := counter(t, l.d, "sig_memorize") - mem0; n < 1 {
		t.Fatalf("sig_memorize moved by %d", n)
	}
	c.Close()
	waitFor(t, 15*time.Second, "the agent's FORGET after the connection ended", func() bool {
		_, ok := flowOf(t, l.d, src, vip)
		return !ok
	})
	if n := counter(t, l.d, "sig_forget") - fgt0; n < 1 {
		t.Fatalf("entry gone but sig_forget moved by %d", n)
	}
	// Nothing left pending brings it back after the in-band deadline.
	time.Sleep(3 * agent.DefaultDeadline)
	if g, ok := flowOf(t, l.d, src, vip); ok {
		t.Fatalf("entry back after FORGET: %+v", g)
	}

	// A connection that ends before the TM sends anything after its
	// SYN-ACK: its MEMORIZE may still be pending when it ends, and must
	// not be sent after the FORGET.
	for i := range 20 {
		s2 := netip.AddrPortFrom(src.Addr(), uint16(42000+i))
		dialFrom(t, client, s2, vip).Close()
	}
	time.Sleep(time.Second + 3*agent.DefaultDeadline)
	waitFor(t, 15*time.Second, "the short flows to be forgotten", func() bool {
		for i := range 20 {
			if _, ok := flowOf(t, l.d, netip.AddrPortFrom(src.Addr(), uint16(42000+i)), vip); ok {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * agent.DefaultDeadline)
	for i := range 20 {
		if g, ok := flowOf(t, l.d, netip.AddrPortFrom(src.Addr(), uint16(42000+i)), vip); ok {
			t.Fatalf("short flow %d back after FORGET: %+v", i, g)
		}
	}
	s, err := l.agents[f.TM].Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.New < 1 || s.Ended < 1 || s.SendErrors != 0 {
		t.Fatalf("agent %s stats %+v: want new ≥ 1, ended ≥ 1, no send errors", f.TM, s)
	}
}

// TestAgentServerSideFlow: a connection a TM opens from the shared SNAT
// address to a server is memorized under its reply key (server → SNAT) for
// that TM.
func TestAgentServerSideFlow(t *testing.T) {
	l := newLab(t, netlab.Spec{Clients: 1, TMs: 2, Servers: 1}, lab.ConfigOptions{})
	srv := l.e.Topo.Servers[0]
	target := netip.AddrPortFrom(srv.Links["eth0"].Addr4.Addr(), 9000)
	listen(t, srv, target, "server")
	for _, h := range l.e.Topo.TMs {
		local := netip.AddrPortFrom(l.e.Topo.SNAT4, 0)
		c := dialFrom(t, h, local, target)
		got := netip.MustParseAddrPort(c.LocalAddr().String())
		waitFor(t, 5*time.Second, "the memorized server-side flow of "+h.Name, func() bool {
			f, ok := flowOf(t, l.d, target, got)
			return ok && f.TM == h.Name && has(f.Origin, "memorized")
		})
	}
}

// listen serves TCP on addr in h's namespace; every connection gets name
// and a newline.
func listen(t testing.TB, h *netlab.Host, addr netip.AddrPort, name string) {
	t.Helper()
	var ln net.Listener
	err := h.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", name)
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
}

// TestAgentReannounce: an agent killed with SIGKILL and started again
// memorizes the flows conntrack still holds, so an entry the distributor
// lost in between is back.
func TestAgentReannounce(t *testing.T) {
	l := newLab(t, netlab.Spec{Clients: 1, TMs: 2}, lab.ConfigOptions{})
	client := l.e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 41001)
	vip := netip.AddrPortFrom(l.e.Topo.VIP4, lab.HTTPPort)
	dialFrom(t, client, src, vip)
	var f api.Flow
	waitFor(t, 5*time.Second, "the memorized flow", func() bool {
		var ok bool
		f, ok = flowOf(t, l.d, src, vip)
		return ok && has(f.Origin, "memorized")
	})
	var owner *netlab.Host
	for _, h := range l.e.Topo.TMs {
		if h.Name == f.TM {
			owner = h
		}
	}
	l.agents[owner.Name].Kill()
	// The distributor loses the entry while no agent runs.
	err := owner.NS.Do(func() error {
		s, err := signal.NewFrameSender("eth0", l.e.Topo.Distributors[0].Links["int0"].MAC)
		if err != nil {
			return err
		}
		defer s.Close()
		key := signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: vip.Port(), Proto: 6}
		return s.Send(signal.Message{Ops: []signal.Op{signal.Forget{Key: key}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the entry to be forgotten", func() bool {
		_, ok := flowOf(t, l.d, src, vip)
		return !ok
	})
	a := l.startAgent(t, owner)
	waitFor(t, 5*time.Second, "the restarted agent to re-memorize the flow", func() bool {
		f, ok := flowOf(t, l.d, src, vip)
		return ok && f.TM == owner.Name && has(f.Origin, "memorized")
	})
	s, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Announced < 1 || s.Active < 1 {
		t.Fatalf("restarted agent stats %+v: want announced ≥ 1 and active ≥ 1", s)
	}
}

const ftpPort = 2121

// TestAgentRelateFTP: the kernel's FTP helper (assigned by the agent's
// --ftp-port) sees a PASV reply on a TM and creates an expectation; the
// agent RELATEs it, and the client's data connection to the VIP lands on
// the control connection's TM whatever the policy would pick. The FTP
// server is a few lines of Go that know nothing of Switchyard.
func TestAgentRelateFTP(t *testing.T) {
	o := lab.ConfigOptions{ExtraServices: []config.Service{
		{Name: "ftp", VIP: netip.MustParseAddr("10.0.0.100"), Port: ftpPort, Protocol: "tcp"},
		{Name: "ftp-data", VIP: netip.MustParseAddr("10.0.0.100"), Protocol: "tcp"},
	}}
	spec := netlab.Spec{Clients: 1, TMs: 4}
	o.Mutate = func(c *config.Config) {
		for i := range c.Services {
			if c.Services[i].TrafficManagers == nil {
				for _, tm := range c.TrafficManagers {
					c.Services[i].TrafficManagers = append(c.Services[i].TrafficManagers, tm.ID)
				}
			}
		}
	}
	l := newLab(t, spec, o, "--ftp-port", fmt.Sprint(ftpPort))
	vip := l.e.Topo.VIP4
	// One data port per transfer: a second key outlives its data
	// connection (until timeouts.second_key), and another TM's RELATE of
	// the same key would be refused as foreign.
	const transfers = 8
	var next atomic.Uint32
	for _, h := range l.e.Topo.TMs {
		serveFTP(t, h, netip.AddrPortFrom(vip, ftpPort), vip, 50000, transfers, &next)
	}
	client := l.e.Topo.Clients[0]
	rel0 := counter(t, l.d, "sig_relate")
	for i := range transfers {
		ctl := dialFrom(t, client, netip.AddrPort{}, netip.AddrPortFrom(vip, ftpPort))
		br := bufio.NewReader(ctl)
		_ = ctl.SetDeadline(time.Now().Add(5 * time.Second))
		owner := readLine(t, br) // "220 <tm>"
		owner = strings.TrimPrefix(owner, "220 ")
		fmt.Fprintf(ctl, "PASV\r\n")
		if line := readLine(t, br); !strings.HasPrefix(line, "227 ") {
			t.Fatalf("PASV answered %q", line)
		}
		dataPort := uint16(50000 + i)
		waitFor(t, 5*time.Second, "the RELATE of the data connection", func() bool {
			return counter(t, l.d, "sig_relate") >= rel0+uint64(i)+1
		})
		data := dialFrom(t, client, netip.AddrPort{}, netip.AddrPortFrom(vip, dataPort))
		_ = data.SetDeadline(time.Now().Add(5 * time.Second))
		got := readLine(t, bufio.NewReader(data))
		if got != owner {
			t.Fatalf("transfer %d: data connection answered by %s, control connection by %s", i, got, owner)
		}
		dsrc := netip.MustParseAddrPort(data.LocalAddr().String())
		f, ok := flowOf(t, l.d, dsrc, netip.AddrPortFrom(vip, dataPort))
		// The second key steered it; the owner's agent then memorized it.
		if !ok || f.TM != owner {
			t.Fatalf("transfer %d: data flow entry %+v (found %v), want one on %s", i, f, ok, owner)
		}
		data.Close()
		ctl.Close()
	}
}

func readLine(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	s, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

// serveFTP is the smallest FTP control server the kernel helper follows:
// a greeting with the TM's name, and a 227 reply to PASV that points at
// data; the data listener writes the TM's name.
func serveFTP(t testing.TB, h *netlab.Host, ctl netip.AddrPort, vip netip.Addr, base uint16, n int, next *atomic.Uint32) {
	t.Helper()
	for i := range n {
		listen(t, h, netip.AddrPortFrom(vip, base+uint16(i)), h.Name)
	}
	var ln net.Listener
	err := h.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp", ctl.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := vip.As4()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "220 %s\r\n", h.Name)
				br := bufio.NewReader(c)
				var active netip.AddrPort
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(line, "PASV"):
						port := base + uint16(next.Add(1)-1)
						fmt.Fprintf(c, "227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).\r\n", a[0], a[1], a[2], a[3], port>>8, port&0xff)
					case strings.HasPrefix(line, "PORT "):
						var n [6]int
						if _, err := fmt.Sscanf(strings.TrimSpace(line[5:]), "%d,%d,%d,%d,%d,%d", &n[0], &n[1], &n[2], &n[3], &n[4], &n[5]); err != nil {
							fmt.Fprintf(c, "501 bad PORT\r\n")
							continue
						}
						active = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(n[0]), byte(n[1]), byte(n[2]), byte(n[3])}), uint16(n[4]<<8|n[5]))
						fmt.Fprintf(c, "200 PORT command successful\r\n")
					case strings.HasPrefix(line, "LIST"):
						// Active mode: connect to the client from the VIP.
						err := h.NS.Do(func() error {
							d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: vip.AsSlice()}}
							dc, err := d.Dial("tcp", active.String())
							if err != nil {
								return err
							}
							defer dc.Close()
							_, err = fmt.Fprintf(dc, "%s\n", h.Name)
							return err
						})
						if err != nil {
							fmt.Fprintf(c, "425 %v\r\n", err)
							continue
						}
						fmt.Fprintf(c, "226 done\r\n")
					default:
						fmt.Fprintf(c, "200 ok\r\n")
					}
				}
			}()
		}
	}()
}

// TestAgentInBand: signals ride the flows' own packets. A TM's SYN from the
// shared SNAT address carries its own MEMORIZE (the program's syn counter
// and the distributor's sig_shim move, and the entry is memorized for the
// TM); a client flow's MEMORIZE rides the TM's answer, which reaches the
// client intact (the distributor strips the shim), and no frame was
// needed.
func TestAgentInBand(t *testing.T) {
	l := newLab(t, netlab.Spec{Clients: 1, TMs: 2, Servers: 1}, lab.ConfigOptions{})
	srv := l.e.Topo.Servers[0]
	target := netip.AddrPortFrom(srv.Links["eth0"].Addr4.Addr(), 9000)
	listen(t, srv, target, "server")
	h := l.e.Topo.TMs[0]
	ag := l.agents[h.Name]
	shim0 := counter(t, l.d, "sig_shim")

	c := dialFrom(t, h, netip.AddrPortFrom(l.e.Topo.SNAT4, 0), target)
	if line := readLine(t, bufio.NewReader(c)); line != "server" {
		t.Fatalf("server said %q", line)
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	waitFor(t, 5*time.Second, "the SYN's MEMORIZE", func() bool {
		f, ok := flowOf(t, l.d, target, local)
		return ok && f.TM == h.Name && has(f.Origin, "memorized")
	})
	s, err := ag.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Shim == nil || s.Shim.SYN < 1 {
		t.Fatalf("agent stats %+v: want a SYN that carried its MEMORIZE", s)
	}
	if n := counter(t, l.d, "sig_shim") - shim0; n < 1 {
		t.Fatalf("sig_shim moved by %d", n)
	}

	// A client's flow: wait until the agent left its MEMORIZE for the
	// program, then ask; the answer carries it.
	client := l.e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 41002)
	vip := netip.AddrPortFrom(l.e.Topo.VIP4, lab.HTTPPort)
	// The server-side flow's own pending MEMORIZE (left after its SYN had
	// gone) settles first: carried by a later packet or sent late.
	time.Sleep(3 * agent.DefaultDeadline)
	before := map[string]agent.Stats{}
	for name, a := range l.agents {
		if before[name], err = a.Stats(); err != nil {
			t.Fatal(err)
		}
	}
	cc := dialFrom(t, client, src, vip)
	var owner string
	waitFor(t, 5*time.Second, "an agent to leave the MEMORIZE in-band", func() bool {
		for name, a := range l.agents {
			s, err := a.Stats()
			if err == nil && s.InBand > before[name].InBand {
				owner = name
				return true
			}
		}
		return false
	})
	t0 := time.Now()
	got := askTM(t, cc)
	t.Logf("answer in %v", time.Since(t0))
	if got != owner {
		t.Fatalf("answered by %s, the in-band MEMORIZE came from %s's agent", got, owner)
	}
	waitFor(t, 5*time.Second, "the memorized client flow", func() bool {
		f, ok := flowOf(t, l.d, src, vip)
		return ok && f.TM == owner && has(f.Origin, "memorized")
	})
	time.Sleep(2 * agent.DefaultDeadline)
	s, err = l.agents[owner].Stats()
	if err != nil {
		t.Fatal(err)
	}
	b := before[owner]
	if s.Shim.Pending <= b.Shim.Pending || s.InBandLate != b.InBandLate {
		t.Fatalf("agent %s: shim pending %d → %d, late %d → %d: want the answer to carry it and no frame", owner, b.Shim.Pending, s.Shim.Pending, b.InBandLate, s.InBandLate)
	}
}

// TestAgentUDPControl: an agent that is not on the distributor's segment
// (here: told to use UDP control) signals over authenticated UDP; the
// client's flow is memorized and forgotten the same way.
func TestAgentUDPControl(t *testing.T) {
	labtest.Require(t)
	e, err := lab.NewEnv(context.Background(), netlab.Spec{Clients: 1, TMs: 1}, t.TempDir(), binary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	key := strings.Repeat("ab", 32)
	ctl := netip.AddrPortFrom(e.Topo.Distributors[0].Links["int0"].Addr4.Addr(), 7946)
	d, err := e.StartDistributor(context.Background(), e.Config(lab.ConfigOptions{SNAT: true, SignalKeys: map[string]string{"tm1": key}, UDPListen: ctl.String()}))
	if err != nil {
		t.Fatal(err)
	}
	h := e.Topo.TMs[0]
	if err := h.NS.Sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(e.Dir, "tm1.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := lab.StartAgent(context.Background(), h, e.Bin, []string{
		"--vip", e.Topo.VIP4.String(), "--udp", ctl.String(), "--tm-id", "tm1", "--key-file", keyFile,
		"--socket", lab.AgentSocket(e.Dir, h),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent output:\n%s\ndistributor output:\n%s", a.Output(), d.Output())
		}
		a.Kill()
	})
	client := e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 41003)
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	c := dialFrom(t, client, src, vip)
	waitFor(t, 5*time.Second, "the MEMORIZE over UDP", func() bool {
		f, ok := flowOf(t, d, src, vip)
		return ok && f.TM == "tm1" && has(f.Origin, "memorized")
	})
	if got := askTM(t, c); got != "tm1" {
		t.Fatalf("answered by %s", got)
	}
	c.Close()
	waitFor(t, 15*time.Second, "the FORGET over UDP", func() bool {
		_, ok := flowOf(t, d, src, vip)
		return !ok
	})
	s, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Ops < 2 || s.SendErrors != 0 || s.Shim != nil {
		t.Fatalf("agent stats %+v: want ≥ 2 ops over UDP, no errors, no in-band program", s)
	}
}

// TestAgentIPv6: a client's flow to the IPv6 VIP is memorized by the agent,
// its MEMORIZE carried by the TM's answer (the program's IPv6 path), and a
// TM's connection from the IPv6 SNAT address carries its own on the SYN.
func TestAgentIPv6(t *testing.T) {
	l := newLab(t, netlab.Spec{Clients: 1, TMs: 1, Servers: 1}, lab.ConfigOptions{IPv6: true})
	h := l.e.Topo.TMs[0]
	client := l.e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr6.Addr(), 41004)
	vip := netip.AddrPortFrom(l.e.Topo.VIP6, lab.HTTPPort)
	before, err := l.agents[h.Name].Stats()
	if err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, client, src, vip)
	waitFor(t, 5*time.Second, "the agent to leave the MEMORIZE in-band", func() bool {
		s, err := l.agents[h.Name].Stats()
		return err == nil && s.InBand > before.InBand
	})
	if got := askTM(t, c); got != h.Name {
		t.Fatalf("answered by %s", got)
	}
	waitFor(t, 5*time.Second, "the memorized IPv6 flow", func() bool {
		f, ok := flowOf(t, l.d, src, vip)
		return ok && f.TM == h.Name && has(f.Origin, "memorized")
	})

	srv := l.e.Topo.Servers[0]
	target := netip.AddrPortFrom(srv.Links["eth0"].Addr6.Addr(), 9000)
	listen(t, srv, target, "server")
	sc := dialFrom(t, h, netip.AddrPortFrom(l.e.Topo.SNAT6, 0), target)
	local := netip.MustParseAddrPort(sc.LocalAddr().String())
	waitFor(t, 5*time.Second, "the IPv6 SYN's MEMORIZE", func() bool {
		f, ok := flowOf(t, l.d, target, local)
		return ok && f.TM == h.Name && has(f.Origin, "memorized")
	})
	s, err := l.agents[h.Name].Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Shim.SYN <= before.Shim.SYN || s.Shim.Pending <= before.Shim.Pending {
		t.Fatalf("shim counters %+v → %+v: want an IPv6 SYN and an IPv6 answer to carry MEMORIZEs", before.Shim, s.Shim)
	}
}

// TestAgentRelateFTPActive: active mode. The kernel FTP helper on the TM
// sees the client's PORT and expects a connection from the TM side to the
// client's port; the agent relates the answers (client:port → VIP), so
// the client's SYN-ACK to the TM's data connection reaches the control
// connection's TM, whatever the policy would pick.
func TestAgentRelateFTPActive(t *testing.T) {
	o := lab.ConfigOptions{ExtraServices: []config.Service{
		{Name: "ftp", VIP: netip.MustParseAddr("10.0.0.100"), Port: ftpPort, Protocol: "tcp"},
		{Name: "ftp-data", VIP: netip.MustParseAddr("10.0.0.100"), Protocol: "tcp"},
	}}
	o.Mutate = func(c *config.Config) {
		for i := range c.Services {
			if c.Services[i].TrafficManagers == nil {
				for _, tm := range c.TrafficManagers {
					c.Services[i].TrafficManagers = append(c.Services[i].TrafficManagers, tm.ID)
				}
			}
		}
		// The mask of an active-mode relate (the client's address and
		// port, to the VIP), most specific first.
		c.SecondKeys.Masks = append([][]string{{"proto", "src", "sport", "dst"}}, config.DefaultSecondKeyMasks()...)
	}
	l := newLab(t, netlab.Spec{Clients: 1, TMs: 4}, o, "--ftp-port", fmt.Sprint(ftpPort))
	vip := l.e.Topo.VIP4
	var next atomic.Uint32
	for _, h := range l.e.Topo.TMs {
		serveFTP(t, h, netip.AddrPortFrom(vip, ftpPort), vip, 50000, 1, &next)
	}
	client := l.e.Topo.Clients[0]
	caddr := client.Links["eth0"].Addr4.Addr()
	rel0 := counter(t, l.d, "sig_relate")
	for i := range 8 {
		port := uint16(46000 + i)
		var ln net.Listener
		err := client.NS.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(caddr, port).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		ctl := dialFrom(t, client, netip.AddrPort{}, netip.AddrPortFrom(vip, ftpPort))
		br := bufio.NewReader(ctl)
		_ = ctl.SetDeadline(time.Now().Add(5 * time.Second))
		owner := strings.TrimPrefix(readLine(t, br), "220 ")
		// The helper reads a command only right after a line it saw end
		// (the kernel's FTP helper follows the newlines of each
		// direction): a first line, as every client sends, comes before.
		fmt.Fprintf(ctl, "USER anonymous\r\n")
		if line := readLine(t, br); !strings.HasPrefix(line, "200 ") {
			t.Fatalf("USER answered %q", line)
		}
		a := caddr.As4()
		fmt.Fprintf(ctl, "PORT %d,%d,%d,%d,%d,%d\r\n", a[0], a[1], a[2], a[3], port>>8, port&0xff)
		if line := readLine(t, br); !strings.HasPrefix(line, "200 ") {
			t.Fatalf("PORT answered %q", line)
		}
		// A real client sends its LIST at once; the relate takes about a
		// millisecond (BenchmarkAgentDelay/frames). Wait for it here, so
		// the test checks where the data connection goes, not that race.
		waitFor(t, 5*time.Second, "the RELATE of the active data connection", func() bool {
			return counter(t, l.d, "sig_relate") >= rel0+uint64(i)+1
		})
		fmt.Fprintf(ctl, "LIST\r\n")
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		dc, err := ln.Accept()
		if err != nil {
			t.Fatalf("transfer %d: the TM's data connection did not arrive: %v (control: %q)", i, err, readLine(t, br))
		}
		_ = dc.SetDeadline(time.Now().Add(5 * time.Second))
		if got := readLine(t, bufio.NewReader(dc)); got != owner {
			t.Fatalf("transfer %d: data connection from %s, control connection on %s", i, got, owner)
		}
		if line := readLine(t, br); !strings.HasPrefix(line, "226 ") {
			t.Fatalf("transfer %d: LIST answered %q", i, line)
		}
		dc.Close()
		ln.Close()
		ctl.Close()
	}
}
