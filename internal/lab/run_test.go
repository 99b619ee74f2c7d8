package lab_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// TestRunLab runs `switchyard lab` short: a TM added at 1/3, tm1 drained at
// 2/3, under light load.
func TestRunLab(t *testing.T) {
	labtest.Require(t)
	bin, err := lab.BuildBinary(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := lab.RunLab(ctx, lab.LabOptions{
		Bin:       bin,
		Dir:       t.TempDir(),
		Duration:  8 * time.Second,
		TMs:       3,
		KeepAlive: 8,
		Short:     4,
		UDP:       4,
		Interval:  10 * time.Millisecond,
		Weights:   []int{1, 1, 2},
	}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Moved != 0 {
		t.Errorf("errors %d, moved %d: %v %v", res.Errors, res.Moved, res.Load.ErrorSamples, res.Load.MoveSamples)
	}
	if len(res.TMs) != 4 {
		t.Fatalf("TMs in the result: %+v, want tm1..tm4", res.TMs)
	}
	for _, tm := range res.TMs {
		if tm.Requests == 0 || tm.NewFlows == 0 {
			t.Errorf("%s got no traffic: %+v", tm.ID, tm)
		}
	}
	if res.Added != "tm4" || res.AddedNewFlowsAfter == 0 || res.AddedShortAfter == 0 {
		t.Errorf("added %s: %d new flows, %d short connections after it was added", res.Added, res.AddedNewFlowsAfter, res.AddedShortAfter)
	}
	if len(res.Phases) != 3 {
		t.Fatalf("%d phases, want 3: %+v", len(res.Phases), res.Phases)
	}
	if res.Phases[2].Total == 0 {
		t.Errorf("no short connections after the drain")
	}
	if res.Drained != "tm1" || res.DrainedShortAfter != 0 || res.DrainedNewFlowsAfter != 0 {
		t.Errorf("drained %s: %d short connections, %d new flows after the drain", res.Drained, res.DrainedShortAfter, res.DrainedNewFlowsAfter)
	}
	if !res.Pass {
		t.Errorf("lab did not pass: %+v", res.Checks)
	}
}
