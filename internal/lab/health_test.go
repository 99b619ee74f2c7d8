package lab_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// healthPort is where the TMs of these tests answer health checks: a port
// of their own address, apart from the service the clients use, so that a
// test can fail a TM's check while its established connections go on.
const healthPort = 8081

// healthListener is a TCP listener in a TM's namespace standing for its
// proxy's health endpoint.
type healthListener struct {
	h  *netlab.Host
	mu sync.Mutex
	l  net.Listener
}

func (hl *healthListener) start(t *testing.T) {
	t.Helper()
	hl.mu.Lock()
	defer hl.mu.Unlock()
	if hl.l != nil {
		return
	}
	addr := netip.AddrPortFrom(lab.TMAddr4(hl.h), healthPort).String()
	err := hl.h.NS.Do(func() error {
		l, err := net.Listen("tcp", addr)
		hl.l = l
		return err
	})
	if err != nil {
		t.Fatalf("health listener on %s: %v", addr, err)
	}
	l := hl.l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (hl *healthListener) stop() {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	if hl.l != nil {
		hl.l.Close()
		hl.l = nil
	}
}

func eligibleOf(t *testing.T, d *lab.Distributor, svc string) string {
	for _, s := range stats(t, d).Services {
		if s.Name == svc {
			return strings.Join(s.Eligible, ",")
		}
	}
	return ""
}

// TestHealthCheckE2E: 4 TMs with a TCP health check (interval 200 ms, fall
// 2, rise 2). A TM whose health endpoint stops gets no new flows within
// fall × interval (plus the daemon's apply) while its established
// connections go on; when it comes back it gets new flows again; flapping
// moves no established flow.
func TestHealthCheckE2E(t *testing.T) {
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
				c.Services[i].Health = &config.Health{Type: config.HealthTCP, Port: healthPort, IntervalMS: 200, TimeoutMS: 200, Rise: 2, Fall: 2}
			}
		}
	}})
	waitFor(t, 10*time.Second, "all four eligible", func() bool { return eligibleOf(t, d, "web") == "tm1,tm2,tm3,tm4" })

	// Long-lived connections on every TM, kept busy through all that follows.
	o := loadgen.Options{KeepAlive: 100, Interval: 50 * time.Millisecond}
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := loadgen.Start(ctx, e.Target(false), o)
	time.Sleep(time.Second)
	if s := run.Snapshot(); s.Errors != 0 || s.PerTM["tm1"].KeepAliveConns == 0 {
		t.Fatalf("before the failure: errors %v, tm1's long-lived connections %d", s.ErrorSamples, s.PerTM["tm1"].KeepAliveConns)
	}

	start := time.Now()
	hls["tm1"].stop()
	waitFor(t, 10*time.Second, "tm1 out of web's pool", func() bool { return eligibleOf(t, d, "web") == "tm2,tm3,tm4" })
	took := time.Since(start)
	t.Logf("tm1 left the pool %v after its health endpoint stopped (fall 2 × 200 ms = 400 ms, polled every 100 ms)", took.Round(10*time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("tm1 left the pool after %v, want about fall × interval", took)
	}
	short := func(what string) loadgen.Report {
		so := loadgen.Options{Short: 8}
		e.ClientDialer(0, &so)
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		rep := loadgen.Start(sctx, e.Target(false), so).Wait()
		t.Logf("%s: %s", what, rep)
		if rep.Errors != 0 {
			t.Fatalf("%s: %d errors %v", what, rep.Errors, rep.ErrorSamples)
		}
		return rep
	}
	if rep := short("tm1 unhealthy"); rep.PerTM["tm1"].ShortConns != 0 || rep.PerTM["tm2"].ShortConns == 0 {
		t.Fatalf("tm1 unhealthy: new connections per TM %v, want none on tm1", rep.PerTM)
	}
	st := stats(t, d)
	for _, s := range st.Services {
		if s.Name == "web" && (len(s.Health) != 4 || s.Health[0].TM != "tm1" || s.Health[0].Healthy || s.Health[0].LastError == "") {
			t.Fatalf("web's health in stats: %+v", s.Health)
		}
	}

	hls["tm1"].start(t)
	waitFor(t, 10*time.Second, "tm1 back in web's pool", func() bool { return eligibleOf(t, d, "web") == "tm1,tm2,tm3,tm4" })
	if rep := short("tm1 healthy again"); rep.PerTM["tm1"].ShortConns == 0 {
		t.Fatalf("tm1 healthy again: new connections per TM %v, want some on tm1", rep.PerTM)
	}

	// Flapping: tm2 down and up five times.
	for range 5 {
		hls["tm2"].stop()
		waitFor(t, 10*time.Second, "tm2 out", func() bool { return !strings.Contains(eligibleOf(t, d, "web"), "tm2") })
		hls["tm2"].start(t)
		waitFor(t, 10*time.Second, "tm2 in", func() bool { return strings.Contains(eligibleOf(t, d, "web"), "tm2") })
	}
	cancel()
	rep := run.Wait()
	t.Logf("long-lived: %s", rep)
	if rep.Errors != 0 || rep.FlowsMoved != 0 {
		t.Fatalf("long-lived connections: %d errors %v, %d moved %v", rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples)
	}
	if !strings.Contains(d.Output(), "traffic manager health changed") {
		t.Errorf("no health change in the daemon's log")
	}
}
