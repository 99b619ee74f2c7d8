package lab

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/loadgen"
)

// snap is a snapshot at second at with cumulative short connections and
// distributor new flows per TM; every TM listed has answered requests.
func snap(at int, short, flows map[string]uint64) snapshot {
	s := snapshot{at: time.Duration(at) * time.Second, load: loadgen.Report{PerTM: map[string]loadgen.Counts{}}, dist: map[string]api.TMStats{}}
	for id, n := range short {
		s.load.PerTM[id] = loadgen.Counts{ShortConns: n, Requests: n}
	}
	for id, n := range flows {
		s.dist[id] = api.TMStats{ID: id, NewFlows: n, State: "active"}
	}
	return s
}

// The TMs have names that say nothing of their weights or order: the
// accounting must take both from the state and the steps.
var (
	addStep   = &step{kind: stepAdd, tm: "zeta"}
	drainStep = &step{kind: stepDrain, tm: "alpha"}
	weights   = map[string]int{"alpha": 1, "beta": 1, "gamma": 2, "zeta": 1}
	allTMs    = []string{"alpha", "beta", "gamma", "zeta"}
)

// goodRun is a run that follows the weights in each phase: 1:1:2 among
// alpha, beta, gamma; then 1:1:2:1 with zeta; then 1:2:1 without alpha.
func goodRun() accounting {
	m := func(kv ...any) map[string]uint64 {
		out := map[string]uint64{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = uint64(kv[i+1].(int))
		}
		return out
	}
	p1end := snap(10, m("alpha", 250, "beta", 250, "gamma", 500), m("alpha", 300, "beta", 300, "gamma", 600))
	p2from := snap(11, m("alpha", 260, "beta", 260, "gamma", 520), m("alpha", 310, "beta", 310, "gamma", 620, "zeta", 0))
	p2end := snap(20, m("alpha", 460, "beta", 460, "gamma", 920, "zeta", 200), m("alpha", 510, "beta", 510, "gamma", 1020, "zeta", 210))
	p3from := snap(21, m("alpha", 460, "beta", 470, "gamma", 940, "zeta", 210), m("alpha", 515, "beta", 520, "gamma", 1040, "zeta", 220))
	last := snap(30, m("alpha", 460, "beta", 720, "gamma", 1440, "zeta", 460), m("alpha", 515, "beta", 770, "gamma", 1540, "zeta", 470))
	return accounting{
		spans: []span{
			{name: "3 TMs active", eligible: []string{"alpha", "beta", "gamma"}, from: snapshot{}, to: p1end},
			{step: addStep, name: "zeta added", eligible: allTMs, from: p2from, to: p2end},
			{step: drainStep, name: "alpha draining", eligible: []string{"beta", "gamma", "zeta"}, from: p3from, to: last},
		},
		last: last, tms: allTMs, weights: weights,
	}
}

func judged(a accounting) Result {
	r := account(a)
	r.Added, r.Drained = "zeta", "alpha"
	r.judge()
	return r
}

