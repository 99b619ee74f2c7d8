// Package mirror is the peer protocol between distributors: each one sends
// the flow entries its data path makes and changes (from the flow events)
// to its peers over UDP, so that a peer can take over a dead distributor's
// traffic without breaking a connection.
//
// A datagram is a fixed header, up to MaxEntries fixed-size entries and an
// HMAC-SHA256 of everything before it, under a key all peers share. See
// docs/mirror.md for the layout, the sequence numbers, the replay window
// and the conflict rule.
package mirror

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Wire constants.
const (
	// Version is the protocol version a datagram carries; another is refused.
	Version = 1
	// HeaderSize is the fixed header's size in bytes.
	HeaderSize = 40
	// EntrySize is one entry's size in bytes.
	EntrySize = 64
	// MACSize is the HMAC-SHA256 trailer's size.
	MACSize = sha256.Size
	// MaxEntries bounds the entries of one datagram so that it fits a
	// 1500-byte MTU without fragmentation (IPv4 and UDP headers: 28 bytes).
	MaxEntries = (1472 - HeaderSize - MACSize) / EntrySize
	// MaxDatagram is the largest valid datagram (of flow entries or of
	// second-key entries, wire_second.go).
	MaxDatagram = HeaderSize + max(MaxEntries*EntrySize, MaxSecondEntries*SecondEntrySize) + MACSize
	// MinKeyLen is the shortest shared key accepted.
	MinKeyLen = 16
)

var magic = [4]byte{'S', 'Y', 'M', 'R'}

// Type is a datagram's kind.
type Type uint8

// Datagram kinds.
const (
	// TypeUpdate carries entries (puts and deletes).
	TypeUpdate Type = 1
	// TypeHeartbeat says the sender is alive; Arg is the highest sequence
	// number it has sent, so a receiver notices a lost last datagram.
	TypeHeartbeat Type = 2
	// TypeNack asks the sender to send again sequence numbers Arg to
	// Arg+Count-1 (Count in the header's count field, no entries).
	TypeNack Type = 3
	// TypeResyncReq asks the sender for its whole table; Arg: the lowest
	// sequence number the asker will accept (its replay floor), so the
	// sender continues above it.
	TypeResyncReq Type = 4
	// TypeResyncEnd ends a full resync; Arg is the resync's first sequence
	// number, so the receiver knows when it has all of it.
	TypeResyncEnd Type = 5
)

// Entry operations.
const (
	// OpPut installs or updates an entry.
	OpPut = 1
	// OpDelete removes an entry not used since.
	OpDelete = 2
)

// Entry is one flow entry on the wire. Age replaces the data path's
// last_seen: the peers' clocks are their daemons' own, so a time is sent as
// "seconds ago" and the receiver puts it back on its own clock.
type Entry struct {
	Op   uint8
	Key  datapath.FlowKey
	Flow datapath.Flow // Flow.LastSeen is not sent; Age is
	Age  uint32
}

// Message is one datagram, decoded.
type Message struct {
	Type   Type
	Sender uint32 // the sending distributor's id (peers.id)
	Boot   uint64 // the sender's first sequence number of its run: a change is a restart
	Seq    uint64 // this datagram's sequence number (heartbeats and NACKs too)
	Arg    uint64 // see Type
	Count  uint16 // TypeNack: how many
	// Entries of a TypeUpdate.
	Entries []Entry
	// Seconds are the second-key entries of a TypeSecond (wire_second.go).
	Seconds []SecondEntry
	// TMs is the digest of the sender's TM index list (header bytes 12–15;
	// 0: none; see TMDigest).
	TMs uint32
}

// Decode errors, counted by kind (errors.Is).
var (
	ErrTruncated = errors.New("truncated datagram")
	ErrMalformed = errors.New("malformed datagram")
	ErrVersion   = errors.New("unknown protocol version")
	ErrAuth      = errors.New("bad HMAC")
)

