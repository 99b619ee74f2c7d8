package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// TestRunBench is a smoke test of `switchyard bench`: one short round. It
// checks that every measurement produced a value on both paths and that the
// ratios are computed, not what they are (timing on a shared machine).
func TestRunBench(t *testing.T) {
	labtest.Require(t)
	bin, err := lab.BuildBinary(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := lab.RunBench(ctx, lab.BenchOptions{
		Bin:      bin,
		Dir:      t.TempDir(),
		Duration: time.Second,
		Rounds:   1,
		Workers:  4,
	}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Metrics) != 3 {
		t.Fatalf("%d metrics, want 3 (1 stream, 8 streams, conns/s): %+v", len(res.Metrics), res.Metrics)
	}
	for _, m := range res.Metrics {
		if len(m.Direct) != 1 || len(m.Switchyard) != 1 {
			t.Errorf("%s: %d direct and %d switchyard values, want 1 each", m.Name, len(m.Direct), len(m.Switchyard))
			continue
		}
		if !(m.Direct[0] > 0 && m.Switchyard[0] > 0 && m.DirectMedian > 0 && m.SwitchyardMedian > 0) {
			t.Errorf("%s: values not > 0: %+v", m.Name, m)
		}
		if !(m.Ratio > 0) || math.IsInf(m.Ratio, 0) || len(m.RoundRatios) != 1 || !(m.RoundRatios[0] > 0) {
			t.Errorf("%s: ratio not computed: %v %v", m.Name, m.Ratio, m.RoundRatios)
		}
	}
	if len(res.DistPackets) != 1 || res.DistPackets[0] == 0 {
		t.Errorf("distributor packets per switchyard round: %v", res.DistPackets)
	}
	if res.Machine.CPUs < 1 || res.Machine.Kernel == "" {
		t.Errorf("machine info: %+v", res.Machine)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Errorf("result does not marshal: %v", err)
	}
	for _, want := range []string{"MEDIAN", "ratio", "switchyard", "direct"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("table lacks %q", want)
		}
	}
}
