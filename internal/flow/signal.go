package flow

import (
	"encoding/binary"
	"fmt"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Tables is what signal ops read and write: the model's maps, or the data
// path's (the daemon applies UDP-control signals with the same code).
type Tables interface {
	Flow(k Key) (datapath.Flow, bool)
	PutFlow(k Key, f datapath.Flow)
	DeleteFlow(k Key)
	// UpdateFlow changes an existing entry in place (flags, timeout).
	UpdateFlow(k Key, f datapath.Flow)
	// TMUsable reports whether TM idx is ready and not disabled.
	TMUsable(idx uint32) bool
	Masks() []uint32
	// PutSecond writes a second key; false when the table is full.
	PutSecond(k datapath.SecondKey, v datapath.Second) bool
	Second(k datapath.SecondKey) (datapath.Second, bool)
	Now() uint32
}

// Op value sizes, from the structs bpf2go generated from bpf/switchyard.h.
var (
	sizeMemorize = binary.Size(datapath.OpMemorize{})
	sizeKeyOp    = binary.Size(datapath.OpKey{})
	sizeRelate   = binary.Size(datapath.OpRelate{})
	sizeAge      = binary.Size(datapath.OpAge{})
)

// opSize is the value size of each op (sy_op_size), 0 for an unknown op.
func opSize(op uint8) int {
	switch op {
	case datapath.OpMemorizeCode:
		return sizeMemorize
	case datapath.OpForgetCode, datapath.OpMirrorCode:
		return sizeKeyOp
	case datapath.OpRelateCode:
		return sizeRelate
	case datapath.OpAgeCode:
		return sizeAge
	}
	return 0
}

// Message is a signal message checked as a whole by CheckMessage.
type Message struct {
	ops  [][]byte // each TLV: op byte, len byte, value
	Shim bool
	// Len is the length of header and TLVs.
	Len int
}

// CheckMessage validates a signal message (header and TLVs, then for a
// shim the original EtherType) the way the XDP program does, in the same
// order. On refusal it returns the counter saying why.
func CheckMessage(b []byte) (Message, datapath.Counter, bool) {
	var m Message
	hl := datapath.SigHeaderLen
	if len(b) < hl {
		return m, datapath.CounterSigRefTruncated, false
	}
	if b[0] != datapath.SigVersion {
		return m, datapath.CounterSigRefVersion, false
	}
	count := int(b[1])
	if count == 0 || count > datapath.SigMaxOps {
		return m, datapath.CounterSigRefCount, false
	}
	mlen := int(binary.BigEndian.Uint16(b[2:]))
	m.Shim = binary.BigEndian.Uint16(b[4:])&datapath.SigFlagShim != 0
	end := hl + mlen
	need := end
	if m.Shim {
		need += 2
	}
	if need > len(b) {
		return m, datapath.CounterSigRefTruncated, false
	}
	off := hl
	for range count {
		if off+datapath.SigTLVHeaderLen > end {
			return m, datapath.CounterSigRefTruncated, false
		}
		size := opSize(b[off])
		if size == 0 {
			return m, datapath.CounterSigRefUnknownOp, false
		}
		if int(b[off+1]) != size {
			return m, datapath.CounterSigRefBadLength, false
		}
		next := off + datapath.SigTLVHeaderLen + size
		if next > end {
			return m, datapath.CounterSigRefTruncated, false
		}
		m.ops = append(m.ops, b[off:next])
		off = next
	}
	if off != end {
		return m, datapath.CounterSigRefBadLength, false
	}
	m.Len = end
	return m, 0, true
}

// Apply applies a checked message's ops in order for sender and returns
// each op's outcome counter.
func (m Message) Apply(t Tables, sender uint32) []datapath.Counter {
	out := make([]datapath.Counter, 0, len(m.ops))
	for _, tlv := range m.ops {
		out = append(out, ApplyOp(t, tlv[0], tlv[2:], sender))
	}
	return out
}

// decode reads an op's value: the wire format is big-endian, so the fields
// of the generated struct come out in host order.
func decode[T any](v []byte) T {
	var op T
	if _, err := binary.Decode(v, binary.BigEndian, &op); err != nil {
		panic(fmt.Sprintf("flow: op value of %d bytes for %T: %v", len(v), op, err)) // CheckMessage checked the size
	}
	return op
}

// wireKey converts a key of the wire format (sy_wire_key), refusing
// families other than 4 and 6 and IPv4 addresses with stray bytes.
func wireKey(w datapath.WireKey) (Key, bool) {
	var k Key
	switch w.Family {
	case datapath.FamilyIPv4:
		if [12]uint8(w.Src[4:]) != [12]uint8{} || [12]uint8(w.Dst[4:]) != [12]uint8{} {
			return k, false
		}
	case datapath.FamilyIPv6:
	default:
		return k, false
	}
	k.Src, k.Dst = w.Src, w.Dst
	k.Sport, k.Dport = htons(w.Sport), htons(w.Dport)
	k.Vlan = w.Vlan & 0x0fff
	k.Proto, k.Family = w.Proto, w.Family
	return k, true
}

func capTimeout(t uint32) uint16 {
	if t > 0xffff {
		return 0xffff
	}
	return uint16(t)
}

// own applies FORGET, MIRROR and AGE, which act on an existing flow of
// the sender.
func own(t Tables, op uint8, w datapath.WireKey, timeout uint32, sender uint32) datapath.Counter {
	k, ok := wireKey(w)
	if !ok {
		return datapath.CounterSigRefBadKey
	}
	cur, ok := t.Flow(k)
	if !ok {
		if op == datapath.OpForgetCode {
			return datapath.CounterSigForget
		}
		return datapath.CounterSigRefNoFlow
	}
	if uint32(cur.Tm) != sender {
		return datapath.CounterSigRefForeignTM
	}
	switch op {
	case datapath.OpForgetCode:
		t.DeleteFlow(k)
		return datapath.CounterSigForget
	case datapath.OpMirrorCode:
		cur.Flags |= datapath.FlowMirror
		t.UpdateFlow(k, cur)
		return datapath.CounterSigMirror
	}
	if timeout == 0 {
		t.DeleteFlow(k)
	} else {
		cur.Timeout = capTimeout(timeout)
		t.UpdateFlow(k, cur)
	}
	return datapath.CounterSigAge
}

// ApplyOp applies one op (its value bytes v, of the op's size) for sender,
// with the XDP program's semantics, and returns its outcome counter.
func ApplyOp(t Tables, op uint8, v []byte, sender uint32) datapath.Counter {
	switch op {
	case datapath.OpMemorizeCode:
		m := decode[datapath.OpMemorize](v)
		k, ok := wireKey(m.Key)
		if !ok {
			return datapath.CounterSigRefBadKey
		}
		if m.Tm != datapath.SigTMSelf && uint32(m.Tm) != sender {
			return datapath.CounterSigRefForeignTM
		}
		if cur, ok := t.Flow(k); ok && uint32(cur.Tm) != sender && t.TMUsable(uint32(cur.Tm)) {
			return datapath.CounterSigRefForeignTM
		}
		f := datapath.Flow{LastSeen: t.Now(), Tm: uint16(sender), Svc: datapath.SvcNone, Flags: datapath.FlowMemorized,
			Timeout: capTimeout(m.Timeout)}
		if m.Flags&datapath.MemorizeMirror != 0 {
			f.Flags |= datapath.FlowMirror
		}
		t.PutFlow(k, f)
		return datapath.CounterSigMemorize
	case datapath.OpForgetCode, datapath.OpMirrorCode:
		return own(t, op, decode[datapath.OpKey](v).Key, 0, sender)
	case datapath.OpAgeCode:
		a := decode[datapath.OpAge](v)
		return own(t, op, a.Key, a.Timeout, sender)
	case datapath.OpRelateCode:
		r := decode[datapath.OpRelate](v)
		parent, ok1 := wireKey(r.Parent)
		second, ok2 := wireKey(r.Second)
		if !ok1 || !ok2 {
			return datapath.CounterSigRefBadKey
		}
		if r.Tm != datapath.SigTMSelf && uint32(r.Tm) != sender {
			return datapath.CounterSigRefForeignTM
		}
		mask := uint32(r.Mask)
		known := false
		for _, m := range t.Masks() {
			if m == 0 {
				break
			}
			if m == mask {
				known = true
			}
		}
		if !known {
			return datapath.CounterSigRefBadMask
		}
		pf, ok := t.Flow(parent)
		if !ok {
			return datapath.CounterSigRefNoFlow
		}
		if uint32(pf.Tm) != sender {
			return datapath.CounterSigRefForeignTM
		}
		sk := datapath.SecondKey{Key: MaskKey(second, mask), Mask: mask}
		if cur, ok := t.Second(sk); ok && uint32(cur.Tm) != sender && t.TMUsable(uint32(cur.Tm)) {
			return datapath.CounterSigRefForeignTM
		}
		sv := datapath.Second{LastSeen: t.Now(), Timeout: r.Timeout, Tm: uint16(sender), Svc: datapath.SvcNone, Parent: parent}
		if !t.PutSecond(sk, sv) {
			return datapath.CounterSigRefTableFull
		}
		return datapath.CounterSigRelate
	}
	return datapath.CounterSigRefUnknownOp
}

// modelTables are the model's maps as Tables.
type modelTables struct{ m *Model }

func (t modelTables) Flow(k Key) (datapath.Flow, bool)  { f, ok := t.m.Flows[k]; return f, ok }
func (t modelTables) PutFlow(k Key, f datapath.Flow)    { t.m.Flows[k] = f }
func (t modelTables) UpdateFlow(k Key, f datapath.Flow) { t.m.Flows[k] = f }
func (t modelTables) DeleteFlow(k Key)                  { delete(t.m.Flows, k) }
func (t modelTables) Now() uint32                       { return t.m.Now }
func (t modelTables) Masks() []uint32                   { return t.m.Masks[:] }
func (t modelTables) TMUsable(idx uint32) bool {
	if idx >= uint32(len(t.m.TMs)) {
		return false
	}
	f := t.m.TMs[idx].Flags
	return f&datapath.TMReady != 0 && f&datapath.TMDisabled == 0
}
func (t modelTables) Second(k datapath.SecondKey) (datapath.Second, bool) {
	v, ok := t.m.SecondKeys[k]
	return v, ok
}
func (t modelTables) PutSecond(k datapath.SecondKey, v datapath.Second) bool {
	if _, ok := t.m.SecondKeys[k]; !ok && len(t.m.SecondKeys) >= t.m.MaxSecond {
		return false
	}
	t.m.SecondKeys[k] = v
	return true
}
