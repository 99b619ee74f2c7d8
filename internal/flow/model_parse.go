package flow

import (
	"encoding/binary"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Model of bpf/parse.h: the parsers that fill the packet description. They
// read headers and drop only malformed packets; decisions are the steps'.

// Ethernet types and IPv6 extension headers the parser knows (the kernel's
// numbers, as bpf/parse.h takes them from the kernel headers).
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88a8
	ipv6HopByHop    = 0
	ipv6Routing     = 43
	ipv6Fragment    = 44
	ipv6DestOptions = 60
)

// TCP flags the model looks at.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// icmpKind is what an ICMP packet is to us (enum sy_icmp_kind).
type icmpKind uint8

const (
	icmpOther  icmpKind = iota // not an error we route: the kernel's
	icmpNoFlow                 // frag needed / too big, but no usable TCP/UDP packet inside
	icmpInner                  // frag needed / too big about packet.inner
)

// parseEth is sy_parse_eth: Ethernet and the ingress side, the interface's
// role and, on an internal interface, whether the source MAC is a TM's on
// its own interface.
func (p *packet) parseEth() (datapath.Verdict, *datapath.Iface) {
	p.n = uint64(p.linear)
	if p.linear < 14 {
		return p.count(datapath.CounterDropTruncEth, datapath.Drop), nil
	}
	p.isSignal = be16(p.data[12:]) == datapath.EtherTypeSignal
	ifc, ok := p.m.Ifaces[p.ingress]
	if !ok {
		return goOn, nil
	}
	if ifc.Role == datapath.RoleInternal {
		if idx, ok := p.m.TMByMAC[[6]uint8(p.data[6:12])]; ok {
			// A TM's MAC counts only on the TM's own interface.
			if tm := p.tm(idx); tm != nil && tm.Ifindex == p.ingress {
				p.byTM = true
				p.sender = idx
			} else {
				p.wrongPort = true
			}
		}
	}
	return goOn, &ifc
}

// parseICMP is sy_parse_icmp: the ICMP error about one of our flows,
// "fragmentation needed" (v4) and "packet too big" (v6). The embedded
// header is the TM's packet towards the client, so its reverse is the
// flow's key.
func (p *packet) parseICMP(l4off uint32) icmpKind {
	d := p.data
	end := p.linear // headers: the first buffer only
	var off uint32
	p.inner.Vlan = p.key.Vlan
	if l4off+8 > end {
		return icmpOther
	}
	if p.key.Family == datapath.FamilyIPv4 {
		if d[l4off] != 3 || d[l4off+1] != 4 {
			return icmpOther
		}
		ip := l4off + 8
		if ip+20 > end || d[ip]>>4 != 4 || d[ip]&0x0f < 5 {
			return icmpNoFlow
		}
		off = ip + uint32(d[ip]&0x0f)*4
		copy(p.inner.Src[:4], d[ip+16:ip+20])
		copy(p.inner.Dst[:4], d[ip+12:ip+16])
		p.inner.Proto = d[ip+9]
		p.inner.Family = datapath.FamilyIPv4
	} else {
		if d[l4off] != 2 {
			return icmpOther
		}
		ip := l4off + 8
		if ip+40 > end || d[ip]>>4 != 6 {
			return icmpNoFlow
		}
		off = ip + 40
		copy(p.inner.Src[:], d[ip+24:ip+40])
		copy(p.inner.Dst[:], d[ip+8:ip+24])
		p.inner.Proto = d[ip+6]
		p.inner.Family = datapath.FamilyIPv6
	}
	if p.inner.Proto != ProtoTCP && p.inner.Proto != ProtoUDP {
		return icmpNoFlow
	}
	if off > 0xffff || off+4 > end {
		return icmpNoFlow
	}
	p.inner.Sport = le16(d[off+2:])
	p.inner.Dport = le16(d[off:])
	return icmpInner
}

// pastFirst is sy_past_first: the IP packet ends past the first buffer;
// the bytes counted become the whole frame's. It reports whether the IP
// packet is longer than the whole frame (truncated).
func (p *packet) pastFirst(ipEnd uint32) bool {
	p.n = uint64(len(p.data))
	return uint64(ipEnd) > p.n
}

func isIPv6Ext(proto uint8) bool {
	return proto == ipv6HopByHop || proto == ipv6Routing || proto == ipv6DestOptions
}

