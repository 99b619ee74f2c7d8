// Package flowtest builds packets for tests and benchmarks of the data path:
// well-formed ones from a description, and random, truncated and malformed
// ones from a seeded generator.
package flowtest

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
)

// Packet describes an Ethernet frame carrying IPv4 or IPv6.
type Packet struct {
	DstMAC, SrcMAC [6]byte
	VLANs          []uint16 // outer first; two tags use 802.1ad then 802.1Q
	Src, Dst       netip.Addr
	Proto          uint8 // 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, anything else: raw payload
	SrcPort        uint16
	DstPort        uint16
	TCPFlags       uint8
	Seq            uint32  // TCP sequence number; 0: 1000
	Ack            uint32  // TCP acknowledgment number
	IPv4Options    int     // bytes of options (rounded up to 4)
	IPv6Ext        []uint8 // extension headers (0, 43, 60, 44) before the L4 header, 8 bytes each
	Fragment       bool    // IPv4: MF set; IPv6: adds a fragment header
	ICMPType       uint8
	ICMPCode       uint8
	Inner          *Packet // embedded packet of an ICMP error (its IP header and 8 bytes of L4)
	DSCP           uint8   // the IP header's DSCP (IPv4 TOS, IPv6 traffic class: the upper 6 bits)
	Payload        []byte
}

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// Bytes serializes the packet. Checksums are left zero: the data path does
// not check them.
func (p Packet) Bytes() []byte {
	b := make([]byte, 0, 128+len(p.Payload))
	b = append(b, p.DstMAC[:]...)
	b = append(b, p.SrcMAC[:]...)
	for i, v := range p.VLANs {
		tpid := uint16(0x8100)
		if i == 0 && len(p.VLANs) > 1 {
			tpid = 0x88a8
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, v&0x0fff)
	}
	if p.Dst.Is4() {
		b = binary.BigEndian.AppendUint16(b, 0x0800)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
	}
	return append(b, p.ip()...)
}

func (p Packet) l4() []byte {
	var h []byte
	switch p.Proto {
	case 6:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], p.SrcPort)
		binary.BigEndian.PutUint16(h[2:], p.DstPort)
		seq := p.Seq
		if seq == 0 {
			seq = 1000
		}
		binary.BigEndian.PutUint32(h[4:], seq)
		binary.BigEndian.PutUint32(h[8:], p.Ack)
		h[12] = 5 << 4
		h[13] = p.TCPFlags
		binary.BigEndian.PutUint16(h[14:], 65535)
	case 17:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], p.SrcPort)
		binary.BigEndian.PutUint16(h[2:], p.DstPort)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(p.Payload)))
	case 1, 58:
		h = make([]byte, 8)
		h[0], h[1] = p.ICMPType, p.ICMPCode
		if p.Inner != nil {
			inner := p.Inner.ip()
			hl := 20 + (p.Inner.IPv4Options+3)/4*4
			if !p.Inner.Dst.Is4() {
				hl = 40 + 8*len(p.Inner.IPv6Ext)
			}
			if len(inner) > hl+8 {
				inner = inner[:hl+8]
			}
			h = append(h, inner...)
		}
	}
	return append(h, p.Payload...)
}

func (p Packet) ip() []byte {
	l4 := p.l4()
	if p.Dst.Is4() {
		opt := (p.IPv4Options + 3) / 4 * 4
		h := make([]byte, 20+opt)
		h[0] = 0x40 | uint8((20+opt)/4)
		h[1] = p.DSCP << 2
		binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
		if p.Fragment {
			h[6] = 0x20 // MF
		}
		h[8] = 64
		h[9] = p.Proto
		s, d := p.Src.As4(), p.Dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		for i := 20; i < len(h); i++ {
			h[i] = 1 // NOP options
		}
		return append(h, l4...)
	}
	ext := p.IPv6Ext
	if p.Fragment {
		ext = append(append([]uint8(nil), ext...), 44)
	}
	var eh []byte
	for i, t := range ext {
		next := p.Proto
		if i+1 < len(ext) {
			next = ext[i+1]
		}
		e := make([]byte, 8)
		e[0] = next
		if t == 44 {
			e[3] = 1 // offset 0, M flag
		}
		eh = append(eh, e...)
	}
	h := make([]byte, 40)
	h[0] = 0x60 | p.DSCP>>2
	h[1] = p.DSCP << 6
	binary.BigEndian.PutUint16(h[4:], uint16(len(eh)+len(l4)))
	h[6] = p.Proto
	if len(ext) > 0 {
		h[6] = ext[0]
	}
	h[7] = 64
	s, d := p.Src.As16(), p.Dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(append(h, eh...), l4...)
}

