package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/learn.h.

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
		p.m.Flows[rev] = datapath.Flow{LastSeen: p.m.Now, Tm: uint16(sender), Svc: datapath.SvcNone, Flags: datapath.FlowLearned}
		p.count(datapath.CounterLearned, 0)
	}
	learn()
	return p.count(datapath.CounterPassFromTM, datapath.Pass)
}
