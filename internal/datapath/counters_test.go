package datapath

import "testing"

func TestCounterNames(t *testing.T) {
	seen := map[string]bool{}
	for i := range NumCounters {
		n := CounterName(Counter(i))
		if n == "unknown" || seen[n] {
			t.Errorf("counter %d: name %q missing or repeated", i, n)
		}
		seen[n] = true
	}
	if len(counterNames) != NumCounters {
		t.Errorf("%d names for %d counters", len(counterNames), NumCounters)
	}
}
