package lab_test

// End-to-end tests of the TM side: the reference TM (internal/tm) and real
// TM and server software (vsftpd, HAProxy, nginx) behind a distributor, in
// namespaces. The echo fixtures that NewEnv starts on the TM hosts are
// stopped first: here the TMs are proxies, and the echo fixtures are the
// servers.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/tm"
	"github.com/switchyard/switchyard/internal/tm/echo"
	"github.com/switchyard/switchyard/signal"
)

// Ports of the servers behind the TMs.
const (
	srvHTTPPort = 8080
	srvUDPPort  = 5300
)

// startServers runs an echo fixture named after each server host on its
// eth0 addresses: HTTP on srvHTTPPort, UDP on srvUDPPort. It returns the
// IPv4 addresses; v6Addrs gives the IPv6 ones.
func startServers(t testing.TB, e *lab.Env) (httpAddrs, udpAddrs []netip.AddrPort, servers []*echo.Server) {
	t.Helper()
	for _, h := range e.Topo.Servers {
		a := h.Links["eth0"].Addr4.Addr()
		s := echo.New(h.Name)
		a6 := h.Links["eth0"].Addr6.Addr()
		err := h.NS.Do(func() error {
			for _, ap := range []netip.Addr{a, a6} {
				if err := s.ListenHTTP(netip.AddrPortFrom(ap, srvHTTPPort)); err != nil {
					return err
				}
				if err := s.ListenUDP(netip.AddrPortFrom(ap, srvUDPPort)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		httpAddrs = append(httpAddrs, netip.AddrPortFrom(a, srvHTTPPort))
		udpAddrs = append(udpAddrs, netip.AddrPortFrom(a, srvUDPPort))
		servers = append(servers, s)
	}
	return
}

// tmHostPrep stops the echo fixture on a TM host and gives the host its own
// source-port range: TMs that share an SNAT address must not open the same
// 5-tuple (docs/operations.md, "Learning").
func tmHostPrep(t testing.TB, e *lab.Env, i int, h *netlab.Host) {
	t.Helper()
	if s := e.TM(h.Name); s != nil {
		s.Close()
	}
	lo := 20000 + i*10000
	if err := h.NS.Sysctl("net.ipv4.ip_local_port_range", fmt.Sprintf("%d %d", lo, lo+9999)); err != nil {
		t.Fatal(err)
	}
}

// startRefTM runs the reference TM on host h with the given proxies, its
// sockets in h's namespace, signalling with frames to the distributor.
func startRefTM(t testing.TB, e *lab.Env, h *netlab.Host, proxies []tm.Proxy) *tm.TM {
	t.Helper()
	var fs *signal.FrameSender
	err := h.NS.Do(func() (err error) {
		fs, err = signal.NewFrameSender("eth0", distMAC(e))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	r, err := tm.Start(tm.Config{
		ID: h.Name, Proxies: proxies, Source4: e.Topo.SNAT4, Source6: e.Topo.SNAT6,
		Signal: fs, Do: h.NS.Do, HealthInterval: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// loadUntil runs load from client 0 until at least n HTTP and n UDP
// requests were answered (or 2 minutes passed), then stops it. during, if
// set, runs once the load has reached n/2 requests.
func loadUntil(t *testing.T, e *lab.Env, o loadgen.Options, n uint64, during func()) loadgen.Report {
	t.Helper()
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := loadgen.Start(ctx, e.Target(false), o)
	deadline := time.Now().Add(2 * time.Minute)
	did := during == nil
	for time.Now().Before(deadline) {
		r := run.Snapshot()
		if !did && r.HTTPRequests >= n/2 && (o.UDPFlows == 0 || r.UDPRequests >= n/2) {
			during()
			did = true
		}
		if did && r.HTTPRequests >= n && (o.UDPFlows == 0 || r.UDPRequests >= n) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	rep := run.Wait()
	t.Logf("load: %s", rep)
	return rep
}

func checkLoad(t *testing.T, rep loadgen.Report, n uint64, udp bool) {
	t.Helper()
	if rep.Errors != 0 || rep.FlowsMoved != 0 {
		t.Fatalf("errors %d %v; replies at the wrong TM (flows moved) %d %v", rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples)
	}
	if rep.HTTPRequests < n || (udp && rep.UDPRequests < n) {
		t.Fatalf("only %d HTTP and %d UDP requests answered, want %d each", rep.HTTPRequests, rep.UDPRequests, n)
	}
}

// TestReferenceTM: 3 reference TMs proxy HTTP (TCP mode and HTTP mode) and
// UDP to 3 servers from the shared SNAT address; the distributor learns
// every server-side connection from its SYN. 2,000 HTTP requests over
// keep-alive and short connections and 2,000 UDP requests: no error, no
// reply at the wrong TM (a keep-alive connection or UDP flow answered by a
// second TM would count as moved; a TCP reply at the wrong TM breaks the
// connection), and every server used.
func TestReferenceTM(t *testing.T) {
	for _, mode := range []string{tm.ModeTCP, tm.ModeHTTP} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3, Servers: 3})
			d := startDist(t, e, lab.ConfigOptions{SNAT: true})
			h, u, servers := startServers(t, e)
			var tms []*tm.TM
			for i, host := range e.Topo.TMs {
				tmHostPrep(t, e, i, host)
				tms = append(tms, startRefTM(t, e, host, []tm.Proxy{
					{Mode: mode, Listen: netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort), Servers: h},
					{Mode: tm.ModeUDP, Listen: netip.AddrPortFrom(e.Topo.VIP4, lab.UDPPort), Servers: u},
				}))
			}
			rep := loadUntil(t, e, loadgen.Options{KeepAlive: 6, Short: 3, UDPFlows: 12, Interval: 2 * time.Millisecond}, 2000, nil)
			checkLoad(t, rep, 2000, true)
			udpServers := 0
			for _, s := range servers {
				st := s.Stats()
				if st.HTTPRequests == 0 {
					t.Errorf("server %s got no HTTP request: the pool is not balanced", s.ID)
				}
				if st.UDPRequests > 0 {
					udpServers++
				}
			}
			// 12 UDP flows over 3 TMs that each balance on their own: at
			// least 2 servers, whatever the Maglev split.
			if udpServers < 2 {
				t.Errorf("UDP sessions reached %d servers, want at least 2", udpServers)
			}
			var conns uint64
			for _, r := range tms {
				st := r.Stats()
				if st.Total.DialFailed != 0 || st.Total.NoServer != 0 || st.Total.BadGateway != 0 || st.Total.Accepted == 0 {
					t.Errorf("TM %s: %+v", st.ID, st.Total)
				}
				conns += st.Total.Accepted
			}
			if mode == tm.ModeHTTP {
				// HTTP answers name the TM (tm.Header), UDP answers the server.
				named := 0
				for id := range rep.PerTM {
					if strings.HasPrefix(id, "tm") {
						named++
					}
				}
				if named != 3 {
					t.Errorf("HTTP mode: responses name TMs %v, want all 3", rep.PerTM)
				}
			}
			if l := counter(t, d, "learned"); l == 0 {
				t.Errorf("learned = 0: server-side connections were not learned")
			}
			t.Logf("%d client connections and sessions accepted by the TMs; learned %d", conns, counter(t, d, "learned"))
		})
	}
}

// ftpFiles writes n files of different sizes into a new world-readable
// directory (vsftpd serves it as the anonymous root after dropping to the
// ftp user) and returns the directory and the files' SHA-256 sums.
func ftpFiles(t *testing.T, n int) (string, []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sy-ftp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var sums []string
	for i := range n {
		b := make([]byte, 1000+i*37_000)
		_, _ = rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, fmt.Sprintf("%x", sha256.Sum256(b)))
	}
	// vsftpd's secure_chroot_dir: empty, owned by root, not writable.
	if err := os.Mkdir(filepath.Join(dir, ".empty"), 0o555); err != nil {
		t.Fatal(err)
	}
	return dir, sums
}

// startVsftpd runs vsftpd on server host h (port 21, anonymous, read-only,
// passive and active mode with data connections from port 20) as a child
// of the test, stopped at cleanup.
func startVsftpd(t *testing.T, h *netlab.Host, root string) netip.Addr {
	t.Helper()
	needSoftware(t, "vsftpd")
	addr := h.Links["eth0"].Addr4.Addr()
	conf := filepath.Join(t.TempDir(), "vsftpd.conf")
	cfg := strings.Join([]string{
		"listen=YES", "listen_ipv6=NO", "listen_address=" + addr.String(), "listen_port=21", "background=NO",
		"anonymous_enable=YES", "no_anon_password=YES", "anon_root=" + root, "local_enable=NO", "write_enable=NO",
		"pasv_enable=YES", "port_enable=YES", "connect_from_port_20=YES", "ftp_data_port=20",
		"secure_chroot_dir=" + filepath.Join(root, ".empty"), "seccomp_sandbox=NO", "isolate=NO", "isolate_network=NO",
		"xferlog_enable=NO", "syslog_enable=NO", "dual_log_enable=NO", "hide_ids=YES", "max_clients=200", "max_per_ip=200",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := h.NS.Command(context.Background(), "vsftpd", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("vsftpd output:\n%s", out.String())
		}
	})
	waitFor(t, 10*time.Second, "vsftpd to listen", func() bool {
		return h.NS.Do(func() error {
			c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(addr, 21).String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
	return addr
}

// ftpModes are the curl options of the four data-connection variants.
var ftpModes = []struct {
	name string
	args func(client netip.Addr) []string
}{
	{"EPSV", func(netip.Addr) []string { return nil }},
	{"PASV", func(netip.Addr) []string { return []string{"--disable-epsv"} }},
	{"EPRT", func(c netip.Addr) []string { return []string{"--ftp-port", c.String()} }},
	{"PORT", func(c netip.Addr) []string { return []string{"--ftp-port", c.String(), "--disable-eprt"} }},
}

// TestFTPThroughReferenceTMs: vsftpd behind 4 reference TMs in FTP mode.
// 100 transfers with curl (EPSV, PASV, EPRT and PORT in turn), 4 at a time,
// every file's checksum checked. A data connection that reached another TM
// than its control connection's would find no listener there and fail the
// transfer; the TMs' counters must also show one data connection per
// transfer and no refusal.
func TestFTPThroughReferenceTMs(t *testing.T) {
	needSoftware(t, "curl")
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4, Servers: 1})
	all := []string{"tm1", "tm2", "tm3", "tm4"}
	d := startDist(t, e, lab.ConfigOptions{SNAT: true, ExtraServices: []config.Service{
		{Name: "ftp", VIP: e.Topo.VIP4, Port: 21, Protocol: config.ProtocolTCP, TrafficManagers: all},
		// Passive data connections go to VIP ports the TMs choose; the
		// RELATE of the control connection's TM steers each.
		{Name: "ftp-data", VIP: e.Topo.VIP4, Protocol: config.ProtocolTCP, TrafficManagers: all},
	}})
	root, sums := ftpFiles(t, 10)
	srvAddr := startVsftpd(t, e.Topo.Servers[0], root)
	var tms []*tm.TM
	for i, h := range e.Topo.TMs {
		tmHostPrep(t, e, i, h)
		tms = append(tms, startRefTM(t, e, h, []tm.Proxy{
			{Mode: tm.ModeFTP, Listen: netip.AddrPortFrom(e.Topo.VIP4, 21), Servers: []netip.AddrPort{netip.AddrPortFrom(srvAddr, 21)}},
		}))
	}
	client := e.Topo.Clients[0]
	caddr := client.Links["eth0"].Addr4.Addr()
	const transfers = 100
	var wg sync.WaitGroup
	errs := make(chan error, transfers)
	sem := make(chan struct{}, 4)
	for i := range transfers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m := ftpModes[i%len(ftpModes)]
			f := i % len(sums)
			args := append([]string{"-sS", "--max-time", "20", "-o", "-"}, m.args(caddr)...)
			args = append(args, fmt.Sprintf("ftp://%s/f%d", e.Topo.VIP4, f))
			out, err := client.NS.Command(context.Background(), "curl", args...).Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				errs <- fmt.Errorf("transfer %d (%s, f%d): %v %s", i, m.name, f, err, stderr)
				return
			}
			if got := fmt.Sprintf("%x", sha256.Sum256(out)); got != sums[f] {
				errs <- fmt.Errorf("transfer %d (%s, f%d): %d bytes, checksum %s, want %s", i, m.name, f, len(out), got[:12], sums[f][:12])
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 5 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		var nonzero []string
		for _, c := range stats(t, d).Counters {
			if c.Packets != 0 && (strings.HasPrefix(c.Name, "sig_") || strings.HasPrefix(c.Name, "learn") || strings.HasPrefix(c.Name, "drop")) {
				nonzero = append(nonzero, fmt.Sprintf("%s=%d", c.Name, c.Packets))
			}
		}
		for _, r := range tms {
			t.Logf("TM %s: %+v", r.Stats().ID, r.Stats().Total)
		}
		t.Fatalf("%d of %d transfers failed; distributor: %s", n, transfers, strings.Join(nonzero, " "))
	}
	var passive, active, used uint64
	for _, r := range tms {
		st := r.Stats().Total
		if st.FTPRefused != 0 || st.FTPTimeout != 0 || st.SignalFails != 0 || st.DialFailed != 0 {
			t.Errorf("TM %s: %+v", r.Stats().ID, st)
		}
		passive += st.FTPPassive
		active += st.FTPActive
		if st.Accepted > 0 {
			used++
		}
	}
	if passive != transfers/2 || active != transfers/2 {
		t.Errorf("data connections: %d passive, %d active; want %d each", passive, active, transfers/2)
	}
	if used < 2 {
		t.Errorf("control connections reached %d TMs: the test would not see a data connection at the wrong TM", used)
	}
	if k := counter(t, d, "fwd_second_key"); k < transfers/2 {
		t.Errorf("fwd_second_key = %d, want at least %d (one per passive data connection)", k, transfers/2)
	}
	t.Logf("%d transfers: %d passive, %d active data connections over %d TMs; sig_relate %d, sig_memorize %d, fwd_second_key %d",
		transfers, passive, active, used, counter(t, d, "sig_relate"), counter(t, d, "sig_memorize"), counter(t, d, "fwd_second_key"))
}

// tmSoftware starts TM software on TM host h (the i-th TM, from 0) in front
// of the servers; mode is tm.ModeTCP or tm.ModeHTTP for the VIP's port 80,
// and, when udp is set, UDP on the VIP's port 5300.
type tmSoftware func(t *testing.T, e *lab.Env, h *netlab.Host, mode string, udp bool, httpSrv, udpSrv []netip.AddrPort)

// scenario runs 2,000 HTTP requests (and 2,000 UDP ones if udp) over
// keep-alive and short connections through 3 TMs running sw to 3 servers,
// and checks: no error, no reply at the wrong TM. With change, a fourth TM
// is added and tm1 drained half-way: tm1 keeps its flows (none moves) and
// gets no new one, the new TM gets new flows.
func scenario(t *testing.T, sw tmSoftware, mode string, udp, change bool) {
	scenarioWith(t, sw, mode, udp, scenarioOpts{change: change})
}

// scenarioOpts are scenario's variants.
type scenarioOpts struct {
	// change: add a fourth TM and drain tm1 half-way.
	change bool
	// agent: run `switchyard agent` (frames, in-band) on every TM host,
	// started before the TM software, so every flow it sees is memorized.
	agent bool
	// restart: kill -9 every agent half-way and start it again (needs
	// agent). The new agents re-announce what conntrack holds.
	restart bool
}

// scenarioWith is scenario with the agent variants of scenarioOpts.
func scenarioWith(t *testing.T, sw tmSoftware, mode string, udp bool, so scenarioOpts) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3, Servers: 3})
	o := lab.ConfigOptions{SNAT: true}
	d := startDist(t, e, o)
	h, u, _ := startServers(t, e)
	agents := map[string]*lab.Agent{}
	startAgent := func(host *netlab.Host) {
		a, err := e.StartAgent(context.Background(), host)
		if err != nil {
			t.Fatal(err)
		}
		agents[host.Name] = a
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent on %s:\n%s", host.Name, a.Output())
			}
			a.Kill()
		})
	}
	for i, host := range e.Topo.TMs {
		tmHostPrep(t, e, i, host)
		if so.agent {
			startAgent(host)
		}
		sw(t, e, host, mode, udp, h, u)
	}
	lo := loadgen.Options{KeepAlive: 6, Short: 3, Interval: 2 * time.Millisecond}
	if udp {
		lo.UDPFlows = 12
	}
	var drainedAt uint64
	var added string
	var announced uint64
	var refused0 map[string]uint64
	var during []func()
	if so.restart {
		during = append(during, func() {
			mem0 := counter(t, d, "sig_memorize")
			var hosts []*netlab.Host
			for _, host := range e.Topo.TMs {
				if a := agents[host.Name]; a != nil {
					a.Kill() // a crash: no FORGET, its nftables table and tc link left behind
					hosts = append(hosts, host)
				}
			}
			for _, host := range hosts {
				startAgent(host)
				st, err := agents[host.Name].Stats()
				if err != nil {
					t.Fatal(err)
				}
				announced += st.Announced
			}
			// The re-announced flows reach the distributor as MEMORIZEs.
			waitFor(t, 20*time.Second, "the re-announced flows' MEMORIZEs", func() bool {
				return counter(t, d, "sig_memorize") > mem0
			})
		})
	}
	if so.change {
		during = append(during, func() {
			host, err := e.AddTM(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			added = host.Name
			tmHostPrep(t, e, 3, host)
			if so.agent {
				startAgent(host)
			}
			sw(t, e, host, mode, udp, h, u)
			o.TMs = []string{"tm1", "tm2", "tm3", added}
			o.States = map[string]string{"tm1": config.StateDraining}
			if err := d.Reload(e.Config(o)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "tm1 draining and "+added+" ready", func() bool {
				var draining, ready bool
				for _, s := range stats(t, d).TrafficManagers {
					draining = draining || s.ID == "tm1" && s.State == "draining"
					ready = ready || s.ID == added && s.Ready
				}
				return draining && ready
			})
			drainedAt = newFlowsOf(t, d, "tm1")
			// The added TM's agent signalled (health checks' SYNs) before
			// the reload made its MAC known: those are refused, rightly;
			// none after.
			refused0 = refusedSignals(t, d)
		})
	}
	var hook func()
	if len(during) > 0 {
		hook = func() {
			for _, f := range during {
				f()
			}
		}
	}
	rep := loadUntil(t, e, lo, 2000, hook)
	checkLoad(t, rep, 2000, udp)
	if so.change {
		if n := newFlowsOf(t, d, "tm1") - drainedAt; n != 0 {
			t.Errorf("tm1 got %d new flows after it was drained", n)
		}
		if n := newFlowsOf(t, d, added); n == 0 {
			t.Errorf("the added TM %s got no new flow", added)
		}
	}
	if so.agent {
		checkAgents(t, d, agents, refused0)
	}
	if so.restart {
		if announced == 0 {
			t.Errorf("the restarted agents re-announced no flow (the load's keep-alive connections were open)")
		}
		t.Logf("restarted agents re-announced %d flows", announced)
	}
	t.Logf("learned %d, sig_memorize %d, sig_forget %d, sig_shim %d", counter(t, d, "learned"),
		counter(t, d, "sig_memorize"), counter(t, d, "sig_forget"), counter(t, d, "sig_shim"))
}

