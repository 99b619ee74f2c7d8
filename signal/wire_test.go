package signal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// Offsets of fields only the tests look at.
const (
	memorizeOffTM = int(unsafe.Offsetof(wireMemorize{}.TM))
	relateOffTM   = int(unsafe.Offsetof(wireRelate{}.TM))
	ageOffTimeout = int(unsafe.Offsetof(wireAge{}.Timeout))
)

var (
	k4 = Key{
		Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.1"),
		SrcPort: 40000, DstPort: 80, Proto: 6,
	}
	k6 = Key{
		Src: netip.MustParseAddr("2001:db8::10"), Dst: netip.MustParseAddr("2001:db8:1::1"),
		SrcPort: 5353, DstPort: 53, Proto: 17, VLAN: 42,
	}
	dstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	srcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

func mustMarshal(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatalf("Marshal(%+v): %v", m, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	wild := Key{Src: netip.IPv6Unspecified(), Dst: netip.IPv6Unspecified(), DstPort: 2121, Proto: 6}
	cases := map[string]Op{
		"memorize4":        Memorize{Key: k4, TM: Self, Timeout: 30 * time.Second},
		"memorize6-mirror": Memorize{Key: k6, TM: 7, Mirror: true, Timeout: MaxMemorizeTimeout},
		"forget4":          Forget{Key: k4},
		"forget6":          Forget{Key: k6},
		"mirror4":          Mirror{Key: k4},
		"mirror6":          Mirror{Key: k6},
		"relate4":          Relate{Parent: k4, Second: Key{Src: k4.Src, Dst: k4.Dst, Proto: 6}, Mask: FieldSrc | FieldDst | FieldProto, TM: Self, Timeout: time.Minute},
		"relate6-wild":     Relate{Parent: k6, Second: wild, Mask: FieldDstPort | FieldProto, TM: 3},
		"age4":             Age{Key: k4, Timeout: 0},
		"age6":             Age{Key: k6, Timeout: MaxTimeout},
		"vlan":             Forget{Key: Key{Src: k4.Src, Dst: k4.Dst, VLAN: 4095}},
	}
	for name, op := range cases {
		t.Run(name, func(t *testing.T) {
			m := Message{Ops: []Op{op}}
			b := mustMarshal(t, m)
			got, rest, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if len(rest) != 0 {
				t.Errorf("rest = %x", rest)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("got  %+v\nwant %+v", got, m)
			}
			if b2 := mustMarshal(t, got); !bytes.Equal(b, b2) {
				t.Errorf("re-marshal differs:\n%x\n%x", b, b2)
			}
		})
	}
	// All of them in one message (8 is the maximum).
	var all []Op
	for _, name := range []string{"memorize4", "memorize6-mirror", "forget6", "mirror4", "relate4", "relate6-wild", "age4", "age6"} {
		all = append(all, cases[name])
	}
	m := Message{Ops: all}
	got, _, err := Unmarshal(mustMarshal(t, m))
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("8 ops: %v\n%+v", err, got)
	}
}

func TestZeroTMIsSelf(t *testing.T) {
	b := mustMarshal(t, Message{Ops: []Op{Memorize{Key: k4}, Relate{Parent: k4, Second: k4, Mask: FieldAll}}})
	if tm := binary.BigEndian.Uint16(b[hdrLen+tlvHdrLen+memorizeOffTM:]); tm != 0xffff {
		t.Errorf("memorize tm = %#x", tm)
	}
	ro := hdrLen + tlvHdrLen + memorizeLen + tlvHdrLen
	if tm := binary.BigEndian.Uint16(b[ro+relateOffTM:]); tm != 0xffff {
		t.Errorf("relate tm = %#x", tm)
	}
	m, _, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if tm := m.Ops[0].(Memorize).TM; tm != Self {
		t.Errorf("decoded tm = %#x, want Self", tm)
	}
	// A wire tm of 0 (index 0 named explicitly) decodes as 0 and re-encodes as 0.
	binary.BigEndian.PutUint16(b[hdrLen+tlvHdrLen+memorizeOffTM:], 0)
	m, _, err = Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if tm := m.Ops[0].(Memorize).TM; tm != 0 {
		t.Errorf("decoded tm = %#x, want 0", tm)
	}
	if b2 := mustMarshal(t, m); !bytes.Equal(b, b2) {
		t.Errorf("re-marshal differs:\n%x\n%x", b, b2)
	}
}

func TestPointerOps(t *testing.T) {
	a := mustMarshal(t, Message{Ops: []Op{&Memorize{Key: k4}, &Forget{Key: k4}, &Mirror{Key: k4}, &Relate{Parent: k4, Second: k4, Mask: FieldAll}, &Age{Key: k4}}})
	b := mustMarshal(t, Message{Ops: []Op{Memorize{Key: k4}, Forget{Key: k4}, Mirror{Key: k4}, Relate{Parent: k4, Second: k4, Mask: FieldAll}, Age{Key: k4}}})
	if !bytes.Equal(a, b) {
		t.Error("pointer and value ops encode differently")
	}
	if _, err := (Message{Ops: []Op{(*Forget)(nil)}}).Marshal(); err == nil {
		t.Error("nil op accepted")
	}
}

func TestMappedAndTimeouts(t *testing.T) {
	mapped := Key{Src: netip.MustParseAddr("::ffff:192.0.2.10"), Dst: netip.MustParseAddr("::ffff:198.51.100.1"), SrcPort: 40000, DstPort: 80, Proto: 6}
	if a, b := mustMarshal(t, Message{Ops: []Op{Forget{Key: mapped}}}), mustMarshal(t, Message{Ops: []Op{Forget{Key: k4}}}); !bytes.Equal(a, b) {
		t.Error("IPv4-mapped key does not encode as IPv4")
	}
	b := mustMarshal(t, Message{Ops: []Op{Age{Key: k4, Timeout: 1500 * time.Millisecond}}})
	if s := binary.BigEndian.Uint32(b[hdrLen+tlvHdrLen+ageOffTimeout:]); s != 2 {
		t.Errorf("1.5 s encodes as %d s, want 2", s)
	}
	bad := []Message{
		{},
		{Ops: make([]Op, MaxOps+1)},
		{Ops: []Op{nil}},
		{Ops: []Op{Forget{}}},
		{Ops: []Op{Forget{Key: Key{Src: k4.Src, Dst: k6.Dst}}}},
		{Ops: []Op{Memorize{Key: k4, Timeout: MaxMemorizeTimeout + time.Second}}},
		{Ops: []Op{Age{Key: k4, Timeout: -time.Second}}},
	}
	for i := range bad[1].Ops {
		bad[1].Ops[i] = Forget{Key: k4}
	}
	for i, m := range bad {
		if _, err := m.Marshal(); err == nil {
			t.Errorf("bad message %d: Marshal accepted %+v", i, m)
		}
	}
}

// refusal builds a valid message, breaks it with fn and checks the reason.
func TestRefusals(t *testing.T) {
	base := func() []byte {
		return mustMarshal(t, Message{Ops: []Op{Memorize{Key: k4}, Relate{Parent: k6, Second: k6, Mask: FieldAll}}})
	}
	mo := hdrLen + tlvHdrLen // memorize value
	rt := mo + memorizeLen   // relate TLV header
	ro := rt + tlvHdrLen     // relate value
	cases := []struct {
		name, reason string
		off          int
		fn           func(b []byte) []byte
	}{
		{"empty", ReasonTruncated, 0, func(b []byte) []byte { return nil }},
		{"short header", ReasonTruncated, 7, func(b []byte) []byte { return b[:7] }},
		{"version 0", ReasonVersion, 0, func(b []byte) []byte { b[0] = 0; return b }},
		{"version 2", ReasonVersion, 0, func(b []byte) []byte { b[0] = 2; return b }},
		{"count 0", ReasonCount, 1, func(b []byte) []byte { b[1] = 0; return b }},
		{"count 9", ReasonCount, 1, func(b []byte) []byte { b[1] = 9; return b }},
		{"header flag", ReasonReserved, 4, func(b []byte) []byte { b[5] = 2; return b }},
		{"header reserved", ReasonReserved, 6, func(b []byte) []byte { b[7] = 1; return b }},
		{"cut TLVs", ReasonTruncated, 100, func(b []byte) []byte { return b[:100] }},
		{"length too long", ReasonTruncated, len(base()), func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(len(b))); return b }},
		{"length too short", ReasonBadLength, 2, func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(len(b)-hdrLen-1)); return b }},
		{"length leaves bytes", ReasonBadLength, 2, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)-hdrLen+2))
			return append(b, 0, 0)
		}},
		{"count too high", ReasonBadLength, 2, func(b []byte) []byte { b[1] = 3; return b }},
		{"count too low", ReasonBadLength, 2, func(b []byte) []byte { b[1] = 1; return b }},
		{"unknown op 0", ReasonUnknownOp, hdrLen, func(b []byte) []byte { b[hdrLen] = 0; return b }},
		{"unknown op 6", ReasonUnknownOp, rt, func(b []byte) []byte { b[rt] = 6; return b }},
		{"tlv len", ReasonBadLength, hdrLen + 1, func(b []byte) []byte { b[hdrLen+1] = byte(keyOpLen); return b }},
		{"op swapped", ReasonBadLength, hdrLen + 1, func(b []byte) []byte { b[hdrLen] = opForget; return b }},
		{"family 0", ReasonBadKey, mo + keyOffFamily, func(b []byte) []byte { b[mo+keyOffFamily] = 0; return b }},
		{"family 5", ReasonBadKey, ro + relateOffSecond + keyOffFamily, func(b []byte) []byte { b[ro+relateOffSecond+keyOffFamily] = 5; return b }},
		{"ipv4 tail", ReasonBadKey, mo, func(b []byte) []byte { b[mo+keyOffDst+15] = 1; return b }},
		{"ipv6 mapped", ReasonBadKey, ro + keyOffSrc, func(b []byte) []byte {
			copy(b[ro+keyOffSrc:], netip.MustParseAddr("::ffff:1.2.3.4").AsSlice())
			return b
		}},
		{"memorize flags", ReasonReserved, mo + memorizeOffFlags, func(b []byte) []byte { b[mo+memorizeOffFlags+1] = 2; return b }},
		{"memorize timeout", ReasonBadTimeout, mo + memorizeOffTimeout, func(b []byte) []byte { binary.BigEndian.PutUint32(b[mo+memorizeOffTimeout:], 65536); return b }},
		{"relate pad", ReasonReserved, ro + relateOffPad, func(b []byte) []byte { b[ro+relateOffPad] = 1; return b }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.fn(base())
			_, _, err := Unmarshal(b)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Reason != c.reason || e.Offset != c.off {
				t.Errorf("got %s at %d, want %s at %d", e.Reason, e.Offset, c.reason, c.off)
			}
			if !errors.Is(err, &Error{Reason: c.reason}) || ReasonOf(err) != c.reason {
				t.Error("errors.Is / ReasonOf do not match the reason")
			}
		})
	}
}