// check returns the check whose name contains s.
func check(t *testing.T, r Result, s string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if strings.Contains(c.Name, s) {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", s, r.Checks)
	return Check{}
}

func TestAccountGoodRun(t *testing.T) {
	r := judged(goodRun())
	if !r.Pass {
		t.Fatalf("good run did not pass: %+v", r.Checks)
	}
	if len(r.Checks) != 9 {
		t.Errorf("%d checks, want 9: %+v", len(r.Checks), r.Checks)
	}
	if len(r.Phases) != 3 {
		t.Fatalf("%d phases", len(r.Phases))
	}
	p2 := r.Phases[1]
	if p2.Total != 200+200+400+200 || p2.Short["gamma"] != 400 || p2.Expected["gamma"] != 0.4 || p2.Expected["zeta"] != 0.2 {
		t.Errorf("phase 2 accounting: %+v", p2)
	}
	if _, ok := r.Phases[2].Expected["alpha"]; ok {
		t.Errorf("drained alpha expected in phase 3: %+v", r.Phases[2].Expected)
	}
	if r.Phases[0].From != 0 || r.Phases[0].To != 10*time.Second || r.Phases[2].To != 30*time.Second {
		t.Errorf("phase bounds: %+v", r.Phases)
	}
	// After-counts run from the phase's start to the end of the run.
	if !r.AddTookEffect || r.AddedShortAfter != 460 || r.AddedNewFlowsAfter != 470 {
		t.Errorf("added: %v %d short, %d flows", r.AddTookEffect, r.AddedShortAfter, r.AddedNewFlowsAfter)
	}
	if !r.DrainTookEffect || r.DrainedShortAfter != 0 || r.DrainedNewFlowsAfter != 0 {
		t.Errorf("drained: %v %d short, %d flows", r.DrainTookEffect, r.DrainedShortAfter, r.DrainedNewFlowsAfter)
	}
	if len(r.TMs) != 4 || r.TMs[2].ID != "gamma" || r.TMs[2].Weight != 2 || r.TMs[2].NewFlows != 1540 {
		t.Errorf("TM totals: %+v", r.TMs)
	}
}

func TestJudgeDrainedTMGotConnections(t *testing.T) {
	a := goodRun()
	a.last.load.PerTM["alpha"] = loadgen.Counts{ShortConns: 520, Requests: 520}
	a.last.dist["alpha"] = api.TMStats{NewFlows: 530}
	a.spans[2].to = a.last
	r := judged(a)
	if r.Pass {
		t.Fatal("passed although the drained TM got 60 connections")
	}
	if c := check(t, r, "alpha got no new connections after the drain"); c.OK || !strings.Contains(c.Detail, "60 short connections") {
		t.Errorf("drain check: %+v", c)
	}
	if c := check(t, r, "alpha was chosen for no new flow"); c.OK || !strings.Contains(c.Detail, "15 new flows") {
		t.Errorf("new-flow check: %+v", c)
	}
}

func TestJudgeSkewedPhase(t *testing.T) {
	a := goodRun()
	// Phase 1: alpha got everything gamma should have had.
	a.spans[0].to = snap(10, map[string]uint64{"alpha": 750, "beta": 250, "gamma": 0}, nil)
	r := judged(a)
	c := check(t, r, "phase 1")
	if c.OK || !strings.Contains(c.Detail, "alpha 75.0% (expected 25.0%)") || !strings.Contains(c.Detail, "gamma 0.0% (expected 50.0%)") {
		t.Errorf("skewed phase 1: %+v", c)
	}
	if r.Pass {
		t.Error("passed with a skewed phase")
	}
	if c := check(t, r, "phase 2"); !c.OK {
		t.Errorf("phase 2 judged wrong: %+v", c)
	}
}

func TestJudgeSmallPhaseNotJudged(t *testing.T) {
	a := goodRun()
	a.spans[0].to = snap(1, map[string]uint64{"alpha": 50}, nil)
	r := judged(a)
	if c := check(t, r, "phase 1"); !c.OK || !strings.Contains(c.Detail, "not judged") {
		t.Errorf("phase of 50 connections: %+v", c)
	}
}

func TestJudgeRunEndedEarly(t *testing.T) {
	a := goodRun()
	a.spans = a.spans[:2]
	a.spans[1].to = a.last
	r := account(a)
	r.Drained = "alpha"
	r.judge()
	if r.Pass || r.DrainTookEffect {
		t.Fatalf("run without the drain: pass %v, drain took effect %v", r.Pass, r.DrainTookEffect)
	}
	if c := check(t, r, "after the drain"); c.OK || c.Detail != "the run ended before the drain" {
		t.Errorf("drain check: %+v", c)
	}

	a.spans = a.spans[:1]
	r = account(a)
	r.judge()
	if c := check(t, r, "the added TM got new connections"); c.OK || c.Detail != "the run ended before it was added" {
		t.Errorf("add check: %+v", c)
	}
}

func TestJudgeErrorsMovesIdleTM(t *testing.T) {
	a := goodRun()
	a.last.load.Errors, a.last.load.FlowsMoved = 2, 1
	a.last.load.PerTM["beta"] = loadgen.Counts{}
	r := judged(a)
	for _, name := range []string{"no errors", "no flow changed TM", "every TM answered requests"} {
		if c := check(t, r, name); c.OK {
			t.Errorf("%s passed: %+v", name, c)
		}
	}
	if c := check(t, r, "every TM answered"); !strings.Contains(c.Detail, "beta") {
		t.Errorf("idle TM not named: %+v", c)
	}
}

// TestLabStateWeightsByPosition: weights go to TMs by their order (the
// added TM last), whatever their names; a draining TM is not eligible.
func TestLabStateWeightsByPosition(t *testing.T) {
	s := &labState{weights: []int{3, 1, 2, 5}, weight: map[string]int{}, state: map[string]string{}}
	for _, id := range []string{"b", "a", "c"} {
		s.join(id)
	}
	if s.nextWeight() != 5 {
		t.Errorf("next weight %d, want 5", s.nextWeight())
	}
	s.join("x")
	s.join("y") // beyond the list: weight 1
	want := map[string]int{"b": 3, "a": 1, "c": 2, "x": 5, "y": 1}
	for id, w := range want {
		if s.weight[id] != w {
			t.Errorf("weight of %s: %d, want %d", id, s.weight[id], w)
		}
	}
	s.state["b"] = "draining"
	if got := strings.Join(s.eligible(), ","); got != "a,c,x,y" {
		t.Errorf("eligible %s", got)
	}
}

// TestDefaultSteps: the scenario adds a TM at 1/3 and drains the given one
// at 2/3; the drain step starts the tracker's count when it takes effect,
// and the add step names its TM once it applied.
func TestDefaultSteps(t *testing.T) {
	tr := &tupleTracker{}
	steps := defaultSteps("first", tr)
	if len(steps) != 2 || steps[0].kind != stepAdd || steps[0].at != 1.0/3 || steps[1].kind != stepDrain || steps[1].at != 2.0/3 || steps[1].tm != "first" {
		t.Fatalf("steps: %+v", steps)
	}
	s := &labState{weight: map[string]int{}, state: map[string]string{}}
	s.join("first")
	s.join("second")
	if err := steps[1].apply(context.Background(), s, &steps[1]); err != nil {
		t.Fatal(err)
	}
	if s.state["first"] != "draining" || strings.Join(s.eligible(), ",") != "second" {
		t.Errorf("after the drain step: %v, eligible %v", s.state, s.eligible())
	}
	if tr.after.Load() != 0 {
		t.Fatal("tracker counting before the drain took effect")
	}
	steps[1].effective()
	if tr.after.Load() == 0 {
		t.Error("tracker not counting after the drain took effect")
	}
}
