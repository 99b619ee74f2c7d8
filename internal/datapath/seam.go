package datapath

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
)

// Tables is the one seam between the control plane and the data path:
// everything the daemon writes into it and reads back. *Datapath implements
// it over the BPF maps; the Go model (*flow.Model) over Go maps, so that the
// daemon's logic runs and is tested without root, and the differential
// tests write each entry once into both.
//
// Errors of lookups and conditional writes are ErrKeyNotExist and
// ErrKeyExist (errors.Is), whichever side implements the seam.
type Tables interface {
	// SetService installs or updates a service.
	SetService(k ServiceKey, s Service) error
	// DeleteService removes a service (absent: no error).
	DeleteService(k ServiceKey) error
	// SetVIP marks an address as a VIP of count services (0: not a VIP).
	SetVIP(k VIPKey, count uint32) error
	// WriteRing writes the given slots (nil: all) of service svc's Maglev
	// ring, from ring: a whole ring of RingSize slots.
	WriteRing(svc uint32, ring []uint32, slots []uint32) error
	// SetTM writes a TM's forwarding entry.
	SetTM(idx uint32, tm TM) error
	// LookupTM reads a TM's forwarding entry.
	LookupTM(idx uint32) (TM, error)
	// SetIface records an interface's role and MAC and makes it a
	// redirect target.
	SetIface(ifindex uint32, role uint32, mac [6]uint8) error
	// DeleteIface forgets an interface's role.
	DeleteIface(ifindex uint32) error
	// SetTxPort makes key a redirect target that sends out of ifindex.
	SetTxPort(key, ifindex uint32) error
	// SetMasks sets the second-key masks, most specific first.
	SetMasks(masks []uint32) error
	// ReadMasks reads the second-key masks, up to the first zero.
	ReadMasks() ([]uint32, error)
	// SetSender allows signals from mac and learns its egress for TM idx.
	SetSender(mac [6]uint8, idx uint32) error
	// DeleteSender stops accepting signals from mac.
	DeleteSender(mac [6]uint8) error
	// SetLearnSource makes addr a learning source of TM owner.
	SetLearnSource(addr VIPKey, owner uint32) error
	// DeleteLearnSource removes a learning source.
	DeleteLearnSource(addr VIPKey) error
	// SetSettings writes the global settings.
	SetSettings(s Settings) error
	// SetNow sets the data path's clock (seconds).
	SetNow(sec uint32) error
	// ReadNow reads the data path's clock.
	ReadNow() (uint32, error)

	// ReadCounters returns the global counters summed over CPUs.
	ReadCounters() ([]CounterValue, error)
	// ServiceTraffic returns service idx's traffic counters.
	ServiceTraffic(idx uint32) (Traffic, error)
	// TMTraffic returns TM idx's traffic counters.
	TMTraffic(idx uint32) (Traffic, error)
	// ResetTraffic zeroes a service's (svc) or TM's counters.
	ResetTraffic(svc bool, idx uint32) error

	// LookupFlow returns the entry for k, or ErrKeyNotExist.
	LookupFlow(k FlowKey) (Flow, error)
	// InsertFlow writes an entry only if k has none (ErrKeyExist if it has):
	// an entry another CPU wrote meanwhile is never overwritten.
	InsertFlow(k FlowKey, f Flow) error
	// UpdateFlow replaces k's entry only if it has one (ErrKeyNotExist if
	// not): a flow deleted meanwhile is not brought back.
	UpdateFlow(k FlowKey, f Flow) error
	// PutFlow writes an entry whether or not k has one.
	PutFlow(k FlowKey, f Flow) error
	// DeleteFlow removes k's entry, or returns ErrKeyNotExist.
	DeleteFlow(k FlowKey) error
	// WalkFlows calls fn for each entry until fn returns false.
	WalkFlows(fn func(FlowKey, Flow) bool) error
	// DeleteFlowsWhere deletes up to limit (0: all) entries that match,
	// matching each again just before deleting it.
	DeleteFlowsWhere(match func(FlowKey, Flow) bool, limit int) (int, error)

	// WalkHalfOpen calls fn for each half-open entry until fn returns false.
	WalkHalfOpen(fn func(FlowKey, Flow) bool) error
	// DeleteHalfOpenWhere is DeleteFlowsWhere for the half-open table.
	DeleteHalfOpenWhere(match func(FlowKey, Flow) bool, limit int) (int, error)

	// ReadEvents calls fn for each flow event waiting (at most
	// MaxEventsPerRead), without blocking, and returns how many.
	ReadEvents(fn func(Event)) (int, error)

	// LookupSecondKey returns the entry for k, or ErrKeyNotExist.
	LookupSecondKey(k SecondKey) (Second, error)
	// PutSecondKey writes a second-key entry; an error when the table is
	// full.
	PutSecondKey(k SecondKey, v Second) error
	// WalkSecondKeys calls fn for each entry until fn returns false.
	WalkSecondKeys(fn func(SecondKey, Second) bool) error
	// DeleteSecondKeysWhere is DeleteFlowsWhere for the second keys.
	DeleteSecondKeysWhere(match func(SecondKey, Second) bool, limit int) (int, error)

	// ReadActive returns each TM index's active flows (policy_active):
	// the flow and half-open entries the data path and the seam's
	// inserts and deletes have counted.
	ReadActive() ([MaxTMs]int64, error)
	// SetActive overwrites the active-flow counters (a resync from a walk,
	// CountActive).
	SetActive(n [MaxTMs]int64) error
	// SetPolicyWeight sets TM idx's weight for weighted-least-connections.
	SetPolicyWeight(idx, w uint32) error
	// SetQoS sets service svc's QoS class (a zero QoS: none).
	SetQoS(svc uint32, q QoS) error
	// WriteQoSRing writes the given slots (nil: all) of QoS ring i, from
	// ring: a whole ring of RingSize slots.
	WriteQoSRing(i uint32, ring []uint32, slots []uint32) error
}

