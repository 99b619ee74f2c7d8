package flow

import (
	"errors"
	"fmt"

	"github.com/switchyard/switchyard/internal/datapath"
)

// The model implements the data-path seam over its exported maps, with the
// BPF maps' semantics: the same bounds, the same errors for absent and
// existing keys, arrays that are always "present".
var _ datapath.Tables = (*Model)(nil)

// errSecondFull is what a write to a full second-key table returns.
var errSecondFull = errors.New("second-key table full")

// errFlowsFull is what a new entry in a full flow or half-open table gets.
var errFlowsFull = fmt.Errorf("flow table: %w", datapath.ErrTableFull)

// flowsFull reports whether table t of capacity max (0: unbounded) has no
// room for a new key k.
func flowsFull(t map[datapath.FlowKey]datapath.Flow, max int, k datapath.FlowKey) bool {
	if max == 0 {
		return false
	}
	_, ok := t[k]
	return !ok && len(t) >= max
}

// SetService installs or updates a service.
func (m *Model) SetService(k datapath.ServiceKey, s datapath.Service) error {
	if s.Index >= m.MaxServices {
		return fmt.Errorf("service index %d: only %d services fit", s.Index, m.MaxServices)
	}
	m.Services[k] = s
	return nil
}

// DeleteService removes a service.
func (m *Model) DeleteService(k datapath.ServiceKey) error {
	delete(m.Services, k)
	return nil
}

// SetVIP marks an address as a VIP of count services (0: not a VIP).
func (m *Model) SetVIP(k datapath.VIPKey, count uint32) error {
	if count == 0 {
		delete(m.VIPs, k)
		return nil
	}
	m.VIPs[k] = count
	return nil
}

// WriteRing writes the given slots (nil: all) of service svc's ring.
func (m *Model) WriteRing(svc uint32, ring []uint32, slots []uint32) error {
	if uint32(len(ring)) != m.RingSize {
		return fmt.Errorf("ring of service %d: %d slots, want %d", svc, len(ring), m.RingSize)
	}
	if svc >= m.MaxServices {
		return fmt.Errorf("write ring of service %d: only %d services fit", svc, m.MaxServices)
	}
	cur := m.Rings[svc*m.RingSize : (svc+1)*m.RingSize]
	if slots == nil {
		copy(cur, ring)
		return nil
	}
	for _, s := range slots {
		if s >= m.RingSize {
			return fmt.Errorf("write ring of service %d: slot %d out of range", svc, s)
		}
		cur[s] = ring[s]
	}
	return nil
}

// SetTM writes a TM's forwarding entry.
func (m *Model) SetTM(idx uint32, tm datapath.TM) error {
	if idx >= uint32(len(m.TMs)) {
		return fmt.Errorf("TM index %d out of range", idx)
	}
	m.TMs[idx] = tm
	return nil
}

// LookupTM reads a TM's forwarding entry.
func (m *Model) LookupTM(idx uint32) (datapath.TM, error) {
	if idx >= uint32(len(m.TMs)) {
		return datapath.TM{}, fmt.Errorf("read TM %d: %w", idx, datapath.ErrKeyNotExist)
	}
	return m.TMs[idx], nil
}

// SetIface records an interface's role and MAC and makes it a redirect
// target.
func (m *Model) SetIface(ifindex uint32, role uint32, mac [6]uint8) error {
	if ifindex >= uint32(datapath.MaxIfindex) {
		return fmt.Errorf("interface index %d: the data path handles indexes below %d", ifindex, datapath.MaxIfindex)
	}
	m.Ifaces[ifindex] = datapath.Iface{Role: role, Mac: mac}
	m.TxPorts[ifindex] = ifindex
	return nil
}

// DeleteIface forgets an interface's role.
func (m *Model) DeleteIface(ifindex uint32) error {
	delete(m.Ifaces, ifindex)
	return nil
}

// SetTxPort makes key a redirect target that sends out of ifindex.
func (m *Model) SetTxPort(key, ifindex uint32) error {
	m.TxPorts[key] = ifindex
	return nil
}

// SetMasks sets the second-key masks, most specific first.
func (m *Model) SetMasks(masks []uint32) error {
	if len(masks) > datapath.MaxMasks {
		return fmt.Errorf("%d second-key masks: at most %d", len(masks), datapath.MaxMasks)
	}
	for _, v := range masks {
		if v == 0 || v&^datapath.FieldAll != 0 {
			return fmt.Errorf("second-key mask %#x is not a set of fields", v)
		}
	}
	m.Masks = [datapath.MaxMasks]uint32{}
	copy(m.Masks[:], masks)
	return nil
}

// ReadMasks reads the second-key masks up to the first zero.
func (m *Model) ReadMasks() ([]uint32, error) {
	var out []uint32
	for _, v := range m.Masks {
		if v == 0 {
			break
		}
		out = append(out, v)
	}
	return out, nil
}

