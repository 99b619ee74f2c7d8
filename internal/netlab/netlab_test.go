package netlab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// listen opens a TCP listener inside ns; it stays in ns after Do returns.
func listen(t *testing.T, ns *netlab.NS, addr netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// exchange connects from client ns to addr (where ln listens), sends bytes
// both ways, and returns the remote address the server saw.
func exchange(t *testing.T, from *netlab.NS, ln net.Listener, addr netip.AddrPort) netip.AddrPort {
	t.Helper()
	type accepted struct {
		remote netip.AddrPort
		err    error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- accepted{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			ch <- accepted{err: err}
			return
		}
		if _, err := c.Write(append([]byte("re:"), buf...)); err != nil {
			ch <- accepted{err: err}
			return
		}
		ch <- accepted{remote: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
	}()
	var conn net.Conn
	if err := from.Do(func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from.Name, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	if !bytes.Equal(got, []byte("re:hello")) {
		t.Fatalf("got %q", got)
	}
	a := <-ch
	if a.err != nil {
		t.Fatalf("server side: %v", a.err)
	}
	return netip.AddrPortFrom(a.remote.Addr().Unmap(), a.remote.Port())
}

func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	return string(out)
}

func TestTopology(t *testing.T) {
	labtest.Require(t)
	start := time.Now()
	topo := labtest.Topology(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2, Servers: 1})
	t.Logf("built %s (1 client, 1 distributor, 2 TMs, 1 server) in %v", topo.Prefix, time.Since(start))
	ctx := context.Background()

	c1, d1, s1 := topo.Clients[0], topo.Distributors[0], topo.Servers[0]
	tm1, tm2 := topo.TMs[0], topo.TMs[1]
	if len(topo.TMs) != 2 || tm2.Name != "tm2" || tm1.NS.Name != topo.Prefix+"-tm1" {
		t.Fatalf("unexpected TMs: %+v", topo.TMs)
	}
	if got := tm1.Links["eth0"].Addr4.String(); got != "10.1.0.11/24" {
		t.Errorf("tm1 eth0 = %s", got)
	}
	if got := d1.Links["srv0"].Addr6.String(); got != "fd00:20::1/64" {
		t.Errorf("d1 srv0 = %s", got)
	}
	for _, h := range topo.Hosts() {
		for _, l := range h.Links {
			if l.Index == 0 || len(l.MAC) != 6 {
				t.Errorf("%s/%s: index %d MAC %v", h.Name, l.Name, l.Index, l.MAC)
			}
		}
	}

	t.Run("offloads", func(t *testing.T) {
		for _, h := range topo.Hosts() {
			for _, l := range h.Links {
				var hostTx, portTx, portGRO bool
				if err := h.NS.Do(func() error {
					var err error
					hostTx, err = netlab.TxChecksum(l.Name)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if err := topo.Switch.Do(func() error {
					var err error
					if portTx, err = netlab.TxChecksum(l.Port); err != nil {
						return err
					}
					portGRO, err = netlab.GRO(l.Port)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if hostTx || portTx || !portGRO {
					t.Errorf("%s/%s: host tx %v, port %s tx %v gro %v", h.Name, l.Name, hostTx, l.Port, portTx, portGRO)
				}
			}
		}
		// Cross-check the ioctls against the ethtool tool.
		if _, err := exec.LookPath("ethtool"); err == nil {
			out := run(t, topo.Switch.Command(ctx, "ethtool", "-k", "tm1-eth0"))
			if !strings.Contains(out, "tx-checksumming: off") || !strings.Contains(out, "generic-receive-offload: on") {
				t.Errorf("ethtool -k tm1-eth0:\n%s", out)
			}
			out = run(t, tm1.NS.Command(ctx, "ethtool", "-k", "eth0"))
			if !strings.Contains(out, "tx-checksumming: off") {
				t.Errorf("ethtool -k eth0 in tm1:\n%s", out)
			}
		}
	})

	t.Run("bridge", func(t *testing.T) {
		out := run(t, topo.Switch.Command(ctx, "bridge", "link", "show"))
		if n := strings.Count(out, "state forwarding"); n != 7 {
			t.Errorf("want 7 forwarding ports, got %d:\n%s", n, out)
		}
		out = run(t, topo.Switch.Command(ctx, "ip", "-d", "link", "show", "int"))
		if !strings.Contains(out, "forward_delay 0") || !strings.Contains(out, "stp_state 0") {
			t.Errorf("bridge int:\n%s", out)
		}
	})

	t.Run("tm addresses", func(t *testing.T) {
		out := run(t, tm2.NS.Command(ctx, "ip", "-o", "addr", "show", "dev", "lo"))
		for _, a := range []string{"10.0.0.100/32", "fd00:100::100/128", "10.1.255.1/32", "fd00:1ff::1/128"} {
			if !strings.Contains(out, a) {
				t.Errorf("tm2 lo lacks %s:\n%s", a, out)
			}
		}
		out = run(t, tm2.NS.Command(ctx, "sysctl", "net.ipv4.conf.eth0.arp_ignore", "net.ipv4.conf.all.arp_announce"))
		if !strings.Contains(out, "arp_ignore = 1") || !strings.Contains(out, "arp_announce = 2") {
			t.Errorf("tm2 sysctls:\n%s", out)
		}
		out = run(t, d1.NS.Command(ctx, "sysctl", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"))
		if strings.Count(out, "= 1") != 2 {
			t.Errorf("d1 sysctls:\n%s", out)
		}
	})

	t.Run("client to distributor", func(t *testing.T) {
		for _, a := range []netip.Addr{d1.Links["ext0"].Addr4.Addr(), d1.Links["ext0"].Addr6.Addr()} {
			ap := netip.AddrPortFrom(a, 8001)
			ln := listen(t, d1.NS, ap)
			remote := exchange(t, c1.NS, ln, ap)
			want := c1.Links["eth0"].Addr4.Addr()
			if a.Is6() {
				want = c1.Links["eth0"].Addr6.Addr()
			}
			if remote.Addr() != want {
				t.Errorf("d1 saw %v, want %v", remote, want)
			}
		}
	})

	tmToServer := func(t *testing.T, tm *netlab.Host) {
		for _, a := range []netip.Addr{s1.Links["eth0"].Addr4.Addr(), s1.Links["eth0"].Addr6.Addr()} {
			ap := netip.AddrPortFrom(a, 8002)
			ln := listen(t, s1.NS, ap)
			remote := exchange(t, tm.NS, ln, ap)
			want := tm.Links["eth0"].Addr4.Addr()
			if a.Is6() {
				want = tm.Links["eth0"].Addr6.Addr()
			}
			if remote.Addr() != want {
				t.Errorf("%s saw %v, want %v (routed, not NATed)", s1.Name, remote, want)
			}
			ln.Close()
		}
	}
	t.Run("tm to server via distributor", func(t *testing.T) { tmToServer(t, tm1) })

	t.Run("client to server via distributor", func(t *testing.T) {
		ap := netip.AddrPortFrom(s1.Links["eth0"].Addr6.Addr(), 8003)
		exchange(t, c1.NS, listen(t, s1.NS, ap), ap)
	})

	t.Run("AddTM", func(t *testing.T) {
		start := time.Now()
		tm3, err := topo.AddTM(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("AddTM took %v", time.Since(start))
		if tm3.Name != "tm3" || tm3.Links["eth0"].Addr4.String() != "10.1.0.13/24" || len(topo.TMs) != 3 {
			t.Fatalf("tm3 = %s %v, %d TMs", tm3.Name, tm3.Links["eth0"].Addr4, len(topo.TMs))
		}
		tmToServer(t, tm3)
	})

	t.Run("Do", func(t *testing.T) {
		before, _ := os.Readlink("/proc/thread-self/ns/net")
		var inside string
		if err := tm1.NS.Do(func() error {
			var err error
			inside, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/run/netns", tm1.NS.Name), &st); err != nil {
			t.Fatal(err)
		}
		if inside != fmt.Sprintf("net:[%d]", st.Ino) || inside == before {
			t.Errorf("inside Do: %s, ns inode %d, outside %s", inside, st.Ino, before)
		}
		wantErr := errors.New("x")
		if err := tm1.NS.Do(func() error { return wantErr }); err != wantErr {
			t.Errorf("Do returned %v", err)
		}
		func() {
			defer func() {
				if p := recover(); p != "boom" {
					t.Errorf("recovered %v", p)
				}
			}()
			tm1.NS.Do(func() error { panic("boom") })
		}()
	})
}

// nsNames lists /run/netns entries and `ip netns list` names with the prefix.
func nsNames(t *testing.T, prefix string) []string {
	t.Helper()
	var names []string
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, "ip:"+f[0])
		}
	}
	return names
}

// netnsFDs returns the network namespace inodes this process holds open.
func netnsFDs() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "net:") {
			m[l] = true
		}
	}
	return m
}

func TestCloseRemovesEverything(t *testing.T) {
	labtest.Require(t)
	start := time.Now()
	topo, err := netlab.Build(context.Background(), netlab.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built default topology (1 client, 1 distributor, 3 TMs) in %v", time.Since(start))
	closed := false
	t.Cleanup(func() {
		if !closed {
			topo.Close()
		}
	})
	if len(topo.TMs) != 3 || len(topo.Clients) != 1 || len(topo.Distributors) != 1 || len(topo.Servers) != 0 {
		t.Fatalf("defaults: %d clients %d distributors %d TMs %d servers",
			len(topo.Clients), len(topo.Distributors), len(topo.TMs), len(topo.Servers))
	}
	var inodes []string
	for _, n := range append([]*netlab.NS{topo.Switch}, func() (ns []*netlab.NS) {
		for _, h := range topo.Hosts() {
			ns = append(ns, h.NS)
		}
		return
	}()...) {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/run/netns", n.Name), &st); err != nil {
			t.Fatal(err)
		}
		inodes = append(inodes, fmt.Sprintf("net:[%d]", st.Ino))
	}
	if got := nsNames(t, topo.Prefix+"-"); len(got) != 2*6 {
		t.Errorf("before Close: %v", got)
	}

	start = time.Now()
	closed = true
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	if got := nsNames(t, topo.Prefix); len(got) != 0 {
		t.Errorf("namespaces left after Close: %v", got)
	}
	held := netnsFDs()
	for _, ino := range inodes {
		if held[ino] {
			t.Errorf("process still holds %s open", ino)
		}
	}
	// No veth end ever lives in the root namespace; make sure none leaked there.
	out := run(t, exec.Command("ip", "-o", "link", "show", "type", "veth"))
	for _, line := range strings.Split(out, "\n") {
		for _, s := range []string{topo.Prefix, "-eth0", "-ext0", "-int0", "-srv0"} {
			if strings.Contains(line, s) {
				t.Errorf("veth left in root namespace: %s", line)
			}
		}
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := topo.AddTM(context.Background()); err == nil {
		t.Error("AddTM after Close succeeded")
	}
}

func TestCleanupStale(t *testing.T) {
	labtest.Require(t)
	prefix := fmt.Sprintf("systale%04x-", rand.N(0x10000))
	t.Cleanup(func() { netlab.CleanupStale(prefix) })
	for _, name := range []string{"a", "b"} {
		n, err := netlab.NewNS(prefix + name)
		if err != nil {
			t.Fatal(err)
		}
		// Dropping the NS without Close is what a crash looks like: the bind
		// mount under /run/netns keeps the namespace.
		_ = n
	}
	// A crash between creating the file and bind-mounting it leaves a plain file.
	if err := os.WriteFile(filepath.Join("/run/netns", prefix+"c"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	other, err := netlab.NewNS(strings.TrimSuffix(prefix, "-") + "x-keep")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got := nsNames(t, prefix); len(got) != 2*3 {
		t.Fatalf("before: %v", got)
	}
	if err := netlab.CleanupStale(prefix); err != nil {
		t.Fatal(err)
	}
	if got := nsNames(t, prefix); len(got) != 0 {
		t.Errorf("left after CleanupStale: %v", got)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", other.Name)); err != nil {
		t.Errorf("CleanupStale removed a namespace outside its prefix: %v", err)
	}
	if err := netlab.CleanupStale(""); err == nil {
		t.Error("CleanupStale(\"\") should refuse")
	}
}

func TestTwoDistributors(t *testing.T) {
	topo := labtest.Topology(t, netlab.Spec{Distributors: 2, TMs: 1, Servers: 1})
	d2 := topo.Distributors[1]
	if d2.Name != "d2" || d2.Links["int0"].Addr4.String() != "10.1.0.2/24" || d2.Links["ext0"].Addr6.String() != "fd00:1::2/64" {
		t.Fatalf("d2: %+v", d2.Links)
	}
	ap := netip.AddrPortFrom(d2.Links["ext0"].Addr4.Addr(), 8004)
	exchange(t, topo.Clients[0].NS, listen(t, d2.NS, ap), ap)
}

func BenchmarkBuild(b *testing.B) {
	labtest.Require(b)
	for _, spec := range []netlab.Spec{{}, {Clients: 2, Distributors: 2, TMs: 10, Servers: 4}} {
		b.Run(fmt.Sprintf("%dc%dd%dtm%ds", spec.Clients, spec.Distributors, spec.TMs, spec.Servers), func(b *testing.B) {
			for b.Loop() {
				topo, err := netlab.Build(context.Background(), spec)
				if err != nil {
					b.Fatal(err)
				}
				if err := topo.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
