package datapath_test

import (
	"bytes"
	"net/netip"
	"os"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/signal"
)

// testRunLinear is the first buffer of a multi-buffer test run: the kernel
// (bpf_prog_test_run_xdp) puts at most a page less the XDP headroom (256)
// and the tail room for struct skb_shared_info (320 on 64-bit) in the
// linear buffer and the rest of the frame in page-sized fragments.
func testRunLinear() int { return os.Getpagesize() - 256 - 320 }

// checkFrags runs a frame through the program (a multi-buffer run when it
// is longer than the first buffer) and through the model with the same
// first buffer, and requires the same verdict and bytes.
func (f *fixture) checkFrags(t *testing.T, i int, pkt []byte) (datapath.Verdict, []byte) {
	t.Helper()
	got, out, err := f.dp.TestRun(pkt, loIfindex)
	if err != nil {
		t.Fatalf("frame %d (%d bytes): %v", i, len(pkt), err)
	}
	want, wantOut := f.model.ProcessFrags(pkt, loIfindex, testRunLinear())
	if got != want || !bytes.Equal(out, wantOut) {
		t.Fatalf("frame %d (%d bytes, head %x):\nXDP   %v %d bytes, head %x\nmodel %v %d bytes, head %x",
			i, len(pkt), pkt[:min(len(pkt), 96)], got, len(out), out[:min(len(out), 96)], want, len(wantOut), wantOut[:min(len(wantOut), 96)])
	}
	return got, out
}

// jumbo is a generated packet with a payload that takes it past the first
// buffer (a 9000-byte MTU's frames); some are cut (the IP packet longer
// than the frame, in the fragments) or carry trailing padding.
func jumbo(g *flowtest.Generator) []byte {
	d := g.Describe()
	d.Payload = make([]byte, testRunLinear()+g.R.IntN(9000-testRunLinear()))
	for i := range d.Payload {
		d.Payload[i] = byte(i)
	}
	b := d.Bytes()
	switch g.R.IntN(10) {
	case 0:
		b = b[:testRunLinear()+1+g.R.IntN(len(b)-testRunLinear()-1)]
	case 1:
		b = append(b, make([]byte, 1+g.R.IntN(500))...)
	}
	return b
}

// TestDifferentialFrags is TestDifferential with multi-buffer frames:
// TCP, UDP and ICMP packets of 3.5 to 9 KB (hit, new, half-open, second
// keys, learning from TMs, ICMP errors), signal frames padded past the first
// buffer and shims on jumbo packets (applied, stripped from the first
// buffer, the packet going on whole), cut and padded frames. The program
// and the model must agree on verdicts, output bytes (the fragments
// included), tables and counters, whose byte counts are the whole frames'.
func TestDifferentialFrags(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	g := generator(11)
	so := signalOptions(g)
	so.Packet = func() []byte { return jumbo(g) }
	const n = 6000
	verdicts := map[string]int{}
	for i := range n {
		if i%300 == 0 {
			f.setRole(t, []int{roleExternal, roleInternal, roleExternal, roleInternal, roleNone}[(i/300)%5])
		}
		if i%1000 == 0 {
			f.setNow(t, 1000+uint32(i/1000))
		}
		var pkt []byte
		switch r := g.R.IntN(10); {
		case r < 2:
			pkt = g.Signal(so)
			if len(pkt) <= testRunLinear() && len(pkt) >= 14 && g.R.IntN(2) == 0 {
				// A signal frame (or a damaged shim) padded past the
				// first buffer: its message is read across fragments.
				pkt = append(pkt, make([]byte, testRunLinear()+g.R.IntN(4000)-len(pkt))...)
			}
		case r < 3:
			pkt = g.Next() // small frames in between: the same tables
		default:
			pkt = jumbo(g)
		}
		if len(pkt) < 14 {
			continue
		}
		v, _ := f.checkFrags(t, i, pkt)
		verdicts[v.String()]++
	}
	f.compareTables(t)
	t.Logf("%d frames, verdicts %v, %d flows", n, verdicts, len(f.model.Flows))
	for _, c := range []datapath.Counter{
		datapath.CounterFwdHit, datapath.CounterFwdNew, datapath.CounterFwdHalfOpen, datapath.CounterFwdSecondKey,
		datapath.CounterFwdICMP, datapath.CounterPassFromTM, datapath.CounterLearned, datapath.CounterSigFrame,
		datapath.CounterSigShim, datapath.CounterDropTruncIP, datapath.CounterRedirect, datapath.CounterTX,
	} {
		if f.model.Counters[c].Packets == 0 {
			t.Errorf("no frame reached counter %s", datapath.CounterName(c))
		}
	}
}

