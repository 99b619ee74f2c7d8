package signal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
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

// Sizes and offsets of the wire structs (bytes). Exported through the test
// that compares them with the C structs; keep them in sync with
// bpf/switchyard.h.
const (
	hdrLen    = 8 // struct sy_sig_hdr
	hdrOffVer = 0
	hdrOffCnt = 1
	hdrOffLen = 2
	hdrOffFlg = 4
	hdrOffRsv = 6

	tlvHdrLen = 2 // struct sy_tlv
	tlvOffOp  = 0
	tlvOffLen = 1

	keyLen       = 40 // struct sy_wire_key
	keyOffSrc    = 0
	keyOffDst    = 16
	keyOffSport  = 32
	keyOffDport  = 34
	keyOffVLAN   = 36
	keyOffProto  = 38
	keyOffFamily = 39

	memorizeLen        = 48 // struct sy_op_memorize
	memorizeOffKey     = 0
	memorizeOffTM      = 40
	memorizeOffFlags   = 42
	memorizeOffTimeout = 44

	keyOpLen    = 40 // struct sy_op_key (FORGET, MIRROR)
	keyOpOffKey = 0

	relateLen        = 88 // struct sy_op_relate
	relateOffParent  = 0
	relateOffSecond  = 40
	relateOffMask    = 80
	relateOffPad     = 81
	relateOffTM      = 82
	relateOffTimeout = 84

	ageLen        = 44 // struct sy_op_age
	ageOffKey     = 0
	ageOffTimeout = 40

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
	start := len(b)
	b = append(b, make([]byte, size)...)
	out := b[start:]
	out[hdrOffVer] = Version
	out[hdrOffCnt] = uint8(len(m.Ops))
	binary.BigEndian.PutUint16(out[hdrOffLen:], uint16(size-hdrLen))
	binary.BigEndian.PutUint16(out[hdrOffFlg:], flags)
	off := hdrLen
	for i, op := range m.Ops {
		c := opCode(op)
		out[off+tlvOffOp] = c
		out[off+tlvOffLen] = uint8(opSize(c))
		v := out[off+tlvHdrLen : off+tlvHdrLen+opSize(c)]
		if err := encodeOp(v, op); err != nil {
			return nil, fmt.Errorf("signal: op %d: %w", i, err)
		}
		off += tlvHdrLen + opSize(c)
	}
	return b, nil
}

