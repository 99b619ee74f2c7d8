package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/signal"
)

// BenchmarkAgentSignals: how many MEMORIZE ops per second the agent emits
// as signal frames from a TM namespace to a real distributor, fed with
// flow events as fast as it takes them (the conntrack socket is not in the
// loop: this is the agent's own ceiling). Reports ops/s and frames/s sent,
// and the loss: the share of ops the distributor did not apply
// (sig_memorize), measured in the same run. Run with -benchtime=Nx.
func BenchmarkAgentSignals(b *testing.B) {
	l := newLab(b, netlab.Spec{Clients: 1, TMs: 1}, lab.ConfigOptions{MaxFlows: 2_000_000})
	h := l.e.Topo.TMs[0]
	l.agents[h.Name].Kill() // this benchmark runs its own agent in-process
	var s *signal.FrameSender
	err := h.NS.Do(func() (err error) {
		s, err = signal.NewFrameSender("eth0", l.e.Topo.Distributors[0].Links["int0"].MAC)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	a, err := agent.New(agent.Config{VIPs: []netip.Prefix{netip.PrefixFrom(l.e.Topo.VIP4, 32)}}, s)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Send(ctx)
	mem0 := counter(b, l.d, "sig_memorize")
	vip := l.e.Topo.VIP4

	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		// Distinct clients 10.9.x.y, ports 1024.., so every key is new.
		src := netip.AddrFrom4([4]byte{10, 9, byte(i >> 16), byte(i >> 8)})
		orig := agent.Tuple{Src: src, Dst: vip, SrcPort: uint16(1024 + i&0xff), DstPort: 80, Proto: 6}
		if err := a.FlowNew(ctx, orig, agent.Tuple{}); err != nil {
			b.Fatal(err)
		}
	}
	for a.Stats().Ops+a.Stats().SendErrors*8 < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	st := a.Stats()
	// Let the distributor's counter settle: applied is what it counted.
	var applied uint64
	for range 50 {
		applied = counter(b, l.d, "sig_memorize") - mem0
		if applied >= st.Ops {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.ReportMetric(float64(st.Ops)/el.Seconds(), "ops/s")
	b.ReportMetric(float64(st.Messages)/el.Seconds(), "frames/s")
	b.ReportMetric(float64(st.SendErrors), "send-errors")
	b.ReportMetric(100*(1-float64(applied)/float64(b.N)), "loss-%")
}

// BenchmarkMarshalShare: the cost of encoding an 8-op MEMORIZE frame next to
// sending it on a veth, in one run: it says whether the signal library's
// encoding matters for the agent's rate. It measures 20,000 frames of each
// and ignores b.N (run it with -benchtime=1x).
func BenchmarkMarshalShare(b *testing.B) {
	l := newLab(b, netlab.Spec{Clients: 1, TMs: 1}, lab.ConfigOptions{})
	h := l.e.Topo.TMs[0]
	var s *signal.FrameSender
	err := h.NS.Do(func() (err error) {
		s, err = signal.NewFrameSender("eth0", l.e.Topo.Distributors[0].Links["int0"].MAC)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var ops []signal.Op
	for i := range signal.MaxOps {
		ops = append(ops, signal.Memorize{Key: signal.Key{
			Src: netip.MustParseAddr("10.9.0.1"), Dst: l.e.Topo.VIP4, SrcPort: uint16(2000 + i), DstPort: 80, Proto: 6,
		}})
	}
	m := signal.Message{Ops: ops}
	dst, src := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	const rounds = 20000
	b.ResetTimer()
	var enc, send time.Duration
	{
		t0 := time.Now()
		for range rounds {
			if _, err := signal.Frame(dst, src, m); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for range rounds {
			if err := s.Send(m); err != nil {
				b.Fatal(err)
			}
		}
		enc += t1.Sub(t0)
		send += time.Since(t1)
	}
	n := float64(rounds)
	b.ReportMetric(float64(enc.Nanoseconds())/n, "encode-ns/frame")
	b.ReportMetric(float64(send.Nanoseconds())/n, "encode+send-ns/frame")
	b.ReportMetric(100*float64(enc)/float64(send), "encode-share-%")
}

// BenchmarkAgentDelay: the delay from a client's connection being accepted
// on a TM (its conntrack entry) to the distributor holding the agent's
// MEMORIZE for it, through the real agent process. The start is taken
// before connect (so the handshake, well under a millisecond here, is
// included); the end is the first admin-API poll that sees the entry
// memorized (a poll lists the client's flows: a few hundred microseconds,
// the resolution). Reports the median and the 99th percentile over b.N
// connections, for:
//   - frames: --in-band=false, every MEMORIZE in a frame at once;
//   - in-band-request: the client sends a request at once, and the TM's
//     answer carries the MEMORIZE;
//   - in-band-idle: the client sends nothing, so no packet of the flow
//     leaves the TM and the MEMORIZE goes in a frame after the deadline.
func BenchmarkAgentDelay(b *testing.B) {
	for _, c := range []struct {
		name    string
		args    []string
		request bool
	}{
		{"frames", []string{"--in-band=false"}, false},
		{"in-band-request", nil, true},
		{"in-band-idle", nil, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := newLab(b, netlab.Spec{Clients: 1, TMs: 2}, lab.ConfigOptions{}, c.args...)
			client := l.e.Topo.Clients[0]
			caddr := client.Links["eth0"].Addr4.Addr()
			vip := netip.AddrPortFrom(l.e.Topo.VIP4, lab.HTTPPort)
			delays := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				src := netip.AddrPortFrom(caddr, uint16(20000+i%40000))
				t0 := time.Now()
				conn := dialFrom(b, client, src, vip)
				if c.request {
					fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				}
				for {
					f, ok := flowOf(b, l.d, src, vip)
					if ok && has(f.Origin, "memorized") {
						break
					}
					if time.Since(t0) > 5*time.Second {
						b.Fatalf("connection %d: not memorized after 5 s", i)
					}
				}
				delays = append(delays, time.Since(t0))
				conn.Close()
			}
			b.StopTimer()
			slices.Sort(delays)
			b.ReportMetric(float64(delays[len(delays)/2].Microseconds())/1000, "median-ms")
			b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
