package lab_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// Hitless restart (issue 9, point 1).

// flowTable maps each flow of src (proto src dst) to its TM and origin.
func flowTable(t *testing.T, d *lab.Distributor, src netip.Addr) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range flowsOf(t, d, src) {
		out[f.Proto+" "+f.Src+" "+f.Dst] = f.TM + " " + strings.Join(f.Origin, ",")
	}
	return out
}

// TestHitlessRestart: 500 long-lived connections and 20 UDP flows exchange
// data (client 0)
// and short connections keep opening (client 1) while a TM is added (the
// ring changes) and the daemon is killed with SIGKILL and started again
// with the new config. The pinned data path forwards throughout: no
// long-lived connection breaks or changes TM, no short one fails, the
// long-lived flows' entries are the same before and after, and the new
// daemon gives the new TM new flows. Then a daemon whose flow table has
// another size (another layout) is refused with the map named, and the
// data path still forwards.
func TestHitlessRestart(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 2, Distributors: 1, TMs: 3})
	d := startDist(t, e, lab.ConfigOptions{})
	if !strings.Contains(d.Output(), "XDP attached") {
		t.Fatalf("first start did not attach:\n%s", d.Output())
	}

	ka := loadgen.Options{KeepAlive: 500, UDPFlows: 20, Interval: 100 * time.Millisecond}
	e.ClientDialer(0, &ka)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := loadgen.Start(ctx, e.Target(false), ka)
	so := loadgen.Options{Short: 4, Interval: 20 * time.Millisecond}
	e.ClientDialer(1, &so)
	short := loadgen.Start(ctx, e.Target(false), so)

	c0 := e.Topo.Clients[0].Links["eth0"].Addr4.Addr()
	var before map[string]string
	waitFor(t, 30*time.Second, "500 long-lived TCP flows and 20 UDP flows", func() bool {
		before = flowTable(t, d, c0)
		return len(before) >= 520
	})
	if s := long.Snapshot(); s.Errors != 0 {
		t.Fatalf("errors before the restart: %v", s.ErrorSamples)
	}

	tm4, err := e.AddTM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d.Kill()
	// Nobody runs the control plane now: the pinned program forwards.
	time.Sleep(2 * time.Second)
	d2, err := e.StartDistributor(context.Background(), e.Config(lab.ConfigOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("restarted distributor output:\n%s", d2.Output())
		}
	})
	if !strings.Contains(d2.Output(), "adopted the pinned data path") {
		t.Fatalf("the restarted daemon did not adopt the data path:\n%s", d2.Output())
	}
	waitFor(t, 10*time.Second, "tm4 eligible", func() bool {
		for _, s := range stats(t, d2).Services {
			if s.Name == "web" {
				return strings.Join(s.Eligible, ",") == "tm1,tm2,tm3,tm4"
			}
		}
		return false
	})
	after := flowTable(t, d2, c0)
	// The clock resumed where it was: busy flows are not idle for long
	// (a clock restarted from another origin would make them look idle
	// for ages, or from the future).
	for _, f := range flowsOf(t, d2, c0) {
		if f.IdleSeconds > 10 || f.IdleSeconds < 0 {
			t.Errorf("flow %s %s → %s idle for %.1f s after the restart", f.Proto, f.Src, f.Dst, f.IdleSeconds)
			break
		}
	}
	changed := 0
	for k, tm := range before {
		if after[k] != tm {
			changed++
			if changed <= 5 {
				t.Errorf("flow %s: TM and origin %q before the restart, %q after", k, tm, after[k])
			}
		}
	}
	if changed > 0 || len(after) != len(before) {
		t.Errorf("%d of %d long-lived flows changed; %d entries after, %d before", changed, len(before), len(after), len(before))
	}
	nf0 := tmNewFlows(stats(t, d2))[tm4.Name]
	time.Sleep(3 * time.Second)

	// An upgrade whose layout differs (here: another flow table size) is
	// refused, and the data path keeps forwarding.
	d2.Kill()
	_, err = e.StartDistributor(context.Background(), e.Config(lab.ConfigOptions{MaxFlows: 500_000}))
	if err == nil || !strings.Contains(err.Error(), "map flows") || !strings.Contains(err.Error(), "max entries") {
		t.Fatalf("start with another flow-table size: %v, want a refusal naming map flows", err)
	}
	time.Sleep(2 * time.Second)
	cancel()
	lr, sr := long.Wait(), short.Wait()
	t.Logf("long-lived: %s", lr)
	t.Logf("short: %s", sr)
	if lr.Errors != 0 || lr.FlowsMoved != 0 {
		t.Errorf("long-lived connections: %d errors %v, %d moved %v", lr.Errors, lr.ErrorSamples, lr.FlowsMoved, lr.MoveSamples)
	}
	var conns uint64
	for _, c := range lr.PerTM {
		conns += c.KeepAliveConns
	}
	if conns != 500 {
		t.Errorf("%d keep-alive connections answered, want 500", conns)
	}
	if sr.Errors != 0 {
		t.Errorf("short connections: %d errors %v", sr.Errors, sr.ErrorSamples)
	}
	if sr.PerTM[tm4.Name].ShortConns == 0 {
		t.Errorf("the added %s got no new connections after the restart (new flows counted by the restarted daemon before the wait: %d)", tm4.Name, nf0)
	}
	if n := sr.Requests; n == 0 {
		t.Errorf("no short connections at all")
	}

	// --unpin removes it all: the program is detached, the pins are gone.
	cfgPath := filepath.Join(e.Dir, e.Topo.Distributors[0].Name+".yaml")
	out, err := e.Topo.Distributors[0].NS.Command(context.Background(), e.Bin, "distributor", "--config", cfgPath, "--unpin").CombinedOutput()
	if err != nil {
		t.Fatalf("--unpin: %v\n%s", err, out)
	}
	if got := xdpAttached(t, e); len(got) != 0 {
		t.Errorf("XDP still attached on %v after --unpin", got)
	}
	if _, err := os.Stat(filepath.Join(lab.PinRoot(e.Dir), "d1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after --unpin: %v", err)
	}
}

