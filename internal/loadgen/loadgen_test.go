package loadgen_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/tm/echo"
)

// checkClean fails the test unless the report shows load, no errors, no moved
// flows, and every answer from wantTM.
func checkClean(t *testing.T, rep loadgen.Report, wantTM string, minRequests uint64) {
	t.Helper()
	t.Logf("report:\n%s", rep)
	if rep.Errors != 0 {
		t.Errorf("%d errors: %q", rep.Errors, rep.ErrorSamples)
	}
	if rep.FlowsMoved != 0 {
		t.Errorf("%d flows moved: %q", rep.FlowsMoved, rep.MoveSamples)
	}
	if rep.Requests < minRequests {
		t.Errorf("%d requests, want at least %d", rep.Requests, minRequests)
	}
	for id := range rep.PerTM {
		if id != wantTM {
			t.Errorf("answers from %q, want only %q", id, wantTM)
		}
	}
	if c := rep.PerTM[wantTM]; c.Requests != rep.Requests {
		t.Errorf("%s answered %d of %d requests", wantTM, c.Requests, rep.Requests)
	}
}

// TestLoopback runs every kind of worker against a reference TM on 127.0.0.1
// in the test's own namespace: no root needed.
func TestLoopback(t *testing.T) {
	srv := echo.New("tmL")
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	if err := srv.ListenHTTP(lo); err != nil {
		t.Fatal(err)
	}
	if err := srv.ListenUDP(lo); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Generous times: CI machines are small and busy.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	run := loadgen.Start(ctx, loadgen.Target{HTTP: srv.HTTPAddrs()[0], UDP: srv.UDPAddrs()[0]},
		loadgen.Options{KeepAlive: 4, Short: 2, UDPFlows: 2, Interval: time.Millisecond})
	time.Sleep(time.Second)
	if mid := run.Snapshot(); mid.Requests == 0 {
		t.Errorf("no requests after 1s: %s", mid)
	}
	rep := run.Wait()
	checkClean(t, rep, "tmL", 100)
	c := rep.PerTM["tmL"]
	if c.KeepAliveConns != 4 || c.UDPFlows != 2 || c.ShortConns == 0 {
		t.Errorf("counts %+v: want 4 keep-alive conns, 2 UDP flows, some short conns", c)
	}
	if rep.Connections != 4+c.ShortConns {
		t.Errorf("%d connections, want %d", rep.Connections, 4+c.ShortConns)
	}
	st := srv.Stats()
	if st.HTTPRequests < rep.HTTPRequests || st.UDPRequests < rep.UDPRequests || st.AcceptedConns < rep.Connections {
		t.Errorf("server stats %+v below report %+v", st, rep)
	}
	if rep.Latency.P50 <= 0 || rep.Latency.P50 > rep.Latency.P99 || rep.Latency.P99 > rep.Latency.Max*2 {
		t.Errorf("latency %+v", rep.Latency)
	}
}

// TestMovedAndErrors checks the verdicts against a fake service whose
// answers change TM mid-connection, and against a closed port.
func TestMovedAndErrors(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					id := "tmA"
					if n.Add(1) > 3 {
						id = "tmB"
					}
					c.Write([]byte("HTTP/1.1 200 OK\r\nX-Switchyard-TM: " + id + "\r\nContent-Length: 0\r\n\r\n"))
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rep := loadgen.Start(ctx, loadgen.Target{HTTP: ln.Addr().(*net.TCPAddr).AddrPort()},
		loadgen.Options{KeepAlive: 1, Interval: time.Millisecond}).Wait()
	t.Logf("report:\n%s", rep)
	if rep.FlowsMoved != 1 || len(rep.MoveSamples) != 1 || !strings.Contains(rep.MoveSamples[0], "tmA then tmB") {
		t.Errorf("moved %d %q, want one move tmA then tmB", rep.FlowsMoved, rep.MoveSamples)
	}
	if rep.Errors != 0 || rep.Connections != 1 {
		t.Errorf("errors %d, connections %d", rep.Errors, rep.Connections)
	}

	// A closed port: errors, bounded by the 50ms pause.
	ln2, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln2.Addr().(*net.TCPAddr).AddrPort()
	ln2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	rep = loadgen.Start(ctx2, loadgen.Target{HTTP: closed}, loadgen.Options{KeepAlive: 1, Short: 1}).Wait()
	if rep.Errors == 0 || rep.Errors > 2*(300/50+1) || len(rep.ErrorSamples) == 0 {
		t.Errorf("closed port: %d errors %q", rep.Errors, rep.ErrorSamples)
	}
}

// startTM starts a reference TM inside host's namespace on its eth0 addresses.
func startTM(t *testing.T, h *netlab.Host, v6 bool) (*echo.Server, loadgen.Target) {
	t.Helper()
	a := h.Links["eth0"].Addr4.Addr()
	if v6 {
		a = h.Links["eth0"].Addr6.Addr()
	}
	tg := loadgen.Target{HTTP: netip.AddrPortFrom(a, 80), UDP: netip.AddrPortFrom(a, 5300)}
	s := echo.New(h.Name)
	if err := h.NS.Do(func() error {
		if err := s.ListenHTTP(tg.HTTP); err != nil {
			return err
		}
		return s.ListenUDP(tg.UDP)
	}); err != nil {
		t.Fatalf("tm in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, tg
}

// TestLab sends load from the client namespace to tm1's own address, routed
// by the kernel through d1, with tm2 running as well: every answer must come
// from tm1, with no errors and no moved flows.
func TestLab(t *testing.T) {
	topo := labtest.Topology(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			tm1, tg := startTM(t, topo.TMs[0], v6)
			tm2, _ := startTM(t, topo.TMs[1], v6)
			dial, listenPacket := loadgen.NSDialer(topo.Clients[0].NS.Do)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			rep := loadgen.Start(ctx, tg, loadgen.Options{
				KeepAlive: 10, Short: 4, UDPFlows: 4,
				Dial: dial, ListenPacket: listenPacket,
			}).Wait()
			checkClean(t, rep, "tm1", 100)
			c := rep.PerTM["tm1"]
			if c.KeepAliveConns != 10 || c.UDPFlows != 4 || c.ShortConns == 0 || rep.UDPRequests == 0 {
				t.Errorf("tm1 counts %+v", c)
			}
			// The client counts a connection when its handshake completes; the
			// TM counts it when accept returns, which can come a moment later.
			st := tm1.Stats()
			for deadline := time.Now().Add(2 * time.Second); st.AcceptedConns < rep.Connections && time.Now().Before(deadline); st = tm1.Stats() {
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("tm1 stats %+v", st)
			if st.HTTPRequests < rep.HTTPRequests || st.UDPRequests < rep.UDPRequests || st.AcceptedConns < rep.Connections {
				t.Errorf("tm1 stats %+v below report (http %d, udp %d, conns %d)", st, rep.HTTPRequests, rep.UDPRequests, rep.Connections)
			}
			// Served may exceed counted only by the requests in flight at the end.
			if st.HTTPRequests > rep.HTTPRequests+14 || st.UDPRequests > rep.UDPRequests+4 {
				t.Errorf("tm1 served %+v, far more than counted (http %d, udp %d)", st, rep.HTTPRequests, rep.UDPRequests)
			}
			if st2 := tm2.Stats(); st2.HTTPRequests != 0 || st2.UDPRequests != 0 || st2.AcceptedConns != 0 {
				t.Errorf("tm2 served %+v", st2)
			}
		})
	}
}
