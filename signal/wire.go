package signal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"time"
	"unsafe"
)

// Wire constants. They mirror bpf/switchyard.h (enum sy_sig_consts,
// sy_sig_flags, sy_sig_op, sy_memorize_flags, sy_field and SY_ETH_P_SIGNAL);
// a test checks them against the BTF of the compiled XDP object.
const (
	// EtherType is the EtherType of signal frames and in-band shims.
	EtherType = 0x88B5
	// Version is the message version this package speaks.
	Version = 1
	// MaxOps is the largest number of ops in one message.
	MaxOps = 8
	// Self in a TM field means "the sender". It is what the zero value of
	// Memorize.TM and Relate.TM encodes to.
	Self uint16 = 0xffff
	// MaxMemorizeTimeout is the longest idle timeout a MEMORIZE can carry: the
	// flow table stores it in 16 bits of seconds.
	MaxMemorizeTimeout = 65535 * time.Second
	// MaxTimeout is the longest idle timeout RELATE and AGE can carry.
	MaxTimeout = math.MaxUint32 * time.Second
)

// The wire structs: Go mirrors of the C structs of bpf/switchyard.h, field
// by field in the same order, named as in C (case aside). The wire is
// big-endian, so every multi-byte field is encoded and decoded with
// binary.BigEndian; explicit pads and reserved fields are fields, so that
// Unmarshal can check they are zero. btf_test.go checks each struct against
// the BTF of the compiled XDP object: size, and every field's name, offset,
// size and type (multi-byte C fields must be __be*).
type (
	// wireHdr is struct sy_sig_hdr.
	wireHdr struct {
		Version  uint8
		Count    uint8
		Length   uint16 // bytes of TLVs
		Flags    uint16
		Reserved uint16
	}
	// wireTLV is struct sy_tlv.
	wireTLV struct {
		Op  uint8
		Len uint8 // bytes of value: the op's size
	}
	// wireKey is struct sy_wire_key.
	wireKey struct {
		Src    [16]byte // IPv4: first 4 bytes, rest zero
		Dst    [16]byte
		Sport  uint16
		Dport  uint16
		VLAN   uint16
		Proto  uint8
		Family uint8
	}
	// wireMemorize is struct sy_op_memorize.
	wireMemorize struct {
		Key     wireKey
		TM      uint16
		Flags   uint16
		Timeout uint32 // seconds
	}
	// wireKeyOp is struct sy_op_key (FORGET, MIRROR).
	wireKeyOp struct {
		Key wireKey
	}
	// wireRelate is struct sy_op_relate.
	wireRelate struct {
		Parent  wireKey
		Second  wireKey
		Mask    uint8
		Pad     uint8
		TM      uint16
		Timeout uint32 // seconds
	}
	// wireAge is struct sy_op_age.
	wireAge struct {
		Key     wireKey
		Timeout uint32 // seconds
	}
)

// Encoded sizes of the wire structs (bytes).
var (
	hdrLen      = binary.Size(wireHdr{})
	tlvHdrLen   = binary.Size(wireTLV{})
	memorizeLen = binary.Size(wireMemorize{})
	keyOpLen    = binary.Size(wireKeyOp{})
	relateLen   = binary.Size(wireRelate{})
	ageLen      = binary.Size(wireAge{})
)

