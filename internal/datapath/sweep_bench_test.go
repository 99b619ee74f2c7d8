package datapath

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// BenchmarkSweepWalk measures what one sweep costs the daemon on a full
// flow table of 1 M and 10 M entries (issue 8): a walk of every entry (the
// batched lookups the sweeper's DeleteFlowsWhere does) with an idle check,
// and the delete of the 1% that are idle, capped at 100,000 like the
// sweeper's maxSweep. It reports wall and CPU time (user + system of the
// process) per sweep and per entry:
//
//	go test ./internal/datapath -run XXX -bench SweepWalk -benchtime 1x
func BenchmarkSweepWalk(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("%dM", n/1_000_000), func(b *testing.B) { sweepWalk(b, n) })
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sweepWalk(b *testing.B, n int) {
	labtest.Require(b)
	maxFlows := uint32(n) + HalfOpenSize(uint32(n))*2
	dp, err := Load(Options{MaxFlows: maxFlows, MaxServices: 4, RingSize: 251})
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	const now, timeout = 10_000, 900
	start := time.Now()
	half := n / 2
	if err := fillFlows(dp.objs.Flows, n, func(i int) (FlowKey, Flow) {
		last := uint32(now)
		if i%100 == 0 {
			last = now - timeout - 1 // idle
		}
		return prefillKey(i < half, i%half), Flow{LastSeen: last, Tm: uint16(i % 3), Flags: FlowSelected, TcpState: TCPEstablished}
	}); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d entries in %v", n, time.Since(start).Round(time.Millisecond))
	b.ResetTimer()
	var wall, cpu time.Duration
	var walked, removed int
	for range b.N {
		walked = 0
		w0, c0 := time.Now(), cpuTime()
		removed, err = dp.DeleteFlowsWhere(func(_ FlowKey, f Flow) bool {
			walked++
			return now > f.LastSeen && now-f.LastSeen > timeout
		}, 100_000)
		wall += time.Since(w0)
		cpu += cpuTime() - c0
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	per := float64(b.N)
	fmt.Printf("%s: %d entries, walked %d (match calls), removed %d: wall %v, cpu %v per sweep; %.0f ns wall per entry\n",
		b.Name(), n, walked, removed, (wall / time.Duration(b.N)).Round(time.Millisecond), (cpu / time.Duration(b.N)).Round(time.Millisecond),
		float64(wall.Nanoseconds())/per/float64(n))
	b.ReportMetric(wall.Seconds()/per, "wall-s/sweep")
	b.ReportMetric(cpu.Seconds()/per, "cpu-s/sweep")
	b.ReportMetric(float64(wall.Nanoseconds())/per/float64(n), "ns/entry")
}
