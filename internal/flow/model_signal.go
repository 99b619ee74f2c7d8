package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of the signal step in bpf/signal.h (the ops are in signal.go, shared
// with the daemon's UDP control).

// signal is sy_signal: trust checks, then the message, then a frame is
// consumed or a shim stripped and the packet goes on (goOn).
func (p *packet) signal(ifc *datapath.Iface) datapath.Verdict {
	d := p.data
	if p.wrongPort {
		return p.count(datapath.CounterSigRefWrongPort, datapath.Drop)
	}
	if ifc == nil || ifc.Role != datapath.RoleInternal {
		return p.count(datapath.CounterSigRefExternal, datapath.Drop)
	}
	if !p.byTM {
		return p.count(datapath.CounterSigRefUnknownMAC, datapath.Drop)
	}
	dst := [6]uint8(d[0:6])
	if dst != ifc.Mac && dst != p.m.Settings.SignalMcast {
		return p.count(datapath.CounterSigRefNotForUs, datapath.Drop)
	}
	msg, refused, ok := CheckMessage(d[14:])
	if !ok {
		return p.count(refused, datapath.Drop)
	}
	for _, c := range msg.Apply(p.m, p.sender) {
		p.count(c, 0)
	}
	if !msg.Shim {
		return p.count(datapath.CounterSigFrame, datapath.Drop)
	}
	// Remove [EtherType][header][TLVs], keeping the MACs.
	strip := 2 + msg.Len
	p.data = append(d[:12:12], d[12+strip:]...)
	p.count(datapath.CounterSigShim, 0)
	return goOn
}
