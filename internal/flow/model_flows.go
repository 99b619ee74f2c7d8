package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/flows.h: the steps that find a packet's TM in a table.

// hit is sy_hit: sends the packet to the TM of an existing flow. It goes
// on (goOn) on a miss, and with reselect true when the flow's TM was forced
// out or a selected flow's key is reused by a new TCP connection.
func (p *packet) hit(k *datapath.FlowKey, tcpFlags uint8, verdictCounter datapath.Counter) (v datapath.Verdict, reselect bool) {
	f, ok := p.m.Flows[*k]
	if !ok {
		return goOn, false
	}
	idx := uint32(f.Tm)
	tm := p.tm(idx)
	if tm == nil || tm.Flags&datapath.TMDisabled != 0 {
		return goOn, true
	}
	if k.Proto == ProtoTCP {
		if tcpFlags&(tcpSYN|tcpACK) == tcpSYN && f.TcpState == datapath.TCPClosing {
			// A new connection on the key of a closed one: a selected
			// flow is selected again, others keep their TM.
			if f.Flags&datapath.FlowSelected != 0 {
				return goOn, true
			}
			f.TcpState = datapath.TCPOpen
		} else if tcpFlags&(tcpFIN|tcpRST) != 0 && f.TcpState != datapath.TCPClosing {
			f.TcpState = datapath.TCPClosing
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
		p.m.Flows[*k] = datapath.Flow{LastSeen: p.m.Now, Tm: uint16(idx), Svc: datapath.SvcNone,
			Flags: datapath.FlowSecondKey, Mask: uint8(mask)}
		addTraffic(&p.m.TMStats[idx], p.n, true)
		p.count(datapath.CounterFwdSecondKey, 0)
		return p.forward(tm)
	}
	return goOn
}