// Offsets of the fields that refusals point at. The wire structs have no
// implicit padding in Go either (btf_test.go checks that the Go size equals
// the encoded size), so their Go offsets are their wire offsets.
const (
	hdrOffVer = int(unsafe.Offsetof(wireHdr{}.Version))
	hdrOffCnt = int(unsafe.Offsetof(wireHdr{}.Count))
	hdrOffLen = int(unsafe.Offsetof(wireHdr{}.Length))
	hdrOffFlg = int(unsafe.Offsetof(wireHdr{}.Flags))
	hdrOffRsv = int(unsafe.Offsetof(wireHdr{}.Reserved))

	tlvOffOp  = int(unsafe.Offsetof(wireTLV{}.Op))
	tlvOffLen = int(unsafe.Offsetof(wireTLV{}.Len))

	keyOffSrc    = int(unsafe.Offsetof(wireKey{}.Src))
	keyOffDst    = int(unsafe.Offsetof(wireKey{}.Dst))
	keyOffFamily = int(unsafe.Offsetof(wireKey{}.Family))

	memorizeOffKey     = int(unsafe.Offsetof(wireMemorize{}.Key))
	memorizeOffFlags   = int(unsafe.Offsetof(wireMemorize{}.Flags))
	memorizeOffTimeout = int(unsafe.Offsetof(wireMemorize{}.Timeout))

	keyOpOffKey = int(unsafe.Offsetof(wireKeyOp{}.Key))

	relateOffParent = int(unsafe.Offsetof(wireRelate{}.Parent))
	relateOffSecond = int(unsafe.Offsetof(wireRelate{}.Second))
	relateOffPad    = int(unsafe.Offsetof(wireRelate{}.Pad))

	ageOffKey = int(unsafe.Offsetof(wireAge{}.Key))
)

// Flags and families (enum sy_sig_flags, sy_memorize_flags, sy_family).
const (
	flagShim           = 0x1 // SY_SIG_F_SHIM
	memorizeFlagMirror = 0x1 // SY_MEMORIZE_F_MIRROR

	famINET  = 4 // SY_AF_INET
	famINET6 = 6 // SY_AF_INET6
)

// Op codes (enum sy_sig_op).
const (
	opMemorize = 1
	opForget   = 2
	opMirror   = 3
	opRelate   = 4
	opAge      = 5
)

// Field is a set of key fields (enum sy_field): the fields a RELATE second key
// keeps. The distributor accepts only the masks it is configured with.
type Field uint8

// Key fields.
const (
	FieldVLAN    Field = 0x1
	FieldProto   Field = 0x2
	FieldSrc     Field = 0x4
	FieldDst     Field = 0x8
	FieldSrcPort Field = 0x10
	FieldDstPort Field = 0x20
	// FieldAll keeps every field: an exact key.
	FieldAll Field = 0x3f
)

// Key is a connection key as TMs see it: the packet's addresses and ports as
// they arrive at the distributor (client → VIP for a client's flow; for a
// flow a TM opens, the reverse of what it sends, i.e. server → TM address).
//
// Src and Dst must be of one family. IPv4-mapped IPv6 addresses are encoded as
// IPv4 (the distributor keys IPv4 packets as IPv4); zones are ignored. An
// invalid (zero) address encodes as all zeros, which is useful for RELATE
// second keys that wildcard an address; at least one of Src and Dst must be
// valid to give the key its family (use netip.IPv4Unspecified() or
// netip.IPv6Unspecified() for a wildcard).
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	// VLAN is the VLAN id (0: untagged; with two tags, the inner one).
	VLAN uint16
}

// Op is one signal operation: Memorize, Forget, Mirror, Relate or Age.
type Op interface{ isOp() }

// Memorize pins the exact key to a TM (MEMORIZE).
type Memorize struct {
	Key Key
	// TM is the TM index the entry goes to; it must be the sender's own
	// index. The zero value and Self both mean "the sender" and encode as
	// 0xffff, so a TM never needs to know its index. Unmarshal reports the
	// wire value 0xffff as Self, so a decoded 0 means index 0.
	TM uint16
	// Mirror also mirrors the entry to the peer distributors.
	Mirror bool
	// Timeout is the entry's idle timeout, rounded up to whole seconds, at
	// most MaxMemorizeTimeout; 0 keeps the protocol's default.
	Timeout time.Duration

	tmZero bool // decoded from a wire tm of 0: re-encode as 0, not Self
}

// Forget deletes the sender's entry for the exact key (FORGET).
type Forget struct{ Key Key }

// Mirror marks the sender's entry for the key to be mirrored to the peer
// distributors now (MIRROR).
type Mirror struct{ Key Key }

