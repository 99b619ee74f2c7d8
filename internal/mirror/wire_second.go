package mirror

import (
	"encoding/binary"
	"fmt"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// Second-key entries (RELATE and source persistence) travel in their own
// datagram type, TypeSecond, with their own fixed entry size, and each
// entry carries its kind's version: flow entries (TypeUpdate) keep their
// layout, and a peer that does not know TypeSecond counts it as malformed
// and is otherwise unaffected.

// TypeSecond carries second-key entries (SecondEntry).
const TypeSecond Type = 6

// Second-key entry constants.
const (
	// SecondVersion is the version of the second-key entry layout; an
	// entry of another is refused (ErrVersion).
	SecondVersion = 1
	// SecondEntrySize is one second-key entry's size in bytes.
	SecondEntrySize = 104
	// MaxSecondEntries bounds the second-key entries of one datagram (1,472
	// bytes at most, as for flow entries).
	MaxSecondEntries = (1472 - HeaderSize - MACSize) / SecondEntrySize
)

// SecondEntry is one second-key entry on the wire: the masked key and its
// mask, and the value with last_seen sent as an age (as for flows).
//
// Layout (big-endian integers; the key's ports in network order, as in a
// flow entry):
//
//	0–39   masked key (fields outside the mask zero, the family kept)
//	40–43  mask (SY_FIELD_*)
//	44     operation (OpPut; the receiver ages its copy itself)
//	45     entry version (SecondVersion)
//	46–47  zero
//	48–51  age in seconds
//	52–55  timeout in seconds (0: the default)
//	56–57  TM index
//	58–59  service (SY_SVC_NONE for RELATE)
//	60–63  zero
//	64–103 parent flow key (all zero for persistence)
type SecondEntry struct {
	Op    uint8
	Key   datapath.SecondKey
	Value datapath.Second // Value.LastSeen is not sent; Age is
	Age   uint32
}

func appendKey(b []byte, k *datapath.FlowKey) []byte {
	b = append(b, k.Src[:]...)
	b = append(b, k.Dst[:]...)
	// Ports in the key's byte order, as appendEntry does.
	b = binary.LittleEndian.AppendUint16(b, k.Sport)
	b = binary.LittleEndian.AppendUint16(b, k.Dport)
	b = binary.BigEndian.AppendUint16(b, k.Vlan)
	return append(b, k.Proto, k.Family)
}

func decodeKey(b []byte, k *datapath.FlowKey) {
	copy(k.Src[:], b[0:16])
	copy(k.Dst[:], b[16:32])
	k.Sport = binary.LittleEndian.Uint16(b[32:])
	k.Dport = binary.LittleEndian.Uint16(b[34:])
	k.Vlan = binary.BigEndian.Uint16(b[36:])
	k.Proto, k.Family = b[38], b[39]
}

func appendSecond(b []byte, e *SecondEntry) []byte {
	b = appendKey(b, &e.Key.Key)
	b = binary.BigEndian.AppendUint32(b, e.Key.Mask)
	b = append(b, e.Op, SecondVersion, 0, 0)
	b = binary.BigEndian.AppendUint32(b, e.Age)
	b = binary.BigEndian.AppendUint32(b, e.Value.Timeout)
	b = binary.BigEndian.AppendUint16(b, e.Value.Tm)
	b = binary.BigEndian.AppendUint16(b, e.Value.Svc)
	b = binary.BigEndian.AppendUint32(b, 0)
	return appendKey(b, &e.Value.Parent)
}

// decodeSeconds decodes count second-key entries from rest into m.
func decodeSeconds(rest []byte, count uint16, m *Message) error {
	if int(count) > MaxSecondEntries || len(rest) != int(count)*SecondEntrySize {
		return fmt.Errorf("decode: %d second-key entries in %d bytes: %w", count, len(rest), ErrMalformed)
	}
	for i := 0; i < int(count); i++ {
		var e SecondEntry
		if err := decodeSecond(rest[i*SecondEntrySize:(i+1)*SecondEntrySize], &e); err != nil {
			return fmt.Errorf("decode: second-key entry %d: %w", i, err)
		}
		m.Seconds = append(m.Seconds, e)
	}
	return nil
}

func decodeSecond(b []byte, e *SecondEntry) error {
	k, v := &e.Key, &e.Value
	decodeKey(b[0:40], &k.Key)
	k.Mask = binary.BigEndian.Uint32(b[40:])
	e.Op = b[44]
	e.Age = binary.BigEndian.Uint32(b[48:])
	v.Timeout = binary.BigEndian.Uint32(b[52:])
	v.Tm = binary.BigEndian.Uint16(b[56:])
	v.Svc = binary.BigEndian.Uint16(b[58:])
	decodeKey(b[64:104], &v.Parent)
	switch {
	case b[45] != SecondVersion:
		return fmt.Errorf("entry version %d, want %d: %w", b[45], SecondVersion, ErrVersion)
	case e.Op != OpPut:
		return fmt.Errorf("op %d: %w", e.Op, ErrMalformed)
	case b[46] != 0 || b[47] != 0 || binary.BigEndian.Uint32(b[60:]) != 0:
		return fmt.Errorf("padding: %w", ErrMalformed)
	case k.Mask == 0 || k.Mask&^datapath.FieldAll != 0:
		return fmt.Errorf("mask %#x: %w", k.Mask, ErrMalformed)
	case k.Key.Family != datapath.FamilyIPv4 && k.Key.Family != datapath.FamilyIPv6:
		return fmt.Errorf("family %d: %w", k.Key.Family, ErrMalformed)
	case flow.MaskKey(k.Key, k.Mask) != k.Key:
		return fmt.Errorf("key has fields outside mask %#x: %w", k.Mask, ErrMalformed)
	case k.Key.Vlan > 4095:
		return fmt.Errorf("VLAN %d: %w", k.Key.Vlan, ErrMalformed)
	case int(v.Tm) >= datapath.MaxTMs:
		return fmt.Errorf("TM %d: %w", v.Tm, ErrMalformed)
	case v.Parent != (datapath.FlowKey{}) && (v.Parent.Family != datapath.FamilyIPv4 && v.Parent.Family != datapath.FamilyIPv6 || v.Parent.Vlan > 4095):
		return fmt.Errorf("parent family %d VLAN %d: %w", v.Parent.Family, v.Parent.Vlan, ErrMalformed)
	}
	return nil
}

// checkSeconds refuses to encode second-key entries on another type than
// TypeSecond, or more than fit a datagram.
func checkSeconds(m *Message) error {
	if m.Type != TypeSecond && len(m.Seconds) > 0 {
		return fmt.Errorf("encode: type %d carries no second-key entries", m.Type)
	}
	if len(m.Seconds) > MaxSecondEntries {
		return fmt.Errorf("encode: %d second-key entries, at most %d", len(m.Seconds), MaxSecondEntries)
	}
	return nil
}