// Codec encodes and decodes datagrams under one shared key. Not safe for
// concurrent use (it keeps its HMAC state); make one per goroutine.
type Codec struct {
	mac hash.Hash
	sum [MACSize]byte
}

// NewCodec returns a codec for key (at least MinKeyLen bytes).
func NewCodec(key []byte) (*Codec, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("mirror key: %d bytes, want at least %d", len(key), MinKeyLen)
	}
	return &Codec{mac: hmac.New(sha256.New, key)}, nil
}

// Append appends m's datagram to b and returns it. More than MaxEntries
// entries, or entries on a message that carries none, is an error.
func (c *Codec) Append(b []byte, m *Message) ([]byte, error) {
	if len(m.Entries) > MaxEntries {
		return b, fmt.Errorf("encode: %d entries, at most %d", len(m.Entries), MaxEntries)
	}
	if m.Type != TypeUpdate && len(m.Entries) > 0 {
		return b, fmt.Errorf("encode: type %d carries no entries", m.Type)
	}
	if err := checkSeconds(m); err != nil {
		return b, err
	}
	start := len(b)
	count := uint16(len(m.Entries))
	switch m.Type {
	case TypeNack:
		count = m.Count
	case TypeSecond:
		count = uint16(len(m.Seconds))
	}
	b = append(b, magic[:]...)
	b = append(b, Version, byte(m.Type))
	b = binary.BigEndian.AppendUint16(b, count)
	b = binary.BigEndian.AppendUint32(b, m.Sender)
	b = binary.BigEndian.AppendUint32(b, m.TMs)
	b = binary.BigEndian.AppendUint64(b, m.Boot)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, m.Arg)
	for i := range m.Entries {
		b = appendEntry(b, &m.Entries[i])
	}
	for i := range m.Seconds {
		b = appendSecond(b, &m.Seconds[i])
	}
	c.mac.Reset()
	c.mac.Write(b[start:])
	return c.mac.Sum(b), nil
}

func appendEntry(b []byte, e *Entry) []byte {
	k, f := &e.Key, &e.Flow
	b = append(b, k.Src[:]...)
	b = append(b, k.Dst[:]...)
	// Ports stay in the key's byte order (network order, as loaded
	// little-endian): written little-endian, they are the wire bytes.
	b = binary.LittleEndian.AppendUint16(b, k.Sport)
	b = binary.LittleEndian.AppendUint16(b, k.Dport)
	b = binary.BigEndian.AppendUint16(b, k.Vlan)
	b = append(b, k.Proto, k.Family)
	b = append(b, e.Op, f.TcpState, f.Mask, 0)
	b = binary.BigEndian.AppendUint32(b, e.Age)
	b = binary.BigEndian.AppendUint16(b, f.Tm)
	b = binary.BigEndian.AppendUint16(b, f.Svc)
	b = binary.BigEndian.AppendUint16(b, f.Flags)
	b = binary.BigEndian.AppendUint16(b, f.Timeout)
	b = binary.BigEndian.AppendUint32(b, f.SeqFwd)
	b = binary.BigEndian.AppendUint32(b, f.SeqRev)
	return b
}