// checkAgents checks that every agent memorized flows and sent without
// error, and that the distributor refused none of their signals since
// refused0 (refusedSignals' counts at a point; nil: since the start).
func checkAgents(t *testing.T, d *lab.Distributor, agents map[string]*lab.Agent, refused0 map[string]uint64) {
	t.Helper()
	for name, a := range agents {
		st, err := a.Stats()
		if err != nil {
			t.Fatalf("agent on %s: %v", name, err)
		}
		if st.New == 0 || st.SendErrors != 0 {
			t.Errorf("agent on %s: %d new flows, %d send errors; want some and none", name, st.New, st.SendErrors)
		}
		t.Logf("agent on %s: new %d, ended %d, ops %d, in-band %d (late %d), announced %d", name, st.New, st.Ended, st.Ops, st.InBand, st.InBandLate, st.Announced)
	}
	if counter(t, d, "sig_memorize") == 0 {
		t.Errorf("sig_memorize = 0: the agents' MEMORIZEs did not arrive")
	}
	var refused []string
	for name, n := range refusedSignals(t, d) {
		if n != refused0[name] {
			refused = append(refused, fmt.Sprintf("%s=%d", name, n-refused0[name]))
		}
	}
	if len(refused) > 0 {
		t.Errorf("the distributor refused signals: %s", strings.Join(refused, " "))
	}
	for name, n := range refused0 {
		if n != 0 {
			t.Logf("refused before the added TM was configured: %s=%d", name, n)
		}
	}
}