// TestLayout checks the encoding byte by byte against the C layout of
// bpf/switchyard.h, written out by hand.
func TestLayout(t *testing.T) {
	m := Message{Ops: []Op{Memorize{Key: k4, Mirror: true, Timeout: 300 * time.Second}}}
	f, err := Frame(dstMAC, srcMAC, m)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"020000000001", "020000000002", "88b5", // Ethernet
		"01", "01", "0032", "0000", "0000", // sy_sig_hdr: version 1, count 1, length 50, flags 0, reserved
		"01", "30", // sy_tlv: MEMORIZE, 48
		"c000020a000000000000000000000000", // src 192.0.2.10
		"c6336401000000000000000000000000", // dst 198.51.100.1
		"9c40", "0050", "0000", "06", "04", // sport 40000, dport 80, vlan 0, proto 6, family 4
		"ffff", "0001", "0000012c", // tm self, flags mirror, timeout 300
	}, "")
	if got := hex.EncodeToString(f); got != want {
		t.Errorf("MEMORIZE frame\n got %s\nwant %s", got, want)
	}
	if len(f) != 14+8+2+48 {
		t.Errorf("frame length %d", len(f))
	}

	m = Message{Ops: []Op{
		Forget{Key: k6},
		Mirror{Key: k6},
		Relate{Parent: k6, Second: Key{Src: netip.IPv6Unspecified(), DstPort: 2020, Proto: 6}, Mask: FieldDstPort | FieldProto, TM: 9, Timeout: 61 * time.Second},
		Age{Key: k4, Timeout: 10 * time.Second},
	}}
	b := mustMarshal(t, m)
	key6 := "20010db8000000000000000000000010" + "20010db8000100000000000000000001" + "14e9" + "0035" + "002a" + "11" + "06"
	key4 := "c000020a000000000000000000000000" + "c6336401000000000000000000000000" + "9c40" + "0050" + "0000" + "06" + "04"
	second := strings.Repeat("00", 32) + "0000" + "07e4" + "0000" + "06" + "06"
	want = strings.Join([]string{
		"01", "04", "00dc", "0000", "0000", // 2+40 + 2+40 + 2+88 + 2+44 = 220
		"02", "28", key6,
		"03", "28", key6,
		"04", "58", key6, second, "22", "00", "0009", "0000003d",
		"05", "2c", key4, "0000000a",
	}, "")
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("FORGET/MIRROR/RELATE/AGE\n got %s\nwant %s", got, want)
	}
}