func encodeOp(v []byte, op Op) error {
	switch o := op.(type) {
	case *Memorize:
		if o == nil {
			return errors.New("nil op")
		}
		return encodeOp(v, *o)
	case *Forget:
		if o == nil {
			return errors.New("nil op")
		}
		return encodeOp(v, *o)
	case *Mirror:
		if o == nil {
			return errors.New("nil op")
		}
		return encodeOp(v, *o)
	case *Relate:
		if o == nil {
			return errors.New("nil op")
		}
		return encodeOp(v, *o)
	case *Age:
		if o == nil {
			return errors.New("nil op")
		}
		return encodeOp(v, *o)
	case Memorize:
		if err := putKey(v[memorizeOffKey:], o.Key); err != nil {
			return err
		}
		binary.BigEndian.PutUint16(v[memorizeOffTM:], wireTM(o.TM, o.tmZero))
		var fl uint16
		if o.Mirror {
			fl |= memorizeFlagMirror
		}
		binary.BigEndian.PutUint16(v[memorizeOffFlags:], fl)
		s, err := seconds(o.Timeout, MaxMemorizeTimeout)
		if err != nil {
			return err
		}
		binary.BigEndian.PutUint32(v[memorizeOffTimeout:], s)
	case Forget:
		return putKey(v[keyOpOffKey:], o.Key)
	case Mirror:
		return putKey(v[keyOpOffKey:], o.Key)
	case Relate:
		if err := putKey(v[relateOffParent:], o.Parent); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		if err := putKey(v[relateOffSecond:], o.Second); err != nil {
			return fmt.Errorf("second: %w", err)
		}
		v[relateOffMask] = uint8(o.Mask)
		binary.BigEndian.PutUint16(v[relateOffTM:], wireTM(o.TM, o.tmZero))
		s, err := seconds(o.Timeout, MaxTimeout)
		if err != nil {
			return err
		}
		binary.BigEndian.PutUint32(v[relateOffTimeout:], s)
	case Age:
		if err := putKey(v[ageOffKey:], o.Key); err != nil {
			return err
		}
		s, err := seconds(o.Timeout, MaxTimeout)
		if err != nil {
			return err
		}
		binary.BigEndian.PutUint32(v[ageOffTimeout:], s)
	default:
		return errors.New("unknown op type")
	}
	return nil
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

func putKey(v []byte, k Key) error {
	src, dst := k.Src.Unmap().WithZone(""), k.Dst.Unmap().WithZone("")
	var fam uint8
	switch {
	case src.IsValid() && dst.IsValid() && src.Is4() != dst.Is4():
		return fmt.Errorf("key mixes address families (%v, %v)", k.Src, k.Dst)
	case src.IsValid():
		fam = famOf(src)
	case dst.IsValid():
		fam = famOf(dst)
	default:
		return errors.New("key has no address (set Src or Dst, unspecified for a wildcard)")
	}
	if src.IsValid() {
		putAddr(v[keyOffSrc:keyOffSrc+16], src)
	}
	if dst.IsValid() {
		putAddr(v[keyOffDst:keyOffDst+16], dst)
	}
	binary.BigEndian.PutUint16(v[keyOffSport:], k.SrcPort)
	binary.BigEndian.PutUint16(v[keyOffDport:], k.DstPort)
	binary.BigEndian.PutUint16(v[keyOffVLAN:], k.VLAN)
	v[keyOffProto] = k.Proto
	v[keyOffFamily] = fam
	return nil
}

func famOf(a netip.Addr) uint8 {
	if a.Is4() {
		return famINET
	}
	return famINET6
}

func putAddr(v []byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		copy(v, b[:])
		return
	}
	b := a.As16()
	copy(v, b[:])
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

func unmarshal(b []byte) (m Message, flags uint16, rest []byte, err error) {
	if len(b) < hdrLen {
		return Message{}, 0, nil, refuse(ReasonTruncated, len(b))
	}
	if b[hdrOffVer] != Version {
		return Message{}, 0, nil, refuse(ReasonVersion, hdrOffVer)
	}
	count := int(b[hdrOffCnt])
	if count < 1 || count > MaxOps {
		return Message{}, 0, nil, refuse(ReasonCount, hdrOffCnt)
	}
	length := int(binary.BigEndian.Uint16(b[hdrOffLen:]))
	flags = binary.BigEndian.Uint16(b[hdrOffFlg:])
	if flags&^flagShim != 0 {
		return Message{}, 0, nil, refuse(ReasonReserved, hdrOffFlg)
	}
	if binary.BigEndian.Uint16(b[hdrOffRsv:]) != 0 {
		return Message{}, 0, nil, refuse(ReasonReserved, hdrOffRsv)
	}
	if len(b) < hdrLen+length {
		return Message{}, 0, nil, refuse(ReasonTruncated, len(b))
	}
	end := hdrLen + length
	off := hdrLen
	ops := make([]Op, 0, count)
	for i := 0; i < count; i++ {
		if off+tlvHdrLen > end {
			return Message{}, 0, nil, refuse(ReasonBadLength, hdrOffLen)
		}
		code, l := b[off+tlvOffOp], int(b[off+tlvOffLen])
		size := opSize(code)
		if size < 0 {
			return Message{}, 0, nil, refuse(ReasonUnknownOp, off+tlvOffOp)
		}
		if l != size {
			return Message{}, 0, nil, refuse(ReasonBadLength, off+tlvOffLen)
		}
		vo := off + tlvHdrLen
		if vo+size > end {
			return Message{}, 0, nil, refuse(ReasonBadLength, hdrOffLen)
		}
		op, err := decodeOp(code, b[vo:vo+size], vo)
		if err != nil {
			return Message{}, 0, nil, err
		}
		ops = append(ops, op)
		off = vo + size
	}
	if off != end {
		return Message{}, 0, nil, refuse(ReasonBadLength, hdrOffLen)
	}
	return Message{Ops: ops}, flags, b[end:], nil
}

func decodeOp(code uint8, v []byte, base int) (Op, error) {
	switch code {
	case opMemorize:
		k, err := getKey(v[memorizeOffKey:], base+memorizeOffKey)
		if err != nil {
			return nil, err
		}
		fl := binary.BigEndian.Uint16(v[memorizeOffFlags:])
		if fl&^memorizeFlagMirror != 0 {
			return nil, refuse(ReasonReserved, base+memorizeOffFlags)
		}
		tm := binary.BigEndian.Uint16(v[memorizeOffTM:])
		to := time.Duration(binary.BigEndian.Uint32(v[memorizeOffTimeout:])) * time.Second
		if to > MaxMemorizeTimeout {
			return nil, refuse(ReasonBadTimeout, base+memorizeOffTimeout)
		}
		return Memorize{
			Key:     k,
			TM:      tm,
			tmZero:  tm == 0,
			Mirror:  fl&memorizeFlagMirror != 0,
			Timeout: to,
		}, nil
	case opForget, opMirror:
		k, err := getKey(v[keyOpOffKey:], base+keyOpOffKey)
		if err != nil {
			return nil, err
		}
		if code == opForget {
			return Forget{Key: k}, nil
		}
		return Mirror{Key: k}, nil
	case opRelate:
		p, err := getKey(v[relateOffParent:], base+relateOffParent)
		if err != nil {
			return nil, err
		}
		s, err := getKey(v[relateOffSecond:], base+relateOffSecond)
		if err != nil {
			return nil, err
		}
		if v[relateOffPad] != 0 {
			return nil, refuse(ReasonReserved, base+relateOffPad)
		}
		tm := binary.BigEndian.Uint16(v[relateOffTM:])
		return Relate{
			Parent:  p,
			Second:  s,
			Mask:    Field(v[relateOffMask]),
			TM:      tm,
			tmZero:  tm == 0,
			Timeout: time.Duration(binary.BigEndian.Uint32(v[relateOffTimeout:])) * time.Second,
		}, nil
	case opAge:
		k, err := getKey(v[ageOffKey:], base+ageOffKey)
		if err != nil {
			return nil, err
		}
		return Age{Key: k, Timeout: time.Duration(binary.BigEndian.Uint32(v[ageOffTimeout:])) * time.Second}, nil
	}
	return nil, refuse(ReasonUnknownOp, base-tlvHdrLen)
}

func getKey(v []byte, base int) (Key, error) {
	var k Key
	switch v[keyOffFamily] {
	case famINET:
		for i := 4; i < 16; i++ {
			if v[keyOffSrc+i] != 0 || v[keyOffDst+i] != 0 {
				return Key{}, refuse(ReasonBadKey, base+keyOffSrc)
			}
		}
		k.Src = netip.AddrFrom4([4]byte(v[keyOffSrc : keyOffSrc+4]))
		k.Dst = netip.AddrFrom4([4]byte(v[keyOffDst : keyOffDst+4]))
	case famINET6:
		k.Src = netip.AddrFrom16([16]byte(v[keyOffSrc : keyOffSrc+16]))
		k.Dst = netip.AddrFrom16([16]byte(v[keyOffDst : keyOffDst+16]))
		if k.Src.Is4In6() {
			return Key{}, refuse(ReasonBadKey, base+keyOffSrc)
		}
		if k.Dst.Is4In6() {
			return Key{}, refuse(ReasonBadKey, base+keyOffDst)
		}
	default:
		return Key{}, refuse(ReasonBadKey, base+keyOffFamily)
	}
	k.SrcPort = binary.BigEndian.Uint16(v[keyOffSport:])
	k.DstPort = binary.BigEndian.Uint16(v[keyOffDport:])
	k.VLAN = binary.BigEndian.Uint16(v[keyOffVLAN:])
	k.Proto = v[keyOffProto]
	return k, nil
}