// Decode checks and decodes datagram b into m (m.Entries reuses its
// backing array). The HMAC is checked before any field is trusted; a
// datagram of the wrong length for its count, an unknown type, version or
// operation, or a key of an unknown family is refused.
func (c *Codec) Decode(b []byte, m *Message) error {
	if len(b) < HeaderSize+MACSize {
		return fmt.Errorf("decode: %d bytes: %w", len(b), ErrTruncated)
	}
	if len(b) > MaxDatagram {
		return fmt.Errorf("decode: %d bytes, at most %d: %w", len(b), MaxDatagram, ErrMalformed)
	}
	body := b[:len(b)-MACSize]
	c.mac.Reset()
	c.mac.Write(body)
	if !hmac.Equal(c.mac.Sum(c.sum[:0]), b[len(body):]) {
		return fmt.Errorf("decode: %w", ErrAuth)
	}
	if [4]byte(body[:4]) != magic {
		return fmt.Errorf("decode: magic %x: %w", body[:4], ErrMalformed)
	}
	if body[4] != Version {
		return fmt.Errorf("decode: version %d, want %d: %w", body[4], Version, ErrVersion)
	}
	m.Type = Type(body[5])
	m.TMs = binary.BigEndian.Uint32(body[12:])
	count := binary.BigEndian.Uint16(body[6:])
	m.Sender = binary.BigEndian.Uint32(body[8:])
	m.Boot = binary.BigEndian.Uint64(body[16:])
	m.Seq = binary.BigEndian.Uint64(body[24:])
	m.Arg = binary.BigEndian.Uint64(body[32:])
	m.Count = 0
	m.Entries = m.Entries[:0]
	m.Seconds = m.Seconds[:0]
	rest := body[HeaderSize:]
	switch m.Type {
	case TypeUpdate:
		if int(count) > MaxEntries || len(rest) != int(count)*EntrySize {
			return fmt.Errorf("decode: %d entries in %d bytes: %w", count, len(rest), ErrMalformed)
		}
		for i := 0; i < int(count); i++ {
			var e Entry
			if err := decodeEntry(rest[i*EntrySize:(i+1)*EntrySize], &e); err != nil {
				return fmt.Errorf("decode: entry %d: %w", i, err)
			}
			m.Entries = append(m.Entries, e)
		}
	case TypeSecond:
		if err := decodeSeconds(rest, count, m); err != nil {
			return err
		}
	case TypeHeartbeat, TypeNack, TypeResyncReq, TypeResyncEnd:
		if len(rest) != 0 {
			return fmt.Errorf("decode: type %d with %d bytes of entries: %w", m.Type, len(rest), ErrMalformed)
		}
		if m.Type == TypeNack {
			if count == 0 {
				return fmt.Errorf("decode: NACK of 0 datagrams: %w", ErrMalformed)
			}
			m.Count = count
		} else if count != 0 {
			return fmt.Errorf("decode: type %d with count %d: %w", m.Type, count, ErrMalformed)
		}
	default:
		return fmt.Errorf("decode: type %d: %w", m.Type, ErrMalformed)
	}
	return nil
}

func decodeEntry(b []byte, e *Entry) error {
	k, f := &e.Key, &e.Flow
	copy(k.Src[:], b[0:16])
	copy(k.Dst[:], b[16:32])
	k.Sport = binary.LittleEndian.Uint16(b[32:])
	k.Dport = binary.LittleEndian.Uint16(b[34:])
	k.Vlan = binary.BigEndian.Uint16(b[36:])
	k.Proto, k.Family = b[38], b[39]
	e.Op, f.TcpState, f.Mask = b[40], b[41], b[42]
	e.Age = binary.BigEndian.Uint32(b[44:])
	f.Tm = binary.BigEndian.Uint16(b[48:])
	f.Svc = binary.BigEndian.Uint16(b[50:])
	f.Flags = binary.BigEndian.Uint16(b[52:])
	f.Timeout = binary.BigEndian.Uint16(b[54:])
	f.SeqFwd = binary.BigEndian.Uint32(b[56:])
	f.SeqRev = binary.BigEndian.Uint32(b[60:])
	switch {
	case e.Op != OpPut && e.Op != OpDelete:
		return fmt.Errorf("op %d: %w", e.Op, ErrMalformed)
	case k.Family != datapath.FamilyIPv4 && k.Family != datapath.FamilyIPv6:
		return fmt.Errorf("family %d: %w", k.Family, ErrMalformed)
	case k.Vlan > 4095:
		return fmt.Errorf("VLAN %d: %w", k.Vlan, ErrMalformed)
	case b[43] != 0:
		return fmt.Errorf("padding %d: %w", b[43], ErrMalformed)
	case int(f.Tm) >= datapath.MaxTMs:
		return fmt.Errorf("TM %d: %w", f.Tm, ErrMalformed)
	}
	return nil
}
