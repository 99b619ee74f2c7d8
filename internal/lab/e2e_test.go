package lab_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
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

// newEnv builds a topology with reference TMs and removes it at the end.
func newEnv(t *testing.T, spec netlab.Spec) *lab.Env {
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
	return e
}

func startDist(t *testing.T, e *lab.Env, o lab.ConfigOptions) *lab.Distributor {
	t.Helper()
	d, err := e.StartDistributor(context.Background(), e.Config(o))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("distributor output:\n%s", d.Output())
		}
	})
	return d
}

func runLoad(t *testing.T, e *lab.Env, ipv6 bool, o loadgen.Options, d time.Duration) loadgen.Report {
	t.Helper()
	e.ClientDialer(0, &o)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	rep := loadgen.Start(ctx, e.Target(ipv6), o).Wait()
	t.Logf("load: %s", rep)
	return rep
}

// TestIPv6TMAddresses: TMs configured by IPv6 address (MACs by NDP) serve
// both VIPs.
func TestIPv6TMAddresses(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	startDist(t, e, lab.ConfigOptions{IPv6: true, TMAddr6: true})
	for _, v6 := range []bool{false, true} {
		rep := runLoad(t, e, v6, loadgen.Options{KeepAlive: 4, Short: 2, UDPFlows: 4, Interval: 5 * time.Millisecond}, 2*time.Second)
		if rep.Errors != 0 || rep.FlowsMoved != 0 || len(rep.PerTM) != 2 {
			t.Fatalf("ipv6 VIP %v: errors %d %v, moved %d, TMs %v", v6, rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.PerTM)
		}
	}
}

func TestTCPAndUDPToVIP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3})
			startDist(t, e, lab.ConfigOptions{IPv6: true})
			rep := runLoad(t, e, v6, loadgen.Options{KeepAlive: 12, Short: 4, UDPFlows: 12, Interval: 5 * time.Millisecond}, 3*time.Second)
			if rep.Errors != 0 || rep.FlowsMoved != 0 {
				t.Fatalf("errors %d %v, flows moved %d %v", rep.Errors, rep.ErrorSamples, rep.FlowsMoved, rep.MoveSamples)
			}
			if rep.HTTPRequests < 100 || rep.UDPRequests < 100 {
				t.Fatalf("too little traffic went through: %d HTTP, %d UDP", rep.HTTPRequests, rep.UDPRequests)
			}
			if len(rep.PerTM) != 3 {
				t.Fatalf("responses came from %d TMs, want all 3: %v", len(rep.PerTM), rep.PerTM)
			}
		})
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

func asExit(err error, target **exec.ExitError) bool { return errors.As(err, target) }