func TestShim(t *testing.T) {
	orig, _ := hex.DecodeString("020000000001020000000002" + "0800" + "4500001c")
	m := Message{Ops: []Op{Memorize{Key: k4}}}
	s, err := Shim(orig, m)
	if err != nil {
		t.Fatal(err)
	}
	msg := mustMarshal(t, m)
	want := append([]byte{}, orig[:12]...)
	want = append(want, 0x88, 0xb5)
	want = append(want, msg[:4]...)
	want = append(want, 0x00, 0x01) // flags: SHIM
	want = append(want, msg[6:]...)
	want = append(want, orig[12:]...)
	if !bytes.Equal(s, want) {
		t.Errorf("shim\n got %x\nwant %x", s, want)
	}
	got, back, err := Unshim(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, orig) || !reflect.DeepEqual(got.Ops, []Op{Memorize{Key: k4, TM: Self}}) {
		t.Errorf("Unshim: %+v %x", got, back)
	}
	// Unmarshal of the shim message returns the original EtherType and payload.
	_, rest, err := Unmarshal(s[14:])
	if err != nil || !bytes.Equal(rest, orig[12:]) {
		t.Errorf("Unmarshal of shim: %v rest %x", err, rest)
	}

	if _, err := Shim(orig[:13], m); err == nil {
		t.Error("Shim accepted a 13-byte frame")
	}
	if _, err := Shim(orig[:14], m); err != nil {
		t.Errorf("Shim refused a 14-byte frame: %v", err)
	}
	frame, _ := Frame(dstMAC, srcMAC, m)
	for _, c := range []struct {
		name, reason string
		b            []byte
	}{
		{"short", ReasonTruncated, orig[:13]},
		{"not signal", ReasonNotSignal, orig},
		{"not shim", ReasonNotShim, frame},
		{"no ethertype", ReasonTruncated, s[:len(s)-len(orig)+12+1]},
		{"bad version", ReasonVersion, append(append([]byte{}, s[:14]...), append([]byte{9}, s[15:]...)...)},
	} {
		if _, _, err := Unshim(c.b); ReasonOf(err) != c.reason {
			t.Errorf("%s: err %v, want %s", c.name, err, c.reason)
		}
	}
	if _, _, err := Unshim(append(append([]byte{}, s[:14]...), append([]byte{9}, s[15:]...)...)); err.(*Error).Offset != 14 {
		t.Errorf("Unshim offset not relative to the frame: %v", err)
	}
}

