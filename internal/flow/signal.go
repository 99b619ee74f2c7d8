package flow

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/switchyard/switchyard/internal/datapath"
)

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
// each op's outcome counter. An op whose data-path access failed has none:
// ApplyAll reports those.
func (m Message) Apply(t datapath.Tables, sender uint32) []datapath.Counter {
	out, _ := m.ApplyAll(t, sender)
	return out
}

// ApplyAll applies a checked message's ops in order for sender through the
// data-path seam. It returns the outcome counter of each op that reached a
// decision, and the errors of those whose reads or writes failed.
func (m Message) ApplyAll(t datapath.Tables, sender uint32) ([]datapath.Counter, []error) {
	out := make([]datapath.Counter, 0, len(m.ops))
	var errs []error
	for _, tlv := range m.ops {
		c, err := ApplyOp(t, tlv[0], tlv[2:], sender)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	return out, errs
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
func wireKey(w datapath.WireKey) (datapath.FlowKey, bool) {
	var k datapath.FlowKey
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

// maxMemorizeTries bounds how often a MEMORIZE re-decides when the entry
// changed between its read and its conditional write.
const maxMemorizeTries = 4

// lookupFlow reads k's entry: absent is not an error.
func lookupFlow(t datapath.Tables, k datapath.FlowKey) (datapath.Flow, bool, error) {
	f, err := t.LookupFlow(k)
	if errors.Is(err, datapath.ErrKeyNotExist) {
		return f, false, nil
	}
	if err != nil {
		return f, false, fmt.Errorf("look up flow %s: %w", String(k), err)
	}
	return f, true, nil
}

// tmUsable is sy_tm_usable: TM idx is ready and not disabled (an index
// outside the table is not).
func tmUsable(t datapath.Tables, idx uint32) bool {
	tm, err := t.LookupTM(idx)
	return err == nil && tm.Flags&datapath.TMReady != 0 && tm.Flags&datapath.TMDisabled == 0
}

// own applies FORGET, MIRROR and AGE, which act on an existing flow of
// the sender. MIRROR and AGE write the entry back only if it still exists
// (a flow forgotten meanwhile is not brought back); a packet that refreshes
// its last-seen time between the read and the write is overwritten by the
// value read microseconds earlier: the only effect is that the sweeper may
// remove a flow that was already idle past its timeout one sweep earlier.
func own(t datapath.Tables, op uint8, w datapath.WireKey, timeout uint32, sender uint32) (datapath.Counter, error) {
	k, ok := wireKey(w)
	if !ok {
		return datapath.CounterSigRefBadKey, nil
	}
	cur, ok, err := lookupFlow(t, k)
	if err != nil {
		return 0, err
	}
	if !ok {
		if op == datapath.OpForgetCode {
			return datapath.CounterSigForget, nil
		}
		return datapath.CounterSigRefNoFlow, nil
	}
	if uint32(cur.Tm) != sender {
		return datapath.CounterSigRefForeignTM, nil
	}
	switch op {
	case datapath.OpForgetCode:
		if n, ok := t.(forgetNotifier); ok {
			n.forgotten(k, cur)
		}
		return datapath.CounterSigForget, deleteFlow(t, k)
	case datapath.OpMirrorCode:
		cur.Flags |= datapath.FlowMirror
		return datapath.CounterSigMirror, updateFlow(t, k, cur)
	}
	if timeout == 0 {
		return datapath.CounterSigAge, deleteFlow(t, k)
	}
	cur.Timeout = capTimeout(timeout)
	return datapath.CounterSigAge, updateFlow(t, k, cur)
}

// forgetNotifier is a data path that reports FORGET as a flow event: the
// model, as XDP does (signal.h). The UDP transport's FORGET, written through
// the real seam, is not reported.
type forgetNotifier interface {
	forgotten(k datapath.FlowKey, f datapath.Flow)
}

// deleteFlow deletes k's entry; one already gone is not an error.
func deleteFlow(t datapath.Tables, k datapath.FlowKey) error {
	if err := t.DeleteFlow(k); err != nil && !errors.Is(err, datapath.ErrKeyNotExist) {
		return fmt.Errorf("delete flow %s: %w", String(k), err)
	}
	return nil
}

// updateFlow rewrites k's existing entry; one gone meanwhile stays gone.
func updateFlow(t datapath.Tables, k datapath.FlowKey, f datapath.Flow) error {
	if err := t.UpdateFlow(k, f); err != nil && !errors.Is(err, datapath.ErrKeyNotExist) {
		return fmt.Errorf("update flow %s: %w", String(k), err)
	}
	return nil
}

// memorize is sy_op_memorize. A new entry is inserted only if the key still
// has none: a flow another CPU selected between the read and the write is
// never overwritten; the op decides again on what is there now. The
// sender's own entry is rewritten whole with last_seen = now, so a
// concurrent refresh (which writes the same clock) is not lost.
func memorize(t datapath.Tables, m datapath.OpMemorize, sender uint32) (datapath.Counter, error) {
	k, ok := wireKey(m.Key)
	if !ok {
		return datapath.CounterSigRefBadKey, nil
	}
	if m.Tm != datapath.SigTMSelf && uint32(m.Tm) != sender {
		return datapath.CounterSigRefForeignTM, nil
	}
	now, err := t.ReadNow()
	if err != nil {
		return 0, err
	}
	f := datapath.Flow{LastSeen: now, Tm: uint16(sender), Svc: datapath.SvcNone, Flags: datapath.FlowMemorized,
		Timeout: capTimeout(m.Timeout)}
	if m.Flags&datapath.MemorizeMirror != 0 {
		f.Flags |= datapath.FlowMirror
	}
	for range maxMemorizeTries {
		cur, ok, err := lookupFlow(t, k)
		if err != nil {
			return 0, err
		}
		if ok && uint32(cur.Tm) != sender && tmUsable(t, uint32(cur.Tm)) {
			return datapath.CounterSigRefForeignTM, nil
		}
		if ok {
			// The sender's own is rewritten in place in C: the sequence
			// numbers stay (the state bits are cleared, so each side
			// records anew). Another's is replaced whole.
			f.SeqFwd, f.SeqRev = 0, 0
			if uint32(cur.Tm) == sender {
				f.SeqFwd, f.SeqRev = cur.SeqFwd, cur.SeqRev
			}
			err = t.UpdateFlow(k, f)
		} else {
			err = t.InsertFlow(k, f)
		}
		switch {
		case err == nil:
			return datapath.CounterSigMemorize, nil
		case errors.Is(err, datapath.ErrKeyExist), errors.Is(err, datapath.ErrKeyNotExist):
			continue // the entry came or went meanwhile: decide again
		case errors.Is(err, datapath.ErrTableFull):
			// XDP counts a refused insert as foreign_tm too (signal.h);
			// flow_refused_table_full counts the data path's own.
			return datapath.CounterSigRefForeignTM, nil
		default:
			return 0, fmt.Errorf("memorize flow %s: %w", String(k), err)
		}
	}
	// The entry kept changing under us: refused, as XDP refuses a MEMORIZE
	// whose insert another CPU beat.
	return datapath.CounterSigRefForeignTM, nil
}

// ApplyOp applies one op (its value bytes v, of the op's size) for sender
// through the data-path seam, with the XDP program's semantics, and returns
// its outcome counter. An error means a read or write of the data path
// failed; the op's effect is then unknown.
func ApplyOp(t datapath.Tables, op uint8, v []byte, sender uint32) (datapath.Counter, error) {
	switch op {
	case datapath.OpMemorizeCode:
		return memorize(t, decode[datapath.OpMemorize](v), sender)
	case datapath.OpForgetCode, datapath.OpMirrorCode:
		return own(t, op, decode[datapath.OpKey](v).Key, 0, sender)
	case datapath.OpAgeCode:
		a := decode[datapath.OpAge](v)
		return own(t, op, a.Key, a.Timeout, sender)
	case datapath.OpRelateCode:
		return relate(t, decode[datapath.OpRelate](v), sender)
	}
	return datapath.CounterSigRefUnknownOp, nil
}

// relate is sy_op_relate.
func relate(t datapath.Tables, r datapath.OpRelate, sender uint32) (datapath.Counter, error) {
	parent, ok1 := wireKey(r.Parent)
	second, ok2 := wireKey(r.Second)
	if !ok1 || !ok2 {
		return datapath.CounterSigRefBadKey, nil
	}
	if r.Tm != datapath.SigTMSelf && uint32(r.Tm) != sender {
		return datapath.CounterSigRefForeignTM, nil
	}
	mask := uint32(r.Mask)
	masks, err := t.ReadMasks()
	if err != nil {
		return 0, err
	}
	known := false
	for _, m := range masks {
		if m == 0 {
			break
		}
		if m == mask {
			known = true
		}
	}
	if !known {
		return datapath.CounterSigRefBadMask, nil
	}
	pf, ok, err := lookupFlow(t, parent)
	if err != nil {
		return 0, err
	}
	if !ok {
		return datapath.CounterSigRefNoFlow, nil
	}
	if uint32(pf.Tm) != sender {
		return datapath.CounterSigRefForeignTM, nil
	}
	sk := datapath.SecondKey{Key: MaskKey(second, mask), Mask: mask}
	cur, err := t.LookupSecondKey(sk)
	if err == nil && uint32(cur.Tm) != sender && tmUsable(t, uint32(cur.Tm)) {
		return datapath.CounterSigRefForeignTM, nil
	}
	if err != nil && !errors.Is(err, datapath.ErrKeyNotExist) {
		return 0, fmt.Errorf("look up second key: %w", err)
	}
	now, err := t.ReadNow()
	if err != nil {
		return 0, err
	}
	sv := datapath.Second{LastSeen: now, Timeout: r.Timeout, Tm: uint16(sender), Svc: datapath.SvcNone, Parent: parent}
	// As in XDP, a failed write is a full table.
	if t.PutSecondKey(sk, sv) != nil {
		return datapath.CounterSigRefTableFull, nil
	}
	return datapath.CounterSigRelate, nil
}