// parse is sy_parse: VLAN tags, IPv4/IPv6 (and v6 extension headers), the
// ports and TCP flags, and what an ICMP packet is about.
func (p *packet) parse() datapath.Verdict {
	// Again after a shim was stripped: the packet is shorter.
	p.n = uint64(p.linear)
	if p.linear < 14 {
		return p.count(datapath.CounterDropTruncEth, datapath.Drop)
	}
	d := p.data
	end := p.linear // headers: the first buffer only
	proto := be16(d[12:])
	off := uint32(14)
	for range datapath.MaxVLANTags {
		if proto != etherTypeVLAN && proto != etherTypeQinQ {
			break
		}
		if off+4 > end {
			return p.count(datapath.CounterDropTruncVLAN, datapath.Drop)
		}
		p.key.Vlan = be16(d[off:]) & 0x0fff
		proto = be16(d[off+2:])
		off += 4
	}
	if proto == etherTypeVLAN || proto == etherTypeQinQ {
		return p.count(datapath.CounterDropVLANDepth, datapath.Drop)
	}

	var l4proto uint8
	var l4off, ipEnd uint32 // ipEnd: the end of the IP packet (padding excluded)
	switch proto {
	case etherTypeIPv4:
		if off+20 > end {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		ip := d[off:]
		version, ihl := ip[0]>>4, uint32(ip[0]&0x0f)
		if version != 4 || ihl < 5 {
			return p.count(datapath.CounterDropBadIP, datapath.Drop)
		}
		ihl *= 4
		totLen := uint32(be16(ip[2:]))
		if totLen < ihl {
			return p.count(datapath.CounterDropBadIP, datapath.Drop)
		}
		if off+totLen > end && p.pastFirst(off+totLen) {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		copy(p.key.Src[:4], ip[12:16])
		copy(p.key.Dst[:4], ip[16:20])
		p.key.Family = datapath.FamilyIPv4
		l4proto = ip[9]
		p.frag = be16(ip[6:])&0x3fff != 0
		l4off = off + ihl
		ipEnd = off + totLen
	case etherTypeIPv6:
		if off+40 > end {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		ip := d[off:]
		if ip[0]>>4 != 6 {
			return p.count(datapath.CounterDropBadIP, datapath.Drop)
		}
		if off+40+uint32(be16(ip[4:])) > end && p.pastFirst(off+40+uint32(be16(ip[4:]))) {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		copy(p.key.Src[:], ip[8:24])
		copy(p.key.Dst[:], ip[24:40])
		p.key.Family = datapath.FamilyIPv6
		l4proto = ip[6]
		l4off = off + 40
		ipEnd = l4off + uint32(be16(ip[4:]))
		for range datapath.MaxIPv6Ext {
			if l4proto == ipv6Fragment {
				p.frag = true
				break
			}
			if !isIPv6Ext(l4proto) {
				break
			}
			if l4off+2 > end {
				return p.count(datapath.CounterDropIPv6Ext, datapath.Drop)
			}
			l4proto = d[l4off]
			l4off += (uint32(d[l4off+1]) + 1) * 8
		}
		if !p.frag && isIPv6Ext(l4proto) {
			return p.count(datapath.CounterDropIPv6Ext, datapath.Drop)
		}
	default:
		return p.count(datapath.CounterPassNotIP, datapath.Pass)
	}

	p.key.Proto = l4proto
	if l4off > 0xffff {
		return p.count(datapath.CounterDropIPv6Ext, datapath.Drop)
	}
	p.l4off = l4off
	if p.frag {
		return goOn
	}
	switch {
	case l4proto == ProtoTCP:
		if l4off+20 <= end {
			p.tcpHdr = true
			if d[l4off+12]>>4 >= 5 {
				p.key.Sport, p.key.Dport = le16(d[l4off:]), le16(d[l4off+2:])
				p.tcpFlags = d[l4off+13]
				p.ports = true
				p.seq = binary.BigEndian.Uint32(d[l4off+4:])
				p.ack = binary.BigEndian.Uint32(d[l4off+8:])
				p.seqEnd = p.seq
				if p.tcpFlags&tcpSYN != 0 {
					p.seqEnd++
				}
				if p.tcpFlags&tcpFIN != 0 {
					p.seqEnd++
				}
				// A header longer than the packet counts as no payload.
				if hdr := l4off + uint32(d[l4off+12]>>4)*4; ipEnd > hdr {
					p.seqEnd += ipEnd - hdr
				}
			}
		}
	case l4proto == ProtoUDP:
		if l4off+8 <= end {
			p.key.Sport, p.key.Dport = le16(d[l4off:]), le16(d[l4off+2:])
			p.ports = true
		}
	case l4proto == ProtoICMP && p.key.Family == datapath.FamilyIPv4,
		l4proto == ProtoICMPv6 && p.key.Family == datapath.FamilyIPv6:
		p.icmpKind = p.parseICMP(l4off)
	}
	return goOn
}