func TestReplayWindow(t *testing.T) {
	var w ReplayWindow
	steps := []struct {
		seq uint64
		ok  bool
	}{
		{1000, true}, {1000, false}, {999, true}, {999, false}, {1001, true},
		{1001 - 63, true}, {1001 - 64, false}, {1001 - 63, false},
		{1100, true}, {1099, true}, {1100 - 63, true}, {1100 - 64, false}, {1001, false},
		{1100 + 64, true}, {1100, false}, {1100 + 1, true}, {1100 + 1, false},
		{1 << 63, true}, {1<<63 - 1, true}, {1100, false}, {1<<64 - 1, true}, {1<<63 + 5, false},
	}
	for i, s := range steps {
		if got := w.Accept(s.seq); got != s.ok {
			t.Errorf("step %d: Accept(%d) = %v, want %v", i, s.seq, got, s.ok)
		}
	}
	var z ReplayWindow
	if !z.Accept(0) || z.Accept(0) || !z.Accept(1) {
		t.Error("window from 0")
	}
}

// TestReplayWindowAt: a window restored at a highest number refuses it and
// everything below, accepts what is above, and reports its highest.
func TestReplayWindowAt(t *testing.T) {
	w := NewReplayWindowAt(1000)
	if h, ok := w.Highest(); h != 1000 || !ok {
		t.Fatalf("Highest() = %d, %v", h, ok)
	}
	for _, s := range []uint64{1000, 999, 1000 - 63, 1000 - 64, 0} {
		if w.Accept(s) {
			t.Errorf("restored window accepted %d", s)
		}
	}
	if !w.Accept(1001) || w.Accept(1001) || !w.Accept(1003) || !w.Accept(1002) {
		t.Error("restored window refused numbers above its highest")
	}
	var z ReplayWindow
	if _, ok := z.Highest(); ok {
		t.Error("a fresh window has a highest number")
	}
}

