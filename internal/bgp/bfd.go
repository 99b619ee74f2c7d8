package bgp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BFD (RFC 5880, asynchronous mode, single hop: RFC 5881) so that a router
// notices a dead distributor within a second, not a hold time: the router
// runs a BFD session to each distributor (FRR: bfdd, `neighbor … bfd`) and
// drops the BGP session, and with it the routes, when BFD goes down. This
// is the distributor's end: it answers the router's sessions on UDP 3784,
// sends its own control packets at the negotiated rate, and tracks each
// session's state (shown with the BGP sessions). No authentication, no
// echo mode, no demand mode.

// BFD session states (RFC 5880 4.1).
const (
	BFDAdminDown = 0
	BFDDown      = 1
	BFDInit      = 2
	BFDUp        = 3
)

// bfdPort is the single-hop BFD control port (RFC 5881).
const bfdPort = 3784

// bfdPacket is a BFD control packet without authentication.
type bfdPacket struct {
	Version    uint8
	Diag       uint8
	State      uint8
	Poll       bool
	Final      bool
	Demand     bool
	Multiplier uint8
	MyDisc     uint32
	YourDisc   uint32
	DesiredTx  uint32 // µs
	RequiredRx uint32 // µs
	EchoRx     uint32 // µs
}

const bfdLen = 24

// parseBFD decodes a control packet, refusing what RFC 5880 6.8.6 says to
// discard (a bad version or length, a zero multiplier or discriminator,
// multipoint, authentication, which this end does not do).
func parseBFD(b []byte) (bfdPacket, error) {
	var p bfdPacket
	if len(b) < bfdLen {
		return p, fmt.Errorf("bfd: %d bytes, at least %d", len(b), bfdLen)
	}
	p.Version = b[0] >> 5
	p.Diag = b[0] & 0x1f
	p.State = b[1] >> 6
	flags := b[1] & 0x3f
	p.Poll, p.Final, p.Demand = flags&0x20 != 0, flags&0x10 != 0, flags&0x02 != 0
	p.Multiplier = b[2]
	length := int(b[3])
	p.MyDisc = binary.BigEndian.Uint32(b[4:])
	p.YourDisc = binary.BigEndian.Uint32(b[8:])
	p.DesiredTx = binary.BigEndian.Uint32(b[12:])
	p.RequiredRx = binary.BigEndian.Uint32(b[16:])
	p.EchoRx = binary.BigEndian.Uint32(b[20:])
	switch {
	case p.Version != 1:
		return p, fmt.Errorf("bfd: version %d", p.Version)
	case flags&0x04 != 0:
		return p, errors.New("bfd: authentication is not supported")
	case length < bfdLen || length > len(b):
		return p, fmt.Errorf("bfd: length field %d, packet %d bytes", length, len(b))
	case p.Multiplier == 0:
		return p, errors.New("bfd: detect multiplier 0")
	case flags&0x01 != 0:
		return p, errors.New("bfd: multipoint bit set")
	case p.MyDisc == 0:
		return p, errors.New("bfd: my discriminator 0")
	case p.YourDisc == 0 && p.State != BFDDown && p.State != BFDAdminDown:
		return p, errors.New("bfd: your discriminator 0 in a state other than down")
	}
	return p, nil
}

func (p bfdPacket) marshal() []byte {
	b := make([]byte, bfdLen)
	b[0] = 1<<5 | p.Diag&0x1f
	b[1] = p.State << 6
	if p.Poll {
		b[1] |= 0x20
	}
	if p.Final {
		b[1] |= 0x10
	}
	b[2] = p.Multiplier
	b[3] = bfdLen
	binary.BigEndian.PutUint32(b[4:], p.MyDisc)
	binary.BigEndian.PutUint32(b[8:], p.YourDisc)
	binary.BigEndian.PutUint32(b[12:], p.DesiredTx)
	binary.BigEndian.PutUint32(b[16:], p.RequiredRx)
	binary.BigEndian.PutUint32(b[20:], p.EchoRx)
	return b
}

type bfdSession struct {
	peer       netip.Addr
	myDisc     uint32
	yourDisc   uint32
	state      uint8
	remoteTx   time.Duration // remote desired min TX
	remoteRx   time.Duration // remote required min RX
	remoteMult uint8
	lastRx     time.Time
	pollReply  bool
	lastTx     time.Time
	jitter     time.Duration // this packet's cut of the interval, in 1/1024ths (under 25%)
	ups, downs uint64
}

// bfdEnd is the distributor's end of BFD with its neighbors.
type bfdEnd struct {
	log      *slog.Logger
	conn     *net.UDPConn
	interval time.Duration // our desired TX and required RX
	mult     uint8
	mu       sync.Mutex
	sessions map[netip.Addr]*bfdSession
	stop     context.CancelFunc
	done     chan struct{}
}

func randDisc() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if d := binary.BigEndian.Uint32(b[:]); d != 0 {
			return d
		}
	}
}

// startBFD listens on UDP 3784 of listen (unspecified: every address) and
// runs a session with each neighbor.
func startBFD(log *slog.Logger, listen netip.Addr, neighbors []netip.Addr, interval time.Duration, mult uint8) (*bfdEnd, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// RFC 5881 5: sent with TTL 255, received ones must have 255.
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 255); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1); serr != nil {
				return
			}
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255)
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	addr := fmt.Sprintf(":%d", bfdPort)
	if listen.IsValid() {
		addr = netip.AddrPortFrom(listen, bfdPort).String()
	}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("bfd: listen on udp port %d: %w", bfdPort, err)
	}
	b := &bfdEnd{log: log, conn: pc.(*net.UDPConn), interval: interval, mult: mult,
		sessions: map[netip.Addr]*bfdSession{}, done: make(chan struct{})}
	for _, n := range neighbors {
		n = n.Unmap()
		b.sessions[n] = &bfdSession{peer: n, myDisc: randDisc(), state: BFDDown}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	go b.recv()
	go b.tick(ctx)
	return b, nil
}

