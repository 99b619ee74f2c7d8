package mirror

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func sampleEntries() []Entry {
	k4 := flow.MakeKey(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.10"), 40000, 80, flow.ProtoTCP, 0)
	k6 := flow.MakeKey(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::10"), 5353, 443, flow.ProtoUDP, 4094)
	return []Entry{
		{Op: OpPut, Key: k4, Age: 7, Flow: datapath.Flow{Tm: 2, Svc: 1, Flags: datapath.FlowSelected, TcpState: datapath.TCPEstablished, Timeout: 30, SeqFwd: 1 << 31, SeqRev: 12345}},
		{Op: OpPut, Key: k6, Flow: datapath.Flow{Tm: 0, Svc: datapath.SvcNone, Flags: datapath.FlowLearned | datapath.FlowMemorized | datapath.FlowSecondKey, Mask: 3}},
		{Op: OpDelete, Key: k4},
	}
}

func TestRoundTrip(t *testing.T) {
	c, err := NewCodec(testKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Message{
		{Type: TypeUpdate, Sender: 7, Boot: 100, Seq: 101, Entries: sampleEntries()},
		{Type: TypeHeartbeat, Sender: 7, Boot: 100, Seq: 102, Arg: 102},
		{Type: TypeNack, Sender: 7, Boot: 100, Arg: 50, Count: 3},
		{Type: TypeResyncReq, Sender: 7, Boot: 100, Arg: 1 << 40},
	} {
		b, err := c.Append(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		if want := HeaderSize + len(m.Entries)*EntrySize + MACSize; len(b) != want {
			t.Fatalf("type %d: %d bytes, want %d", m.Type, len(b), want)
		}
		var got Message
		if err := c.Decode(b, &got); err != nil {
			t.Fatalf("type %d: %v", m.Type, err)
		}
		if got.Type != m.Type || got.Sender != m.Sender || got.Boot != m.Boot || got.Seq != m.Seq || got.Arg != m.Arg || got.Count != m.Count || len(got.Entries) != len(m.Entries) {
			t.Fatalf("got %+v, want %+v", got, m)
		}
		for i := range m.Entries {
			if got.Entries[i] != m.Entries[i] {
				t.Fatalf("entry %d: got %+v, want %+v", i, got.Entries[i], m.Entries[i])
			}
		}
	}
	full := Message{Type: TypeUpdate, Entries: make([]Entry, MaxEntries)}
	for i := range full.Entries {
		full.Entries[i] = sampleEntries()[0]
	}
	b, err := c.Append(nil, &full)
	if want := HeaderSize + MaxEntries*EntrySize + MACSize; err != nil || len(b) != want || len(b) > MaxDatagram || MaxDatagram > 1472 {
		t.Fatalf("a full datagram: %d bytes, %v; want %d ≤ %d ≤ 1472", len(b), err, want, MaxDatagram)
	}
	full.Entries = append(full.Entries, full.Entries[0])
	if _, err := c.Append(nil, &full); err == nil {
		t.Fatal("MaxEntries+1 entries encoded")
	}
}

// TestDecodeRefuses: every kind of bad datagram is refused with its error.
func TestDecodeRefuses(t *testing.T) {
	c, _ := NewCodec(testKey)
	other, _ := NewCodec([]byte("another key of 16+ bytes"))
	m := Message{Type: TypeUpdate, Sender: 1, Boot: 1, Seq: 2, Entries: sampleEntries()}
	good, _ := c.Append(nil, &m)
	forged, _ := other.Append(nil, &m)
	flip := bytes.Clone(good)
	flip[HeaderSize+3] ^= 1
	resign := func(mut func(b []byte)) []byte {
		b := bytes.Clone(good[:len(good)-MACSize])
		mut(b)
		c.mac.Reset()
		c.mac.Write(b)
		return c.mac.Sum(b)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"header only", good[:HeaderSize], ErrTruncated},
		{"cut in an entry", good[:len(good)-10], ErrAuth},
		{"other key", forged, ErrAuth},
		{"flipped bit", flip, ErrAuth},
		{"too long", append(bytes.Clone(good), make([]byte, MaxDatagram)...), ErrMalformed},
		{"version 2", resign(func(b []byte) { b[4] = 2 }), ErrVersion},
		{"magic", resign(func(b []byte) { b[0] = 'X' }), ErrMalformed},
		{"count too high", resign(func(b []byte) { b[7]++ }), ErrMalformed},
		{"type 9", resign(func(b []byte) { b[5] = 9 }), ErrMalformed},
		{"op 3", resign(func(b []byte) { b[HeaderSize+40] = 3 }), ErrMalformed},
		{"family 7", resign(func(b []byte) { b[HeaderSize+39] = 7 }), ErrMalformed},
		{"VLAN 4096", resign(func(b []byte) { b[HeaderSize+36], b[HeaderSize+37] = 0x10, 0 }), ErrMalformed},
		{"TM out of range", resign(func(b []byte) { b[HeaderSize+48] = 0xff }), ErrMalformed},
		{"heartbeat with entries", resign(func(b []byte) { b[5] = byte(TypeHeartbeat) }), ErrMalformed},
	} {
		var got Message
		if err := c.Decode(tc.b, &got); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := NewCodec([]byte("short")); err == nil {
		t.Error("a 5-byte key accepted")
	}
}

// FuzzDecode: no input panics, and what decodes encodes back to the same
// bytes (the decoder accepts only what the encoder makes).
func FuzzDecode(f *testing.F) {
	c, _ := NewCodec(testKey)
	for _, m := range []Message{
		{Type: TypeUpdate, Sender: 1, Boot: 1, Seq: 2, Entries: sampleEntries()},
		{Type: TypeHeartbeat, Sender: 1, Boot: 1, Seq: 3, Arg: 3},
		{Type: TypeNack, Sender: 1, Arg: 2, Count: 1},
		{Type: TypeSecond, Sender: 1, Boot: 1, Seq: 4, Seconds: sampleSeconds()},
		{Type: TypeHeartbeat, Sender: 1, Boot: 1, Seq: 5, Arg: 5, TMs: 0x01020304},
	} {
		b, _ := c.Append(nil, &m)
		f.Add(b)
		f.Add(b[:len(b)-MACSize]) // the fuzzer signs it (see below)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		_ = c.Decode(b, &m)
		// Signed with the right key, the structure checks get exercised.
		if len(b) > MaxDatagram {
			return
		}
		c.mac.Reset()
		c.mac.Write(b)
		signed := c.mac.Sum(bytes.Clone(b))
		if err := c.Decode(signed, &m); err != nil {
			return
		}
		again, err := c.Append(nil, &m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if !bytes.Equal(again, signed) {
			t.Fatalf("decode/encode changed the datagram:\n%x\n%x", signed, again)
		}
	})
}
