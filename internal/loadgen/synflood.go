package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// FloodOptions describe a spoofed SYN flood: bare TCP SYNs to one IPv4
// address and port from random sources, sent through a raw socket (the
// caller runs it inside the namespace it should leave from).
type FloodOptions struct {
	// Dst is the target (IPv4).
	Dst netip.AddrPort
	// Sources is the prefix the spoofed source addresses are drawn from.
	Sources netip.Prefix
	// Count bounds the SYNs sent; required, at most MaxFloodCount.
	Count int
	// Senders is the number of goroutines sending (each its own socket);
	// 0 means 2.
	Senders int
	// Seed makes the sources, ports and sequence numbers repeatable.
	Seed uint64
}

// MaxFloodCount bounds a flood's size.
const MaxFloodCount = 100_000_000

// FloodReport is what a flood sent.
type FloodReport struct {
	Sent    uint64        // SYNs the kernel accepted
	Failed  uint64        // sends that failed (ENOBUFS and the like)
	Elapsed time.Duration // from the first send to the last
}

// Rate is SYNs sent per second.
func (r FloodReport) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

func (r FloodReport) String() string {
	return fmt.Sprintf("%d SYNs sent (%d failed) in %v: %.0f/s", r.Sent, r.Failed, r.Elapsed.Round(time.Millisecond), r.Rate())
}

// SYNFlood sends o.Count spoofed SYNs as fast as the raw sockets take them,
// or until ctx is done. The sockets are opened in the calling thread's
// network namespace (open them inside NS.Do); sending happens in
// goroutines, which is fine: a socket keeps its namespace.
func SYNFlood(ctx context.Context, o FloodOptions) (FloodReport, error) {
	var rep FloodReport
	if !o.Dst.Addr().Is4() || !o.Sources.Addr().Is4() {
		return rep, errors.New("syn flood: IPv4 target and sources only")
	}
	if o.Count <= 0 || o.Count > MaxFloodCount {
		return rep, fmt.Errorf("syn flood: count %d out of range (1..%d)", o.Count, MaxFloodCount)
	}
	if o.Senders <= 0 {
		o.Senders = 2
	}
	fds := make([]int, 0, o.Senders)
	defer func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}()
	for range o.Senders {
		// IPPROTO_RAW implies IP_HDRINCL: the header is ours, the kernel
		// fills in its checksum (and the total length).
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return rep, fmt.Errorf("syn flood: raw socket: %w", err)
		}
		fds = append(fds, fd)
	}
	var sent, failed atomic.Uint64
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i, fd := range fds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(o.Seed, uint64(i)))
			dst := &syscall.SockaddrInet4{Addr: o.Dst.Addr().As4()}
			pkt := make([]byte, 40)
			for next.Add(1) <= int64(o.Count) {
				if ctx.Err() != nil {
					return
				}
				synPacket(pkt, randomIn(r, o.Sources), o.Dst, uint16(1024+r.IntN(64511)), r.Uint32())
				if err := syscall.Sendto(fd, pkt, 0, dst); err != nil {
					failed.Add(1)
					continue
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	rep.Sent, rep.Failed, rep.Elapsed = sent.Load(), failed.Load(), time.Since(start)
	return rep, ctx.Err()
}

// randomIn returns a random address of p.
func randomIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	base := binary.BigEndian.Uint32(a[:])
	host := r.Uint32()
	if bits := p.Bits(); bits > 0 {
		host &= uint32(1)<<(32-bits) - 1
	}
	binary.BigEndian.PutUint32(a[:], base|host)
	return netip.AddrFrom4(a)
}

// synPacket writes into b (40 bytes) an IPv4 header and a TCP SYN from src
// to dst with a valid TCP checksum.
func synPacket(b []byte, src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32) {
	clear(b)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 40)
	b[8] = 64
	b[9] = syscall.IPPROTO_TCP
	s, d := src.As4(), dst.Addr().As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 5 << 4
	t[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	binary.BigEndian.PutUint16(t[16:], tcpChecksum(s, d, t))
}

// tcpChecksum is the TCP checksum of segment t (its checksum field zero)
// with the IPv4 pseudo-header.
func tcpChecksum(src, dst [4]byte, t []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += syscall.IPPROTO_TCP + uint32(len(t))
	add(t)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// TCP flags for TCPPacket.
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagACK = 0x10
)

// TCPPacket returns an IPv4 header and a 20-byte TCP header from src to dst
// with the given sequence and acknowledgment numbers and flags, for
// SendRaw: how a test forges a connection's packets from elsewhere.
func TCPPacket(src, dst netip.AddrPort, seq, ack uint32, flags uint8) []byte {
	b := make([]byte, 40)
	synPacket(b, src.Addr(), dst, src.Port(), seq)
	t := b[20:]
	binary.BigEndian.PutUint32(t[8:], ack)
	t[13] = flags
	binary.BigEndian.PutUint16(t[16:], 0)
	s, d := src.Addr().As4(), dst.Addr().As4()
	binary.BigEndian.PutUint16(t[16:], tcpChecksum(s, d, t))
	return b
}

// SendRaw sends IPv4 packets (at most 10,000) through a raw socket opened
// in the calling thread's network namespace.
func SendRaw(pkts [][]byte) error {
	if len(pkts) > 10_000 {
		return fmt.Errorf("send raw: %d packets, at most 10000", len(pkts))
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("send raw: socket: %w", err)
	}
	defer syscall.Close(fd)
	for i, p := range pkts {
		if len(p) < 20 || p[0]>>4 != 4 {
			return fmt.Errorf("send raw: packet %d is not IPv4", i)
		}
		var d [4]byte
		copy(d[:], p[16:20])
		if err := syscall.Sendto(fd, p, 0, &syscall.SockaddrInet4{Addr: d}); err != nil {
			return fmt.Errorf("send raw: packet %d: %w", i, err)
		}
	}
	return nil
}
