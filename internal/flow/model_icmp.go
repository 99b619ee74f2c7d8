package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/icmp.h.

// other is sy_other: not a TCP/UDP packet we forward; for a VIP or not,
// the kernel's.
func (p *packet) other() datapath.Verdict {
	if p.isVIP(&p.key) {
		return p.count(datapath.CounterPassVIPOther, datapath.Pass)
	}
	return p.count(datapath.CounterPassNotVIP, datapath.Pass)
}

// icmp is sy_icmp: "fragmentation needed" and "packet too big" about a
// known flow go to that flow's TM (parseICMP found the flow's key).
func (p *packet) icmp() datapath.Verdict {
	if p.icmpKind == icmpOther {
		return p.other()
	}
	if p.icmpKind == icmpInner {
		if v, _ := p.hit(&p.inner, false, datapath.CounterFwdICMP); v != goOn {
			return v
		}
	}
	return p.count(datapath.CounterPassICMPNoFlow, datapath.Pass)
}