// recv handles the neighbors' control packets.
func (b *bfdEnd) recv() {
	defer close(b.done)
	buf := make([]byte, 512)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := b.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return
		}
		if ttl, ok := recvTTL(oob[:oobn]); !ok || ttl != 255 {
			continue // not single hop (RFC 5881 5)
		}
		p, err := parseBFD(buf[:n])
		if err != nil {
			continue
		}
		b.mu.Lock()
		s := b.sessions[from.Addr().Unmap()]
		if s != nil && (p.YourDisc == 0 || p.YourDisc == s.myDisc) {
			b.receive(s, p)
		}
		b.mu.Unlock()
	}
}

// recvTTL finds the received TTL or hop limit in the control messages.
func recvTTL(oob []byte) (int, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL ||
			m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT) && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data)), true
		}
	}
	return 0, false
}

// receive runs the state machine of RFC 5880 6.8.6 on packet p (mu held).
func (b *bfdEnd) receive(s *bfdSession, p bfdPacket) {
	s.yourDisc = p.MyDisc
	s.remoteTx = time.Duration(p.DesiredTx) * time.Microsecond
	s.remoteRx = time.Duration(p.RequiredRx) * time.Microsecond
	s.remoteMult = p.Multiplier
	s.lastRx = time.Now()
	if p.Poll {
		s.pollReply = true
	}
	old := s.state
	switch {
	case p.State == BFDAdminDown:
		if s.state != BFDDown {
			s.state = BFDDown
		}
	case s.state == BFDDown:
		if p.State == BFDDown {
			s.state = BFDInit
		} else if p.State == BFDInit {
			s.state = BFDUp
		}
	case s.state == BFDInit:
		if p.State == BFDInit || p.State == BFDUp {
			s.state = BFDUp
		}
	case s.state == BFDUp:
		if p.State == BFDDown {
			s.state = BFDDown
		}
	}
	b.changed(s, old)
	if p.Poll || s.state != old {
		b.send(s)
	}
}

func (b *bfdEnd) changed(s *bfdSession, old uint8) {
	if s.state == old {
		return
	}
	if s.state == BFDUp {
		s.ups++
	}
	if old == BFDUp {
		s.downs++
	}
	b.log.Info("bfd session", "neighbor", s.peer, "state", bfdStateName(s.state))
}

// txInterval is how often s's control packets go out: at least 1 s while
// not up (RFC 5880 6.8.3), else the slower of our desired TX and the
// remote's required RX.
func (b *bfdEnd) txInterval(s *bfdSession) time.Duration {
	if s.state != BFDUp {
		return time.Second
	}
	return max(b.interval, s.remoteRx)
}

// send sends s's control packet (mu held).
func (b *bfdEnd) send(s *bfdSession) {
	p := bfdPacket{Version: 1, State: s.state, Multiplier: b.mult, MyDisc: s.myDisc, YourDisc: s.yourDisc,
		DesiredTx: uint32(b.interval / time.Microsecond), RequiredRx: uint32(b.interval / time.Microsecond)}
	if s.state != BFDUp {
		p.DesiredTx = uint32(time.Second / time.Microsecond)
	}
	if s.pollReply {
		p.Final, s.pollReply = true, false
	}
	if s.state == BFDDown && s.lastRx.IsZero() {
		p.Diag = 0
	}
	_, _ = b.conn.WriteToUDPAddrPort(p.marshal(), netip.AddrPortFrom(s.peer, bfdPort))
	s.lastTx = time.Now()
	// The next one after 75–100% of the interval (RFC 5880 6.8.7).
	var r [1]byte
	_, _ = rand.Read(r[:])
	s.jitter = time.Duration(r[0])
}

// tick sends periodic packets and detects silent neighbors.
func (b *bfdEnd) tick(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		b.mu.Lock()
		for _, s := range b.sessions {
			if s.state == BFDUp || s.state == BFDInit {
				detect := time.Duration(s.remoteMult) * max(b.interval, s.remoteTx)
				if now.Sub(s.lastRx) > detect {
					old := s.state
					s.state = BFDDown
					b.changed(s, old)
				}
			}
			// The interval is computed afresh at every tick, so that a
			// faster rate the neighbor asks for applies at once.
			iv := b.txInterval(s)
			if now.Sub(s.lastTx) >= iv-iv*s.jitter/1024 {
				b.send(s)
			}
		}
		b.mu.Unlock()
	}
}

// state returns neighbor n's BFD state and how often it went down.
func (b *bfdEnd) state(n netip.Addr) (string, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.sessions[n.Unmap()]; s != nil {
		return bfdStateName(s.state), s.downs
	}
	return "", 0
}

// close sends AdminDown to every neighbor and stops.
func (b *bfdEnd) close() {
	b.mu.Lock()
	for _, s := range b.sessions {
		s.state = BFDAdminDown
		b.send(s)
	}
	b.mu.Unlock()
	b.stop()
	b.conn.Close()
	<-b.done
}

func bfdStateName(s uint8) string {
	switch s {
	case BFDAdminDown:
		return "admin_down"
	case BFDDown:
		return "down"
	case BFDInit:
		return "init"
	case BFDUp:
		return "up"
	}
	return "unknown"
}
