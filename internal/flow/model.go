package flow

import (
	"encoding/binary"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Model is the Go model of the XDP program in bpf/: the same tables and the
// same decisions, one packet at a time. Its maps are plain Go maps; the zero
// values of absent array entries match BPF arrays (zero-filled).
//
// The model follows the program function by function, Go-cased, in the same
// order: parse (model_parse.go, bpf/parse.h), then the steps process runs
// (bpf/distributor.c) — signal (model_signal.go, bpf/signal.h), fromTM
// (model_learn.go, bpf/learn.h), screen and icmp (model_icmp.go,
// bpf/icmp.h), hit, halfOpen and second (model_flows.go, bpf/flows.h), with
// tcpTrack (model_tcp.go, bpf/tcp.h), selectTM
// (model_select.go, sy_select in bpf/select.h) — with the shared helpers in
// model_keys.go (bpf/keys.h, bpf/forward.h, bpf/counters.h).
type Model struct {
	RingSize    uint32
	MaxServices uint32
	Seed        uint32

	// Now is sy_now, the daemon's clock in seconds.
	Now uint32
	// MaxSecond is the second-key table's capacity.
	MaxSecond int
	// MaxFlows and MaxHalfOpen are the flow and half-open tables'
	// capacities (0: unbounded), as datapath.Options.MaxFlows splits
	// between them (datapath.HalfOpenSize).
	MaxFlows, MaxHalfOpen int

	// EventCap is how many events the ring holds unread (0: unbounded);
	// Events are the events not read yet (ReadEvents drains them).
	EventCap int
	Events   []datapath.Event

	Flows      map[datapath.FlowKey]datapath.Flow
	HalfOpen   map[datapath.FlowKey]datapath.Flow
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

	// PolicyRR is policy_rr, one CPU's round-robin position by service
	// index (the differential tests run the program on one CPU).
	PolicyRR map[uint32]uint32
	// Active is policy_active: each TM index's active flows, counted
	// where the program counts them (the least-connections policies).
	Active [datapath.MaxTMs]int64
	// PolicyWeight is policy_weight: each TM index's weight for
	// weighted-least-connections.
	PolicyWeight [datapath.MaxTMs]uint32
	// QoS is policy_qos, by service index; QoSRings is policy_qos_rings
	// (PolicyQoSRings × RingSize slots, made by the first write).
	QoS      map[uint32]datapath.QoS
	QoSRings []uint32
}

// addActive is sy_active_add: n more active flows for TM idx.
func (m *Model) addActive(idx uint32, n int64) {
	if int(idx) < datapath.MaxTMs {
		m.Active[idx] += n
	}
}

// NewModel returns an empty model sized like a data path loaded with the
// same ring size and service count.
func NewModel(ringSize, maxServices, seed uint32) *Model {
	return &Model{
		RingSize:    ringSize,
		MaxServices: maxServices,
		Seed:        seed,
		MaxSecond:   65536,
		Flows:       map[datapath.FlowKey]datapath.Flow{},
		HalfOpen:    map[datapath.FlowKey]datapath.Flow{},
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

// goOn is a step's answer when it has no verdict and the next step runs
// (SY_GO_ON).
const goOn = ^datapath.Verdict(0)

// packet is one packet in the model: the bytes and struct sy_pkt, the
// description parse fills for the steps.
type packet struct {
	m       *Model
	data    []byte
	ingress uint32
	// linear is the length of the frame's first buffer (data .. data_end
	// in C); the rest of a multi-buffer frame is in fragments. Headers
	// are read from the first buffer only (parse.h, sy_past_first).
	linear uint32

	key       datapath.FlowKey
	inner     datapath.FlowKey // icmpInner: the key of the flow the error is about (in C, in the scratch)
	n         uint64           // len: bytes, as counted
	sender    uint32           // byTM: the TM index of the source MAC
	l4off     uint32
	byTM      bool // a TM's MAC on an internal interface, the TM's own
	wrongPort bool // a TM's MAC on an internal interface not the TM's
	isSignal  bool // EtherType datapath.EtherTypeSignal
	frag      bool
	ports     bool // a whole TCP/UDP header: the key has the ports
	tcpHdr    bool // 20 bytes of TCP header are there (even with a bad data offset)
	tcpFlags  uint8
	seq       uint32 // TCP: sequence number
	ack       uint32 // TCP: acknowledgment number
	seqEnd    uint32 // TCP: seq + payload + SYN + FIN: the side's next
	icmpKind  icmpKind
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// le16 loads two wire bytes the way the BPF program's native loads do.
func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }

// Process runs one packet through the model as if it arrived on interface
// ingress. It returns the verdict and the packet as the program leaves it.
func (m *Model) Process(pkt []byte, ingress uint32) (datapath.Verdict, []byte) {
	return m.ProcessFrags(pkt, ingress, len(pkt))
}

// ProcessFrags runs one multi-buffer frame through the model: its first
// linear bytes are the first buffer, the rest is in fragments (as an
// xdp.frags program sees a jumbo frame or a GRO aggregate). A linear of
// len(pkt) or more is a frame without fragments.
func (m *Model) ProcessFrags(pkt []byte, ingress uint32, linear int) (datapath.Verdict, []byte) {
	linear = max(0, min(linear, len(pkt)))
	p := &packet{m: m, data: append([]byte(nil), pkt...), ingress: ingress, linear: uint32(linear)}
	return p.process(), p.data
}

// screen is sy_screen: what the flow steps do not take. A fragment, or
// TCP/UDP without its ports, is dropped when it is for a VIP and the
// kernel's otherwise; protocols other than TCP, UDP and ICMP (of the
// packet's family) are the kernel's. ICMP goes on to icmp.
func (p *packet) screen() datapath.Verdict {
	proto := p.key.Proto
	if p.frag {
		if p.isVIP(&p.key) {
			return p.count(datapath.CounterDropFragment, datapath.Drop)
		}
		return p.count(datapath.CounterPassNotVIP, datapath.Pass)
	}
	if proto == ProtoTCP || proto == ProtoUDP {
		if p.ports {
			return goOn
		}
		c := datapath.CounterDropTruncL4
		if p.tcpHdr {
			c = datapath.CounterDropBadL4
		}
		if p.isVIP(&p.key) {
			return p.count(c, datapath.Drop)
		}
		return p.count(datapath.CounterPassNotVIP, datapath.Pass)
	}
	if (proto == ProtoICMP && p.key.Family == datapath.FamilyIPv4) ||
		(proto == ProtoICMPv6 && p.key.Family == datapath.FamilyIPv6) {
		return goOn
	}
	return p.other()
}

// process is sy_process: parse, then the steps in order.
func (p *packet) process() datapath.Verdict {
	v, ifc := p.parseEth()
	if v != goOn {
		return v
	}
	if p.isSignal {
		if v := p.signal(ifc); v != goOn {
			return v
		}
	}
	if v := p.parse(); v != goOn {
		return v
	}
	if p.byTM {
		return p.fromTM()
	}
	if v := p.screen(); v != goOn {
		return v
	}
	if !p.ports { // screen lets only ICMP through without ports
		return p.icmp()
	}
	v, reselect := p.hit(&p.key, true, datapath.CounterFwdHit)
	if v != goOn {
		return v
	}
	// Second keys and selection are for VIPs only.
	if !p.isVIP(&p.key) {
		return p.count(datapath.CounterPassNotVIP, datapath.Pass)
	}
	if v := p.halfOpen(); v != goOn {
		return v
	}
	if v := p.second(&p.key); v != goOn {
		return v
	}
	if reselect {
		return p.selectTM(&p.key, datapath.CounterFwdReselect)
	}
	return p.selectTM(&p.key, datapath.CounterFwdNew)
}
