package datapath_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
)

// unchanged: the program leaves the packet as it came (namedCase.out).
const unchanged = -1

// namedCase is a hand-written packet and what the program must do with it,
// stated on its own (as Katran's test fixtures do), not only as agreement
// between the XDP program and the model.
type namedCase struct {
	name    string
	pkt     flowtest.Packet
	verdict datapath.Verdict
	counter datapath.Counter // the reason: it moves by exactly one
	out     int              // unchanged, or the TM whose MACs the packet leaves with
}

// run runs pkt through the XDP program and the model, which must agree,
// and returns the verdict and the packet as they leave it.
func (f *fixture) run(t *testing.T, pkt []byte) (datapath.Verdict, []byte) {
	t.Helper()
	got, out, err := f.dp.TestRun(pkt, loIfindex)
	if err != nil {
		t.Fatal(err)
	}
	want, wantOut := f.model.Process(pkt, loIfindex)
	if got != want || !bytes.Equal(out, wantOut) {
		t.Fatalf("%x:\nXDP   %v %x\nmodel %v %x", pkt, got, out, want, wantOut)
	}
	return got, out
}

// expect checks a case's verdict, reason counter and output bytes.
func (f *fixture) expect(t *testing.T, c namedCase) {
	t.Helper()
	pkt := c.pkt.Bytes()
	before := f.model.Counters[c.counter].Packets
	v, out := f.run(t, pkt)
	want := append([]byte(nil), pkt...)
	if c.out != unchanged {
		tm := f.model.TMs[c.out]
		copy(want[0:6], tm.Mac[:])
		copy(want[6:12], tm.SrcMac[:])
	}
	if v != c.verdict {
		t.Errorf("verdict %v, want %v", v, c.verdict)
	}
	if moved := f.model.Counters[c.counter].Packets - before; moved != 1 {
		t.Errorf("counter %s moved by %d, want 1", datapath.CounterName(c.counter), moved)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("output\n got %x\nwant %x", out, want)
	}
}

