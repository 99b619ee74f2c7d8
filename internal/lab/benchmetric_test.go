package lab

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestBenchMetricRecordFinish: values land on their path, errors only for
// the connection measurements, and finish computes medians and every ratio
// (NaN when the denominator is 0, written as null).
func TestBenchMetricRecordFinish(t *testing.T) {
	m := BenchMetric{Name: "conns", Unit: "conn/s", Paths: map[string]*BenchSeries{PathDirect: {}, PathECMP: {}, PathSwitchyard: {}}}
	for _, v := range []struct {
		path          string
		v             float64
		retrans, errs uint64
	}{{PathDirect, 100, 1, 0}, {PathSwitchyard, 90, 5, 1}, {PathECMP, 50, 0, 0}, {PathSwitchyard, 80, 7, 0},
		{PathDirect, 200, 3, 2}, {PathDirect, 150, 2, 0}, {PathSwitchyard, 99, 6, 0}, {PathECMP, 100, 0, 0}, {PathECMP, 0, 0, 0}} {
		m.Paths[v.path].record(v.v, v.retrans, 2*v.retrans, v.errs, true)
	}
	m.finish()
	d, s, e := m.Paths[PathDirect], m.Paths[PathSwitchyard], m.Paths[PathECMP]
	if d.Median != 150 || s.Median != 90 || e.Median != 50 || m.Ratios["switchyard/direct"] != 0.6 || m.Ratios["switchyard/ecmp"] != 1.8 {
		t.Errorf("medians %v %v %v, ratios %v; want 150, 90, 50, 0.6 and 1.8", d.Median, s.Median, e.Median, m.Ratios)
	}
	if s.RetransMedian != 6 || s.DropsMedian != 12 || d.RetransMedian != 2 {
		t.Errorf("retrans/drops medians: switchyard %v/%v, direct %v", s.RetransMedian, s.DropsMedian, d.RetransMedian)
	}
	if len(d.Errors) != 3 || d.Errors[1] != 2 || len(s.Errors) != 3 || s.Errors[0] != 1 {
		t.Errorf("errors %v %v", d.Errors, s.Errors)
	}
	want := []float64{0.9, 0.4, 0.66}
	for i, r := range m.RoundRatios["switchyard/direct"] {
		if math.Abs(r-want[i]) > 1e-9 {
			t.Errorf("round ratios %v, want %v", m.RoundRatios["switchyard/direct"], want)
			break
		}
	}
	if rr := m.RoundRatios["switchyard/ecmp"]; len(rr) != 3 || !math.IsNaN(rr[2]) {
		t.Errorf("switchyard/ecmp per round %v: the third has a zero denominator", rr)
	}
	b, err := json.Marshal(m)
	if err != nil || !strings.Contains(string(b), `"switchyard/ecmp":[1.8,0.8,null]`) {
		t.Errorf("JSON %s, %v", b, err)
	}

	tp := BenchMetric{Name: "tcp", Unit: "bit/s", Paths: map[string]*BenchSeries{PathSwitchyard: {}}}
	tp.Paths[PathSwitchyard].record(1e9, 3, 0, 7, false)
	tp.finish()
	if tp.Paths[PathSwitchyard].Errors != nil {
		t.Errorf("throughput has error counts: %+v", tp.Paths[PathSwitchyard])
	}
	if len(tp.Ratios) != 0 {
		t.Errorf("ratios without a second path: %v", tp.Ratios)
	}
}

func TestBenchOrderRotates(t *testing.T) {
	paths := []string{PathDirect, PathECMP, PathSwitchyard}
	for r, want := range []string{"direct,ecmp,switchyard", "ecmp,switchyard,direct", "switchyard,direct,ecmp", "direct,ecmp,switchyard"} {
		if got := strings.Join(benchOrder(paths, r), ","); got != want {
			t.Errorf("round %d: %s, want %s", r+1, got, want)
		}
	}
}

func TestSNMPValue(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RetransSegs InErrs\nTcp: 1 200 4242 0\nUdp: InDatagrams\nUdp: 7\n"
	if v, err := snmpValue([]byte(snmp), "Tcp", "RetransSegs"); err != nil || v != 4242 {
		t.Errorf("RetransSegs %d, %v; want 4242", v, err)
	}
	if _, err := snmpValue([]byte(snmp), "Tcp", "Nope"); err == nil {
		t.Error("a missing counter read without an error")
	}
	if _, err := snmpValue([]byte("Tcp: RetransSegs\n"), "Tcp", "RetransSegs"); err == nil {
		t.Error("a header without values read without an error")
	}
}

func TestDropDelta(t *testing.T) {
	before := map[string]uint64{"a/eth0 tx": 10, "a/eth0 rx": 0, "b/p tx": 5}
	after := map[string]uint64{"a/eth0 tx": 15, "a/eth0 rx": 3, "b/p tx": 5, "c/new tx": 2}
	sum, where := dropDelta(before, after)
	if sum != 7 || strings.Join(where, ",") != "a/eth0 rx:3,a/eth0 tx:5,c/new tx:2" {
		t.Errorf("drops %d at %v; want 7 (tx only) at a/eth0 rx:3, a/eth0 tx:5, c/new tx:2", sum, where)
	}
}

// TestBenchPrint: the table has each path, the medians, retransmissions,
// drops, the ratios and the targets' verdicts.
func TestBenchPrint(t *testing.T) {
	paths := []string{PathDirect, PathECMP, PathSwitchyard}
	mk := func(name, unit string, vals map[string]float64, retrans map[string]uint64) BenchMetric {
		m := BenchMetric{Name: name, Unit: unit, Paths: map[string]*BenchSeries{}}
		for _, p := range paths {
			m.Paths[p] = &BenchSeries{}
			m.Paths[p].record(vals[p], retrans[p], retrans[p]*10, 0, unit != "bit/s")
		}
		m.finish()
		return m
	}
	tp := mk("TCP 8 streams client→TM", "bit/s", map[string]float64{PathDirect: 10e9, PathECMP: 10e9, PathSwitchyard: 9.6e9},
		map[string]uint64{PathDirect: 100, PathECMP: 90, PathSwitchyard: 300})
	c := mk("new TCP conns/s", "conn/s", map[string]float64{PathDirect: 1000, PathECMP: 1000, PathSwitchyard: 960}, nil)
	var out bytes.Buffer
	BenchResult{Rounds: 1, MTU: 1500, TMs: 3, Qdisc: "pfifo", Paths: paths, Metrics: []BenchMetric{tp, c},
		Order: [][]string{benchOrder(paths, 0)}, DistPackets: []uint64{42}}.Print(&out)
	s := out.String()
	for _, want := range []string{"10.00", "9.60", "switchyard/direct", "0.960", "3000", "[42]", "direct→ecmp→switchyard",
		"switchyard/direct 0.960 ≥ 0.95 ok; retransmissions 300 vs 100 (3.00×) ≤ 2× MISSED",
		"new TCP conns/s: switchyard/ecmp 0.960 ≥ 0.95 ok"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
}