func TestReplayWindowConcurrent(t *testing.T) {
	var w ReplayWindow
	const n = 8
	accepted := make(chan int, n)
	for g := 0; g < n; g++ {
		go func() {
			c := 0
			for s := uint64(1); s <= 5000; s++ {
				if w.Accept(s) {
					c++
				}
			}
			accepted <- c
		}()
	}
	total := 0
	for g := 0; g < n; g++ {
		total += <-accepted
	}
	if total > 5000 {
		t.Errorf("accepted %d sequence numbers out of 5000", total)
	}
}

func TestUDP(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	keys := map[string][]byte{"tm-a": key, "tm-b": other, "tm-empty": {}}
	keyFor := func(id string) ([]byte, bool) { k, ok := keys[id]; return k, ok }
	m := Message{Ops: []Op{Memorize{Key: k6, TM: Self, Mirror: true}, Age{Key: k4, Timeout: time.Second}}}
	b, err := SealUDP("tm-a", key, 1234567890123, m)
	if err != nil {
		t.Fatal(err)
	}
	msg := mustMarshal(t, m)
	if string(b[:4]) != "SYSG" || b[4] != 1 || b[5] != 4 || string(b[6:10]) != "tm-a" ||
		binary.BigEndian.Uint64(b[10:]) != 1234567890123 || !bytes.Equal(b[18:len(b)-32], msg) || len(b) != 18+len(msg)+32 {
		t.Errorf("datagram layout: %x", b)
	}
	id, seq, got, err := OpenUDP(b, keyFor)
	if err != nil || id != "tm-a" || seq != 1234567890123 || !reflect.DeepEqual(got, m) {
		t.Fatalf("OpenUDP = %q %d %+v %v", id, seq, got, err)
	}

	check := func(name string, b []byte, keyFor func(string) ([]byte, bool), reason string) {
		t.Helper()
		if _, _, _, err := OpenUDP(b, keyFor); ReasonOf(err) != reason {
			t.Errorf("%s: err %v, want %s", name, err, reason)
		}
	}
	wrong, _ := SealUDP("tm-a", other, 1, m)
	check("wrong key", wrong, keyFor, ReasonAuth)
	unknown, _ := SealUDP("tm-z", key, 1, m)
	check("unknown TM", unknown, keyFor, ReasonUnknownTM)
	empty, _ := SealUDP("tm-empty", key, 1, m)
	check("empty key", empty, keyFor, ReasonAuth)
	for i := range b {
		tb := append([]byte{}, b...)
		tb[i] ^= 0x01
		if _, _, _, err := OpenUDP(tb, keyFor); err == nil {
			t.Errorf("tampered byte %d accepted", i)
		}
	}
	check("truncated", b[:len(b)-1], keyFor, ReasonAuth)
	check("short", b[:20], keyFor, ReasonTruncated)
	tb := append([]byte{}, b...)
	tb[0] = 'X'
	check("magic", tb, keyFor, ReasonMagic)
	tb = append([]byte{}, b...)
	tb[4] = 2
	check("version", tb, keyFor, ReasonVersion)
	tb = append([]byte{}, b...)
	tb[5] = 0
	check("id 0", tb, keyFor, ReasonBadID)

	// A correctly signed datagram with a broken message is refused after the
	// HMAC, with the message's reason and an offset in the datagram.
	sign := func(body []byte, k []byte) []byte {
		d, _ := SealUDP("tm-a", k, 7, m)
		d = append(d[:18], body...)
		return sealRaw(d, k)
	}
	bad := append([]byte{}, msg...)
	bad[1] = 0
	check("signed bad count", sign(bad, key), keyFor, ReasonCount)
	if _, _, _, err := OpenUDP(sign(bad, key), keyFor); err.(*Error).Offset != 18+1 {
		t.Errorf("offset %v", err)
	}
	shim := append([]byte{}, msg...)
	shim[5] = 1
	check("signed shim", sign(shim, key), keyFor, ReasonNotShim)
	check("signed trailing", sign(append(append([]byte{}, msg...), 0), key), keyFor, ReasonBadLength)

	if _, err := SealUDP("", key, 1, m); err == nil {
		t.Error("empty id accepted")
	}
	if _, err := SealUDP(strings.Repeat("x", 33), key, 1, m); err == nil {
		t.Error("33-byte id accepted")
	}
	if _, err := SealUDP("tm-a", key[:15], 1, m); err == nil {
		t.Error("15-byte key accepted")
	}
}