// SetSender allows signals from mac for TM idx.
func (m *Model) SetSender(mac [6]uint8, idx uint32) error {
	m.TMByMAC[mac] = idx
	return nil
}

// DeleteSender stops accepting signals from mac.
func (m *Model) DeleteSender(mac [6]uint8) error {
	delete(m.TMByMAC, mac)
	return nil
}

// SetLearnSource makes addr a learning source of TM owner.
func (m *Model) SetLearnSource(addr datapath.VIPKey, owner uint32) error {
	m.LearnSrcs[addr] = owner
	return nil
}

// DeleteLearnSource removes a learning source.
func (m *Model) DeleteLearnSource(addr datapath.VIPKey) error {
	delete(m.LearnSrcs, addr)
	return nil
}

// SetSettings writes the global settings.
func (m *Model) SetSettings(s datapath.Settings) error {
	m.Settings = s
	return nil
}

// SetNow sets the model's clock.
func (m *Model) SetNow(sec uint32) error {
	m.Now = sec
	return nil
}

// ReadNow reads the model's clock.
func (m *Model) ReadNow() (uint32, error) { return m.Now, nil }

// ReadCounters returns the global counters.
func (m *Model) ReadCounters() ([]datapath.CounterValue, error) {
	return append([]datapath.CounterValue(nil), m.Counters[:]...), nil
}

// ServiceTraffic returns service idx's traffic counters.
func (m *Model) ServiceTraffic(idx uint32) (datapath.Traffic, error) {
	if idx >= uint32(len(m.SvcStats)) {
		return datapath.Traffic{}, fmt.Errorf("service %d traffic: %w", idx, datapath.ErrKeyNotExist)
	}
	return m.SvcStats[idx], nil
}

// TMTraffic returns TM idx's traffic counters.
func (m *Model) TMTraffic(idx uint32) (datapath.Traffic, error) {
	if idx >= uint32(len(m.TMStats)) {
		return datapath.Traffic{}, fmt.Errorf("TM %d traffic: %w", idx, datapath.ErrKeyNotExist)
	}
	return m.TMStats[idx], nil
}

// ResetTraffic zeroes a service's (svc) or TM's counters.
func (m *Model) ResetTraffic(svc bool, idx uint32) error {
	t := m.TMStats[:]
	if svc {
		t = m.SvcStats
	}
	if idx >= uint32(len(t)) {
		return fmt.Errorf("reset traffic of index %d: %w", idx, datapath.ErrKeyNotExist)
	}
	t[idx] = datapath.Traffic{}
	return nil
}

// LookupFlow returns the entry for k.
func (m *Model) LookupFlow(k datapath.FlowKey) (datapath.Flow, error) {
	f, ok := m.Flows[k]
	if !ok {
		return f, datapath.ErrKeyNotExist
	}
	return f, nil
}

// InsertFlow writes an entry only if k has none.
func (m *Model) InsertFlow(k datapath.FlowKey, f datapath.Flow) error {
	if _, ok := m.Flows[k]; ok {
		return fmt.Errorf("insert flow: %w", datapath.ErrKeyExist)
	}
	if flowsFull(m.Flows, m.MaxFlows, k) {
		return fmt.Errorf("insert flow: %w", errFlowsFull)
	}
	m.Flows[k] = f
	m.addActive(uint32(f.Tm), 1)
	return nil
}

// UpdateFlow replaces k's entry only if it has one (an entry that changes
// TM moves its active flow).
func (m *Model) UpdateFlow(k datapath.FlowKey, f datapath.Flow) error {
	cur, ok := m.Flows[k]
	if !ok {
		return fmt.Errorf("update flow: %w", datapath.ErrKeyNotExist)
	}
	m.Flows[k] = f
	if cur.Tm != f.Tm {
		m.addActive(uint32(cur.Tm), -1)
		m.addActive(uint32(f.Tm), 1)
	}
	return nil
}

// PutFlow writes an entry whether or not k has one.
func (m *Model) PutFlow(k datapath.FlowKey, f datapath.Flow) error {
	if flowsFull(m.Flows, m.MaxFlows, k) {
		return fmt.Errorf("write flow: %w", errFlowsFull)
	}
	m.Flows[k] = f
	return nil
}

// DeleteFlow removes k's entry.
func (m *Model) DeleteFlow(k datapath.FlowKey) error {
	f, ok := m.Flows[k]
	if !ok {
		return datapath.ErrKeyNotExist
	}
	delete(m.Flows, k)
	m.addActive(uint32(f.Tm), -1)
	return nil
}

// WalkFlows calls fn for each entry until fn returns false.
func (m *Model) WalkFlows(fn func(datapath.FlowKey, datapath.Flow) bool) error {
	for k, f := range m.Flows {
		if !fn(k, f) {
			break
		}
	}
	return nil
}

// DeleteFlowsWhere deletes up to limit (0: all) entries that match.
func (m *Model) DeleteFlowsWhere(match func(datapath.FlowKey, datapath.Flow) bool, limit int) (int, error) {
	return deleteWhere(m.Flows, match, limit, m.activeGone), nil
}

