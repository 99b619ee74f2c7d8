package lab_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// TestRunLab runs `switchyard lab --distributors 1` short: a TM added at
// 1/3, tm1 drained at 2/3, under light load.
func TestRunLab(t *testing.T) {
	labtest.Require(t)
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := lab.RunLab(ctx, lab.LabOptions{
		Bin:          bin,
		Dir:          t.TempDir(),
		Duration:     8 * time.Second,
		TMs:          3,
		KeepAlive:    8,
		Short:        4,
		UDP:          4,
		Interval:     10 * time.Millisecond,
		Weights:      []int{1, 1, 2},
		Distributors: 1,
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
	if res.Router != nil || res.Failover != nil || len(res.Distributors) != 1 {
		t.Errorf("single-distributor lab: router %+v, failover %+v, distributors %+v", res.Router, res.Failover, res.Distributors)
	}
}

// TestRunLabSystem runs the default lab short: a router in front of two
// distributors that mirror each other, a TM added, tm1 drained, d1 killed
// and brought back: 0 connections broken, both distributors carried load
// and are back in the route, and the HTML report has the plots.
func TestRunLabSystem(t *testing.T) {
	labtest.Require(t)
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	page := filepath.Join(t.TempDir(), "report.html")
	res, err := lab.RunLab(ctx, lab.LabOptions{
		Bin:       bin,
		Dir:       t.TempDir(),
		Duration:  24 * time.Second,
		KeepAlive: 20,
		Short:     4,
		UDP:       4,
		Interval:  10 * time.Millisecond,
		Weights:   []int{1, 1, 2},
		HTML:      page,
	}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	f := res.Failover
	if f == nil || !f.KillTookEffect || !f.Back || f.Killed != "d1" {
		t.Fatalf("failover: %+v", f)
	}
	// UDP requests sent to d1 between the kill and the route update are
	// lost (the router still sends there); nothing else may fail.
	if f.KeepAliveReconnects != 0 || f.Moved != 0 || f.Errors != f.UDPWindowLost {
		t.Errorf("across the kill and the return: %d keep-alive connections broke, %d errors %v (%d UDP requests lost in the window), %d moved %v",
			f.KeepAliveReconnects, f.Errors, f.ErrorSamples, f.UDPWindowLost, f.Moved, f.MoveSamples)
	}
	t.Logf("failover: rerouted %v after the kill; d1 synced %v after its restart; %d UDP requests lost in the window", f.Rerouted, f.Resync, f.UDPWindowLost)
	if res.Router == nil || strings.Join(res.Router.Via, ",") != "d1,d2" {
		t.Errorf("router at the end: %+v, want d1 and d2 in the route", res.Router)
	}
	if len(res.Distributors) != 2 {
		t.Fatalf("distributors: %+v", res.Distributors)
	}
	for _, d := range res.Distributors {
		if !d.Up || d.NewFlows == 0 || len(d.Peers) != 1 || d.Peers[0].State != "synced" {
			t.Errorf("distributor at the end: %+v", d)
		}
	}
	var labels []string
	for _, e := range res.Timeline.Events {
		labels = append(labels, e.Label)
	}
	if want := "tm4 added,tm1 draining,d1 killed,d1 restarts,d1 in the route"; strings.Join(labels, ",") != want {
		t.Fatalf("events %q, want %s", labels, want)
	}
	// While d1 was down (from the kill to its restart, the "d1 restarts"
	// event), the samples show it down and d2 carrying all.
	down := 0
	restart := res.Timeline.Events[3].At
	for _, s := range res.Timeline.Samples {
		if s.At > f.KilledAt+time.Second && s.At < restart {
			if s.Dist[0].Up || s.Dist[1].NewPerSec == 0 {
				t.Errorf("sample at %v: %+v", s.At, s.Dist)
			}
			down++
		}
	}
	if down == 0 {
		t.Errorf("no sample while d1 was down (killed at %v, back at %v)", f.KilledAt, f.BackAt)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("<svg ")); n != 4 {
		t.Errorf("HTML report: %d plots, want 4", n)
	}
	if !res.Pass {
		t.Errorf("lab did not pass: %+v", res.Checks)
	}
}