// TestFragsCases states, for one frame per path, what the program does with
// a frame longer than its first buffer, on its own (not only as agreement
// with the model): the verdict, the counter, and that the bytes counted are
// the whole frame's.
func TestFragsCases(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	c4 := netip.MustParseAddr("10.0.1.11")
	payload := make([]byte, 8000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	// vip6:80 and vip4a's UDP service select among TMs 0 and 1, both
	// behind lo: forwarded by XDP_TX.
	c6 := netip.MustParseAddr("fd00:1::11")
	syn := flowtest.Packet{Src: c6, Dst: vip6, Proto: flow.ProtoTCP, SrcPort: 6000, DstPort: 80, TCPFlags: flowtest.SYN}
	data := syn
	data.TCPFlags, data.Seq, data.Payload = flowtest.ACK, 1001, payload
	udp := flowtest.Packet{Src: c4, Dst: vip4a, Proto: flow.ProtoUDP, SrcPort: 6000, DstPort: 9999, Payload: payload}
	// A TM's SYN from its learning source (TM 1, 10.0.1.12) to a server.
	learn := flowtest.Packet{SrcMAC: [6]byte{2, 0, 0, 0, 0, 3}, DstMAC: ourMAC, Src: netip.MustParseAddr("10.0.1.12"),
		Dst: netip.MustParseAddr("192.0.2.9"), Proto: flow.ProtoTCP, SrcPort: 40000, DstPort: 80, TCPFlags: flowtest.SYN, Payload: payload}
	icmp := flowtest.Packet{Src: netip.MustParseAddr("fd00:1::1"), Dst: vip6, Proto: flow.ProtoICMPv6, ICMPType: 2,
		Inner: &flowtest.Packet{Src: vip6, Dst: c6, Proto: flow.ProtoTCP, SrcPort: 80, DstPort: 6000}, Payload: payload}
	cut := data.Bytes()
	cut = cut[:len(cut)-100]
	// A signal frame padded past the first buffer, and a shim on a TM's
	// 8000-byte packet to a server: applied, stripped, the packet passed
	// on whole.
	sigKey := skey("10.0.1.11", "10.0.0.100", 7300, 80)
	sig := frame(t, ourMAC, tm0MAC, signal.Memorize{Key: sigKey})
	sig = append(sig, make([]byte, 5000)...)
	tmPkt := flowtest.Packet{DstMAC: ourMAC, SrcMAC: tm0MAC, Src: netip.MustParseAddr("10.1.0.11"), Dst: netip.MustParseAddr("10.2.0.11"),
		Proto: flow.ProtoUDP, SrcPort: 5000, DstPort: 53, Payload: payload}.Bytes()
	shimKey := skey("10.0.1.11", "10.0.0.100", 7301, 80)
	shimmed, err := signal.Shim(tmPkt, signal.Message{Ops: []signal.Op{signal.Memorize{Key: shimKey}}})
	if err != nil {
		t.Fatal(err)
	}

	type fcase struct {
		name    string
		role    int
		pkt     []byte
		verdict datapath.Verdict
		counter datapath.Counter
	}
	cases := []fcase{
		{"new flow: 8000-byte SYN", roleExternal, with(syn, payload).Bytes(), datapath.TX, datapath.CounterFwdNew},
		{"half-open: the ACK with 8000 bytes", roleExternal, data.Bytes(), datapath.TX, datapath.CounterHalfOpenPromoted},
		{"hit: 8000 bytes of data", roleExternal, data.Bytes(), datapath.TX, datapath.CounterFwdHit},
		{"new flow, udp", roleExternal, udp.Bytes(), datapath.TX, datapath.CounterFwdNew},
		{"hit, udp", roleExternal, udp.Bytes(), datapath.TX, datapath.CounterFwdHit},
		{"icmpv6 packet too big about the flow, 8000 bytes", roleExternal, icmp.Bytes(), datapath.TX, datapath.CounterFwdICMP},
		{"ip packet longer than the frame, cut in the fragments", roleExternal, cut, datapath.Drop, datapath.CounterDropTruncIP},
		{"learning: a TM's 8000-byte SYN", roleInternal, learn.Bytes(), datapath.Pass, datapath.CounterLearned},
		{"signal frame padded to 5 KB", roleInternal, sig, datapath.Drop, datapath.CounterSigFrame},
		{"shim on an 8000-byte packet", roleInternal, shimmed, datapath.Pass, datapath.CounterSigShim},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.pkt) <= testRunLinear() {
				t.Fatalf("frame of %d bytes fits the first buffer (%d): not a multi-buffer case", len(c.pkt), testRunLinear())
			}
			f.setRole(t, c.role)
			before := f.model.Counters[c.counter]
			v, _ := f.checkFrags(t, 0, c.pkt)
			if c.verdict != 0 && v != c.verdict {
				t.Errorf("verdict %v, want %v", v, c.verdict)
			}
			after := f.model.Counters[c.counter]
			if after.Packets-before.Packets != 1 || after.Bytes-before.Bytes != uint64(len(c.pkt)) {
				t.Errorf("counter %s moved by %d packets, %d bytes; want 1, %d", datapath.CounterName(c.counter),
					after.Packets-before.Packets, after.Bytes-before.Bytes, len(c.pkt))
			}
		})
	}
	if _, ok := f.model.Flows[fkey(sigKey)]; !ok {
		t.Error("the padded signal frame's MEMORIZE was not applied")
	}
	if _, ok := f.model.Flows[fkey(shimKey)]; !ok {
		t.Error("the shim's MEMORIZE was not applied")
	}
	// The shimmed packet leaves as it was without the shim, fragments
	// included.
	f.setRole(t, roleInternal)
	if _, out := f.checkFrags(t, 0, shimmed); !bytes.Equal(out, tmPkt) {
		t.Errorf("shim on a jumbo packet: out %d bytes, want the %d-byte packet without the shim", len(out), len(tmPkt))
	}
	f.compareTables(t)
}