// WalkHalfOpen calls fn for each half-open entry until fn returns false.
func (m *Model) WalkHalfOpen(fn func(datapath.FlowKey, datapath.Flow) bool) error {
	for k, f := range m.HalfOpen {
		if !fn(k, f) {
			break
		}
	}
	return nil
}

// DeleteHalfOpenWhere deletes up to limit (0: all) half-open entries that
// match.
func (m *Model) DeleteHalfOpenWhere(match func(datapath.FlowKey, datapath.Flow) bool, limit int) (int, error) {
	return deleteWhere(m.HalfOpen, match, limit, m.activeGone), nil
}

// ReadEvents drains the model's events, at most
// datapath.MaxEventsPerRead.
func (m *Model) ReadEvents(fn func(datapath.Event)) (int, error) {
	n := min(len(m.Events), datapath.MaxEventsPerRead)
	for _, ev := range m.Events[:n] {
		fn(ev)
	}
	m.Events = m.Events[n:]
	return n, nil
}

// LookupSecondKey returns the entry for k.
func (m *Model) LookupSecondKey(k datapath.SecondKey) (datapath.Second, error) {
	v, ok := m.SecondKeys[k]
	if !ok {
		return v, datapath.ErrKeyNotExist
	}
	return v, nil
}

// PutSecondKey writes a second-key entry; an error when the table is full.
func (m *Model) PutSecondKey(k datapath.SecondKey, v datapath.Second) error {
	if _, ok := m.SecondKeys[k]; !ok && len(m.SecondKeys) >= m.MaxSecond {
		return fmt.Errorf("write second key: %w", errSecondFull)
	}
	m.SecondKeys[k] = v
	return nil
}

// WalkSecondKeys calls fn for each entry until fn returns false.
func (m *Model) WalkSecondKeys(fn func(datapath.SecondKey, datapath.Second) bool) error {
	for k, v := range m.SecondKeys {
		if !fn(k, v) {
			break
		}
	}
	return nil
}

// DeleteSecondKeysWhere deletes up to limit (0: all) entries that match.
func (m *Model) DeleteSecondKeysWhere(match func(datapath.SecondKey, datapath.Second) bool, limit int) (int, error) {
	return deleteWhere(m.SecondKeys, match, limit, nil), nil
}

func deleteWhere[K comparable, V any](t map[K]V, match func(K, V) bool, limit int, gone func(V)) int {
	n := 0
	for k, v := range t {
		if limit != 0 && n >= limit {
			break
		}
		// Matched again just before deleting, as the seam promises (the
		// data path may refresh an entry between its walk and its delete;
		// callers may count the calls).
		if !match(k, v) {
			continue
		}
		if match(k, v) {
			delete(t, k)
			n++
			if gone != nil {
				gone(v)
			}
		}
	}
	return n
}

// activeGone counts a deleted flow or half-open entry off its TM.
func (m *Model) activeGone(f datapath.Flow) { m.addActive(uint32(f.Tm), -1) }

// ReadActive returns policy_active.
func (m *Model) ReadActive() ([datapath.MaxTMs]int64, error) { return m.Active, nil }

// SetActive overwrites policy_active.
func (m *Model) SetActive(n [datapath.MaxTMs]int64) error {
	m.Active = n
	return nil
}

// SetPolicyWeight sets TM idx's weight for weighted-least-connections.
func (m *Model) SetPolicyWeight(idx, w uint32) error {
	if int(idx) >= datapath.MaxTMs {
		return fmt.Errorf("policy weight of TM %d: indexes are below %d", idx, datapath.MaxTMs)
	}
	m.PolicyWeight[idx] = w
	return nil
}

// SetQoS sets service svc's QoS class.
func (m *Model) SetQoS(svc uint32, q datapath.QoS) error {
	if svc >= datapath.PolicyMaxServices || q.Ring >= datapath.PolicyQoSRings {
		return fmt.Errorf("QoS of service %d: ring %d out of range", svc, q.Ring)
	}
	if m.QoS == nil {
		m.QoS = map[uint32]datapath.QoS{}
	}
	m.QoS[svc] = q
	return nil
}

// WriteQoSRing writes the given slots (nil: all) of QoS ring i.
func (m *Model) WriteQoSRing(i uint32, ring []uint32, slots []uint32) error {
	if uint32(len(ring)) != m.RingSize || i >= datapath.PolicyQoSRings {
		return fmt.Errorf("QoS ring %d: %d slots, want %d", i, len(ring), m.RingSize)
	}
	if m.QoSRings == nil {
		m.QoSRings = make([]uint32, int(m.RingSize)*int(datapath.PolicyQoSRings))
	}
	base := i * m.RingSize
	if slots == nil {
		copy(m.QoSRings[base:], ring)
		return nil
	}
	for _, s := range slots {
		m.QoSRings[base+s] = ring[s]
	}
	return nil
}
