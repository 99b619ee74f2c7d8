// Package flow holds connection keys, flow entries and the Go model of the
// distributor's per-packet decisions: the executable spec that the XDP
// program in bpf/ is tested against.
package flow

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/switchyard/switchyard/internal/datapath"
)

// IP protocol numbers used in keys.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// htons converts a port to the network byte order the key stores, as a
// little-endian load of the wire bytes gives it.
func htons(p uint16) uint16 { return bits.ReverseBytes16(p) }

// MakeKey builds a key from addresses of the same family, host-order ports,
// a protocol number and a VLAN id (0: untagged).
func MakeKey(src, dst netip.Addr, sport, dport uint16, proto uint8, vlan uint16) datapath.FlowKey {
	var k datapath.FlowKey
	putAddr(&k.Src, src)
	putAddr(&k.Dst, dst)
	k.Family = family(dst)
	k.Sport = htons(sport)
	k.Dport = htons(dport)
	k.Proto = proto
	k.Vlan = vlan
	return k
}

// ServiceKey is the key of the service on vip, port (0: all ports) and
// protocol.
func ServiceKey(vip netip.Addr, port uint16, proto uint8) datapath.ServiceKey {
	k := MakeKey(vip, vip, 0, port, proto, 0)
	return datapath.ServiceKey{Addr: k.Dst, Port: k.Dport, Proto: k.Proto, Family: k.Family}
}

// AddrKey is an address as the VIP set and the learning sources key it.
func AddrKey(a netip.Addr) datapath.VIPKey {
	k := MakeKey(a, a, 0, 0, 0, 0)
	return datapath.VIPKey{Addr: k.Dst, Family: k.Family}
}

func family(a netip.Addr) uint8 {
	if a.Unmap().Is4() {
		return datapath.FamilyIPv4
	}
	return datapath.FamilyIPv6
}

func putAddr(dst *[16]uint8, a netip.Addr) {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		copy(dst[:], b[:])
		return
	}
	*dst = a.As16()
}

func getAddr(b [16]uint8, fam uint8) netip.Addr {
	if fam == datapath.FamilyIPv4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// Src returns the key's source address.
func Src(k datapath.FlowKey) netip.Addr { return getAddr(k.Src, k.Family) }

// Dst returns the key's destination address.
func Dst(k datapath.FlowKey) netip.Addr { return getAddr(k.Dst, k.Family) }

// SrcPort returns the source port in host order.
func SrcPort(k datapath.FlowKey) uint16 { return htons(k.Sport) }

// DstPort returns the destination port in host order.
func DstPort(k datapath.FlowKey) uint16 { return htons(k.Dport) }

// Reverse returns the key of the other direction.
func Reverse(k datapath.FlowKey) datapath.FlowKey {
	k.Src, k.Dst = k.Dst, k.Src
	k.Sport, k.Dport = k.Dport, k.Sport
	return k
}

// ProtoName names an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("proto%d", p)
}

// String formats a key as "tcp 10.0.1.11:40000 -> 10.0.0.100:80 vlan 7".
func String(k datapath.FlowKey) string {
	s := fmt.Sprintf("%s %s -> %s", ProtoName(k.Proto),
		netip.AddrPortFrom(Src(k), SrcPort(k)), netip.AddrPortFrom(Dst(k), DstPort(k)))
	if k.Vlan != 0 {
		s += fmt.Sprintf(" vlan %d", k.Vlan)
	}
	return s
}

// Bytes returns the key's memory image (40 bytes, little-endian fields), the
// bytes the XDP program hashes.
func Bytes(k datapath.FlowKey) [40]byte {
	var b [40]byte
	copy(b[0:16], k.Src[:])
	copy(b[16:32], k.Dst[:])
	binary.LittleEndian.PutUint16(b[32:], k.Sport)
	binary.LittleEndian.PutUint16(b[34:], k.Dport)
	binary.LittleEndian.PutUint16(b[36:], k.Vlan)
	b[38] = k.Proto
	b[39] = k.Family
	return b
}

// Hash is sy_hash_key of bpf/switchyard.h: murmur3's 32-bit mixing over the
// key's ten little-endian 32-bit words.
func Hash(k datapath.FlowKey, seed uint32) uint32 {
	b := Bytes(k)
	h := seed
	for i := 0; i < len(b); i += 4 {
		c := binary.LittleEndian.Uint32(b[i:]) * 0xcc9e2d51
		c = bits.RotateLeft32(c, 15)
		c *= 0x1b873593
		h ^= c
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	h ^= uint32(len(b))
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
