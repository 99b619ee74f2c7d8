package datapath_test

import (
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
)

// TestIsDrop checks datapath.IsDrop against what the program does with the
// packets each counter counts: a drop counter counts only dropped packets,
// and a dropped packet counts under exactly one drop counter, unless it is a
// signal frame, consumed once applied (sig_frame). Per-op signal counters
// (sig_memorize, sig_refused_no_flow...) count ops, not packets: a shim
// whose op was refused still goes on.
func TestIsDrop(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	g := generator(3)
	so := signalOptions(g)
	var dropped, reached [datapath.NumCounters]int
	for i := range 20000 {
		if i%500 == 0 {
			f.setRole(t, []int{roleExternal, roleInternal, roleExternal, roleInternal, roleNone}[(i/500)%5])
		}
		var pkt []byte
		if g.R.IntN(5) == 0 {
			pkt = g.Signal(so)
		} else {
			pkt = g.Next()
		}
		before := f.model.Counters
		var v datapath.Verdict
		if len(pkt) < 14 {
			// Not test-runnable (see check): the model's answer
			// stands for the program's, as TestDifferential shows.
			v, _ = f.model.Process(pkt, loIfindex)
		} else {
			v = f.check(t, i, pkt)
		}
		var drops []string
		for c := range datapath.NumCounters {
			if f.model.Counters[c].Packets == before[c].Packets {
				continue
			}
			reached[c]++
			if datapath.IsDrop(datapath.Counter(c)) {
				drops = append(drops, datapath.CounterName(datapath.Counter(c)))
				if v != datapath.Drop {
					t.Fatalf("packet %d (%x): verdict %v, but counted under drop counter %s", i, pkt, v, datapath.CounterName(datapath.Counter(c)))
				}
				dropped[c]++
			}
		}
		consumed := f.model.Counters[datapath.CounterSigFrame].Packets != before[datapath.CounterSigFrame].Packets
		if v == datapath.Drop && !consumed && len(drops) != 1 {
			t.Fatalf("packet %d (%x): dropped, counted under drop counters %v (want exactly one)", i, pkt, drops)
		}
	}
	// Every drop counter must have been seen dropping, or the test proves
	// nothing about it.
	for c := range datapath.NumCounters {
		if datapath.IsDrop(datapath.Counter(c)) && dropped[c] == 0 {
			t.Errorf("no generated packet reached drop counter %s", datapath.CounterName(datapath.Counter(c)))
		}
	}
	t.Logf("counters reached: %v", reached)
}