func with(p flowtest.Packet, payload []byte) flowtest.Packet {
	p.Payload = payload
	return p
}

// FuzzDifferentialFrags is FuzzDifferential for multi-buffer frames: an
// arbitrary head (the headers, up to 1,500 bytes) followed by enough bytes
// to take the frame past the first buffer, so that the IP length, however
// the fuzzer sets it, ends in the first buffer, in the fragments or past
// the frame. Verdicts and output bytes must agree.
func FuzzDifferentialFrags(f *testing.F) {
	fx := newFixture(f)
	fx.standard(f)
	g := generator(17)
	so := signalOptions(g)
	so.Packet = func() []byte { return jumbo(g) }
	for range 20 {
		b := jumbo(g)
		f.Add(b[:min(len(b), 200)], uint16(len(b)-testRunLinear()), false)
		s := g.Signal(so)
		f.Add(s[:min(len(s), 1500)], uint16(1000), true)
	}
	f.Fuzz(func(t *testing.T, head []byte, pad uint16, internal bool) {
		if len(head) < 14 || len(head) > 1500 {
			return
		}
		frame := make([]byte, testRunLinear()+1+int(pad)%6000)
		copy(frame, head)
		for i := len(head); i < len(frame); i++ {
			frame[i] = byte(i)
		}
		role := roleExternal
		if internal {
			role = roleInternal
		}
		fx.setRole(t, role)
		fx.checkFrags(t, 0, frame)
	})
}
