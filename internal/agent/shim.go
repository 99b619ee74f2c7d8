package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/signal"
)

// ShimOptions configure the in-band signal program.
type ShimOptions struct {
	// Iface is the interface towards the distributor.
	Iface string
	// DistMAC is the distributor's MAC on that segment: only frames to it
	// carry shims.
	DistMAC net.HardwareAddr
	// SNAT are the addresses whose TCP SYNs carry their own MEMORIZE.
	SNAT []netip.Addr
	// Timeout and Mirror are the MEMORIZE's, as in Config.
	Timeout time.Duration
	Mirror  bool
}

// Shim is the tc egress program (bpf/agent.c) attached to the interface
// towards the distributor, and its maps. It is safe for concurrent use.
type Shim struct {
	objs shimObjects
	l    link.Link
}

// AttachShim loads the program and attaches it at tcx egress of o.Iface (in
// the calling thread's network namespace).
func AttachShim(o ShimOptions) (*Shim, error) {
	ifi, err := net.InterfaceByName(o.Iface)
	if err != nil {
		return nil, fmt.Errorf("shim: %w", err)
	}
	if len(o.DistMAC) != 6 {
		return nil, errors.New("shim: the distributor's MAC must have 6 bytes")
	}
	if len(o.SNAT) > int(shimSyAgentConstsSY_AGENT_MAX_SRCS) {
		return nil, fmt.Errorf("shim: %d SNAT addresses, at most %d", len(o.SNAT), shimSyAgentConstsSY_AGENT_MAX_SRCS)
	}
	if o.Timeout < 0 || o.Timeout > signal.MaxMemorizeTimeout {
		return nil, fmt.Errorf("shim: timeout %v out of 0..%v", o.Timeout, signal.MaxMemorizeTimeout)
	}
	spec, err := loadShim()
	if err != nil {
		return nil, fmt.Errorf("shim: %w", err)
	}
	var mac [6]byte
	copy(mac[:], o.DistMAC)
	var flags uint16
	if o.Mirror {
		flags = 0x1 // SY_MEMORIZE_F_MIRROR
	}
	for name, v := range map[string]any{
		shimVarSaDistMac:       mac,
		shimVarSaMtu:           uint32(ifi.MTU),
		shimVarSaTimeout:       uint32((o.Timeout + time.Second - 1) / time.Second),
		shimVarSaMemorizeFlags: flags,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("shim: set %s: %w", name, err)
		}
	}
	s := &Shim{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("shim: load: %w", err)
	}
	for _, a := range o.SNAT {
		k := addrKey(a)
		if err := s.objs.AgentSrcs.Put(&k, uint8(1)); err != nil {
			s.objs.Close()
			return nil, fmt.Errorf("shim: SNAT address %v: %w", a, err)
		}
	}
	s.l, err = link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: s.objs.SyAgentEgress, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		s.objs.Close()
		return nil, fmt.Errorf("shim: attach to %s egress: %w", o.Iface, err)
	}
	return s, nil
}

func addrKey(a netip.Addr) shimSyAgentAddr {
	a = a.Unmap()
	var k shimSyAgentAddr
	if a.Is4() {
		b := a.As4()
		copy(k.Addr[:], b[:])
		k.Family = 4
	} else {
		k.Addr = a.As16()
		k.Family = 6
	}
	return k
}

// be16 stores v so that its bytes in memory are big-endian (the C field is
// __be16 and bpf2go gives it a host-order uint16).
func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func wireKeyOf(k signal.Key) (shimSyWireKey, error) {
	src, dst := k.Src.Unmap(), k.Dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return shimSyWireKey{}, fmt.Errorf("shim: key %v → %v is not an exact key of one family", k.Src, k.Dst)
	}
	w := shimSyWireKey{Sport: be16(k.SrcPort), Dport: be16(k.DstPort), Vlan: be16(k.VLAN), Proto: k.Proto}
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		copy(w.Src[:], s[:])
		copy(w.Dst[:], d[:])
		w.Family = 4
	} else {
		w.Src, w.Dst = src.As16(), dst.As16()
		w.Family = 6
	}
	return w, nil
}

// ErrPendingFull is returned by Put when the pending table is full; the
// caller sends a frame instead.
var ErrPendingFull = errors.New("shim: pending table full")

// Put makes m the pending shim of the flow k (the key as the distributor
// sees it): the flow's next packet to the distributor carries it. An
// earlier pending message of the flow is replaced.
func (s *Shim) Put(k signal.Key, m signal.Message) error {
	wk, err := wireKeyOf(k)
	if err != nil {
		return err
	}
	// The library's Shim is the one encoder: shim an empty frame and keep
	// the message, between the 14-byte Ethernet header and the 2 bytes
	// of the original EtherType.
	b, err := signal.Shim(make([]byte, 14), m)
	if err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	msg := b[14 : len(b)-2]
	var p shimSyAgentPending
	if len(msg) > len(p.Msg) {
		return fmt.Errorf("shim: message of %d bytes, at most %d in a pending shim", len(msg), len(p.Msg))
	}
	p.Len = uint16(len(msg))
	copy(p.Msg[:], msg)
	if err := s.objs.AgentPending.Put(&wk, &p); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return ErrPendingFull
		}
		return fmt.Errorf("shim: pending: %w", err)
	}
	return nil
}

// Take removes the pending shim of k and reports whether it was still
// there (no packet carried it): the caller then sends it as a frame.
func (s *Shim) Take(k signal.Key) bool {
	wk, err := wireKeyOf(k)
	if err != nil {
		return false
	}
	return s.objs.AgentPending.Delete(&wk) == nil
}

// ShimCounters are the program's counters.
type ShimCounters struct {
	// Pending: pending messages a packet carried; SYN: SYNs that carried
	// their own MEMORIZE.
	Pending uint64 `json:"pending"`
	SYN     uint64 `json:"syn"`
	// Packets that could not take a shim: GSO, over the MTU, a pending
	// message of a bad length, a failed bpf_skb_adjust_room or store.
	SkipGSO    uint64 `json:"skip_gso"`
	SkipMTU    uint64 `json:"skip_mtu"`
	SkipBadLen uint64 `json:"skip_bad_len"`
	ErrAdjust  uint64 `json:"err_adjust"`
}

// fields are the counters in enum sy_agent_counter order.
func (c *ShimCounters) fields() []*uint64 {
	return []*uint64{&c.Pending, &c.SYN, &c.SkipGSO, &c.SkipMTU, &c.SkipBadLen, &c.ErrAdjust}
}

// Counters sums the program's per-CPU counters.
func (s *Shim) Counters() (ShimCounters, error) {
	var out ShimCounters
	for i, d := range out.fields() {
		var per []uint64
		if err := s.objs.AgentCounters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("shim: counter %d: %w", i, err)
		}
		for _, v := range per {
			*d += v
		}
	}
	return out, nil
}

// Close detaches the program and frees its maps.
func (s *Shim) Close() error {
	return errors.Join(s.l.Close(), s.objs.Close())
}
