package health

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var lo = netip.MustParseAddr("127.0.0.1")

func portOf(t *testing.T, addr string) uint16 {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

func spec(kind string, port uint16) Spec {
	return Spec{Kind: kind, Port: port, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 3}
}

func TestProbeTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(t, l.Addr().String())
	if _, err := Probe(context.Background(), lo, spec(KindTCP, port)); err != nil {
		t.Fatalf("probe of a listening port: %v", err)
	}
	l.Close()
	_, err = Probe(context.Background(), lo, spec(KindTCP, port))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("probe of a closed port: %v, want connection refused", err)
	}
}

func TestProbeHTTP(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	})
	for _, kind := range []string{KindHTTP, KindHTTPS} {
		t.Run(kind, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(h)
			if kind == KindHTTPS {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			sp := spec(kind, portOf(t, srv.Listener.Addr().String()))
			sp.Path = "/healthz"
			status.Store(200)
			if _, err := Probe(context.Background(), lo, sp); err != nil {
				t.Fatalf("200: %v", err)
			}
			status.Store(503)
			if _, err := Probe(context.Background(), lo, sp); err == nil || !strings.Contains(err.Error(), "status 503") {
				t.Fatalf("503: %v, want a status error", err)
			}
			sp.Status = 503
			if _, err := Probe(context.Background(), lo, sp); err != nil {
				t.Fatalf("503 expected: %v", err)
			}
			sp.Status, sp.Path = 0, "/other"
			if _, err := Probe(context.Background(), lo, sp); err == nil {
				t.Fatal("404 passed")
			}
		})
	}
}

// TestProbeHTTPTimeout: a TM that accepts and never answers fails within
// the timeout.
func TestProbeHTTPTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	sp := spec(KindHTTP, portOf(t, l.Addr().String()))
	sp.Timeout = 200 * time.Millisecond
	start := time.Now()
	if _, err := Probe(context.Background(), lo, sp); err == nil {
		t.Fatal("a silent server passed")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the probe took %v with a 200ms timeout", d)
	}
}

func udpServer(t *testing.T, answer func([]byte) []byte) (*net.UDPConn, uint16) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if a := answer(buf[:n]); a != nil {
				_, _ = c.WriteToUDP(a, from)
			}
		}
	}()
	return c, portOf(t, c.LocalAddr().String())
}

func TestProbeUDP(t *testing.T) {
	c, port := udpServer(t, func(b []byte) []byte { return append([]byte("pong "), b...) })
	sp := spec(KindUDP, port)
	sp.Send, sp.Expect = "ping", "pong ping"
	if _, err := Probe(context.Background(), lo, sp); err != nil {
		t.Fatalf("answering server: %v", err)
	}
	sp.Expect = "nope"
	if _, err := Probe(context.Background(), lo, sp); err == nil || !strings.Contains(err.Error(), "does not hold") {
		t.Fatalf("wrong answer: %v", err)
	}
	c.Close()
	sp.Expect = ""
	// A closed port answers with ICMP port unreachable: refused at once.
	if _, err := Probe(context.Background(), lo, sp); err == nil {
		t.Fatal("closed port passed")
	}
	silent, sport := udpServer(t, func([]byte) []byte { return nil })
	defer silent.Close()
	sp.Port, sp.Timeout = sport, 100*time.Millisecond
	if _, err := Probe(context.Background(), lo, sp); err == nil {
		t.Fatal("silent server passed")
	}
}

type changes struct {
	mu  sync.Mutex
	got []bool
}

func (c *changes) add(_ string, h bool) {
	c.mu.Lock()
	c.got = append(c.got, h)
	c.mu.Unlock()
}

func (c *changes) list() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool{}, c.got...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCheckerRiseFall: a target goes unhealthy after Fall failures in a row,
// healthy after Rise successes in a row, and each change is reported once.
func TestCheckerRiseFall(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	var ch changes
	c := NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)), ch.add)
	defer c.Close()
	tg := Target{Key: "svc/tm1", Addr: lo, Spec: spec(KindHTTP, portOf(t, srv.Listener.Addr().String()))}
	c.Set([]Target{tg})
	waitFor(t, "the first probe", func() bool { s, _ := c.State(tg.Key); return s.Checked })
	if !c.Healthy(tg.Key) || len(ch.list()) != 0 {
		t.Fatalf("healthy server: healthy=%v changes=%v", c.Healthy(tg.Key), ch.list())
	}
	up.Store(false)
	waitFor(t, "unhealthy", func() bool { return !c.Healthy(tg.Key) })
	s, _ := c.State(tg.Key)
	if s.Failures < 3 || !strings.Contains(s.LastError, "503") {
		t.Fatalf("unhealthy after %d failures (fall 3), last error %q", s.Failures, s.LastError)
	}
	up.Store(true)
	waitFor(t, "healthy again", func() bool { return c.Healthy(tg.Key) })
	s, _ = c.State(tg.Key)
	if s.Successes < 2 || s.Changes != 2 {
		t.Fatalf("healthy after %d successes (rise 2), %d changes (want 2)", s.Successes, s.Changes)
	}
	if got := ch.list(); len(got) != 2 || got[0] || !got[1] {
		t.Fatalf("reported changes %v, want [false true]", got)
	}
	// Removing the target stops it; an unknown key counts as healthy.
	c.Set(nil)
	if _, ok := c.State(tg.Key); ok {
		t.Fatal("removed target still has a state")
	}
}

// TestCheckerSpecChangeKeepsState: a changed spec restarts the probe but
// keeps the target's health until probes change it.
func TestCheckerSpecChangeKeepsState(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(t, l.Addr().String())
	l.Close() // nothing listens: unhealthy after Fall probes
	var ch changes
	c := NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)), ch.add)
	defer c.Close()
	tg := Target{Key: "k", Addr: lo, Spec: spec(KindTCP, port)}
	c.Set([]Target{tg})
	waitFor(t, "unhealthy", func() bool { return !c.Healthy("k") })
	tg.Spec.Fall = 5
	c.Set([]Target{tg})
	if c.Healthy("k") {
		t.Fatal("a spec change made the target healthy")
	}
	time.Sleep(200 * time.Millisecond)
	if got := ch.list(); len(got) != 1 {
		t.Fatalf("changes %v, want one", got)
	}
}

// TestAvgRTT: the damped RTT follows a slow server within a few probes.
func TestAvgRTT(t *testing.T) {
	var delay atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(delay.Load()))
	}))
	defer srv.Close()
	c := NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)), func(string, bool) {})
	defer c.Close()
	sp := spec(KindHTTP, portOf(t, srv.Listener.Addr().String()))
	delay.Store(int64(30 * time.Millisecond))
	c.Set([]Target{{Key: "k", Addr: lo, Spec: sp}})
	waitFor(t, "the average to reach 30ms", func() bool { s, _ := c.State("k"); return s.AvgRTT >= 25*time.Millisecond })
	s, _ := c.State("k")
	if s.AvgRTT > 200*time.Millisecond {
		t.Fatalf("average %v for a 30ms server", s.AvgRTT)
	}
}
