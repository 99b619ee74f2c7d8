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
// checks that every measurement produced a value, a retransmission and a
// drop count on each of the three paths and that the ratios are computed,
// not what they are (timing on a shared machine).
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
	if len(res.Metrics) != 4 {
		t.Fatalf("%d metrics, want 4 (1 stream, 8 streams, conns/s, req/s): %+v", len(res.Metrics), res.Metrics)
	}
	for _, m := range res.Metrics {
		for _, p := range []string{lab.PathDirect, lab.PathECMP, lab.PathSwitchyard} {
			s := m.Paths[p]
			if s == nil || len(s.Values) != 1 || len(s.Retrans) != 1 || len(s.Drops) != 1 {
				t.Errorf("%s, %s: want one value, retransmission and drop count: %+v", m.Name, p, s)
				continue
			}
			if !(s.Values[0] > 0 && s.Median > 0) {
				t.Errorf("%s, %s: value not > 0: %+v", m.Name, p, s)
			}
		}
		for _, k := range []string{"switchyard/direct", "switchyard/ecmp", "ecmp/direct"} {
			if r := m.Ratios[k]; !(r > 0) || math.IsInf(r, 0) || len(m.RoundRatios[k]) != 1 {
				t.Errorf("%s: ratio %s not computed: %v %v", m.Name, k, r, m.RoundRatios[k])
			}
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
	for _, want := range []string{"MEDIAN", "RETRANS", "DROPS", "switchyard/ecmp", "target: new TCP conns/s"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("table lacks %q", want)
		}
	}
}