// TestKeepRestart: a second daemon with the same id is refused while the
// first runs; SIGTERM with --keep leaves the data path attached and
// forwarding; the next daemon adopts it and held connections keep their
// TMs.
func TestKeepRestart(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3})
	cfg := e.Config(lab.ConfigOptions{})
	h := e.Topo.Distributors[0]
	d, err := lab.StartDistributorArgs(context.Background(), h, e.Bin, e.Dir, cfg, "--keep")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("first distributor output:\n%s", d.Output())
		}
	})
	conns := make([]*heldConn, 50)
	for i := range conns {
		conns[i] = dialHeld(t, e, 0)
	}

	// Same id, same state_dir (another API socket): refused while the
	// first runs.
	other := filepath.Join(e.Dir, "other.yaml")
	if err := os.WriteFile(other, []byte(e.Config(lab.ConfigOptions{APIPath: filepath.Join(e.Dir, "other.sock")})), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := h.NS.Command(context.Background(), e.Bin, "distributor", "--config", other).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another distributor with id d1 is running") {
		t.Fatalf("a second daemon with the same id: %v\n%s", err, out)
	}

	if err := d.Stop(); err != nil {
		t.Fatalf("stop with --keep: %v\n%s", err, d.Output())
	}
	if !strings.Contains(d.Output(), "left pinned and forwarding") {
		t.Fatalf("no --keep message:\n%s", d.Output())
	}
	if got := xdpAttached(t, e); len(got) != 3 {
		t.Fatalf("XDP attached on %v after SIGTERM --keep, want ext0, int0, srv0", got)
	}
	// No daemon runs: the pinned program forwards the held connections.
	for i, c := range conns {
		if tm, err := c.get(); err != nil || tm != c.tm {
			t.Fatalf("connection %d with no daemon: %q, %v (was on %s)", i, tm, err, c.tm)
		}
	}
	d2, err := e.StartDistributor(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d2.Output(), "adopted the pinned data path") {
		t.Fatalf("not adopted:\n%s", d2.Output())
	}
	for i, c := range conns {
		if tm, err := c.get(); err != nil || tm != c.tm {
			t.Fatalf("connection %d after the restart: %q, %v (was on %s)", i, tm, err, c.tm)
		}
	}
	if _, err := os.Stat(filepath.Join(e.Dir, "d1.tm-indexes")); err != nil {
		t.Errorf("TM index file: %v", err)
	}
}
