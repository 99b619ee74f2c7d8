package distributor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/signal"
)

const (
	signalKeyHex = "00112233445566778899aabbccddeeff"
	udpTMs       = "  - {id: tm1, address: 10.1.0.11, signal_key: " + signalKeyHex + "}\n  - {id: tm2, address: 10.1.0.12}\n"
	udpWeb       = "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2]}\n"
)

var signalKey = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}

// hooked is a seam that runs a hook after a flow lookup and can fail flow
// inserts: it stands for another CPU acting between the daemon's read and
// its write, and for a full or failing map.
type hooked struct {
	datapath.Tables
	afterLookup func(k datapath.FlowKey, found bool)
	writeErr    error // returned by every flow write
}

func (h *hooked) LookupFlow(k datapath.FlowKey) (datapath.Flow, error) {
	f, err := h.Tables.LookupFlow(k)
	if h.afterLookup != nil {
		hook := h.afterLookup
		h.afterLookup = nil // once
		hook(k, err == nil)
	}
	return f, err
}

func (h *hooked) InsertFlow(k datapath.FlowKey, f datapath.Flow) error {
	if h.writeErr != nil {
		return h.writeErr
	}
	return h.Tables.InsertFlow(k, f)
}

func (h *hooked) UpdateFlow(k datapath.FlowKey, f datapath.Flow) error {
	if h.writeErr != nil {
		return h.writeErr
	}
	return h.Tables.UpdateFlow(k, f)
}

func (h *hooked) PutFlow(k datapath.FlowKey, f datapath.Flow) error {
	if h.writeErr != nil {
		return h.writeErr
	}
	return h.Tables.PutFlow(k, f)
}

var udpKey = signal.Key{Src: netip.MustParseAddr("10.9.0.1"), Dst: testVIP, SrcPort: 40000, DstPort: 80, Proto: flow.ProtoTCP}

func udpFlowKey() datapath.FlowKey {
	return flow.MakeKey(udpKey.Src, udpKey.Dst, udpKey.SrcPort, udpKey.DstPort, udpKey.Proto, 0)
}

func newUDPHarness(t *testing.T) (*harness, *hooked, *udpControl) {
	t.Helper()
	h := newHarness(t, udpTMs, udpWeb, "")
	hk := &hooked{Tables: h.m}
	h.d.dp = hk
	return h, hk, &udpControl{windows: map[string]*signal.ReplayWindow{}}
}

