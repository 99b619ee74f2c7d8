package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of the signal step in bpf/signal.h (the ops are in signal.go, shared
// with the daemon's UDP control).

// signal is sy_signal: trust checks, then the message, then a frame is
// consumed or a shim stripped and the packet goes on (goOn).
func (p *packet) signal(ifc *datapath.Iface) datapath.Verdict {
	d := p.data
	// The whole frame, fragments included (bpf_xdp_get_buff_len): the
	// message is read across them (bpf_xdp_load_bytes).
	p.n = uint64(len(d))
	if (p.wrongPort || p.byTM) && !p.senderReady() {
		return p.count(datapath.CounterSigRefNotReady, datapath.Drop)
	}
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
	// Remove [EtherType][header][TLVs], keeping the source MAC; the packet
	// goes on addressed to the interface, also when the shim was sent to
	// the signal multicast MAC (the kernel forwards only frames for it).
	strip := 2 + msg.Len
	// bpf_xdp_adjust_head moves the head within the first buffer only and
	// leaves at least an Ethernet header in it.
	if uint32(strip)+14 > p.linear {
		return p.count(datapath.CounterSigRefTruncated, datapath.Drop)
	}
	p.linear -= uint32(strip)
	p.data = append(d[:12:12], d[12+strip:]...)
	copy(p.data[0:6], ifc.Mac[:])
	p.count(datapath.CounterSigShim, 0)
	return goOn
}

// senderReady is sy_sender_ready: the TM whose MAC sent the signal is ready
// (a MAC no TM has counts as ready; the caller refuses it for what it is).
func (p *packet) senderReady() bool {
	idx, ok := p.m.TMByMAC[[6]uint8(p.data[6:12])]
	if !ok {
		return true
	}
	tm := p.tm(idx)
	return tm != nil && tm.Flags&datapath.TMReady != 0
}
