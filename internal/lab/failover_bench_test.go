package lab_test

import (
	"bytes"
	"context"
	be "encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
)

// BenchmarkFailoverGap measures the traffic gap when a distributor dies:
// from the kill to the first packet of a moved flow delivered. 16 UDP
// flows from a client to the VIP's UDP echo each send a datagram every
// millisecond carrying its send time; all traffic goes through one
// distributor, which mirrors to the other. A run: SIGKILL the active
// distributor's daemon (and wait for it to exit: its pinned data path
// still forwards, so this alone is no gap); T0; its links down, the
// client's VIP route and the TMs' default routes moved to the other
// (netlink, as fast as the test can: this stands for the router's and the
// TMs' failover); then the client waits for the first echo of a datagram
// sent at or after T0. gap: T0 to the first such echo received at the client (any flow:
// the first packet of a moved flow delivered, plus the TM's echo back);
// all: T0 until every flow had one; routes: how long the links and routes
// took (the routes move one namespace after the other: a flow is
// delivered once its client's and its TM's routes moved, which can be
// before the last route moved). Then the dead one comes back (unpinned,
// restarted, resynced behind its start gate) and the next run kills the
// other way. Run with -benchtime Nx (N runs; each sets up a topology once
// per benchmark call, so not with the default benchtime).
func BenchmarkFailoverGap(b *testing.B) {
	const flows = 16
	p := startPair(b, netlab.Spec{Clients: 1, TMs: 3}, nil)
	e := p.e
	p.via(0)
	target := netip.AddrPortFrom(e.Topo.VIP4, lab.UDPPort)
	var conns []*net.UDPConn
	err := e.Topo.Clients[0].NS.Do(func() error {
		for range flows {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var t0 atomic.Int64 // UnixNano of the kill; 0: not measuring
	first := make([]atomic.Int64, flows)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				_, payload, ok := bytes.Cut(buf[:n], []byte(" "))
				if !ok || len(payload) != 8 {
					continue
				}
				sent := int64(be.BigEndian.Uint64(payload))
				if k := t0.Load(); k != 0 && sent >= k {
					first[i].CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		msg := make([]byte, 8)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, c := range conns {
				be.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
				_, _ = c.Write(msg)
			}
		}
	}()
	active := 0
	var gaps, alls, moves []time.Duration
	b.ResetTimer()
	for run := 0; run < b.N; run++ {
		other := p.ds[1-active]
		waitForTB(b, 30*time.Second, "the UDP flows mirrored to the standby", func() bool {
			n := 0
			_ = other.API.Flows(context.Background(), api.FlowFilter{}, func(f api.Flow) error {
				if f.Proto == "udp" && strings.Contains(strings.Join(f.Origin, ","), "peer") {
					n++
				}
				return nil
			})
			return n >= flows
		})
		for i := range first {
			first[i].Store(0)
		}
		// The daemon's death alone stops nothing (the pinned data path
		// forwards on): the distributor is gone when its links are.
		p.ds[active].Kill()
		start := time.Now()
		t0.Store(start.UnixNano())
		p.links(active, false)
		p.via(1 - active)
		moved := time.Since(start)
		waitForTB(b, 30*time.Second, "every flow delivered through the survivor", func() bool {
			for i := range first {
				if first[i].Load() == 0 {
					return false
				}
			}
			return true
		})
		t0.Store(0)
		var ts []int64
		for i := range first {
			ts = append(ts, first[i].Load())
		}
		gap, all := time.Duration(slices.Min(ts)-start.UnixNano()), time.Duration(slices.Max(ts)-start.UnixNano())
		gaps, alls, moves = append(gaps, gap), append(alls, all), append(moves, moved)
		b.Logf("run %d: d%d killed, links down and routes moved in %v: first packet of a moved flow delivered after %v, every flow after %v", run+1, active+1, moved, gap, all)
		b.StopTimer()
		p.comeBack(active)
		b.StartTimer()
		active = 1 - active
	}
	b.StopTimer()
	q := func(v []time.Duration, f float64) time.Duration {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[min(len(s)-1, int(f*float64(len(s))))]
	}
	b.ReportMetric(float64(q(gaps, 0.5).Microseconds())/1000, "gap-p50-ms")
	b.ReportMetric(float64(q(gaps, 0.99).Microseconds())/1000, "gap-p99-ms")
	b.ReportMetric(float64(q(alls, 0.5).Microseconds())/1000, "all-flows-p50-ms")
	b.ReportMetric(float64(q(alls, 0.99).Microseconds())/1000, "all-flows-p99-ms")
	b.ReportMetric(float64(q(moves, 0.5).Microseconds())/1000, "routes-p50-ms")
	b.ReportMetric(float64(q(moves, 0.99).Microseconds())/1000, "routes-p99-ms")
	b.Logf("%d runs: gap median %v p99 %v; every flow median %v p99 %v; links down and routes moved median %v p99 %v (gaps %v)",
		len(gaps), q(gaps, 0.5), q(gaps, 0.99), q(alls, 0.5), q(alls, 0.99), q(moves, 0.5), q(moves, 0.99), fmt.Sprint(gaps))
}
