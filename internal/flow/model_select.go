package flow

import (
	"encoding/binary"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Model of bpf/select.h: the last step for a new flow.

// service is sy_service: exact port first, then the all-ports VIP.
func (p *packet) service(k *datapath.FlowKey) (datapath.Service, bool) {
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

// selectTM is sy_select (select is a Go keyword): a TM by the service's
// Maglev ring, the new flow entry and, with persistence, the service's
// second key.
func (p *packet) selectTM(k *datapath.FlowKey, verdictCounter datapath.Counter) datapath.Verdict {
	svc, ok := p.service(k)
	if !ok {
		return p.count(datapath.CounterPassNoService, datapath.Pass)
	}
	off := p.policySlot(k, svc)
	idx, ok := p.policyQoS(svc, off)
	if !ok {
		slot := svc.Index*p.m.RingSize + off
		if slot >= uint32(len(p.m.Rings)) {
			return p.count(datapath.CounterDropNoTM, datapath.Drop)
		}
		idx = p.m.Rings[slot]
	}
	if idx == datapath.NoTM {
		return p.count(datapath.CounterDropNoTM, datapath.Drop)
	}
	tm := p.tm(idx)
	if tm == nil || tm.Flags&datapath.TMReady == 0 || tm.Flags&datapath.TMDisabled != 0 {
		return p.count(datapath.CounterDropTMNotReady, datapath.Drop)
	}
	e := datapath.Flow{LastSeen: p.m.Now, Tm: uint16(idx), Svc: uint16(svc.Index), Flags: datapath.FlowSelected}
	p.putNew(&e)
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

// policyHash is sy_policy_hash: the hash that indexes a service's ring for
// a new flow: the whole key (hash 0), its Field* fields, or a symmetric
// form (HashSym*).
func policyHash(key datapath.FlowKey, hash, seed uint32) uint32 {
	if hash == 0 {
		return Hash(key, seed)
	}
	var k datapath.FlowKey
	if hash&(datapath.HashSymPort|datapath.HashSymAddr) == 0 {
		k = MaskKey(key, hash)
		return Hash(k, seed)
	}
	k.Family, k.Proto = key.Family, key.Proto
	sp, dp := SrcPort(key), DstPort(key)
	k.Sport = key.Dport
	if sp >= dp {
		k.Sport = key.Sport
	}
	if hash&datapath.HashSymAddr != 0 {
		switch {
		case sp > dp:
			k.Src = key.Src
		case dp > sp:
			k.Src = key.Dst
		default:
			for i := range k.Src {
				k.Src[i] = key.Src[i] ^ key.Dst[i]
			}
		}
	}
	return Hash(k, seed)
}

// PolicyHash is the hash that service entry svc's ring is indexed by for
// a new flow with key k (sy_policy_hash): tests use it to predict the TM.
func PolicyHash(k datapath.FlowKey, svc datapath.Service, seed uint32) uint32 {
	return policyHash(k, svc.Hash, seed)
}

// policySlot is sy_policy_slot: the ring offset the service's policy gives
// a new flow: its hash, or the next slot of the round-robin position.
func (p *packet) policySlot(k *datapath.FlowKey, svc datapath.Service) uint32 {
	if svc.Policy == datapath.PolicyLC || svc.Policy == datapath.PolicyWLC {
		return p.m.policyLeast(svc, policyHash(*k, svc.Hash, p.m.Seed))
	}
	if svc.Policy != datapath.PolicyRR {
		return policyHash(*k, svc.Hash, p.m.Seed) % p.m.RingSize
	}
	if svc.Index >= datapath.PolicyMaxServices {
		return 0
	}
	if p.m.PolicyRR == nil {
		p.m.PolicyRR = map[uint32]uint32{}
	}
	n := p.m.PolicyRR[svc.Index]
	if n+1 >= p.m.RingSize {
		p.m.PolicyRR[svc.Index] = 0
	} else {
		p.m.PolicyRR[svc.Index] = n + 1
	}
	return n % p.m.RingSize
}

// policyMix is sy_policy_mix: the flow's hash mixed again (murmur3's
// finalizer), the second of the two choices.
func policyMix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// policyActive is sy_policy_active: a TM's active flows, negative drift
// read as 0.
func (m *Model) policyActive(tm uint32) uint64 {
	if int(tm) >= datapath.MaxTMs || m.Active[tm] <= 0 {
		return 0
	}
	return uint64(m.Active[tm])
}

// policyWeight is sy_policy_weight: a TM's weight for
// weighted-least-connections (0: 1).
func (m *Model) policyWeight(tm uint32) uint64 {
	if int(tm) >= datapath.MaxTMs || m.PolicyWeight[tm] == 0 {
		return 1
	}
	return uint64(m.PolicyWeight[tm])
}

// policyLeast is sy_policy_least: of the slots of hash h and of its mix,
// the one whose TM has fewer active flows (per unit of weight for
// weighted-least-connections), the first on a tie.
func (m *Model) policyLeast(svc datapath.Service, h uint32) uint32 {
	a, b := h%m.RingSize, policyMix(h)%m.RingSize
	sa, sb := svc.Index*m.RingSize+a, svc.Index*m.RingSize+b
	if int(sa) >= len(m.Rings) || int(sb) >= len(m.Rings) {
		return a
	}
	ta, tb := m.Rings[sa], m.Rings[sb]
	if ta == datapath.NoTM || tb == datapath.NoTM || ta == tb {
		return a
	}
	na, nb := m.policyActive(ta), m.policyActive(tb)
	if svc.Policy == datapath.PolicyWLC {
		na *= m.policyWeight(tb)
		nb *= m.policyWeight(ta)
	}
	if nb < na {
		return b
	}
	return a
}

// PolicyLeastSlots are the two ring offsets a least-connections service
// weighs for a new flow with key k (sy_policy_least): tests use them to
// predict the choice.
func PolicyLeastSlots(k datapath.FlowKey, svc datapath.Service, seed, ringSize uint32) (a, b uint32) {
	h := policyHash(k, svc.Hash, seed)
	return h % ringSize, policyMix(h) % ringSize
}

// policyDSCP is sy_policy_dscp: the DSCP of the packet's IP header, after
// its VLAN tags.
func (p *packet) policyDSCP() uint32 {
	off := 12
	for range datapath.MaxVLANTags {
		if off+2 > len(p.data) {
			return 0
		}
		et := binary.BigEndian.Uint16(p.data[off:])
		if et != 0x8100 && et != 0x88a8 {
			break
		}
		off += 4
	}
	b := off + 2
	if b+2 > len(p.data) {
		return 0
	}
	if p.key.Family == datapath.FamilyIPv4 {
		return uint32(p.data[b+1] >> 2)
	}
	return uint32(p.data[b]&0x0f)<<2 | uint32(p.data[b+1]>>6)
}

// policyQoS is sy_policy_qos: the TM of a QoS service's class ring at ring
// offset off, and true; false when the service has no class or the
// packet's DSCP is in none.
func (p *packet) policyQoS(svc datapath.Service, off uint32) (uint32, bool) {
	q, ok := p.m.QoS[svc.Index]
	if !ok || q.Dscp == 0 || q.Ring >= datapath.PolicyQoSRings {
		return 0, false
	}
	if (q.Dscp>>p.policyDSCP())&1 == 0 {
		return 0, false
	}
	slot := q.Ring*p.m.RingSize + off
	if p.m.QoSRings == nil {
		return 0, true // a zero-filled array, like BPF's
	}
	return p.m.QoSRings[slot], true
}