// The seam's lookup and conditional-write errors, the same on both sides.
var (
	// ErrKeyNotExist: no entry for the key.
	ErrKeyNotExist = ebpf.ErrKeyNotExist
	// ErrKeyExist: an entry for the key exists (InsertFlow).
	ErrKeyExist = ebpf.ErrKeyExist
	// ErrTableFull: the flow table has no room for a new key (it is a
	// hash, not an LRU: it refuses rather than evicts).
	ErrTableFull = errors.New("table full")
)

// full maps the kernel's "no room" (E2BIG) to ErrTableFull.
func full(err error) error {
	if errors.Is(err, syscall.E2BIG) {
		return fmt.Errorf("%w: %w", ErrTableFull, err)
	}
	return err
}

var _ Tables = (*Datapath)(nil)

// LookupTM reads TM idx's forwarding entry.
func (d *Datapath) LookupTM(idx uint32) (TM, error) {
	var tm TM
	if err := d.maps().Tms.Lookup(idx, &tm); err != nil {
		return tm, fmt.Errorf("read TM %d: %w", idx, err)
	}
	return tm, nil
}

// ReadMasks reads the second-key masks up to the first zero.
func (d *Datapath) ReadMasks() ([]uint32, error) {
	var out []uint32
	for i := range MaxMasks {
		var m uint32
		if err := d.maps().Masks.Lookup(uint32(i), &m); err != nil {
			return nil, fmt.Errorf("read mask %d: %w", i, err)
		}
		if m == 0 {
			break
		}
		out = append(out, m)
	}
	return out, nil
}

// ReadNow reads the data path's clock.
func (d *Datapath) ReadNow() (uint32, error) {
	var now uint32
	if err := d.objs.SyNow.Get(&now); err != nil {
		return 0, fmt.Errorf("read the data path clock: %w", err)
	}
	return now, nil
}

// InsertFlow writes a flow entry only if the key has none (BPF_NOEXIST).
func (d *Datapath) InsertFlow(k FlowKey, f Flow) error {
	if err := d.maps().Flows.Update(k, f, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("insert flow: %w", full(err))
	}
	d.addActive(uint32(f.Tm), 1)
	return nil
}

// UpdateFlow replaces a flow entry only if the key has one (BPF_EXIST).
func (d *Datapath) UpdateFlow(k FlowKey, f Flow) error {
	var cur Flow
	if err := d.maps().Flows.Lookup(k, &cur); err != nil {
		return fmt.Errorf("update flow: %w", err)
	}
	if err := d.maps().Flows.Update(k, f, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("update flow: %w", err)
	}
	if cur.Tm != f.Tm {
		d.addActive(uint32(cur.Tm), -1)
		d.addActive(uint32(f.Tm), 1)
	}
	return nil
}