func TestUDPSender(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	key := []byte("0123456789abcdef")
	s, err := NewUDPSender(pc.LocalAddr().(*net.UDPAddr).AddrPort(), "tm1", key)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := uint64(time.Now().UnixNano())
	m := Message{Ops: []Op{Forget{Key: k4}}}
	var w ReplayWindow
	var last uint64
	for i := 0; i < 3; i++ {
		if err := s.Send(m); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		id, seq, got, err := OpenUDP(buf[:n], func(string) ([]byte, bool) { return key, true })
		if err != nil || id != "tm1" || !reflect.DeepEqual(got, m) {
			t.Fatalf("%q %+v %v", id, got, err)
		}
		if i == 0 && seq+uint64(time.Second) < before {
			t.Errorf("first seq %d is not about the current time %d", seq, before)
		}
		if i > 0 && seq != last+1 {
			t.Errorf("seq %d after %d", seq, last)
		}
		if !w.Accept(seq) {
			t.Errorf("window refused %d", seq)
		}
		last = seq
	}
}

// sealRaw appends the HMAC to an unsigned datagram.
func sealRaw(d, key []byte) []byte {
	return appendHMAC(d, key)
}

// goldenMessages are encoded by TestGolden; their bytes were captured from
// the hand-written offset encoding before it was replaced by the wire
// structs, so any change to the bytes on the wire fails the test.
func goldenMessages() []struct {
	name string
	m    Message
} {
	wild4 := Key{Dst: netip.MustParseAddr("198.51.100.1"), DstPort: 21, Proto: 6}
	wild6 := Key{Src: netip.IPv6Unspecified(), Dst: netip.IPv6Unspecified(), DstPort: 2121, Proto: 6}
	mapped := Key{Src: netip.MustParseAddr("::ffff:192.0.2.10"), Dst: netip.MustParseAddr("::ffff:198.51.100.1"), SrcPort: 1, DstPort: 65535, Proto: 17, VLAN: 4095}
	zoned := Key{Src: netip.MustParseAddr("fe80::1%eth0"), Dst: netip.MustParseAddr("fe80::2"), SrcPort: 546, DstPort: 547, Proto: 17}
	return []struct {
		name string
		m    Message
	}{
		{"memorize4-self", Message{Ops: []Op{Memorize{Key: k4}}}},
		{"memorize6-mirror", Message{Ops: []Op{Memorize{Key: k6, TM: 7, Mirror: true, Timeout: MaxMemorizeTimeout}}}},
		{"memorize-tm0", Message{Ops: []Op{Memorize{Key: k4, tmZero: true, Timeout: 1500 * time.Millisecond}}}},
		{"memorize-self-explicit", Message{Ops: []Op{&Memorize{Key: zoned, TM: Self, Timeout: time.Nanosecond}}}},
		{"forget4", Message{Ops: []Op{Forget{Key: k4}}}},
		{"forget6", Message{Ops: []Op{&Forget{Key: k6}}}},
		{"mirror-mapped", Message{Ops: []Op{Mirror{Key: mapped}}}},
		{"mirror6", Message{Ops: []Op{&Mirror{Key: k6}}}},
		{"relate4-wild", Message{Ops: []Op{Relate{Parent: k4, Second: wild4, Mask: FieldDst | FieldDstPort | FieldProto, Timeout: time.Minute}}}},
		{"relate6", Message{Ops: []Op{&Relate{Parent: k6, Second: wild6, Mask: FieldDstPort | FieldProto, TM: 3, Timeout: MaxTimeout}}}},
		{"relate-tm0", Message{Ops: []Op{Relate{Parent: k4, Second: k4, Mask: FieldAll, tmZero: true}}}},
		{"age4-now", Message{Ops: []Op{Age{Key: k4}}}},
		{"age6-max", Message{Ops: []Op{&Age{Key: k6, Timeout: MaxTimeout}}}},
		{"eight", Message{Ops: []Op{
			Memorize{Key: k4, Timeout: 30 * time.Second}, Forget{Key: k6}, Mirror{Key: k4},
			Relate{Parent: k6, Second: wild6, Mask: FieldDstPort, TM: 1}, Age{Key: k4, Timeout: 10 * time.Second},
			Memorize{Key: mapped, TM: 255, Mirror: true}, Forget{Key: zoned}, Age{Key: k6, Timeout: 3 * time.Second},
		}}},
	}
}

