package signal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// UDP control datagrams carry a signal message from a TM that is not on the
// distributor's segment:
//
//	offset  size  field
//	0       4     magic "SYSG"
//	4       1     version (1)
//	5       1     n: length of the TM id (1..32)
//	6       n     TM id (bytes, as configured on the distributor)
//	6+n     8     sequence number, big-endian, strictly increasing per TM
//	14+n    L     signal message (header + TLVs, shim flag clear)
//	14+n+L  32    HMAC-SHA256 with the TM's key over bytes 0 .. 14+n+L-1
const (
	udpMagic     = "SYSG"
	udpVersion   = 1
	udpMaxID     = 32
	udpMACLen    = sha256.Size
	udpMinKeyLen = 16
)

// SealUDP builds an authenticated control datagram for message m from the
// TM tmID with sequence number seq, using the TM's key (at least 16 bytes;
// 32 random bytes recommended).
func SealUDP(tmID string, key []byte, seq uint64, m Message) ([]byte, error) {
	if len(tmID) < 1 || len(tmID) > udpMaxID {
		return nil, fmt.Errorf("signal: TM id must have 1 to %d bytes", udpMaxID)
	}
	if len(key) < udpMinKeyLen {
		return nil, fmt.Errorf("signal: key must have at least %d bytes", udpMinKeyLen)
	}
	size := m.Size()
	if size < 0 {
		return nil, errors.New("signal: unknown op type")
	}
	b := make([]byte, 0, 6+len(tmID)+8+size+udpMACLen)
	b = append(b, udpMagic...)
	b = append(b, udpVersion, uint8(len(tmID)))
	b = append(b, tmID...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b, err := m.appendTo(b, 0)
	if err != nil {
		return nil, err
	}
	return appendHMAC(b, key), nil
}

func appendHMAC(b, key []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b)
}

// OpenUDP verifies and decodes a control datagram. keyFor returns the key of
// a configured TM id. The HMAC is checked (in constant time) before the
// message is decoded; nothing is trusted before that but the id used to find
// the key. Refusals are *Error (magic, version, bad_id, unknown_tm, auth,
// not_shim, truncated, and the reasons of Unmarshal). OpenUDP does not check
// the sequence number: keep a ReplayWindow per TM and call Accept after
// OpenUDP succeeds.
func OpenUDP(b []byte, keyFor func(tmID string) ([]byte, bool)) (tmID string, seq uint64, m Message, err error) {
	id, seq, msg, err := AuthenticateUDP(b, keyFor)
	if err != nil {
		return "", 0, Message{}, err
	}
	body := 6 + len(id) + 8
	m, flags, rest, err := unmarshal(msg)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Offset += body
		}
		return "", 0, Message{}, err
	}
	if flags&flagShim != 0 {
		return "", 0, Message{}, refuse(ReasonNotShim, body+hdrOffFlg)
	}
	if len(rest) != 0 {
		return "", 0, Message{}, refuse(ReasonBadLength, body+hdrOffLen)
	}
	return id, seq, m, nil
}

// AuthenticateUDP verifies a control datagram like OpenUDP but does not
// decode its message: it returns the authenticated message bytes (header
// and TLVs, within b) for a receiver that checks and applies them itself,
// as the distributor does with the checks of its XDP program. Refusals are
// *Error (magic, version, bad_id, unknown_tm, auth, truncated).
func AuthenticateUDP(b []byte, keyFor func(tmID string) ([]byte, bool)) (tmID string, seq uint64, msg []byte, err error) {
	if len(b) < 6 {
		return "", 0, nil, refuse(ReasonTruncated, len(b))
	}
	if string(b[:4]) != udpMagic {
		return "", 0, nil, refuse(ReasonMagic, 0)
	}
	if b[4] != udpVersion {
		return "", 0, nil, refuse(ReasonVersion, 4)
	}
	n := int(b[5])
	if n < 1 || n > udpMaxID {
		return "", 0, nil, refuse(ReasonBadID, 5)
	}
	body := 6 + n + 8
	if len(b) < body+hdrLen+udpMACLen {
		return "", 0, nil, refuse(ReasonTruncated, len(b))
	}
	id := string(b[6 : 6+n])
	key, ok := keyFor(id)
	if !ok {
		return "", 0, nil, refuse(ReasonUnknownTM, 6)
	}
	if len(key) < udpMinKeyLen {
		// An empty or short key would let anyone forge datagrams.
		return "", 0, nil, refuse(ReasonAuth, len(b)-udpMACLen)
	}
	signed := b[:len(b)-udpMACLen]
	mac := hmac.New(sha256.New, key)
	mac.Write(signed)
	if !hmac.Equal(mac.Sum(nil), b[len(signed):]) {
		return "", 0, nil, refuse(ReasonAuth, len(signed))
	}
	return id, binary.BigEndian.Uint64(b[6+n:]), signed[body:], nil
}

