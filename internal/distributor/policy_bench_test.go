package distributor

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/selector"
)

// BenchmarkReweighRewrite1000: what a measured policy's tick costs for a
// pool of 1,000 TMs (the fleet size the issue names; the data path
// addresses 255, the ring's slots hold any index): the weights from the
// costs (weightsOf), the new Maglev ring, the changed slots, and writing
// them into a real data path's ring map (WriteRing), for two changes: one
// TM's cost ×10 (a loaded TM: its weight 100 → 10) and every cost moved
// ±2% (which the threshold would not write; measured all the same). The
// whole ring's write is measured for comparison. Root: a real data path.
func BenchmarkReweighRewrite1000(b *testing.B) {
	labtest.Require(b)
	dp, err := datapath.Load(datapath.Options{MaxFlows: 1 << 16, RingSize: datapath.DefaultRingSize, MaxServices: 2, MaxSecond: 1024})
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	const n = 1000
	ids := make([]string, n)
	cfg := map[string]uint32{}
	for i := range ids {
		ids[i] = fmt.Sprintf("tm%04d", i)
		cfg[ids[i]] = 1
	}
	even := map[string]float64{}
	for _, id := range ids {
		even[id] = 1000 // packets per second, say
	}
	ring := func(w map[string]uint32) []uint32 {
		bs := make([]selector.Backend, n)
		for i, id := range ids {
			bs[i] = selector.Backend{Index: uint32(i), Name: id, Weight: w[id]}
		}
		r, err := selector.Maglev(bs, datapath.DefaultRingSize)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	base := ring(weightsOf(ids, cfg, even))
	start := time.Now()
	if err := dp.WriteRing(0, base, nil); err != nil {
		b.Fatal(err)
	}
	full := time.Since(start)
	loaded := maps.Clone(even)
	loaded[ids[0]] *= 10
	jitter := maps.Clone(even)
	for i, id := range ids {
		jitter[id] *= 1 + float64(i%5-2)/100
	}
	for _, tc := range []struct {
		name  string
		costs map[string]float64
	}{{"one-loaded", loaded}, {"all-2pct", jitter}} {
		var weigh, compute, write time.Duration
		changed := 0
		const rounds = 5 // its own rounds, whatever b.N
		for range rounds {
			t0 := time.Now()
			w := weightsOf(ids, cfg, tc.costs)
			weigh += time.Since(t0)
			next := ring(w)
			slots := selector.Changed(base, next)
			t1 := time.Now()
			if err := dp.WriteRing(0, next, slots); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			compute += t1.Sub(t0)
			write += t2.Sub(t1)
			changed = len(slots)
			// Back to the base ring for the next round (not timed).
			if err := dp.WriteRing(0, base, slots); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("%s: weights %v, weights+ring+diff %v, write %d changed slots %v (whole ring of %d: %v), mean of %d rounds",
			tc.name, weigh/rounds, compute/rounds, changed, write/rounds, len(base), full, rounds)
		b.ReportMetric(float64(compute.Nanoseconds())/rounds, tc.name+"-compute-ns")
		b.ReportMetric(float64(write.Nanoseconds())/rounds, tc.name+"-write-ns")
		b.ReportMetric(float64(changed), tc.name+"-slots")
	}
	b.ReportMetric(float64(full.Nanoseconds()), "whole-ring-write-ns")
}
