package datapath_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/signal"
)

var (
	tm0MAC = [6]uint8{2, 0, 0, 0, 0, 2}
	tm1MAC = [6]uint8{2, 0, 0, 0, 0, 3}
)

func frame(t *testing.T, dst, src [6]uint8, ops ...signal.Op) []byte {
	t.Helper()
	b, err := signal.Frame(net.HardwareAddr(dst[:]), net.HardwareAddr(src[:]), signal.Message{Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func skey(src, dst string, sport, dport uint16) signal.Key {
	return signal.Key{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport, Proto: 6}
}

func fkey(k signal.Key) datapath.FlowKey {
	return flow.MakeKey(k.Src, k.Dst, k.SrcPort, k.DstPort, k.Proto, k.VLAN)
}

// TestSignalCases runs every op and every refusal through the XDP program
// and the model (which must agree), and checks the outcome of each.
func TestSignalCases(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	f.setRole(t, roleInternal)

	k1 := skey("10.0.1.11", "10.0.0.100", 7001, 80)
	k2 := skey("10.0.1.12", "10.0.0.100", 7002, 80)
	k6 := skey("fd00:1::11", "fd00:100::100", 7003, 443)
	k3 := skey("10.0.1.13", "10.0.0.100", 7004, 80)
	steps := []struct {
		name    string
		pkt     []byte
		verdict datapath.Verdict
		counter datapath.Counter
		check   func(t *testing.T)
	}{
		{"memorize", frame(t, ourMAC, tm0MAC, signal.Memorize{Key: k1, Timeout: 30 * time.Second}), datapath.Drop, datapath.CounterSigMemorize, func(t *testing.T) {
			e, ok := f.model.Flows[fkey(k1)]
			if !ok || e.Tm != 0 || e.Flags != datapath.FlowMemorized || e.Timeout != 30 {
				t.Fatalf("entry %+v (present %v)", e, ok)
			}
		}},
		{"memorize ipv6 to multicast", frame(t, mcastMAC, tm1MAC, signal.Memorize{Key: k6, Mirror: true}), datapath.Drop, datapath.CounterSigMemorize, func(t *testing.T) {
			if e := f.model.Flows[fkey(k6)]; e.Tm != 1 || e.Flags != datapath.FlowMemorized|datapath.FlowMirror {
				t.Fatalf("entry %+v", e)
			}
		}},
		{"memorize over another TM's flow", frame(t, ourMAC, tm1MAC, signal.Memorize{Key: k1}), datapath.Drop, datapath.CounterSigRefForeignTM, nil},
		{"memorize for another TM", frame(t, ourMAC, tm0MAC, signal.Memorize{Key: k2, TM: 1}), datapath.Drop, datapath.CounterSigRefForeignTM, nil},
		{"mirror", frame(t, ourMAC, tm0MAC, signal.Mirror{Key: k1}), datapath.Drop, datapath.CounterSigMirror, func(t *testing.T) {
			if f.model.Flows[fkey(k1)].Flags&datapath.FlowMirror == 0 {
				t.Fatal("not marked")
			}
		}},
		{"mirror of no flow", frame(t, ourMAC, tm0MAC, signal.Mirror{Key: k2}), datapath.Drop, datapath.CounterSigRefNoFlow, nil},
		{"age", frame(t, ourMAC, tm0MAC, signal.Age{Key: k1, Timeout: 5 * time.Second}), datapath.Drop, datapath.CounterSigAge, func(t *testing.T) {
			if f.model.Flows[fkey(k1)].Timeout != 5 {
				t.Fatal("timeout not set")
			}
		}},
		{"forget another TM's flow", frame(t, ourMAC, tm0MAC, signal.Forget{Key: k6}), datapath.Drop, datapath.CounterSigRefForeignTM, nil},
		{"relate", frame(t, ourMAC, tm0MAC, signal.Relate{Parent: k1,
			Second: signal.Key{Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.0.100"), DstPort: 2121, Proto: 6},
			Mask:   signal.Field(testMasks[0]), Timeout: time.Minute}), datapath.Drop, datapath.CounterSigRelate, func(t *testing.T) {
			if len(f.model.SecondKeys) == 0 {
				t.Fatal("no second key")
			}
		}},
		{"relate with an unconfigured mask", frame(t, ourMAC, tm0MAC, signal.Relate{Parent: k1, Second: k2, Mask: signal.FieldDst}), datapath.Drop, datapath.CounterSigRefBadMask, nil},
		{"relate to another TM's parent", frame(t, ourMAC, tm0MAC, signal.Relate{Parent: k6, Second: k6, Mask: signal.Field(testMasks[0])}), datapath.Drop, datapath.CounterSigRefForeignTM, nil},
		{"forget", frame(t, ourMAC, tm0MAC, signal.Forget{Key: k1}), datapath.Drop, datapath.CounterSigForget, func(t *testing.T) {
			if _, ok := f.model.Flows[fkey(k1)]; ok {
				t.Fatal("still there")
			}
		}},
		{"age 0 expires", frame(t, ourMAC, tm1MAC, signal.Age{Key: k6}), datapath.Drop, datapath.CounterSigAge, func(t *testing.T) {
			if _, ok := f.model.Flows[fkey(k6)]; ok {
				t.Fatal("still there")
			}
		}},
		{"unknown MAC", frame(t, ourMAC, [6]uint8{2, 0, 0, 0, 0, 5}, signal.Memorize{Key: k2}), datapath.Drop, datapath.CounterSigRefUnknownMAC, nil},
		{"not for us", frame(t, [6]uint8{2, 9, 9, 9, 9, 9}, tm0MAC, signal.Memorize{Key: k2}), datapath.Drop, datapath.CounterSigRefNotForUs, nil},
		{"a TM's MAC on another interface", frame(t, ourMAC, [6]uint8{2, 0, 0, 0, 0, 6}, signal.Memorize{Key: k2}), datapath.Drop, datapath.CounterSigRefWrongPort, nil},
		// TM 3 has a MAC but is not ready: refused under its own reason.
		{"a TM not ready", frame(t, ourMAC, [6]uint8{2, 0, 0, 0, 0, 7}, signal.Memorize{Key: k2}), datapath.Drop, datapath.CounterSigRefNotReady, func(t *testing.T) {
			if _, ok := f.model.Flows[fkey(k2)]; ok {
				t.Fatal("applied")
			}
		}},
	}
	good := frame(t, ourMAC, tm0MAC, signal.Memorize{Key: k2})
	bad := func(mut func(b []byte) []byte) []byte { return mut(append([]byte(nil), good...)) }
	steps = append(steps, []struct {
		name    string
		pkt     []byte
		verdict datapath.Verdict
		counter datapath.Counter
		check   func(t *testing.T)
	}{
		{"wrong version", bad(func(b []byte) []byte { b[14] = 2; return b }), datapath.Drop, datapath.CounterSigRefVersion, nil},
		{"zero count", bad(func(b []byte) []byte { b[15] = 0; return b }), datapath.Drop, datapath.CounterSigRefCount, nil},
		{"oversized count", bad(func(b []byte) []byte { b[15] = 9; return b }), datapath.Drop, datapath.CounterSigRefCount, nil},
		{"truncated TLVs", bad(func(b []byte) []byte { return b[:len(b)-10] }), datapath.Drop, datapath.CounterSigRefTruncated, nil},
		{"truncated header", bad(func(b []byte) []byte { return b[:18] }), datapath.Drop, datapath.CounterSigRefTruncated, nil},
		{"unknown op", bad(func(b []byte) []byte { b[22] = 9; return b }), datapath.Drop, datapath.CounterSigRefUnknownOp, nil},
		{"TLV length", bad(func(b []byte) []byte { b[23] = 47; return b }), datapath.Drop, datapath.CounterSigRefBadLength, nil},
		{"message length", bad(func(b []byte) []byte { b[17] += 4; return append(b, 0, 0, 0, 0) }), datapath.Drop, datapath.CounterSigRefBadLength, nil},
		{"bad key family", bad(func(b []byte) []byte { b[24+39] = 5; return b }), datapath.Drop, datapath.CounterSigRefBadKey, nil},
		{"ipv4 key with stray bytes", bad(func(b []byte) []byte { b[24+9] = 1; return b }), datapath.Drop, datapath.CounterSigRefBadKey, nil},
		// Reserved fields and unknown flag bits are ignored, here as over
		// UDP (TestUDPReservedBits): header reserved, an unknown header
		// flag, an unknown MEMORIZE flag.
		{"reserved bits ignored", func() []byte {
			b := frame(t, ourMAC, tm0MAC, signal.Memorize{Key: k3})
			b[14+6], b[14+7] = 0xab, 0xcd
			b[14+5] |= 0x02
			b[24+42] |= 0x80
			return b
		}(), datapath.Drop, datapath.CounterSigMemorize, func(t *testing.T) {
			if e, ok := f.model.Flows[fkey(k3)]; !ok || e.Tm != 0 || e.Flags != datapath.FlowMemorized {
				t.Fatalf("entry %+v (present %v)", e, ok)
			}
		}},
	}...)
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := f.model.Counters[st.counter].Packets
			v, out := f.run(t, st.pkt)
			// A frame, applied or refused, is never rewritten.
			if v != st.verdict || !bytes.Equal(out, st.pkt) {
				t.Fatalf("%v %x, want %v and the frame unchanged", v, out, st.verdict)
			}
			if got := f.model.Counters[st.counter].Packets - before; got != 1 {
				t.Fatalf("counter %s moved by %d, want 1", datapath.CounterName(st.counter), got)
			}
			if st.check != nil {
				st.check(t)
			}
		})
	}

	// External interface: refused whatever the content.
	f.setRole(t, roleExternal)
	before := f.model.Counters[datapath.CounterSigRefExternal].Packets
	if v, out := f.run(t, good); v != datapath.Drop || !bytes.Equal(out, good) {
		t.Fatalf("signal on an external interface: %v %x, want DROP and the frame unchanged", v, out)
	}
	if f.model.Counters[datapath.CounterSigRefExternal].Packets != before+1 {
		t.Fatalf("signal on an external interface not refused")
	}
	if _, ok := f.model.Flows[fkey(k2)]; ok {
		t.Fatalf("refused signal was applied")
	}

	// The related connection goes to the relating TM; a memorized flow to
	// its TM.
	rel := flowtest.Packet{DstMAC: ourMAC, Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.0.100"), Proto: 6, SrcPort: 40000, DstPort: 2121, TCPFlags: flowtest.SYN}
	before = f.model.Counters[datapath.CounterFwdSecondKey].Packets
	relOut := rel.Bytes()
	copy(relOut[0:6], f.model.TMs[0].Mac[:])
	copy(relOut[6:12], f.model.TMs[0].SrcMac[:])
	if v, out := f.run(t, rel.Bytes()); v != datapath.TX || !bytes.Equal(out, relOut) {
		t.Fatalf("related connection: %v %x, want TX to TM 0 %x", v, out, relOut)
	}
	if f.model.Counters[datapath.CounterFwdSecondKey].Packets != before+1 {
		t.Fatalf("related connection did not use the second key")
	}
	// A SYN: the entry is half-open until its ACK.
	if e := f.model.HalfOpen[flow.MakeKey(rel.Src, rel.Dst, 40000, 2121, 6, 0)]; e.Tm != 0 || e.Flags != datapath.FlowSecondKey {
		t.Fatalf("related flow entry %+v", e)
	}

	// A full second-key table refuses RELATE.
	f.setRole(t, roleInternal)
	f.check(t, 0, frame(t, ourMAC, tm0MAC, signal.Memorize{Key: k1}))
	for i := range testSecond + 1 {
		sec := signal.Key{Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.0.100"), DstPort: uint16(3000 + i), Proto: 6}
		f.check(t, i, frame(t, ourMAC, tm0MAC, signal.Relate{Parent: k1, Second: sec, Mask: signal.Field(testMasks[0])}))
	}
	if f.model.Counters[datapath.CounterSigRefTableFull].Packets == 0 {
		t.Fatalf("a full second-key table did not refuse")
	}
	f.compareTables(t)
}

// TestShim checks that a shim is applied and stripped: the packet leaves as
// it would have without it.
func TestShim(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	f.setRole(t, roleInternal)
	// A TM's packet to a server, carrying a MEMORIZE for another flow.
	pkt := flowtest.Packet{DstMAC: ourMAC, SrcMAC: tm0MAC, Src: netip.MustParseAddr("10.1.0.11"), Dst: netip.MustParseAddr("10.2.0.11"),
		Proto: 17, SrcPort: 5000, DstPort: 53, Payload: []byte("hello")}.Bytes()
	k := skey("10.0.1.11", "10.0.0.100", 7100, 80)
	shimmed, err := signal.Shim(pkt, signal.Message{Ops: []signal.Op{signal.Memorize{Key: k}}})
	if err != nil {
		t.Fatal(err)
	}
	v, out, err := f.dp.TestRun(shimmed, loIfindex)
	if err != nil {
		t.Fatal(err)
	}
	want, wantOut := f.model.Process(shimmed, loIfindex)
	if v != want || string(out) != string(wantOut) {
		t.Fatalf("XDP %v %x, model %v %x", v, out, want, wantOut)
	}
	if v != datapath.Pass || string(out) != string(pkt) {
		t.Fatalf("after the shim: %v %x, want PASS and the original %x", v, out, pkt)
	}
	if e, ok := f.model.Flows[fkey(k)]; !ok || e.Tm != 0 {
		t.Fatalf("memorize in the shim not applied: %+v", e)
	}

	// A shim sent to the signal multicast MAC: applied, and the packet goes
	// on addressed to the interface (the kernel forwards only frames for
	// it), as it would have without the shim.
	km := skey("10.0.1.11", "10.0.0.100", 7101, 80)
	shimmed, err = signal.Shim(pkt, signal.Message{Ops: []signal.Op{signal.Memorize{Key: km}}})
	if err != nil {
		t.Fatal(err)
	}
	copy(shimmed[0:6], mcastMAC[:])
	before := f.model.Counters[datapath.CounterSigShim].Packets
	v, out, err = f.dp.TestRun(shimmed, loIfindex)
	if err != nil {
		t.Fatal(err)
	}
	want, wantOut = f.model.Process(shimmed, loIfindex)
	if v != want || string(out) != string(wantOut) {
		t.Fatalf("multicast shim: XDP %v %x, model %v %x", v, out, want, wantOut)
	}
	if v != datapath.Pass || string(out) != string(pkt) || f.model.Counters[datapath.CounterSigShim].Packets != before+1 {
		t.Fatalf("after a shim to the multicast MAC: %v %x, want PASS and the original %x", v, out, pkt)
	}
	if e, ok := f.model.Flows[fkey(km)]; !ok || e.Tm != 0 {
		t.Fatalf("memorize in the multicast shim not applied: %+v", e)
	}

	// A TM's SYN to a server carrying "the reverse of me is mine, for 77 s":
	// learning must not overwrite what the shim just memorized.
	syn := flowtest.Packet{DstMAC: ourMAC, SrcMAC: tm0MAC, Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.2.0.11"),
		Proto: 6, SrcPort: 41000, DstPort: 443, TCPFlags: flowtest.SYN}
	rev := skey("10.2.0.11", "10.0.1.11", 443, 41000)
	shimmed, err = signal.Shim(syn.Bytes(), signal.Message{Ops: []signal.Op{signal.Memorize{Key: rev, Timeout: 77 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, 0, shimmed)
	if e := f.model.Flows[fkey(rev)]; e.Tm != 0 || e.Flags != datapath.FlowMemorized || e.Timeout != 77 {
		t.Fatalf("reverse key after the shimmed SYN: %+v", e)
	}
	// Another TM's SYN on the same 5-tuple does not take it.
	syn.SrcMAC = tm1MAC
	before = f.model.Counters[datapath.CounterLearnConflict].Packets
	f.check(t, 0, syn.Bytes())
	if e := f.model.Flows[fkey(rev)]; e.Tm != 0 || f.model.Counters[datapath.CounterLearnConflict].Packets != before+1 {
		t.Fatalf("another TM's SYN took the flow: %+v", e)
	}
	f.compareTables(t)
}