// Generator makes random packets around a set of VIPs, clients and ports,
// about a fifth of them truncated or corrupted.
type Generator struct {
	R       *rand.Rand
	VIPs    []netip.Addr
	Others  []netip.Addr // non-VIP destinations
	Clients []netip.Addr // sources (both families)
	Ports   []uint16     // destination ports
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func (g *Generator) addr(pool []netip.Addr, v4 bool) netip.Addr {
	for range 64 {
		a := pick(g.R, pool)
		if a.Is4() == v4 {
			return a
		}
	}
	return pool[0]
}

// Describe returns a random packet description (well-formed).
func (g *Generator) Describe() Packet {
	r := g.R
	v4 := r.IntN(2) == 0
	p := Packet{
		DstMAC:  [6]byte{2, 0, 0, 0, 0, 1},
		SrcMAC:  [6]byte{2, 0, 0, 0, 0, byte(r.IntN(5) + 2)},
		Src:     g.addr(g.Clients, v4),
		SrcPort: uint16(1024 + r.IntN(8)), // few ports: flows repeat
		DstPort: pick(r, g.Ports),
		Payload: make([]byte, r.IntN(64)),
	}
	if r.IntN(10) < 8 {
		p.Dst = g.addr(g.VIPs, v4)
	} else {
		p.Dst = g.addr(g.Others, v4)
	}
	switch n := r.IntN(20); {
	case n < 10:
		p.Proto, p.TCPFlags = 6, pick(r, []uint8{SYN, ACK, ACK | PSH, FIN | ACK, RST})
	case n < 16:
		p.Proto = 17
	case n < 18:
		p.Proto = 1
		if !v4 {
			p.Proto = 58
		}
		p.ICMPType, p.ICMPCode = 3, 4
		if !v4 {
			p.ICMPType, p.ICMPCode = 2, 0
		}
		if r.IntN(4) == 0 {
			p.ICMPType = 8
		}
		// The embedded packet is the TM's reply towards the client.
		inner := Packet{Src: p.Dst, Dst: p.Src, Proto: pick(r, []uint8{6, 17, 47}),
			SrcPort: p.DstPort, DstPort: p.SrcPort}
		p.Inner = &inner
	default:
		p.Proto = pick(r, []uint8{47, 50, 132})
	}
	switch r.IntN(8) {
	case 0:
		p.VLANs = []uint16{uint16(r.IntN(4096))}
	case 1:
		p.VLANs = []uint16{uint16(r.IntN(4096)), uint16(r.IntN(4096))}
	}
	if v4 && r.IntN(6) == 0 {
		p.IPv4Options = 4 * (1 + r.IntN(10))
	}
	if !v4 && r.IntN(4) == 0 {
		for range 1 + r.IntN(5) {
			p.IPv6Ext = append(p.IPv6Ext, pick(r, []uint8{0, 43, 60}))
		}
	}
	if r.IntN(20) == 0 {
		p.Fragment = true
	}
	if p.Proto == 6 {
		// Sequence numbers near the flows' (in and out of the FIN/RST
		// window) and anywhere; acks likewise.
		p.Seq = pick(r, []uint32{0, 1001, 1064, 1000 + 1<<18, 1000 + 1<<19, r.Uint32()})
		p.Ack = pick(r, []uint32{0, 1001, r.Uint32()})
	}
	return p
}

// Next returns the bytes of a random packet; some are truncated, have a
// corrupted byte, a third VLAN tag, a bad TCP data offset, or a non-IP
// EtherType.
func (g *Generator) Next() []byte {
	r := g.R
	d := g.Describe()
	b := d.Bytes()
	switch n := r.IntN(100); {
	case n < 2 && d.Proto == 6 && !d.Fragment:
		b[len(b)-len(d.Payload)-20+12] = uint8(r.IntN(5)) << 4
	case n < 4 && (d.Proto == 6 || d.Proto == 17) && !d.Fragment && len(d.VLANs) == 0 && d.IPv4Options == 0 && len(d.IPv6Ext) == 0:
		// An L4 header cut short, with IP lengths that agree.
		cut := 14 + 20 + 4
		if d.Dst.Is4() {
			binary.BigEndian.PutUint16(b[16:], 24)
		} else {
			cut = 14 + 40 + 4
			binary.BigEndian.PutUint16(b[18:], 4)
		}
		b = b[:cut]
	case n < 8:
		b = b[:r.IntN(len(b))]
	case n < 16:
		hdr := min(len(b), 80)
		b[r.IntN(hdr)] = byte(r.IntN(256))
	case n < 18:
		tag := []byte{0x81, 0x00, 0x00, 0x05}
		nb := append([]byte(nil), b[:12]...)
		for range 3 {
			nb = append(nb, tag...)
		}
		b = append(nb, b[12:]...)
	case n < 20:
		b[12], b[13] = 0x08, 0x06 // ARP
	}
	return b
}