func seal(t *testing.T, seq uint64, ops ...signal.Op) []byte {
	t.Helper()
	b, err := signal.SealUDP("tm1", signalKey, seq, signal.Message{Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sealRaw builds a datagram around message bytes as they are, valid or not.
func sealRaw(seq uint64, msg []byte) []byte {
	b := append([]byte("SYSG"), 1, 3)
	b = append(b, "tm1"...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, msg...)
	m := hmac.New(sha256.New, signalKey)
	m.Write(b)
	return m.Sum(b)
}

func wantCounts(t *testing.T, u *udpControl, want map[string]uint64) {
	t.Helper()
	got := u.Counters()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("counter %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && v != 0 {
			t.Errorf("unexpected counter %s = %d (all: %v)", k, v, got)
		}
	}
}

var (
	cMemorize = "udp_" + datapath.CounterName(datapath.CounterSigMemorize)
	cForeign  = "udp_" + datapath.CounterName(datapath.CounterSigRefForeignTM)
)

// TestUDPMemorizeLosesToARace: a flow another CPU selects for another TM
// between the MEMORIZE's read and its write is kept, and the MEMORIZE is
// refused as XDP refuses it. (With the old write, BPF_ANY, the selected flow
// was overwritten and the MEMORIZE counted as applied.)
func TestUDPMemorizeLosesToARace(t *testing.T) {
	h, hk, u := newUDPHarness(t)
	i2 := h.index(t, "tm2")
	k := udpFlowKey()
	selected := datapath.Flow{LastSeen: 999, Tm: uint16(i2), Svc: 0, Flags: datapath.FlowSelected}
	hk.afterLookup = func(got datapath.FlowKey, found bool) {
		if got != k || found {
			t.Errorf("hook: lookup of %s (found %v)", flow.String(got), found)
		}
		h.m.Flows[k] = selected
	}
	h.d.handleUDP(u, seal(t, 1, signal.Memorize{Key: udpKey}))
	if got := h.m.Flows[k]; got != selected {
		t.Fatalf("the flow tm2 was selected for became %+v", got)
	}
	wantCounts(t, u, map[string]uint64{cForeign: 1})
}

// TestUDPMemorizeRedecides: when the entry that appeared meanwhile is the
// sender's own, the MEMORIZE decides again and rewrites it.
func TestUDPMemorizeRedecides(t *testing.T) {
	h, hk, u := newUDPHarness(t)
	i1 := h.index(t, "tm1")
	k := udpFlowKey()
	hk.afterLookup = func(datapath.FlowKey, bool) {
		h.m.Flows[k] = datapath.Flow{LastSeen: 1, Tm: uint16(i1), Svc: 0, Flags: datapath.FlowSelected}
	}
	h.d.handleUDP(u, seal(t, 1, signal.Memorize{Key: udpKey, Mirror: true}))
	got := h.m.Flows[k]
	if uint32(got.Tm) != i1 || got.Flags != datapath.FlowMemorized|datapath.FlowMirror || got.LastSeen != h.now || got.Svc != datapath.SvcNone {
		t.Fatalf("entry after MEMORIZE: %+v", got)
	}
	wantCounts(t, u, map[string]uint64{cMemorize: 1})
}

// TestUDPWriteFailureCounted: a failed write is counted as such, not as
// applied. (The old path ignored the error and counted sig_memorize.)
func TestUDPWriteFailureCounted(t *testing.T) {
	h, hk, u := newUDPHarness(t)
	hk.writeErr = errors.New("argument list too long")
	h.d.handleUDP(u, seal(t, 1, signal.Memorize{Key: udpKey}))
	if _, ok := h.m.Flows[udpFlowKey()]; ok {
		t.Fatal("entry written although the insert failed")
	}
	wantCounts(t, u, map[string]uint64{udpWriteFailed: 1})
}

// TestUDPChecksOnce: the datagram's message is checked by the XDP program's
// rules and applied; what OpenUDP would also refuse (a shim, trailing
// bytes) is refused by the UDP path itself.
func TestUDPChecksOnce(t *testing.T) {
	h, _, u := newUDPHarness(t)
	i1 := h.index(t, "tm1")
	msg, err := signal.Message{Ops: []signal.Op{signal.Memorize{Key: udpKey}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	shim := append([]byte(nil), msg...)
	shim[5] |= 1 // header flags: shim
	unknownOp := append([]byte(nil), msg...)
	unknownOp[8] = 99
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"shim flag", sealRaw(1, shim), "udp_refused_not_shim"},
		{"trailing bytes", sealRaw(2, append(append([]byte(nil), msg...), 0)), "udp_refused_bad_length"},
		{"unknown op", sealRaw(3, unknownOp), "udp_" + datapath.CounterName(datapath.CounterSigRefUnknownOp)},
		{"bad HMAC", append(sealRaw(4, msg)[:len(sealRaw(4, msg))-1], 0), "udp_refused_auth"},
		{"good", sealRaw(5, msg), cMemorize},
		{"replay", sealRaw(5, msg), "udp_refused_replay"},
	} {
		before := u.Counters()[c.want]
		h.d.handleUDP(u, c.b)
		if got := u.Counters()[c.want]; got != before+1 {
			t.Errorf("%s: counter %s went from %d to %d (all: %v)", c.name, c.want, before, got, u.Counters())
		}
	}
	if e, ok := h.m.Flows[udpFlowKey()]; !ok || uint32(e.Tm) != i1 || e.Flags != datapath.FlowMemorized {
		t.Fatalf("entry after the good datagram: %+v (present %v)", e, ok)
	}
}

// TestUDPRefusesUnusableTM: a TM that is not ready (its MAC unresolved) or
// disabled may not signal over UDP, as over XDP; each refusal has its own
// counter and nothing is applied. (Before, both were applied.)
func TestUDPRefusesUnusableTM(t *testing.T) {
	h, _, u := newUDPHarness(t)
	delete(h.res.macs, "tm1")
	h.d.tms["tm1"].mac = nil
	h.d.tms["tm1"].ifindex = 0
	h.d.handleUDP(u, seal(t, 1, signal.Memorize{Key: udpKey}))
	wantCounts(t, u, map[string]uint64{"udp_refused_not_ready": 1})

	h.res.macs["tm1"] = tmMAC(1)
	h.d.mu.Lock()
	h.d.resolveAll()
	h.d.mu.Unlock()
	h.reload(t, "  - {id: tm1, address: 10.1.0.11, state: disabled, signal_key: "+signalKeyHex+"}\n  - {id: tm2, address: 10.1.0.12}\n", udpWeb)
	h.d.handleUDP(u, seal(t, 2, signal.Memorize{Key: udpKey}))
	wantCounts(t, u, map[string]uint64{"udp_refused_not_ready": 1, "udp_refused_disabled": 1})
	if _, ok := h.m.Flows[udpFlowKey()]; ok {
		t.Fatal("a refused datagram was applied")
	}

	h.reload(t, udpTMs, udpWeb)
	h.d.handleUDP(u, seal(t, 3, signal.Memorize{Key: udpKey}))
	wantCounts(t, u, map[string]uint64{"udp_refused_not_ready": 1, "udp_refused_disabled": 1, cMemorize: 1})
}

// TestUDPReservedBits: reserved fields and unknown flag bits are ignored
// over UDP as in XDP (the "reserved bits ignored" case of
// TestSignalCases): the same message bytes are applied.
func TestUDPReservedBits(t *testing.T) {
	h, _, u := newUDPHarness(t)
	msg, err := signal.Message{Ops: []signal.Op{signal.Memorize{Key: udpKey}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg[6], msg[7] = 0xab, 0xcd // header reserved
	msg[5] |= 0x02              // an unknown header flag
	msg[10+42] |= 0x80          // an unknown MEMORIZE flag
	h.d.handleUDP(u, sealRaw(1, msg))
	wantCounts(t, u, map[string]uint64{cMemorize: 1})
	if e, ok := h.m.Flows[udpFlowKey()]; !ok || e.Flags != datapath.FlowMemorized {
		t.Fatalf("entry %+v (present %v)", e, ok)
	}
}
