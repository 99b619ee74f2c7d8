package lab

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestBenchMetricRecordFinish: values land on their path, errors only for
// the connection rate, and finish computes medians and ratios (NaN when the
// direct path has no value, written as null).
func TestBenchMetricRecordFinish(t *testing.T) {
	m := BenchMetric{Name: "conns", Unit: "conn/s"}
	for _, v := range []struct {
		path string
		v    float64
		errs uint64
	}{{PathDirect, 100, 0}, {PathSwitchyard, 90, 1}, {PathSwitchyard, 80, 0}, {PathDirect, 200, 2}, {PathDirect, 150, 0}, {PathSwitchyard, 99, 0}} {
		m.record(v.path, v.v, v.errs)
	}
	m.finish()
	if m.DirectMedian != 150 || m.SwitchyardMedian != 90 || m.Ratio != 0.6 {
		t.Errorf("medians %v %v, ratio %v; want 150, 90, 0.6", m.DirectMedian, m.SwitchyardMedian, m.Ratio)
	}
	if len(m.DirectErrors) != 3 || m.DirectErrors[1] != 2 || len(m.SwitchyardErrors) != 3 || m.SwitchyardErrors[0] != 1 {
		t.Errorf("errors %v %v", m.DirectErrors, m.SwitchyardErrors)
	}
	want := []float64{0.9, 0.4, 0.66}
	for i, r := range m.RoundRatios {
		if math.Abs(r-want[i]) > 1e-9 {
			t.Errorf("round ratios %v, want %v", m.RoundRatios, want)
			break
		}
	}

	tp := BenchMetric{Name: "tcp", Unit: "bit/s"}
	tp.record(PathSwitchyard, 1e9, 7)
	tp.finish()
	if tp.DirectErrors != nil || tp.SwitchyardErrors != nil {
		t.Errorf("throughput has error counts: %+v", tp)
	}
	if !math.IsNaN(tp.Ratio) {
		t.Errorf("ratio without a direct value: %v", tp.Ratio)
	}
	b, err := json.Marshal(tp)
	if err != nil || !strings.Contains(string(b), `"ratio":null`) {
		t.Errorf("JSON %s, %v", b, err)
	}
}

func TestBenchOrderAlternates(t *testing.T) {
	for r, want := range []string{"direct,switchyard", "switchyard,direct", "direct,switchyard"} {
		if got := strings.Join(benchOrder(r), ","); got != want {
			t.Errorf("round %d: %s, want %s", r+1, got, want)
		}
	}
}

// TestBenchPrint: the table has each round, the medians and the verdict.
func TestBenchPrint(t *testing.T) {
	m := BenchMetric{Name: "TCP 1 stream client→TM", Unit: "bit/s"}
	m.record(PathDirect, 10e9, 0)
	m.record(PathSwitchyard, 9.5e9, 0)
	c := BenchMetric{Name: "new TCP conns/s", Unit: "conn/s"}
	c.record(PathDirect, 1000, 0)
	c.record(PathSwitchyard, 500, 3)
	m.finish()
	c.finish()
	var out bytes.Buffer
	BenchResult{Rounds: 1, Metrics: []BenchMetric{m, c}, Order: [][]string{benchOrder(0)}, DistPackets: []uint64{42}}.Print(&out)
	s := out.String()
	for _, want := range []string{"10.00", "9.50", "0.950  ok", "500 (3 err)", "0.500  below target", "[42]", "direct→switchyard"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
}