// refusedSignals returns the distributor's sig_refused_* counters.
func refusedSignals(t *testing.T, d *lab.Distributor) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, c := range stats(t, d).Counters {
		if strings.HasPrefix(c.Name, "sig_refused") {
			m[c.Name] = c.Packets
		}
	}
	return m
}

func newFlowsOf(t *testing.T, d *lab.Distributor, id string) uint64 {
	t.Helper()
	n, ok := tmNewFlows(stats(t, d))[id]
	if !ok {
		t.Fatalf("no TM %q in stats", id)
	}
	return n
}

func refTMSoftware(t *testing.T, e *lab.Env, h *netlab.Host, mode string, udp bool, httpSrv, udpSrv []netip.AddrPort) {
	ps := []tm.Proxy{{Mode: mode, Listen: netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort), Servers: httpSrv}}
	if udp {
		ps = append(ps, tm.Proxy{Mode: tm.ModeUDP, Listen: netip.AddrPortFrom(e.Topo.VIP4, lab.UDPPort), Servers: udpSrv})
	}
	startRefTM(t, e, h, ps)
}

// runDaemon runs a program as a child of the test in h's namespace, stops it
// at cleanup or when stop is called (SIGINT, then SIGKILL after 5 s), and
// shows its output if the test failed.
func runDaemon(t testing.TB, h *netlab.Host, name string, args ...string) (stop func()) {
	t.Helper()
	var out syncBuffer
	cmd := h.NS.Command(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s on %s:\n%s", name, h.Name, out.String())
		}
	})
	return stop
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil // bounded: a chatty daemon cannot fill the test's memory
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitListening waits until something accepts TCP on addr inside h.
func waitListening(t testing.TB, h *netlab.Host, addr netip.AddrPort) {
	t.Helper()
	waitForTB(t, 15*time.Second, addr.String()+" to listen on "+h.Name, func() bool {
		return h.NS.Do(func() error {
			c, err := net.DialTimeout("tcp", addr.String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
}

// haproxyConfig is the tested HAProxy configuration of docs/traffic-managers.md.
func haproxyConfig(id, mode string, vip, snat netip.Addr, servers []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 4000

defaults
    mode %s
    timeout connect 3s
    timeout client 60s
    timeout server 60s

frontend vip
    bind %s
    default_backend servers

backend servers
    balance leastconn
    # Connect to the servers from the shared SNAT address: the distributor
    # learns each connection's return path from its SYN.
    source %s
`, mode, netip.AddrPortFrom(vip, lab.HTTPPort), snat)
	if mode == tm.ModeHTTP {
		fmt.Fprintf(&b, "    http-response set-header %s %s\n", tm.Header, id)
	}
	for i, s := range servers {
		fmt.Fprintf(&b, "    server s%d %s check inter 1s\n", i+1, s)
	}
	return b.String()
}

func haproxySoftware(t *testing.T, e *lab.Env, h *netlab.Host, mode string, _ bool, httpSrv, _ []netip.AddrPort) {
	t.Helper()
	startHAProxy(t, e, h, mode, httpSrv)
}

// startHAProxy runs HAProxy on h with haproxyConfig and returns its stop.
func startHAProxy(t testing.TB, e *lab.Env, h *netlab.Host, mode string, httpSrv []netip.AddrPort) (stop func()) {
	t.Helper()
	needSoftware(t, "haproxy")
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(h.Name, mode, e.Topo.VIP4, e.Topo.SNAT4, httpSrv)), 0o600); err != nil {
		t.Fatal(err)
	}
	stop = runDaemon(t, h, "haproxy", "-db", "-f", cfg)
	waitListening(t, h, netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort))
	return stop
}

func waitForTB(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nginxConfig is the tested nginx stream configuration of
// docs/traffic-managers.md.
func nginxConfig(dir string, vip, snat netip.Addr, httpSrv, udpSrv []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
pid %s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
stream {
    upstream web {
        least_conn;
`, dir)
	for _, s := range httpSrv {
		fmt.Fprintf(&b, "        server %s;\n", s)
	}
	b.WriteString("    }\n    upstream echo {\n")
	for _, s := range udpSrv {
		fmt.Fprintf(&b, "        server %s;\n", s)
	}
	fmt.Fprintf(&b, `    }
    server {
        listen %s;
        proxy_pass web;
        proxy_bind %s;
    }
    server {
        listen %s udp;
        proxy_pass echo;
        proxy_bind %s;
        proxy_timeout 30s;
    }
}
`, netip.AddrPortFrom(vip, lab.HTTPPort), snat, netip.AddrPortFrom(vip, lab.UDPPort), snat)
	return b.String()
}

func nginxSoftware(t *testing.T, e *lab.Env, h *netlab.Host, _ string, _ bool, httpSrv, udpSrv []netip.AddrPort) {
	t.Helper()
	needSoftware(t, "nginx")
	needSoftware(t, "/usr/lib/nginx/modules/ngx_stream_module.so")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(nginxConfig(dir, e.Topo.VIP4, e.Topo.SNAT4, httpSrv, udpSrv)), 0o600); err != nil {
		t.Fatal(err)
	}
	runDaemon(t, h, "nginx", "-c", cfg, "-p", dir, "-e", "stderr")
	waitListening(t, h, netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort))
}

// TestTMSoftware: HAProxy 2.6 (TCP and HTTP mode), nginx stream (TCP and
// UDP) and the reference TM as the TMs, each with and without a TM added and
// one drained mid-run.
func TestTMSoftware(t *testing.T) {
	for _, tc := range []struct {
		name string
		sw   tmSoftware
		mode string
		udp  bool
	}{
		{"haproxy-tcp", haproxySoftware, tm.ModeTCP, false},
		{"haproxy-http", haproxySoftware, tm.ModeHTTP, false},
		{"nginx-stream", nginxSoftware, tm.ModeTCP, true},
		{"reference-http", refTMSoftware, tm.ModeHTTP, true},
	} {
		for _, change := range []bool{false, true} {
			name := tc.name
			if change {
				name += "/add-and-drain"
			}
			t.Run(name, func(t *testing.T) { scenario(t, tc.sw, tc.mode, tc.udp, change) })
		}
	}
}

// TestTMSoftwareAgent: the same TM software with the agent on every TM host
// (memorizing every flow, in-band), with every agent killed (-9) and
// started again half-way, and with a TM added and one drained half-way.
func TestTMSoftwareAgent(t *testing.T) {
	for _, tc := range []struct {
		name string
		sw   tmSoftware
		mode string
		udp  bool
	}{
		{"haproxy-tcp", haproxySoftware, tm.ModeTCP, false},
		{"haproxy-http", haproxySoftware, tm.ModeHTTP, false},
		{"nginx-stream", nginxSoftware, tm.ModeTCP, true},
	} {
		t.Run(tc.name+"/agent-restart", func(t *testing.T) {
			scenarioWith(t, tc.sw, tc.mode, tc.udp, scenarioOpts{agent: true, restart: true})
		})
		t.Run(tc.name+"/agent-add-and-drain", func(t *testing.T) {
			scenarioWith(t, tc.sw, tc.mode, tc.udp, scenarioOpts{agent: true, change: true})
		})
	}
}

// BenchmarkTMSoftware measures HTTP requests per second through Switchyard
// with the reference TM and with HAProxy 2.6 as the 3 TMs (same topology,
// same servers, same run), one after the other in each round, the order
// alternating. It reports each side's median rate with its errors next to
// it, and the median of the rounds' ratios reference/HAProxy. Run it as
//
//	go test ./internal/lab/ -run XXX -bench TMSoftware -benchtime 3x
func BenchmarkTMSoftware(b *testing.B) {
	for _, mode := range []string{tm.ModeTCP, tm.ModeHTTP} {
		b.Run(mode, func(b *testing.B) {
			labtest.Require(b)
			e, err := lab.NewEnv(context.Background(), netlab.Spec{Clients: 1, Distributors: 1, TMs: 3, Servers: 3}, b.TempDir(), binary(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { e.Close() })
			if _, err := e.StartDistributor(context.Background(), e.Config(lab.ConfigOptions{SNAT: true})); err != nil {
				b.Fatal(err)
			}
			h, u, _ := startServers(b, e)
			for i, host := range e.Topo.TMs {
				tmHostPrep(b, e, i, host)
			}
			start := map[string]func() (stop func()){
				"reference": func() func() {
					var ts []*tm.TM
					for _, host := range e.Topo.TMs {
						ts = append(ts, startRefTM(b, e, host, []tm.Proxy{
							{Mode: mode, Listen: netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort), Servers: h},
							{Mode: tm.ModeUDP, Listen: netip.AddrPortFrom(e.Topo.VIP4, lab.UDPPort), Servers: u},
						}))
					}
					return func() {
						for _, r := range ts {
							r.Close()
						}
					}
				},
				"haproxy": func() func() {
					var stops []func()
					for _, host := range e.Topo.TMs {
						stops = append(stops, startHAProxy(b, e, host, mode, h))
					}
					return func() {
						for _, s := range stops {
							s()
						}
					}
				},
			}
			rates := map[string][]float64{}
			errs := map[string]uint64{}
			var ratios []float64
			for i := range b.N {
				order := []string{"reference", "haproxy"}
				if i%2 == 1 {
					slices.Reverse(order)
				}
				round := map[string]float64{}
				for _, name := range order {
					stop := start[name]()
					o := loadgen.Options{KeepAlive: 8, Short: 4}
					e.ClientDialer(0, &o)
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					rep := loadgen.Start(ctx, e.Target(false), o).Wait()
					cancel()
					stop()
					round[name] = float64(rep.HTTPRequests) / rep.Elapsed.Seconds()
					rates[name] = append(rates[name], round[name])
					errs[name] += rep.Errors
					b.Logf("round %d %s %s: %.0f req/s, %d errors, %d moved", i+1, mode, name, round[name], rep.Errors, rep.FlowsMoved)
				}
				ratios = append(ratios, round["reference"]/round["haproxy"])
			}
			b.ReportMetric(median(rates["reference"]), "ref-req/s")
			b.ReportMetric(float64(errs["reference"]), "ref-errors")
			b.ReportMetric(median(rates["haproxy"]), "haproxy-req/s")
			b.ReportMetric(float64(errs["haproxy"]), "haproxy-errors")
			b.ReportMetric(median(ratios), "ref/haproxy")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestReferenceTMCommand: `switchyard tm` as a process on a TM host serves
// through the distributor, answers /healthz, and on SIGTERM drains: /healthz
// turns 503, new connections are refused, an open keep-alive connection
// keeps working, and the process exits 0 once it is closed.
func TestReferenceTMCommand(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1, Servers: 1})
	startDist(t, e, lab.ConfigOptions{SNAT: true})
	h, _, _ := startServers(t, e)
	host, client := e.Topo.TMs[0], e.Topo.Clients[0]
	tmHostPrep(t, e, 0, host)
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	admin := "127.0.0.1:9901"
	var out syncBuffer
	cmd := host.NS.Command(context.Background(), binary(t), "tm", "--id", "tm1", "--source", e.Topo.SNAT4.String(),
		"--admin", admin, "--proxy", fmt.Sprintf("tcp %s %s", vip, h[0]),
		"--signal-iface", "eth0", "--signal-dst", distMAC(e).String(), "--drain-timeout", "60s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("switchyard tm:\n%s", out.String())
		}
	})
	waitListening(t, host, vip)
	waitListening(t, host, netip.MustParseAddrPort(admin))
	health := func() (int, string) {
		var code int
		var body string
		// The transport dials on its own goroutines: through the namespace.
		dial, _ := loadgen.NSDialer(host.NS.Do)
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
		err := func() error {
			resp, err := hc.Get("http://" + admin + "/healthz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			code, body = resp.StatusCode, strings.TrimSpace(string(b))
			return err
		}()
		if err != nil {
			t.Fatal(err)
		}
		return code, body
	}
	if code, body := health(); code != 200 || body != "ok" {
		t.Fatalf("/healthz %d %q", code, body)
	}

	// A keep-alive connection from the client through the distributor.
	var c net.Conn
	if err := client.NS.Do(func() (err error) { c, err = net.DialTimeout("tcp4", vip.String(), 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func() {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "s1" {
			t.Fatalf("response %d %q, want 200 from s1", resp.StatusCode, b)
		}
	}
	get()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "/healthz to say draining", func() bool {
		code, body := health()
		return code == 503 && body == "draining"
	})
	err := client.NS.Do(func() error {
		c2, err := net.DialTimeout("tcp4", vip.String(), 2*time.Second)
		if err == nil {
			c2.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("a new connection was accepted while draining")
	}
	get() // the open connection still works
	select {
	case err := <-exited:
		t.Fatalf("the process exited (%v) with a connection still open", err)
	default:
	}
	c.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit after its last connection closed")
	}
}

// v6Addrs returns the servers' IPv6 addresses with port.
func v6Addrs(e *lab.Env, port uint16) []netip.AddrPort {
	var out []netip.AddrPort
	for _, h := range e.Topo.Servers {
		out = append(out, netip.AddrPortFrom(h.Links["eth0"].Addr6.Addr(), port))
	}
	return out
}

// TestReferenceTMIPv6: the same as TestReferenceTM's tcp case on the IPv6
// VIP, connecting from the IPv6 SNAT address (net.ipv4.ip_local_port_range
// also covers IPv6 ports).
func TestReferenceTMIPv6(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3, Servers: 3})
	d := startDist(t, e, lab.ConfigOptions{SNAT: true, IPv6: true})
	startServers(t, e)
	for i, host := range e.Topo.TMs {
		tmHostPrep(t, e, i, host)
		startRefTM(t, e, host, []tm.Proxy{
			{Mode: tm.ModeTCP, Listen: netip.AddrPortFrom(e.Topo.VIP6, lab.HTTPPort), Servers: v6Addrs(e, srvHTTPPort)},
			{Mode: tm.ModeUDP, Listen: netip.AddrPortFrom(e.Topo.VIP6, lab.UDPPort), Servers: v6Addrs(e, srvUDPPort)},
		})
	}
	o := loadgen.Options{KeepAlive: 6, Short: 3, UDPFlows: 12, Interval: 2 * time.Millisecond}
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := loadgen.Start(ctx, e.Target(true), o)
	waitFor(t, 2*time.Minute, "2,000 HTTP and UDP requests", func() bool {
		r := run.Snapshot()
		return r.HTTPRequests >= 2000 && r.UDPRequests >= 2000 || r.Errors > 0
	})
	cancel()
	rep := run.Wait()
	t.Logf("load: %s", rep)
	checkLoad(t, rep, 2000, true)
	if l := counter(t, d, "learned"); l == 0 {
		t.Errorf("learned = 0: IPv6 server-side connections were not learned")
	}
}

// needSoftware skips the test when a program (or file, given by absolute
// path) the test runs is missing; under CI=true it fails instead, because
// scripts/setup.sh installs them all (curl, vsftpd, haproxy, nginx,
// libnginx-mod-stream).
func needSoftware(t testing.TB, name string) {
	t.Helper()
	var err error
	if filepath.IsAbs(name) {
		_, err = os.Stat(name)
	} else {
		_, err = exec.LookPath(name)
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (%v): scripts/setup.sh installs it (CI=true: not skipping)", name, err)
	}
	t.Skipf("%s is missing (%v): scripts/setup.sh installs it", name, err)
}
