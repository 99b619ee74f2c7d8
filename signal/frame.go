package signal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

const ethHdrLen = 14

// Frame builds a signal frame: an Ethernet header (dst, src, EtherType
// 0x88B5) followed by the message. dst is the distributor's interface MAC or
// the configured signal multicast MAC; src must be the sender TM's own MAC
// (the distributor accepts signals only from configured TM MACs). Every
// message is at least 50 bytes, so the frame never needs padding.
func Frame(dst, src net.HardwareAddr, m Message) ([]byte, error) {
	if len(dst) != 6 || len(src) != 6 {
		return nil, errors.New("signal: Frame needs 6-byte MAC addresses")
	}
	b := make([]byte, ethHdrLen, ethHdrLen+m.Size())
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], EtherType)
	return m.appendTo(b, 0)
}

// Shim inserts m as an in-band shim into an Ethernet frame, after its 12 MAC
// bytes: [dst src][0x88B5][header with the shim flag][TLVs][original
// EtherType and payload]. The distributor applies the ops, removes the shim
// and forwards the original frame. A VLAN tag, if any, stays after the shim
// (it is part of the "original EtherType and payload"). The input frame is not
// modified.
func Shim(frame []byte, m Message) ([]byte, error) {
	if len(frame) < ethHdrLen {
		return nil, fmt.Errorf("signal: Shim needs an Ethernet frame (>= %d bytes), got %d", ethHdrLen, len(frame))
	}
	size := m.Size()
	if size < 0 {
		return nil, errors.New("signal: unknown op type")
	}
	b := make([]byte, ethHdrLen, len(frame)+2+size)
	copy(b, frame[:12])
	binary.BigEndian.PutUint16(b[12:14], EtherType)
	b, err := m.appendTo(b, flagShim)
	if err != nil {
		return nil, err
	}
	return append(b, frame[12:]...), nil
}

// Unshim is the inverse of Shim: it decodes the shim of a frame and returns
// the message and the original frame (a new slice). It refuses, with an
// *Error, a frame whose EtherType is not 0x88B5 (not_signal), a message
// without the shim flag (not_shim), a frame without the 2 bytes of the
// original EtherType (truncated), and everything Unmarshal refuses (offsets
// are then relative to the frame).
func Unshim(frame []byte) (Message, []byte, error) {
	if len(frame) < ethHdrLen {
		return Message{}, nil, refuse(ReasonTruncated, len(frame))
	}
	if binary.BigEndian.Uint16(frame[12:14]) != EtherType {
		return Message{}, nil, refuse(ReasonNotSignal, 12)
	}
	m, flags, rest, err := unmarshal(frame[ethHdrLen:])
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Offset += ethHdrLen
		}
		return Message{}, nil, err
	}
	if flags&flagShim == 0 {
		return Message{}, nil, refuse(ReasonNotShim, ethHdrLen+hdrOffFlg)
	}
	if len(rest) < 2 {
		return Message{}, nil, refuse(ReasonTruncated, len(frame))
	}
	orig := make([]byte, 0, 12+len(rest))
	orig = append(orig, frame[:12]...)
	return m, append(orig, rest...), nil
}

// FrameSender sends signal frames on an interface through an AF_PACKET
// socket (needs CAP_NET_RAW). The source MAC is the interface's MAC. It is
// safe for concurrent use.
type FrameSender struct {
	mu      sync.Mutex
	fd      int
	ifindex int
	dst     net.HardwareAddr
	src     net.HardwareAddr
}

// NewFrameSender opens a sender on the interface ifname (looked up in the
// calling thread's network namespace; the socket stays in it). dst is the
// distributor's interface MAC or the signal multicast MAC.
func NewFrameSender(ifname string, dst net.HardwareAddr) (*FrameSender, error) {
	if len(dst) != 6 {
		return nil, errors.New("signal: destination MAC must have 6 bytes")
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("signal: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("signal: %s has no Ethernet address", ifname)
	}
	// Protocol 0: this socket only sends, it receives nothing.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("signal: AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("signal: bind to %s: %w", ifname, err)
	}
	return &FrameSender{
		fd:      fd,
		ifindex: ifi.Index,
		dst:     append(net.HardwareAddr(nil), dst...),
		src:     append(net.HardwareAddr(nil), ifi.HardwareAddr...),
	}, nil
}

// Send encodes m as a signal frame and sends it.
func (s *FrameSender) Send(m Message) error {
	f, err := Frame(s.dst, s.src, m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	sa := &unix.SockaddrLinklayer{
		Protocol: htons(EtherType),
		Ifindex:  s.ifindex,
		Halen:    6,
	}
	copy(sa.Addr[:], s.dst)
	if err := unix.Sendto(s.fd, f, 0, sa); err != nil {
		return fmt.Errorf("signal: send: %w", err)
	}
	return nil
}

// Close closes the socket.
func (s *FrameSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