// UDPSender sends authenticated control datagrams to a distributor. Its
// sequence numbers start at the current Unix time in nanoseconds and grow by
// one per datagram, so they keep increasing across restarts. The
// distributor sends no reply (check the outcome with `switchyard stats`);
// it keeps its replay window across its own restarts, so a datagram it
// accepted is never applied twice. It is safe for concurrent use.
type UDPSender struct {
	mu   sync.Mutex
	conn *net.UDPConn
	id   string
	key  []byte
	seq  uint64
}

// NewUDPSender opens a sender to the distributor's control address for the
// TM tmID with its key.
func NewUDPSender(addr netip.AddrPort, tmID string, key []byte) (*UDPSender, error) {
	if len(tmID) < 1 || len(tmID) > udpMaxID {
		return nil, fmt.Errorf("signal: TM id must have 1 to %d bytes", udpMaxID)
	}
	if len(key) < udpMinKeyLen {
		return nil, fmt.Errorf("signal: key must have at least %d bytes", udpMinKeyLen)
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("signal: %w", err)
	}
	return &UDPSender{
		conn: c,
		id:   tmID,
		key:  append([]byte(nil), key...),
		seq:  uint64(time.Now().UnixNano()),
	}, nil
}

// Send seals m with the next sequence number and sends it.
func (s *UDPSender) Send(m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := SealUDP(s.id, s.key, s.seq, m)
	if err != nil {
		return err
	}
	s.seq++
	if _, err := s.conn.Write(b); err != nil {
		return fmt.Errorf("signal: send: %w", err)
	}
	return nil
}

// Close closes the socket.
func (s *UDPSender) Close() error { return s.conn.Close() }

// ReplayWindow refuses replayed control datagrams: a sliding window of 64
// sequence numbers (the highest seen and the 63 below it), as in IPsec. A
// number above the highest seen is accepted and moves the window; one of
// the 63 below the highest is accepted once; older ones are refused. The zero value is ready to use and
// is safe for concurrent use; keep one per TM.
type ReplayWindow struct {
	mu      sync.Mutex
	started bool
	highest uint64
	seen    uint64 // bit i: highest-i was seen
}

// ReplayWindowSize is the number of sequence numbers the window remembers.
const ReplayWindowSize = 64

// Accept reports whether seq is new, and records it.
func (w *ReplayWindow) Accept(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started || seq > w.highest {
		shift := seq - w.highest
		switch {
		case !w.started || shift >= ReplayWindowSize:
			w.seen = 1
		default:
			w.seen = w.seen<<shift | 1
		}
		w.started = true
		w.highest = seq
		return true
	}
	d := w.highest - seq
	if d >= ReplayWindowSize {
		return false
	}
	bit := uint64(1) << d
	if w.seen&bit != 0 {
		return false
	}
	w.seen |= bit
	return true
}

// Highest returns the highest sequence number accepted so far, and whether
// any was.
func (w *ReplayWindow) Highest() (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.highest, w.started
}

// NewReplayWindowAt returns a window that refuses highest and every number
// below it, as after accepting all of them: for a receiver that restarts
// with the highest number it had accepted (the 63 below it that were not
// seen are refused too: the restarted receiver cannot know which were).
func NewReplayWindowAt(highest uint64) *ReplayWindow {
	return &ReplayWindow{started: true, highest: highest, seen: ^uint64(0)}
}