// goldenHex is the encoding of goldenMessages by the hand-written offset
// code this package used before the wire structs (captured from it).
var goldenHex = map[string]string{
	"memorize4-self":         "01010032000000000130c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604ffff000000000000",
	"memorize6-mirror":       "0101003200000000013020010db800000000000000000000001020010db800010000000000000000000114e90035002a1106000700010000ffff",
	"memorize-tm0":           "01010032000000000130c000020a000000000000000000000000c63364010000000000000000000000009c400050000006040000000000000002",
	"memorize-self-explicit": "01010032000000000130fe800000000000000000000000000001fe8000000000000000000000000000020222022300001106ffff000000000001",
	"forget4":                "0101002a000000000228c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604",
	"forget6":                "0101002a00000000022820010db800000000000000000000001020010db800010000000000000000000114e90035002a1106",
	"mirror-mapped":          "0101002a000000000328c000020a000000000000000000000000c63364010000000000000000000000000001ffff0fff1104",
	"mirror6":                "0101002a00000000032820010db800000000000000000000001020010db800010000000000000000000114e90035002a1106",
	"relate4-wild":           "0101005a000000000458c000020a000000000000000000000000c63364010000000000000000000000009c4000500000060400000000000000000000000000000000c633640100000000000000000000000000000015000006042a00ffff0000003c",
	"relate6":                "0101005a00000000045820010db800000000000000000000001020010db800010000000000000000000114e90035002a11060000000000000000000000000000000000000000000000000000000000000000000008490000060622000003ffffffff",
	"relate-tm0":             "0101005a000000000458c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604c000020a000000000000000000000000c63364010000000000000000000000009c400050000006043f00000000000000",
	"age4-now":               "0101002e00000000052cc000020a000000000000000000000000c63364010000000000000000000000009c4000500000060400000000",
	"age6-max":               "0101002e00000000052c20010db800000000000000000000001020010db800010000000000000000000114e90035002a1106ffffffff",
	"eight":                  "01080198000000000130c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604ffff00000000001e022820010db800000000000000000000001020010db800010000000000000000000114e90035002a11060328c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604045820010db800000000000000000000001020010db800010000000000000000000114e90035002a1106000000000000000000000000000000000000000000000000000000000000000000000849000006062000000100000000052cc000020a000000000000000000000000c63364010000000000000000000000009c400050000006040000000a0130c000020a000000000000000000000000c63364010000000000000000000000000001ffff0fff110400ff0001000000000228fe800000000000000000000000000001fe8000000000000000000000000000020222022300001106052c20010db800000000000000000000001020010db800010000000000000000000114e90035002a110600000003",
}

