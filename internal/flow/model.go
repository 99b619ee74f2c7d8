package flow

import (
	"encoding/binary"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Model is the Go model of bpf/distributor.c: the same tables and the same
// decisions, one packet at a time. Its maps are plain Go maps; the zero
// values of absent array entries match BPF arrays (zero-filled).
type Model struct {
	RingSize    uint32
	MaxServices uint32
	Seed        uint32

	// Now is sy_now, the daemon's clock in seconds.
	Now uint32
	// MaxSecond is the second-key table's capacity.
	MaxSecond int

	Flows      map[Key]datapath.Flow
	SecondKeys map[datapath.SecondKey]datapath.Second
	Masks      [datapath.MaxMasks]uint32
	Services   map[datapath.ServiceKey]datapath.Service
	VIPs       map[datapath.VIPKey]uint32
	Rings      []uint32 // MaxServices × RingSize slots, like the rings array
	TMs        [datapath.MaxTMs]datapath.TM
	TMByMAC    map[[6]uint8]uint32
	LearnSrcs  map[datapath.VIPKey]uint32
	Settings   datapath.Settings
	Ifaces     map[uint32]datapath.Iface
	TxPorts    map[uint32]uint32

	Counters [datapath.NumCounters]datapath.CounterValue
	SvcStats []datapath.Traffic
	TMStats  [datapath.MaxTMs]datapath.Traffic
}

// NewModel returns an empty model sized like a data path loaded with the
// same ring size and service count.
func NewModel(ringSize, maxServices, seed uint32) *Model {
	return &Model{
		RingSize:    ringSize,
		MaxServices: maxServices,
		Seed:        seed,
		MaxSecond:   65536,
		Flows:       map[Key]datapath.Flow{},
		SecondKeys:  map[datapath.SecondKey]datapath.Second{},
		TMByMAC:     map[[6]uint8]uint32{},
		LearnSrcs:   map[datapath.VIPKey]uint32{},
		Ifaces:      map[uint32]datapath.Iface{},
		Services:    map[datapath.ServiceKey]datapath.Service{},
		VIPs:        map[datapath.VIPKey]uint32{},
		Rings:       make([]uint32, int(ringSize)*int(maxServices)),
		TxPorts:     map[uint32]uint32{},
		SvcStats:    make([]datapath.Traffic, maxServices),
	}
}

// Ethernet types and IPv6 extension headers the parser knows.
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88a8
	ipv6HopByHop    = 0
	ipv6Routing     = 43
	ipv6Fragment    = 44
	ipv6DestOptions = 60
	maxVLANTags     = 2
	maxIPv6Ext      = 4
)

type packet struct {
	m       *Model
	data    []byte
	ingress uint32
	n       uint64
}

func (p *packet) count(c datapath.Counter, v datapath.Verdict) datapath.Verdict {
	p.m.Counters[c].Packets++
	p.m.Counters[c].Bytes += p.n
	return v
}

func addTraffic(t *datapath.Traffic, n uint64, isNew bool) {
	t.Packets++
	t.Bytes += n
	if isNew {
		t.NewFlows++
	}
}

func (p *packet) svcTraffic(idx uint32, isNew bool) {
	if idx < uint32(len(p.m.SvcStats)) {
		addTraffic(&p.m.SvcStats[idx], p.n, isNew)
	}
}

func (p *packet) isVIP(k *Key) bool {
	var vk datapath.VIPKey
	vk.Addr = k.Dst
	vk.Family = k.Family
	_, ok := p.m.VIPs[vk]
	return ok
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// le16 loads two wire bytes the way the BPF program's native loads do.
func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }

// Process runs one packet through the model as if it arrived on interface
// ingress. It returns the verdict and the packet as the program leaves it.
func (m *Model) Process(pkt []byte, ingress uint32) (datapath.Verdict, []byte) {
	p := &packet{m: m, data: append([]byte(nil), pkt...), ingress: ingress, n: uint64(len(pkt))}
	return p.process(), p.data
}

