package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/flows.h: the steps that find a packet's TM in a table.

// putNew is sy_put_new: a bare SYN's new entry goes to the half-open
// table, any other packet's to the flow table. A full table refuses it
// (counted); the packet is forwarded all the same.
func (p *packet) putNew(e *datapath.Flow) {
	k := p.key
	if k.Proto == ProtoTCP {
		p.tcpTrack(e, false)
		if p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN {
			if flowsFull(p.m.HalfOpen, p.m.MaxHalfOpen, k) {
				p.count(datapath.CounterHalfOpenRefused, 0)
				return
			}
			p.m.HalfOpen[k] = *e
			p.m.addActive(uint32(e.Tm), 1)
			return
		}
	}
	if flowsFull(p.m.Flows, p.m.MaxFlows, k) {
		p.count(datapath.CounterFlowRefused, 0)
		p.event(k, e, datapath.EventRefused)
		return
	}
	p.m.Flows[k] = *e
	p.event(k, e, datapath.EventNew)
	p.m.addActive(uint32(e.Tm), 1)
}

// halfOpen is sy_half_open: after an exact miss (or a flow to re-select),
// a TCP packet of a half-open flow. A retransmitted SYN goes to its TM; a
// packet in the client's window that establishes it moves the entry to the
// flow table; a valid RST ends it. Its TM forced out: the entry goes and
// the packet is selected again.
func (p *packet) halfOpen() datapath.Verdict {
	k := p.key
	if k.Proto != ProtoTCP {
		return goOn
	}
	h, ok := p.m.HalfOpen[k]
	if !ok {
		return goOn
	}
	idx := uint32(h.Tm)
	tm := p.tm(idx)
	if tm == nil || tm.Flags&datapath.TMDisabled != 0 {
		delete(p.m.HalfOpen, k)
		p.m.addActive(idx, -1)
		return goOn
	}
	e := h
	p.tcpTrack(&e, false)
	e.LastSeen = p.m.Now
	switch {
	case e.TcpState&datapath.TCPReset != 0:
		delete(p.m.HalfOpen, k)
		p.m.addActive(idx, -1)
	case e.TcpState&datapath.TCPEstablished != 0:
		if flowsFull(p.m.Flows, p.m.MaxFlows, k) {
			p.count(datapath.CounterFlowRefused, 0)
			p.event(k, &e, datapath.EventRefused)
			p.m.HalfOpen[k] = e
		} else {
			p.m.Flows[k] = e
			p.event(k, &e, datapath.EventNew)
			delete(p.m.HalfOpen, k)
			p.count(datapath.CounterHalfOpenPromoted, 0)
		}
	default:
		p.m.HalfOpen[k] = e
	}
	if tm.Flags&datapath.TMReady == 0 {
		return p.count(datapath.CounterDropTMNotReady, datapath.Drop)
	}
	p.svcTraffic(uint32(e.Svc), false)
	addTraffic(&p.m.TMStats[idx], p.n, false)
	p.count(datapath.CounterFwdHalfOpen, 0)
	return p.forward(tm)
}

// hit is sy_hit: sends the packet to the TM of an existing flow. It goes
// on (goOn) on a miss, and with reselect true when the flow's TM was forced
// out or a selected flow's key is reused by a new TCP connection. seg: the
// packet's TCP header moves the flow's state (false: an ICMP error about it).
func (p *packet) hit(k *datapath.FlowKey, seg bool, verdictCounter datapath.Counter) (v datapath.Verdict, reselect bool) {
	f, ok := p.m.Flows[*k]
	if !ok {
		return goOn, false
	}
	idx := uint32(f.Tm)
	tm := p.tm(idx)
	if tm == nil || tm.Flags&datapath.TMDisabled != 0 {
		return goOn, true
	}
	if seg && k.Proto == ProtoTCP {
		if p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN && f.TcpState&datapath.TCPEnded != 0 {
			// A new connection on the key of a closed one: a selected
			// flow is selected again, others keep their TM and start
			// over.
			if f.Flags&datapath.FlowSelected != 0 {
				// Its next entry is half-open: this one must not
				// catch the ACK.
				delete(p.m.Flows, *k)
				p.m.addActive(idx, -1)
				return goOn, true
			}
			f.TcpState = 0
		}
		if p.tcpTrack(&f, false) {
			p.event(*k, &f, datapath.EventState)
		}
		p.m.Flows[*k] = f
	}
	if tm.Flags&datapath.TMReady == 0 {
		return p.count(datapath.CounterDropTMNotReady, datapath.Drop), false
	}
	f.LastSeen = p.m.Now
	p.m.Flows[*k] = f
	p.svcTraffic(uint32(f.Svc), false)
	addTraffic(&p.m.TMStats[idx], p.n, false)
	p.count(verdictCounter, 0)
	return p.forward(tm), false
}

// second is sy_second: after an exact miss, for a VIP, the configured
// second keys, most specific first. A hit memorizes the exact key to the
// second key's TM.
func (p *packet) second(k *datapath.FlowKey) datapath.Verdict {
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
		e := datapath.Flow{LastSeen: p.m.Now, Tm: uint16(idx), Svc: datapath.SvcNone,
			Flags: datapath.FlowSecondKey, Mask: uint8(mask)}
		p.putNew(&e)
		addTraffic(&p.m.TMStats[idx], p.n, true)
		p.count(datapath.CounterFwdSecondKey, 0)
		return p.forward(tm)
	}
	return goOn
}