// goldenUDP is SealUDP("tm-a", goldenUDPKey, 42, the "eight" message),
// captured likewise.
const goldenUDP = "535953470104746d2d61000000000000002a01080198000000000130c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604ffff00000000001e022820010db800000000000000000000001020010db800010000000000000000000114e90035002a11060328c000020a000000000000000000000000c63364010000000000000000000000009c40005000000604045820010db800000000000000000000001020010db800010000000000000000000114e90035002a1106000000000000000000000000000000000000000000000000000000000000000000000849000006062000000100000000052cc000020a000000000000000000000000c63364010000000000000000000000009c400050000006040000000a0130c000020a000000000000000000000000c63364010000000000000000000000000001ffff0fff110400ff0001000000000228fe800000000000000000000000000001fe8000000000000000000000000000020222022300001106052c20010db800000000000000000000001020010db800010000000000000000000114e90035002a1106000000031a08989e51b6bc4697268a829d9f2f2773d8637fa07f82518d7b7c57bf0740e0"

var goldenUDPKey = []byte("golden-key-0123456789abcdef-gold")

// TestGolden: every op, alone and eight in one message, in a message, a
// signal frame, a shim and a UDP datagram, encodes to the same bytes as the
// old offset encoding, and decodes back to a message with the same bytes.
func TestGolden(t *testing.T) {
	gs := goldenMessages()
	if len(gs) != len(goldenHex) {
		t.Fatalf("%d golden messages, %d golden encodings", len(gs), len(goldenHex))
	}
	for _, g := range gs {
		t.Run(g.name, func(t *testing.T) {
			want, err := hex.DecodeString(goldenHex[g.name])
			if err != nil || len(want) == 0 {
				t.Fatalf("no golden encoding: %v", err)
			}
			b := mustMarshal(t, g.m)
			if !bytes.Equal(b, want) {
				t.Fatalf("encoding changed\n got %x\nwant %x", b, want)
			}
			if n := g.m.Size(); n != len(want) {
				t.Errorf("Size() = %d, encoded %d bytes", n, len(want))
			}
			m, rest, err := Unmarshal(want)
			if err != nil || len(rest) != 0 {
				t.Fatalf("Unmarshal: %v, rest %x", err, rest)
			}
			if re := mustMarshal(t, m); !bytes.Equal(re, want) {
				t.Errorf("decoded message re-encodes differently\n got %x\nwant %x", re, want)
			}

			f, err := Frame(dstMAC, srcMAC, g.m)
			if err != nil {
				t.Fatal(err)
			}
			wantF := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x88, 0xb5)
			if wantF = append(wantF, want...); !bytes.Equal(f, wantF) {
				t.Errorf("Frame\n got %x\nwant %x", f, wantF)
			}

			orig, _ := hex.DecodeString("020000000001020000000002" + "0800" + "4500001c")
			s, err := Shim(orig, g.m)
			if err != nil {
				t.Fatal(err)
			}
			wantS := append(append([]byte{}, orig[:12]...), 0x88, 0xb5)
			wantS = append(wantS, want...)
			wantS[14+5] = 0x01 // the shim flag
			if wantS = append(wantS, orig[12:]...); !bytes.Equal(s, wantS) {
				t.Errorf("Shim\n got %x\nwant %x", s, wantS)
			}
		})
	}
	u, err := SealUDP("tm-a", goldenUDPKey, 42, gs[len(gs)-1].m)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(u); got != goldenUDP {
		t.Errorf("SealUDP\n got %s\nwant %s", got, goldenUDP)
	}
}

func BenchmarkMarshal(b *testing.B) {
	m := goldenMessages()[len(goldenMessages())-1].m
	buf := make([]byte, 0, m.Size())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.appendTo(buf[:0], 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	in, err := hex.DecodeString(goldenHex["eight"])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Unmarshal(in); err != nil {
			b.Fatal(err)
		}
	}
}