func (p *packet) process() datapath.Verdict {
	if len(p.data) < 14 {
		return p.count(datapath.CounterDropTruncEth, datapath.Drop)
	}
	ifc, hasIfc := p.m.Ifaces[p.ingress]
	var sender *uint32
	if hasIfc && ifc.Role == datapath.RoleInternal {
		if idx, ok := p.m.TMByMAC[[6]uint8(p.data[6:12])]; ok {
			sender = &idx
			if tm := p.tm(idx); tm == nil || tm.Ifindex != p.ingress {
				if be16(p.data[12:]) == datapath.EtherTypeSignal {
					return p.count(datapath.CounterSigRefWrongPort, datapath.Drop)
				}
				sender = nil
			}
		}
	}
	if be16(p.data[12:]) == datapath.EtherTypeSignal {
		var ip *datapath.Iface
		if hasIfc {
			ip = &ifc
		}
		v, stripped := p.signal(ip, sender)
		if !stripped {
			return v
		}
		p.n = uint64(len(p.data))
		if len(p.data) < 14 {
			return p.count(datapath.CounterDropTruncEth, datapath.Drop)
		}
	}
	d := p.data
	end := uint32(len(d))
	var key Key
	proto := be16(d[12:])
	off := uint32(14)
	for range maxVLANTags {
		if proto != etherTypeVLAN && proto != etherTypeQinQ {
			break
		}
		if off+4 > end {
			return p.count(datapath.CounterDropTruncVLAN, datapath.Drop)
		}
		key.Vlan = be16(d[off:]) & 0x0fff
		proto = be16(d[off+2:])
		off += 4
	}
	if proto == etherTypeVLAN || proto == etherTypeQinQ {
		return p.count(datapath.CounterDropVLANDepth, datapath.Drop)
	}

	var l4proto uint8
	var l4off uint32
	frag := false
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
		if off+totLen > end {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		copy(key.Src[:4], ip[12:16])
		copy(key.Dst[:4], ip[16:20])
		key.Family = datapath.FamilyIPv4
		l4proto = ip[9]
		frag = be16(ip[6:])&0x3fff != 0
		l4off = off + ihl
	case etherTypeIPv6:
		if off+40 > end {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		ip := d[off:]
		if ip[0]>>4 != 6 {
			return p.count(datapath.CounterDropBadIP, datapath.Drop)
		}
		if off+40+uint32(be16(ip[4:])) > end {
			return p.count(datapath.CounterDropTruncIP, datapath.Drop)
		}
		copy(key.Src[:], ip[8:24])
		copy(key.Dst[:], ip[24:40])
		key.Family = datapath.FamilyIPv6
		l4proto = ip[6]
		l4off = off + 40
		for range maxIPv6Ext {
			if l4proto == ipv6Fragment {
				frag = true
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
		if !frag && isIPv6Ext(l4proto) {
			return p.count(datapath.CounterDropIPv6Ext, datapath.Drop)
		}
	default:
		return p.count(datapath.CounterPassNotIP, datapath.Pass)
	}

	key.Proto = l4proto
	if l4off > 0xffff {
		return p.count(datapath.CounterDropIPv6Ext, datapath.Drop)
	}
	hasPorts := false
	var tcpFlags uint8
	if !frag {
		switch l4proto {
		case ProtoTCP:
			if l4off+20 <= end && d[l4off+12]>>4 >= 5 {
				key.Sport, key.Dport = le16(d[l4off:]), le16(d[l4off+2:])
				tcpFlags = d[l4off+13]
				hasPorts = true
			}
		case ProtoUDP:
			if l4off+8 <= end {
				key.Sport, key.Dport = le16(d[l4off:]), le16(d[l4off+2:])
				hasPorts = true
			}
		}
	}
	if sender != nil {
		return p.fromTM(&key, hasPorts, tcpFlags, *sender)
	}
	if frag {
		if p.isVIP(&key) {
			return p.count(datapath.CounterDropFragment, datapath.Drop)
		}
		return p.count(datapath.CounterPassNotVIP, datapath.Pass)
	}

	switch {
	case l4proto == ProtoTCP || l4proto == ProtoUDP:
		if !hasPorts {
			c := datapath.CounterDropTruncL4
			if l4proto == ProtoTCP && l4off+20 <= end {
				c = datapath.CounterDropBadL4
			}
			if p.isVIP(&key) {
				return p.count(c, datapath.Drop)
			}
			return p.count(datapath.CounterPassNotVIP, datapath.Pass)
		}
	case l4proto == ProtoICMP && key.Family == datapath.FamilyIPv4,
		l4proto == ProtoICMPv6 && key.Family == datapath.FamilyIPv6:
		return p.icmp(&key, l4off)
	default:
		return p.other(&key)
	}

	v, res := p.hit(&key, tcpFlags, datapath.CounterFwdHit)
	if res == hitDone {
		return v
	}
	if !p.isVIP(&key) {
		return p.count(datapath.CounterPassNotVIP, datapath.Pass)
	}
	if v, ok := p.second(&key); ok {
		return v
	}
	if res == hitReselect {
		return p.selectTM(&key, datapath.CounterFwdReselect)
	}
	return p.selectTM(&key, datapath.CounterFwdNew)
}

func isIPv6Ext(proto uint8) bool {
	return proto == ipv6HopByHop || proto == ipv6Routing || proto == ipv6DestOptions
}

func (p *packet) other(k *Key) datapath.Verdict {
	if p.isVIP(k) {
		return p.count(datapath.CounterPassVIPOther, datapath.Pass)
	}
	return p.count(datapath.CounterPassNotVIP, datapath.Pass)
}

type hitResult int

const (
	hitNone hitResult = iota
	hitDone
	hitReselect
)

// TCP flags the model looks at.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func (p *packet) tm(idx uint32) *datapath.TM {
	if idx >= uint32(len(p.m.TMs)) {
		return nil
	}
	return &p.m.TMs[idx]
}

func (p *packet) hit(k *Key, tcpFlags uint8, verdictCounter datapath.Counter) (datapath.Verdict, hitResult) {
	f, ok := p.m.Flows[*k]
	if !ok {
		return 0, hitNone
	}
	idx := uint32(f.Tm)
	tm := p.tm(idx)
	if tm == nil || tm.Flags&datapath.TMDisabled != 0 {
		return 0, hitReselect
	}
	if k.Proto == ProtoTCP {
		if tcpFlags&(tcpSYN|tcpACK) == tcpSYN && f.TcpState == datapath.TCPClosing {
			if f.Flags&datapath.FlowSelected != 0 {
				return 0, hitReselect
			}
			f.TcpState = datapath.TCPOpen
		} else if tcpFlags&(tcpFIN|tcpRST) != 0 && f.TcpState != datapath.TCPClosing {
			f.TcpState = datapath.TCPClosing
		}
		p.m.Flows[*k] = f
	}
	if tm.Flags&datapath.TMReady == 0 {
		return p.count(datapath.CounterDropTMNotReady, datapath.Drop), hitDone
	}
	f.LastSeen = p.m.Now
	p.m.Flows[*k] = f
	p.svcTraffic(uint32(f.Svc), false)
	addTraffic(&p.m.TMStats[idx], p.n, false)
	p.count(verdictCounter, 0)
	return p.forward(tm), hitDone
}

// second tries the configured second keys after an exact miss (for VIPs
// only: the caller checked).
func (p *packet) second(k *Key) (datapath.Verdict, bool) {
	for _, mask := range p.m.Masks {
		if mask == 0 {
			break
		}
		sk := datapath.SecondKey{Key: MaskKey(*k, mask), Mask: mask}
		s, ok := p.m.SecondKeys[sk]
		if !ok {
			continue
		}
		idx := uint32(s.Tm)
		tm := p.tm(idx)
		if tm == nil || tm.Flags&datapath.TMReady == 0 || tm.Flags&datapath.TMDisabled != 0 {
			continue
		}
		if s.Svc != datapath.SvcNone && tm.Flags&datapath.TMDraining != 0 {
			continue
		}
		s.LastSeen = p.m.Now
		p.m.SecondKeys[sk] = s
		p.m.Flows[*k] = datapath.Flow{LastSeen: p.m.Now, Tm: uint16(idx), Svc: datapath.SvcNone,
			Flags: datapath.FlowSecondKey, Mask: uint8(mask)}
		addTraffic(&p.m.TMStats[idx], p.n, true)
		p.count(datapath.CounterFwdSecondKey, 0)
		return p.forward(tm), true
	}
	return 0, false
}

// MaskKey keeps the fields of k named by mask (datapath.Field*); the family
// always.
func MaskKey(k Key, mask uint32) Key {
	var out Key
	if mask&datapath.FieldSrc != 0 {
		out.Src = k.Src
	}
	if mask&datapath.FieldDst != 0 {
		out.Dst = k.Dst
	}
	if mask&datapath.FieldSrcPort != 0 {
		out.Sport = k.Sport
	}
	if mask&datapath.FieldDstPort != 0 {
		out.Dport = k.Dport
	}
	if mask&datapath.FieldVLAN != 0 {
		out.Vlan = k.Vlan
	}
	if mask&datapath.FieldProto != 0 {
		out.Proto = k.Proto
	}
	out.Family = k.Family
	return out
}

// fromTM is path 2: learning from a TM's own packets, then the kernel.
func (p *packet) fromTM(k *Key, hasPorts bool, tcpFlags uint8, sender uint32) datapath.Verdict {
	learn := func() {
		if !hasPorts {
			return
		}
		switch k.Proto {
		case ProtoTCP:
			if tcpFlags&(tcpSYN|tcpACK) != tcpSYN {
				return
			}
		case ProtoUDP:
		default:
			return
		}
		src := datapath.VIPKey{Addr: k.Src, Family: k.Family}
		owner, ok := p.m.LearnSrcs[src]
		if !ok || (owner != sender && owner != datapath.TMAny) {
			return
		}
		if p.isVIP(k) {
			return
		}
		rev := Reverse(*k)
		if cur, ok := p.m.Flows[rev]; ok && cur.TcpState != datapath.TCPClosing {
			if uint32(cur.Tm) == sender {
				return
			}
			if (modelTables{p.m}).TMUsable(uint32(cur.Tm)) {
				p.count(datapath.CounterLearnConflict, 0)
				return
			}
		}
		p.m.Flows[rev] = datapath.Flow{LastSeen: p.m.Now, Tm: uint16(sender), Svc: datapath.SvcNone, Flags: datapath.FlowLearned}
		p.count(datapath.CounterLearned, 0)
	}
	learn()
	return p.count(datapath.CounterPassFromTM, datapath.Pass)
}

func (p *packet) service(k *Key) (datapath.Service, bool) {
	var sk datapath.ServiceKey
	sk.Addr = k.Dst
	sk.Port = k.Dport
	sk.Proto = k.Proto
	sk.Family = k.Family
	if s, ok := p.m.Services[sk]; ok {
		return s, true
	}
	sk.Port = 0
	s, ok := p.m.Services[sk]
	return s, ok
}

func (p *packet) selectTM(k *Key, verdictCounter datapath.Counter) datapath.Verdict {
	svc, ok := p.service(k)
	if !ok {
		return p.count(datapath.CounterPassNoService, datapath.Pass)
	}
	slot := svc.Index*p.m.RingSize + Hash(*k, p.m.Seed)%p.m.RingSize
	if slot >= uint32(len(p.m.Rings)) || p.m.Rings[slot] == datapath.NoTM {
		return p.count(datapath.CounterDropNoTM, datapath.Drop)
	}
	idx := p.m.Rings[slot]
	tm := p.tm(idx)
	if tm == nil || tm.Flags&datapath.TMReady == 0 || tm.Flags&datapath.TMDisabled != 0 {
		return p.count(datapath.CounterDropTMNotReady, datapath.Drop)
	}
	p.m.Flows[*k] = datapath.Flow{LastSeen: p.m.Now, Tm: uint16(idx), Svc: uint16(svc.Index), Flags: datapath.FlowSelected}
	if svc.PersistMask != 0 {
		sk := datapath.SecondKey{Key: MaskKey(*k, svc.PersistMask), Mask: svc.PersistMask}
		if _, ok := p.m.SecondKeys[sk]; ok || len(p.m.SecondKeys) < p.m.MaxSecond {
			p.m.SecondKeys[sk] = datapath.Second{LastSeen: p.m.Now, Timeout: svc.PersistTimeout, Tm: uint16(idx), Svc: uint16(svc.Index)}
		}
	}
	p.svcTraffic(svc.Index, true)
	addTraffic(&p.m.TMStats[idx], p.n, true)
	p.count(verdictCounter, 0)
	return p.forward(tm)
}

func (p *packet) forward(tm *datapath.TM) datapath.Verdict {
	copy(p.data[0:6], tm.Mac[:])
	copy(p.data[6:12], tm.SrcMac[:])
	if tm.Ifindex == p.ingress {
		return p.count(datapath.CounterTX, datapath.TX)
	}
	if _, ok := p.m.TxPorts[tm.Ifindex]; !ok {
		return p.count(datapath.CounterDropNoEgress, datapath.Drop)
	}
	return p.count(datapath.CounterRedirect, datapath.Redirect)
}

// icmp routes ICMP "fragmentation needed" and ICMPv6 "packet too big" to the
// TM of the flow they are about: the embedded packet is the TM's, towards
// the client, so the flow's key is its reverse.
func (p *packet) icmp(k *Key, l4off uint32) datapath.Verdict {
	d := p.data
	end := uint32(len(d))
	var inner Key
	inner.Vlan = k.Vlan
	var off uint32
	if l4off+8 > end {
		return p.other(k)
	}
	if k.Family == datapath.FamilyIPv4 {
		if d[l4off] != 3 || d[l4off+1] != 4 {
			return p.other(k)
		}
		ip := l4off + 8
		if ip+20 > end || d[ip]>>4 != 4 || d[ip]&0x0f < 5 {
			return p.count(datapath.CounterPassICMPNoFlow, datapath.Pass)
		}
		off = ip + uint32(d[ip]&0x0f)*4
		copy(inner.Src[:4], d[ip+16:ip+20])
		copy(inner.Dst[:4], d[ip+12:ip+16])
		inner.Proto = d[ip+9]
		inner.Family = datapath.FamilyIPv4
	} else {
		if d[l4off] != 2 {
			return p.other(k)
		}
		ip := l4off + 8
		if ip+40 > end || d[ip]>>4 != 6 {
			return p.count(datapath.CounterPassICMPNoFlow, datapath.Pass)
		}
		off = ip + 40
		copy(inner.Src[:], d[ip+24:ip+40])
		copy(inner.Dst[:], d[ip+8:ip+24])
		inner.Proto = d[ip+6]
		inner.Family = datapath.FamilyIPv6
	}
	if inner.Proto != ProtoTCP && inner.Proto != ProtoUDP {
		return p.count(datapath.CounterPassICMPNoFlow, datapath.Pass)
	}
	if off > 0xffff || off+4 > end {
		return p.count(datapath.CounterPassICMPNoFlow, datapath.Pass)
	}
	inner.Sport = le16(d[off+2:])
	inner.Dport = le16(d[off:])
	if v, res := p.hit(&inner, 0, datapath.CounterFwdICMP); res == hitDone {
		return v
	}
	return p.count(datapath.CounterPassICMPNoFlow, datapath.Pass)
}