// Relate installs a second key for a flow related to an existing flow of the
// sender (RELATE), e.g. an FTP data connection: the next new flow that
// matches Second in the fields of Mask goes to the TM.
type Relate struct {
	// Parent is an existing flow of the sender.
	Parent Key
	// Second is the related key; fields outside Mask are ignored by the
	// distributor (send them as zero).
	Second Key
	// Mask is the set of fields Second keeps; it must be one of the masks
	// the distributor is configured with.
	Mask Field
	// TM: as in Memorize.
	TM uint16
	// Timeout is the second key's idle timeout, rounded up to whole
	// seconds; 0: the default.
	Timeout time.Duration

	tmZero bool
}

// Age sets the idle timeout of the sender's entry for the exact key (AGE);
// a Timeout of 0 expires it now. Rounded up to whole seconds.
type Age struct {
	Key     Key
	Timeout time.Duration
}

func (Memorize) isOp() {}
func (Forget) isOp()   {}
func (Mirror) isOp()   {}
func (Relate) isOp()   {}
func (Age) isOp()      {}

// Message is one signal message: 1 to MaxOps ops, applied by the distributor
// in order.
type Message struct {
	Ops []Op
}

// Error is a refusal by Unmarshal, Unshim or OpenUDP. Reason is a short
// stable word that callers can count by (the distributor's counters are
// named sig_refused_<reason> for the reasons it shares with this package);
// Offset is the byte offset in the input where the problem was found.
type Error struct {
	Reason string
	Offset int
}

// Refusal reasons.
const (
	ReasonTruncated  = "truncated"   // the input is cut short
	ReasonVersion    = "version"     // unknown message or datagram version
	ReasonCount      = "count"       // 0 or more than MaxOps TLVs
	ReasonUnknownOp  = "unknown_op"  // unknown op code
	ReasonBadLength  = "bad_length"  // a TLV's length is not its op's size, or the TLVs do not fill the header's length
	ReasonBadKey     = "bad_key"     // key family not 4 or 6, an IPv4 key with bytes past the address, or an IPv6 key with an IPv4-mapped address
	ReasonBadTimeout = "bad_timeout" // a MEMORIZE timeout above 65535 s
	ReasonReserved   = "reserved"    // a reserved field, pad or unknown flag bit is not zero
	ReasonNotSignal  = "not_signal"  // Unshim: the EtherType is not EtherType
	ReasonNotShim    = "not_shim"    // Unshim: the message lacks the shim flag; OpenUDP: it has it
	ReasonMagic      = "magic"       // OpenUDP: not a control datagram
	ReasonBadID      = "bad_id"      // OpenUDP: TM id length not 1..32
	ReasonUnknownTM  = "unknown_tm"  // OpenUDP: no key for that TM id
	ReasonAuth       = "auth"        // OpenUDP: HMAC mismatch
)

func (e *Error) Error() string {
	return fmt.Sprintf("signal: refused (%s) at byte %d", e.Reason, e.Offset)
}

// Is makes errors.Is(err, &Error{Reason: r}) match any offset.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

func refuse(reason string, off int) error { return &Error{Reason: reason, Offset: off} }

// ReasonOf returns the refusal reason of err, or "" if it is not an *Error.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func opSize(op uint8) int {
	switch op {
	case opMemorize:
		return memorizeLen
	case opForget, opMirror:
		return keyOpLen
	case opRelate:
		return relateLen
	case opAge:
		return ageLen
	}
	return -1
}

// Size returns the encoded length of the message (header and TLVs), or -1
// if it holds an op of an unknown type.
func (m Message) Size() int {
	n := hdrLen
	for _, op := range m.Ops {
		c := opCode(op)
		if c == 0 {
			return -1
		}
		n += tlvHdrLen + opSize(c)
	}
	return n
}

func opCode(op Op) uint8 {
	switch op.(type) {
	case Memorize, *Memorize:
		return opMemorize
	case Forget, *Forget:
		return opForget
	case Mirror, *Mirror:
		return opMirror
	case Relate, *Relate:
		return opRelate
	case Age, *Age:
		return opAge
	}
	return 0
}

// Marshal encodes the message: header and TLVs, without Ethernet.
func (m Message) Marshal() ([]byte, error) {
	return m.appendTo(nil, 0)
}

