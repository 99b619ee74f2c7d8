package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/learn.h.

// tmSide is sy_tm_side: a TM's TCP packet of a flow it owns moves the TM's
// side of the flow's state. Another TM's flow is not touched.
func (p *packet) tmSide() {
	rev := Reverse(p.key)
	if cur, ok := p.m.Flows[rev]; ok && uint32(cur.Tm) == p.sender {
		changed := p.tcpTrack(&cur, true)
		p.m.Flows[rev] = cur
		if changed {
			p.event(rev, &cur, datapath.EventState)
		}
	}
}

// fromTM is sy_from_tm, the step for a TM's own packets: a new flow the TM
// opens towards a non-VIP destination, from the TM's own address or a
// shared SNAT address, memorizes the reverse key to the TM; the packet goes
// to the kernel.
func (p *packet) fromTM() datapath.Verdict {
	k, sender := &p.key, p.sender
	learn := func() {
		if !p.ports {
			return
		}
		switch k.Proto {
		case ProtoTCP:
			if p.tcpFlags&(tcpSYN|tcpACK) != tcpSYN {
				p.tmSide()
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
		if cur, ok := p.m.Flows[rev]; ok && cur.TcpState&datapath.TCPEnded == 0 {
			// Already the sender's: keep it. Another TM's live flow:
			// never taken.
			if uint32(cur.Tm) == sender {
				return
			}
			if tmUsable(p.m, uint32(cur.Tm)) {
				p.count(datapath.CounterLearnConflict, 0)
				return
			}
		}
		e := datapath.Flow{LastSeen: p.m.Now, Tm: uint16(sender), Svc: datapath.SvcNone, Flags: datapath.FlowLearned}
		if k.Proto == ProtoTCP {
			p.tcpTrack(&e, true)
		}
		if flowsFull(p.m.Flows, p.m.MaxFlows, rev) {
			p.count(datapath.CounterFlowRefused, 0)
			p.event(rev, &e, datapath.EventRefused)
			return
		}
		p.m.Flows[rev] = e
		p.count(datapath.CounterLearned, 0)
		p.event(rev, &e, datapath.EventNew)
		p.m.addActive(sender, 1)
	}
	learn()
	return p.count(datapath.CounterPassFromTM, datapath.Pass)
}
