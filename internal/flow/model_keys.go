package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/counters.h, bpf/keys.h and bpf/forward.h: the helpers every
// step shares.

// count is sy_count: counts the packet under c and returns v.
func (p *packet) count(c datapath.Counter, v datapath.Verdict) datapath.Verdict {
	p.m.Counters[c].Packets++
	p.m.Counters[c].Bytes += p.n
	return v
}

// addTraffic is sy_traffic_add.
func addTraffic(t *datapath.Traffic, n uint64, isNew bool) {
	t.Packets++
	t.Bytes += n
	if isNew {
		t.NewFlows++
	}
}

// svcTraffic is sy_traffic_add on svc_stats, an array: an index past its
// end is a failed lookup.
func (p *packet) svcTraffic(idx uint32, isNew bool) {
	if idx < uint32(len(p.m.SvcStats)) {
		addTraffic(&p.m.SvcStats[idx], p.n, isNew)
	}
}

// isVIP is sy_is_vip.
func (p *packet) isVIP(k *datapath.FlowKey) bool {
	var vk datapath.VIPKey
	vk.Addr = k.Dst
	vk.Family = k.Family
	_, ok := p.m.VIPs[vk]
	return ok
}

// tm is a lookup in the tms array: nil past its end.
func (p *packet) tm(idx uint32) *datapath.TM {
	if idx >= uint32(len(p.m.TMs)) {
		return nil
	}
	return &p.m.TMs[idx]
}

// MaskKey keeps the fields of k named by mask (datapath.Field*); the family
// always (sy_mask_key).
func MaskKey(k datapath.FlowKey, mask uint32) datapath.FlowKey {
	var out datapath.FlowKey
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

// forward is sy_forward: the MACs rewritten for the TM, then XDP_TX back
// out of the ingress or a redirect to the TM's interface.
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