func (m Message) appendTo(b []byte, flags uint16) ([]byte, error) {
	if len(m.Ops) == 0 || len(m.Ops) > MaxOps {
		return nil, fmt.Errorf("signal: a message holds 1 to %d ops, not %d", MaxOps, len(m.Ops))
	}
	size := m.Size()
	if size < 0 {
		return nil, errors.New("signal: unknown op type")
	}
	b = slices.Grow(b, size)
	b, err := appendStruct(b, &wireHdr{
		Version: Version,
		Count:   uint8(len(m.Ops)),
		Length:  uint16(size - hdrLen),
		Flags:   flags,
	})
	if err != nil {
		return nil, err
	}
	for i, op := range m.Ops {
		c := opCode(op)
		w, err := wireOp(op)
		if err != nil {
			return nil, fmt.Errorf("signal: op %d: %w", i, err)
		}
		if b, err = appendStruct(b, &wireTLV{Op: c, Len: uint8(opSize(c))}); err != nil {
			return nil, err
		}
		if b, err = appendWire(b, w); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// appendWire appends the big-endian encoding of a wire struct (a pointer),
// through its layout (encode.go).
func appendWire(b []byte, w any) ([]byte, error) {
	v := reflect.ValueOf(w)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil, fmt.Errorf("signal: encode %T: not a pointer to a wire struct", w)
	}
	l, err := layoutOf(v.Type().Elem())
	if err != nil {
		// Only a type that is not a wire struct fails: a bug here, not bad input.
		return nil, err
	}
	return appendLayout(b, v.UnsafePointer(), l), nil
}

// wireOp returns the wire struct of op (a pointer, for appendWire).
func wireOp(op Op) (any, error) {
	switch o := op.(type) {
	case *Memorize:
		if o == nil {
			return nil, errors.New("nil op")
		}
		return wireOp(*o)
	case *Forget:
		if o == nil {
			return nil, errors.New("nil op")
		}
		return wireOp(*o)
	case *Mirror:
		if o == nil {
			return nil, errors.New("nil op")
		}
		return wireOp(*o)
	case *Relate:
		if o == nil {
			return nil, errors.New("nil op")
		}
		return wireOp(*o)
	case *Age:
		if o == nil {
			return nil, errors.New("nil op")
		}
		return wireOp(*o)
	case Memorize:
		k, err := o.Key.wire()
		if err != nil {
			return nil, err
		}
		s, err := seconds(o.Timeout, MaxMemorizeTimeout)
		if err != nil {
			return nil, err
		}
		w := &wireMemorize{Key: k, TM: wireTM(o.TM, o.tmZero), Timeout: s}
		if o.Mirror {
			w.Flags |= memorizeFlagMirror
		}
		return w, nil
	case Forget:
		k, err := o.Key.wire()
		if err != nil {
			return nil, err
		}
		return &wireKeyOp{Key: k}, nil
	case Mirror:
		k, err := o.Key.wire()
		if err != nil {
			return nil, err
		}
		return &wireKeyOp{Key: k}, nil
	case Relate:
		p, err := o.Parent.wire()
		if err != nil {
			return nil, fmt.Errorf("parent: %w", err)
		}
		sk, err := o.Second.wire()
		if err != nil {
			return nil, fmt.Errorf("second: %w", err)
		}
		s, err := seconds(o.Timeout, MaxTimeout)
		if err != nil {
			return nil, err
		}
		return &wireRelate{Parent: p, Second: sk, Mask: uint8(o.Mask), TM: wireTM(o.TM, o.tmZero), Timeout: s}, nil
	case Age:
		k, err := o.Key.wire()
		if err != nil {
			return nil, err
		}
		s, err := seconds(o.Timeout, MaxTimeout)
		if err != nil {
			return nil, err
		}
		return &wireAge{Key: k, Timeout: s}, nil
	}
	return nil, errors.New("unknown op type")
}

func wireTM(tm uint16, zero bool) uint16 {
	if tm == 0 && !zero {
		return Self
	}
	return tm
}

func seconds(d, limit time.Duration) (uint32, error) {
	if d < 0 {
		return 0, fmt.Errorf("negative timeout %v", d)
	}
	if d > limit {
		return 0, fmt.Errorf("timeout %v above %v", d, limit)
	}
	return uint32((d + time.Second - 1) / time.Second), nil
}

// wire returns the wire form of the key: IPv4-mapped addresses as IPv4,
// zones dropped, an invalid address as zeros.
func (k Key) wire() (wireKey, error) {
	src, dst := k.Src.Unmap().WithZone(""), k.Dst.Unmap().WithZone("")
	w := wireKey{Sport: k.SrcPort, Dport: k.DstPort, VLAN: k.VLAN, Proto: k.Proto}
	switch {
	case src.IsValid() && dst.IsValid() && src.Is4() != dst.Is4():
		return wireKey{}, fmt.Errorf("key mixes address families (%v, %v)", k.Src, k.Dst)
	case src.IsValid():
		w.Family = famOf(src)
	case dst.IsValid():
		w.Family = famOf(dst)
	default:
		return wireKey{}, errors.New("key has no address (set Src or Dst, unspecified for a wildcard)")
	}
	putAddr(&w.Src, src)
	putAddr(&w.Dst, dst)
	return w, nil
}

func famOf(a netip.Addr) uint8 {
	if a.Is4() {
		return famINET
	}
	return famINET6
}

// putAddr writes a into v: 4 bytes for IPv4, 16 for IPv6, none if invalid.
func putAddr(v *[16]byte, a netip.Addr) {
	switch {
	case a.Is4():
		b := a.As4()
		copy(v[:], b[:])
	case a.Is6():
		*v = a.As16()
	}
}

// Unmarshal decodes one message from the start of b and returns the bytes
// after its TLVs (for a shim: the original EtherType and payload). It is
// strict: the version, the op count (1..MaxOps), the header's length, each
// TLV's length (exactly its op's size), the op codes, the key families (4 or
// 6) and the addresses (an IPv4 key has zeros after its 4 address bytes), and
// that reserved fields, pads and unknown flag bits are zero. The only header
// flag accepted is the shim flag. Refusals are *Error.
func Unmarshal(b []byte) (m Message, rest []byte, err error) {
	m, _, rest, err = unmarshal(b)
	return m, rest, err
}

// decodeWire decodes the wire struct w (a pointer) from the start of v;
// base is v's offset in the input, for the refusal.
func decodeWire(v []byte, w any, base int) error {
	if _, err := binary.Decode(v, binary.BigEndian, w); err != nil {
		// Callers check the length first; what is left is a short buffer.
		return refuse(ReasonTruncated, base+len(v))
	}
	return nil
}

func unmarshal(b []byte) (m Message, flags uint16, rest []byte, err error) {
	var h wireHdr
	if err := decodeWire(b, &h, 0); err != nil {
		return Message{}, 0, nil, err
	}
	if h.Version != Version {
		return Message{}, 0, nil, refuse(ReasonVersion, hdrOffVer)
	}
	count := int(h.Count)
	if count < 1 || count > MaxOps {
		return Message{}, 0, nil, refuse(ReasonCount, hdrOffCnt)
	}
	if h.Flags&^flagShim != 0 {
		return Message{}, 0, nil, refuse(ReasonReserved, hdrOffFlg)
	}
	if h.Reserved != 0 {
		return Message{}, 0, nil, refuse(ReasonReserved, hdrOffRsv)
	}
	end := hdrLen + int(h.Length)
	if len(b) < end {
		return Message{}, 0, nil, refuse(ReasonTruncated, len(b))
	}
	off := hdrLen
	ops := make([]Op, 0, count)
	for i := 0; i < count; i++ {
		if off+tlvHdrLen > end {
			return Message{}, 0, nil, refuse(ReasonBadLength, hdrOffLen)
		}
		var t wireTLV
		if err := decodeWire(b[off:end], &t, off); err != nil {
			return Message{}, 0, nil, err
		}
		size := opSize(t.Op)
		if size < 0 {
			return Message{}, 0, nil, refuse(ReasonUnknownOp, off+tlvOffOp)
		}
		if int(t.Len) != size {
			return Message{}, 0, nil, refuse(ReasonBadLength, off+tlvOffLen)
		}
		vo := off + tlvHdrLen
		if vo+size > end {
			return Message{}, 0, nil, refuse(ReasonBadLength, hdrOffLen)
		}
		op, err := decodeOp(t.Op, b[vo:vo+size], vo)
		if err != nil {
			return Message{}, 0, nil, err
		}
		ops = append(ops, op)
		off = vo + size
	}
	if off != end {
		return Message{}, 0, nil, refuse(ReasonBadLength, hdrOffLen)
	}
	return Message{Ops: ops}, h.Flags, b[end:], nil
}

// decodeOp decodes the value v of an op (exactly its size) at offset base.
func decodeOp(code uint8, v []byte, base int) (Op, error) {
	switch code {
	case opMemorize:
		var w wireMemorize
		if err := decodeWire(v, &w, base); err != nil {
			return nil, err
		}
		k, err := w.Key.key(base + memorizeOffKey)
		if err != nil {
			return nil, err
		}
		if w.Flags&^memorizeFlagMirror != 0 {
			return nil, refuse(ReasonReserved, base+memorizeOffFlags)
		}
		to := time.Duration(w.Timeout) * time.Second
		if to > MaxMemorizeTimeout {
			return nil, refuse(ReasonBadTimeout, base+memorizeOffTimeout)
		}
		return Memorize{
			Key:     k,
			TM:      w.TM,
			tmZero:  w.TM == 0,
			Mirror:  w.Flags&memorizeFlagMirror != 0,
			Timeout: to,
		}, nil
	case opForget, opMirror:
		var w wireKeyOp
		if err := decodeWire(v, &w, base); err != nil {
			return nil, err
		}
		k, err := w.Key.key(base + keyOpOffKey)
		if err != nil {
			return nil, err
		}
		if code == opForget {
			return Forget{Key: k}, nil
		}
		return Mirror{Key: k}, nil
	case opRelate:
		var w wireRelate
		if err := decodeWire(v, &w, base); err != nil {
			return nil, err
		}
		p, err := w.Parent.key(base + relateOffParent)
		if err != nil {
			return nil, err
		}
		s, err := w.Second.key(base + relateOffSecond)
		if err != nil {
			return nil, err
		}
		if w.Pad != 0 {
			return nil, refuse(ReasonReserved, base+relateOffPad)
		}
		return Relate{
			Parent:  p,
			Second:  s,
			Mask:    Field(w.Mask),
			TM:      w.TM,
			tmZero:  w.TM == 0,
			Timeout: time.Duration(w.Timeout) * time.Second,
		}, nil
	case opAge:
		var w wireAge
		if err := decodeWire(v, &w, base); err != nil {
			return nil, err
		}
		k, err := w.Key.key(base + ageOffKey)
		if err != nil {
			return nil, err
		}
		return Age{Key: k, Timeout: time.Duration(w.Timeout) * time.Second}, nil
	}
	return nil, refuse(ReasonUnknownOp, base-tlvHdrLen)
}

// key checks and converts a wire key found at offset base.
func (w wireKey) key(base int) (Key, error) {
	k := Key{SrcPort: w.Sport, DstPort: w.Dport, VLAN: w.VLAN, Proto: w.Proto}
	switch w.Family {
	case famINET:
		if !allZero(w.Src[4:]) || !allZero(w.Dst[4:]) {
			return Key{}, refuse(ReasonBadKey, base+keyOffSrc)
		}
		k.Src = netip.AddrFrom4([4]byte(w.Src[:4]))
		k.Dst = netip.AddrFrom4([4]byte(w.Dst[:4]))
	case famINET6:
		k.Src = netip.AddrFrom16(w.Src)
		k.Dst = netip.AddrFrom16(w.Dst)
		if k.Src.Is4In6() {
			return Key{}, refuse(ReasonBadKey, base+keyOffSrc)
		}
		if k.Dst.Is4In6() {
			return Key{}, refuse(ReasonBadKey, base+keyOffDst)
		}
	default:
		return Key{}, refuse(ReasonBadKey, base+keyOffFamily)
	}
	return k, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
