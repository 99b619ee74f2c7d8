package datapath

import (
	"errors"
	"fmt"
)

// The least-connections policies' tables: policy_active, the active flows
// of each TM index (the entries of flows and half_open whose TM it is), and
// policy_weight, each TM's weight for weighted-least-connections.

// addActive adds n to TM idx's active flows. The kernel's array has no
// atomic add from user space: a lookup and an update, so a concurrent add
// of the program's may be lost; the periodic resync (CountActive,
// SetActive) bounds that drift.
func (d *Datapath) addActive(idx uint32, n int64) {
	if int(idx) >= MaxTMs {
		return
	}
	var v int64
	m := d.maps().PolicyActive
	if err := m.Lookup(idx, &v); err != nil {
		return
	}
	_ = m.Put(idx, v+n)
}

// activeGone counts a deleted flow or half-open entry off its TM.
func (d *Datapath) activeGone(f Flow) { d.addActive(uint32(f.Tm), -1) }

// ReadActive returns every TM index's active flows.
func (d *Datapath) ReadActive() ([MaxTMs]int64, error) {
	var out [MaxTMs]int64
	m := d.maps().PolicyActive
	for i := range out {
		if err := m.Lookup(uint32(i), &out[i]); err != nil {
			return out, fmt.Errorf("read active flows of TM %d: %w", i, err)
		}
	}
	return out, nil
}

// SetActive overwrites every TM index's active flows.
func (d *Datapath) SetActive(n [MaxTMs]int64) error {
	keys := make([]uint32, MaxTMs)
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := d.maps().PolicyActive.BatchUpdate(keys, n[:], nil); err != nil {
		return fmt.Errorf("write active flows: %w", err)
	}
	return nil
}

// SetPolicyWeight sets TM idx's weight for weighted-least-connections.
func (d *Datapath) SetPolicyWeight(idx, w uint32) error {
	if int(idx) >= MaxTMs {
		return fmt.Errorf("policy weight of TM %d: indexes are below %d", idx, MaxTMs)
	}
	if err := d.maps().PolicyWeight.Put(idx, w); err != nil {
		return fmt.Errorf("write policy weight of TM %d: %w", idx, err)
	}
	return nil
}

// CountActive counts the entries of the flow and half-open tables per TM
// index: what policy_active should hold. The tables change while they are
// walked, so the count is exact only for a quiet data path; SetActive with
// it bounds the counters' drift to what changed during one walk.
func CountActive(t Tables) ([MaxTMs]int64, error) {
	var n [MaxTMs]int64
	count := func(_ FlowKey, f Flow) bool {
		if int(f.Tm) < MaxTMs {
			n[f.Tm]++
		}
		return true
	}
	err := errors.Join(t.WalkFlows(count), t.WalkHalfOpen(count))
	if err != nil {
		return n, fmt.Errorf("count active flows: %w", err)
	}
	return n, nil
}

// SetQoS sets service svc's QoS class (a zero QoS: none).
func (d *Datapath) SetQoS(svc uint32, q QoS) error {
	if svc >= PolicyMaxServices || q.Ring >= PolicyQoSRings {
		return fmt.Errorf("QoS of service %d: ring %d (services below %d, rings below %d)", svc, q.Ring, PolicyMaxServices, PolicyQoSRings)
	}
	if err := d.maps().PolicyQos.Put(svc, q); err != nil {
		return fmt.Errorf("write QoS of service %d: %w", svc, err)
	}
	return nil
}

// WriteQoSRing writes the given slots (nil: all) of QoS ring i.
func (d *Datapath) WriteQoSRing(i uint32, ring []uint32, slots []uint32) error {
	if uint32(len(ring)) != d.opts.RingSize || i >= PolicyQoSRings {
		return fmt.Errorf("QoS ring %d: %d slots, want %d (rings below %d)", i, len(ring), d.opts.RingSize, PolicyQoSRings)
	}
	base := i * d.opts.RingSize
	if slots == nil {
		slots = make([]uint32, len(ring))
		for j := range slots {
			slots[j] = uint32(j)
		}
	}
	if len(slots) == 0 {
		return nil
	}
	keys := make([]uint32, len(slots))
	vals := make([]uint32, len(slots))
	for j, s := range slots {
		keys[j] = base + s
		vals[j] = ring[s]
	}
	if _, err := d.maps().PolicyQosRings.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("write QoS ring %d: %w", i, err)
	}
	return nil
}
