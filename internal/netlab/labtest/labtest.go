// Package labtest gives tests a netlab topology, or a clean skip on machines
// where namespaces cannot be made. Under CI (CI=true) the skip becomes a
// failure, so that a CI runner without root does not pass silently.
package labtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/netlab"
)

var (
	probeOnce sync.Once
	probeErr  error
)

// probe checks once per test binary that this process is root and can create
// and delete a named network namespace.
func probe() error {
	probeOnce.Do(func() {
		if os.Geteuid() != 0 {
			probeErr = fmt.Errorf("netlab tests need root (euid %d)", os.Geteuid())
			return
		}
		n, err := netlab.NewNS(fmt.Sprintf("syprobe%06x", rand.N(1<<24)))
		if err != nil {
			probeErr = fmt.Errorf("cannot create a network namespace: %w", err)
			return
		}
		if err := n.Close(); err != nil {
			probeErr = fmt.Errorf("cannot delete a network namespace: %w", err)
		}
	})
	return probeErr
}

// Require skips the test when it cannot get root or create a network namespace,
// unless the environment has CI=true, in which case it fails the test with the
// reason.
func Require(t testing.TB) {
	t.Helper()
	if err := probe(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("labtest: %v (CI=true: not skipping)", err)
		}
		t.Skipf("labtest: %v", err)
	}
}

// Topology builds a topology for a test after Require, and removes it when the
// test and its subtests finish, whether they pass, fail or panic.
func Topology(t testing.TB, spec netlab.Spec) *netlab.Topology {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, err := netlab.Build(ctx, spec)
	if err != nil {
		t.Fatalf("labtest: build topology %+v: %v", spec, err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("labtest: close topology %s: %v", topo.Prefix, err)
		}
	})
	return topo
}