// TestDifferentialCases runs hand-written edge cases, in this order (flows
// made by one case are hit by later ones), and every truncation of each.
func TestDifferentialCases(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	c4 := netip.MustParseAddr("10.0.1.11")
	c6 := netip.MustParseAddr("fd00:1::11")
	base := flowtest.Packet{Src: c4, Dst: vip4a, Proto: flow.ProtoTCP, SrcPort: 5000, DstPort: 80, TCPFlags: flowtest.SYN}
	with := func(mut func(p *flowtest.Packet)) flowtest.Packet {
		p := base
		mut(&p)
		return p
	}
	icmpAboutBase := flowtest.Packet{Src: netip.MustParseAddr("10.0.1.1"), Dst: vip4a, Proto: flow.ProtoICMP, ICMPType: 3, ICMPCode: 4,
		Inner: &flowtest.Packet{Src: vip4a, Dst: c4, Proto: flow.ProtoTCP, SrcPort: 80, DstPort: 5000}}
	const (
		tmOfBase = 1 // where Maglev (seed 7, ring 251) puts base's key
		tmOfV6   = 2 // and "ipv6 four ext"'s (TM 2 is behind the devmap: a redirect)
		tmOfUDP  = 0 // and "udp all-ports"'s
		tmOf1027 = 1 // and port 1027's, re-selected away from disabled TM 4
	)
	cases := []namedCase{
		{"icmp frag needed, no flow", icmpAboutBase, datapath.Pass, datapath.CounterPassICMPNoFlow, unchanged},
		// A SYN's entry is half-open; its ACK (in the client's window)
		// moves it to the flow table.
		{"tcp syn", base, datapath.TX, datapath.CounterFwdNew, tmOfBase},
		{"icmp frag needed about a half-open flow", icmpAboutBase, datapath.Pass, datapath.CounterPassICMPNoFlow, unchanged},
		{"syn retransmitted", base, datapath.TX, datapath.CounterFwdHalfOpen, tmOfBase},
		{"ack out of window is not promoted", with(func(p *flowtest.Packet) {
			p.TCPFlags, p.Seq = flowtest.ACK, 1001+1<<31
		}), datapath.TX, datapath.CounterFwdHalfOpen, tmOfBase},
		{"ack promotes", with(func(p *flowtest.Packet) { p.TCPFlags, p.Seq = flowtest.ACK, 1001 }), datapath.TX, datapath.CounterHalfOpenPromoted, tmOfBase},
		{"icmp frag needed about tcp syn's flow", icmpAboutBase, datapath.TX, datapath.CounterFwdICMP, tmOfBase},
		{"ipv4 max options", with(func(p *flowtest.Packet) { p.IPv4Options = 40 }), datapath.TX, datapath.CounterFwdHit, tmOfBase},
		{"one vlan", with(func(p *flowtest.Packet) { p.VLANs = []uint16{7} }), datapath.TX, datapath.CounterFwdNew, tmOfBase},
		// The key holds the inner tag: the flow of "one vlan".
		{"qinq", with(func(p *flowtest.Packet) { p.VLANs = []uint16{100, 7} }), datapath.TX, datapath.CounterFwdHalfOpen, tmOfBase},
		{"three vlans", with(func(p *flowtest.Packet) { p.VLANs = []uint16{100, 7, 8} }), datapath.Drop, datapath.CounterDropVLANDepth, unchanged},
		{"ipv6 four ext", with(func(p *flowtest.Packet) {
			p.Src, p.Dst, p.DstPort, p.IPv6Ext = c6, vip6, 443, []uint8{0, 43, 60, 60}
		}), datapath.Redirect, datapath.CounterFwdNew, tmOfV6},
		{"ipv6 five ext", with(func(p *flowtest.Packet) {
			p.Src, p.Dst, p.DstPort, p.IPv6Ext = c6, vip6, 443, []uint8{0, 43, 60, 60, 0}
		}), datapath.Drop, datapath.CounterDropIPv6Ext, unchanged},
		{"ipv6 fragment", with(func(p *flowtest.Packet) {
			p.Src, p.Dst, p.DstPort, p.IPv6Ext, p.Fragment = c6, vip6, 443, []uint8{0}, true
		}), datapath.Drop, datapath.CounterDropFragment, unchanged},
		{"ipv4 fragment", with(func(p *flowtest.Packet) { p.Fragment = true }), datapath.Drop, datapath.CounterDropFragment, unchanged},
		{"udp all-ports", with(func(p *flowtest.Packet) { p.Proto, p.DstPort = flow.ProtoUDP, 9999 }), datapath.TX, datapath.CounterFwdNew, tmOfUDP},
		{"empty pool", with(func(p *flowtest.Packet) { p.Dst, p.Proto, p.DstPort = vip4b, flow.ProtoUDP, 53 }), datapath.Drop, datapath.CounterDropNoTM, unchanged},
		{"no service on the port", with(func(p *flowtest.Packet) { p.DstPort = 81 }), datapath.Pass, datapath.CounterPassNoService, unchanged},
		{"not a vip", with(func(p *flowtest.Packet) { p.Dst = netip.MustParseAddr("192.0.2.9") }), datapath.Pass, datapath.CounterPassNotVIP, unchanged},
		{"vip, other protocol", with(func(p *flowtest.Packet) { p.Proto = 47 }), datapath.Pass, datapath.CounterPassVIPOther, unchanged},
		// The flows of ports 1024 and 1026..1031 are on disabled TM 4: re-selected.
		{"disabled tm reselect", with(func(p *flowtest.Packet) { p.SrcPort = 1027 }), datapath.TX, datapath.CounterFwdReselect, tmOf1027},
		{"reselected onto a tm not ready", with(func(p *flowtest.Packet) { p.SrcPort = 1024 }), datapath.Drop, datapath.CounterDropTMNotReady, unchanged},
		// The MACs are rewritten before the redirect fails.
		{"reselected onto a tm without egress", with(func(p *flowtest.Packet) { p.SrcPort = 1026 }), datapath.Drop, datapath.CounterDropNoEgress, 5},
		{"tm not ready", with(func(p *flowtest.Packet) { p.SrcPort = 1025 }), datapath.Drop, datapath.CounterDropTMNotReady, unchanged},
		// TCP state of base's flow: its SYN (seq 1000) made the client's
		// next 1001. Refused FIN and RST are still forwarded, only ignored.
		{"fin out of window", with(func(p *flowtest.Packet) {
			p.TCPFlags, p.Seq = flowtest.FIN|flowtest.ACK, 1001+datapath.TCPSeqWindow+1
		}), datapath.TX, datapath.CounterTCPRefFin, tmOfBase},
		{"rst out of window", with(func(p *flowtest.Packet) {
			p.TCPFlags, p.Seq = flowtest.RST, 1001+1<<31
		}), datapath.TX, datapath.CounterTCPRefRst, tmOfBase},
		{"spoofed syn after refused fin is a hit", base, datapath.TX, datapath.CounterFwdHit, tmOfBase},
		{"data", with(func(p *flowtest.Packet) {
			p.TCPFlags, p.Seq, p.Payload = flowtest.ACK, 1001, make([]byte, 100)
		}), datapath.TX, datapath.CounterFwdHit, tmOfBase},
		{"fin in window", with(func(p *flowtest.Packet) {
			p.TCPFlags, p.Seq = flowtest.FIN|flowtest.ACK, 1101
		}), datapath.TX, datapath.CounterFwdHit, tmOfBase},
		{"syn after fin selects again", base, datapath.TX, datapath.CounterFwdReselect, tmOfBase},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.expect(t, c)
			// Every truncation: the program and the model agree (a cut
			// IP packet is a drop, so no cut makes a flow).
			pkt := c.pkt.Bytes()
			for cut := range len(pkt) {
				f.check(t, cut, pkt[:cut])
			}
		})
	}
	f.compareTables(t)
	k := flow.MakeKey(c4, vip4a, 5000, 80, flow.ProtoTCP, 0)
	if _, ok := f.model.Flows[k]; ok {
		t.Error("base's ended flow is still in the flow table after the new SYN")
	}
	if st := f.model.HalfOpen[k].TcpState; st != datapath.TCPSynSeen|datapath.TCPSeqFwd {
		t.Errorf("base's half-open flow after the new SYN: TCP state %#x, want SYN seen and the client's sequence", st)
	}
}
