package lab_test

import (
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// TestRoundRobinE2E: 4 TMs in namespaces, short TCP connections through
// the XDP program: round-robin gives each TM the same share, weighted
// round-robin (weights 1:2:3:4) shares by weight. Each CPU walks the ring
// on its own, so a share is exact only per ring's worth of new flows per
// CPU: the tolerance is ±0.03 of the whole (a hash would give ±0.04 at
// 4σ over 1,500 connections).
func TestRoundRobinE2E(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		weights map[string]int
	}{
		{config.PolicyRoundRobin, map[string]int{"tm1": 1, "tm2": 2, "tm3": 3, "tm4": 4}},
		{config.PolicyWeightedRoundRobin, map[string]int{"tm1": 1, "tm2": 2, "tm3": 3, "tm4": 4}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
			d := startDist(t, e, lab.ConfigOptions{Weights: tc.weights, Mutate: func(c *config.Config) {
				for i := range c.Services {
					c.Services[i].Policy = tc.policy
				}
			}})
			rep := runLoad(t, e, false, loadgen.Options{Short: 16}, 4*time.Second)
			if rep.Errors != 0 {
				t.Fatalf("%d errors: %v", rep.Errors, rep.ErrorSamples)
			}
			var total uint64
			for _, c := range rep.PerTM {
				total += c.ShortConns
			}
			if total < 1500 {
				t.Fatalf("only %d short connections: too few to judge", total)
			}
			for id, w := range tc.weights {
				want := 0.25
				if tc.policy == config.PolicyWeightedRoundRobin {
					want = float64(w) / 10
				}
				got := float64(rep.PerTM[id].ShortConns) / float64(total)
				t.Logf("%s: weight %d, share %.3f (want %.3f)", id, w, got, want)
				if got < want-0.03 || got > want+0.03 {
					t.Errorf("%s: share %.3f, want %.3f ± 0.03", id, got, want)
				}
			}
			if s := stats(t, d); len(s.Services) == 0 {
				t.Fatal("no services in stats")
			}
		})
	}
}
