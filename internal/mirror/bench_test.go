package mirror

import (
	"sort"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
)

// BenchmarkMirrorRate: flow updates per second one distributor mirrors to a
// peer over loopback (d1 looks each key up, encodes, signs and sends; d2
// checks, decodes and installs into its table), and the peer's lag: how long
// after the last update was offered d2 had installed it, and the largest
// backlog of datagrams d2 reported behind d1's heartbeats. Tables are Go
// models: the BPF map cost is in internal/datapath's benchmarks.
func BenchmarkMirrorRate(b *testing.B) {
	const perRun = 200_000
	d1, d2 := pair(b)
	var rates, lags []float64
	var maxLag uint64
	for run := 0; run < b.N; run++ {
		base := run * perRun
		evs := make([]datapath.Event, 0, perRun)
		d1.m.Do(func(t datapath.Tables) {
			for i := base; i < base+perRun; i++ {
				k := testFlowKey(i)
				f := datapath.Flow{LastSeen: 1000, Tm: uint16(i % 3), Flags: datapath.FlowSelected, TcpState: datapath.TCPEstablished}
				_ = t.InsertFlow(k, f)
				evs = append(evs, datapath.Event{Key: k, Type: datapath.EventNew})
			}
		})
		want := d2.m.Counters().Inserted + perRun
		b.StartTimer()
		start := time.Now()
		for _, ev := range evs {
			d1.m.queue <- ev // blocking: the rate the protocol sustains, no event lost
		}
		offered := time.Now()
		for d2.m.Counters().Inserted < want {
			for _, p := range d2.m.Peers() {
				maxLag = max(maxLag, p.Lag)
			}
			time.Sleep(200 * time.Microsecond)
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("d2 installed %d of %d", d2.m.Counters().Inserted-(want-perRun), perRun)
			}
		}
		done := time.Now()
		b.StopTimer()
		rates = append(rates, perRun/done.Sub(start).Seconds())
		lags = append(lags, done.Sub(offered).Seconds()*1000)
	}
	sort.Float64s(rates)
	sort.Float64s(lags)
	b.ReportMetric(rates[len(rates)/2], "updates/s")
	b.ReportMetric(lags[len(lags)/2], "lag-ms")
	b.ReportMetric(float64(maxLag), "max-lag-datagrams")
	c1, c2 := d1.m.Counters(), d2.m.Counters()
	b.ReportMetric(float64(c2.NacksSent), "nacks")
	b.ReportMetric(float64(c1.SendErrors), "send-errors")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEncodeDecode: one full datagram's encode + decode (HMAC both
// ways), per entry.
func BenchmarkEncodeDecode(b *testing.B) {
	c, _ := NewCodec(testKey)
	m := Message{Type: TypeUpdate, Sender: 1, Boot: 1, Seq: 2, Entries: make([]Entry, MaxEntries)}
	for i := range m.Entries {
		m.Entries[i] = sampleEntries()[0]
	}
	buf := make([]byte, 0, MaxDatagram)
	var out Message
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, _ = c.Append(buf[:0], &m)
		if err := c.Decode(buf, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*MaxEntries)/b.Elapsed().Seconds(), "entries/s")
}
