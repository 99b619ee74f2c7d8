package distributor

import (
	"fmt"
	"maps"
	"net"
	"slices"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/selector"
)

// State is the data-path state a config asks for, in data-path terms: what
// the daemon writes through the seam (datapath.Tables). The daemon keeps
// the state it last wrote and writes only the difference.
type State struct {
	// TMs are the forwarding entries by TM index, removed TMs included.
	TMs map[uint32]datapath.TM
	// Services are the service entries by key.
	Services map[datapath.ServiceKey]datapath.Service
	// Rings are the Maglev rings by service index, RingSize slots each.
	Rings map[uint32][]uint32
	// Pools are the TM indexes eligible for new flows by service index,
	// in config order: what the ring holds.
	Pools map[uint32][]uint32
	// VIPs are the VIP addresses with the number of services on each.
	VIPs map[datapath.VIPKey]uint32
	// Senders are the MACs allowed to signal, with their TM index.
	Senders map[[6]uint8]uint32
	// SharedMACs are TMs refused as senders because they share a MAC.
	SharedMACs map[[6]uint8][]string
	// LearnSrcs are the learning sources with their owner (TMAny: shared).
	LearnSrcs map[datapath.VIPKey]uint32
	// Masks are the second-key masks, most specific first.
	Masks []uint32
	// Settings are the global settings.
	Settings datapath.Settings
	// PolicyWeights are the configured weights by TM index, for
	// weighted-least-connections (policy_weight).
	PolicyWeights map[uint32]uint32
	// QoS are the QoS services' classes by service index (policy_qos),
	// QoSRings their class rings by QoS ring number.
	QoS      map[uint32]datapath.QoS
	QoSRings map[uint32][]uint32
}

// emptyState is what a fresh data path holds, as far as the daemon cares.
func emptyState() State {
	return State{
		TMs:           map[uint32]datapath.TM{},
		Services:      map[datapath.ServiceKey]datapath.Service{},
		Rings:         map[uint32][]uint32{},
		Pools:         map[uint32][]uint32{},
		VIPs:          map[datapath.VIPKey]uint32{},
		Senders:       map[[6]uint8]uint32{},
		LearnSrcs:     map[datapath.VIPKey]uint32{},
		PolicyWeights: map[uint32]uint32{},
		QoS:           map[uint32]datapath.QoS{},
		QoSRings:      map[uint32][]uint32{},
	}
}

func protoNumber(p string) uint8 {
	if p == config.ProtocolUDP {
		return flow.ProtoUDP
	}
	return flow.ProtoTCP
}

func idOf(sc config.Service) serviceID {
	return serviceID{vip: sc.VIP.Unmap(), port: sc.Port, proto: protoNumber(sc.Protocol)}
}

func serviceKey(id serviceID) datapath.ServiceKey { return flow.ServiceKey(id.vip, id.port, id.proto) }

// usable is sy_tm_usable: the data path forwards to the TM.
func usable(e datapath.TM) bool {
	return e.Flags&datapath.TMReady != 0 && e.Flags&datapath.TMDisabled == 0
}

// tmEntry is TM slot s's forwarding entry.
func tmEntry(s *tmSlot) datapath.TM {
	var e datapath.TM
	if s.ready() {
		copy(e.Mac[:], s.mac)
		copy(e.SrcMac[:], s.srcMAC)
		e.Ifindex = uint32(s.ifindex)
		e.Flags |= datapath.TMReady
	}
	if !s.present || s.cfg.State == config.StateDisabled {
		e.Flags |= datapath.TMDisabled
	}
	if s.present && s.cfg.State == config.StateDraining {
		e.Flags |= datapath.TMDraining
	}
	return e
}

// eligibleSlot reports whether TM slot s gets new flows.
func eligibleSlot(s *tmSlot) bool {
	return s != nil && s.present && s.cfg.State == config.StateActive && s.ready()
}

// desired computes the data-path state for cfg, given the TMs' indexes and
// resolution (tms, by id) and the services' indexes (svcs). It is pure:
// it reads its arguments and writes nothing.
func desired(cfg *config.Config, tms map[string]*tmSlot, svcs map[serviceID]*svcSlot) (State, error) {
	st := emptyState()
	st.SharedMACs = map[[6]uint8][]string{}
	owners := map[[6]uint8][]string{}
	for id, s := range tms {
		st.TMs[s.index] = tmEntry(s)
		if s.present {
			st.PolicyWeights[s.index] = s.cfg.Weight
		}
		if !s.present || s.cfg.State == config.StateDisabled {
			continue
		}
		// A static MAC is the TM's before its route is resolved: its
		// signals are then refused as not ready, not as an unknown MAC.
		mac := s.mac
		if mac == nil {
			mac = s.cfg.MAC
		}
		if len(mac) == 6 {
			st.Senders[[6]uint8(mac)] = s.index
			owners[[6]uint8(mac)] = append(owners[[6]uint8(mac)], id)
		}
		// A TM is a host: learning applies from each of its addresses.
		for _, a := range s.cfg.AllAddresses() {
			st.LearnSrcs[flow.AddrKey(a)] = s.index
		}
	}
	// Two TMs behind one MAC cannot be told apart: neither may signal.
	for mac, ids := range owners {
		if len(ids) > 1 {
			delete(st.Senders, mac)
			slices.Sort(ids)
			st.SharedMACs[mac] = ids
		}
	}
	for _, a := range cfg.Learning.SNATAddresses {
		st.LearnSrcs[flow.AddrKey(a)] = datapath.TMAny
	}
	for _, m := range cfg.SecondKeys.Masks {
		st.Masks = append(st.Masks, config.MaskBits(m))
	}
	copy(st.Settings.SignalMcast[:], cfg.Signals.MulticastMAC)

	for _, sc := range cfg.Services {
		id := idOf(sc)
		s, ok := svcs[id]
		if !ok {
			return st, fmt.Errorf("service %s: no index assigned", sc.Name)
		}
		groups := sc.Groups()
		switch sc.Policy {
		case config.PolicyTopology:
			groups = zoneGroups(groups, cfg.Distributor.Zone, tms)
		case config.PolicyHopMetric:
			groups = metricGroups(groups, tms)
		}
		backends, pool := groupOf(groups, tms, s)
		if sc.Policy == config.PolicyRoundRobin || sc.Policy == config.PolicyLeastConnections {
			// Each TM once per round: one slot share each.
			for i := range backends {
				backends[i].Weight = 1
			}
		}
		ring, err := selector.Maglev(backends, cfg.Selection.RingSize)
		if err != nil {
			return st, fmt.Errorf("service %s: %w", sc.Name, err)
		}
		st.Rings[s.index] = ring
		st.Pools[s.index] = pool
		if sc.Policy == config.PolicyQoS && sc.QoS != nil {
			// The class's ring: the pool's TMs tagged with the class's
			// tag while min_eligible of them are eligible, else the
			// service's own ring (spill-over).
			q, err := qosClass(sc, cfg, tms, s, ring)
			if err != nil {
				return st, fmt.Errorf("service %s: %w", sc.Name, err)
			}
			st.QoS[s.index] = q.qos
			st.QoSRings[q.qos.Ring] = q.ring
		}
		v := datapath.Service{Index: s.index, Hash: config.HashBits(sc.Hash)}
		switch {
		case config.IsRoundRobin(sc.Policy):
			v.Policy = datapath.PolicyRR
		case sc.Policy == config.PolicyLeastConnections:
			v.Policy = datapath.PolicyLC
		case sc.Policy == config.PolicyWeightedLeastConnections:
			v.Policy = datapath.PolicyWLC
		}
		if p := sc.Persistence; p != nil {
			v.PersistMask = config.MaskBits(p.Mask)
			v.PersistTimeout = p.Timeout
		}
		st.Services[serviceKey(id)] = v
		st.VIPs[flow.AddrKey(id.vip)]++
	}
	return st, nil
}

// write makes the data path go from d.written to want through the seam,
// writing only what differs, in an order that keeps every intermediate
// state consistent: a TM is ready before a ring slot points at it, and a
// ring slot stops pointing at a TM before the TM is disabled or loses its
// MAC; a ring is written before its service key, and a service key is gone
// before its index is reused. d.written follows each successful write, so
// that a failed write is retried by the next apply. Called with d.mu held.
func (d *Daemon) write(want State) error {
	w := &d.written
	// TMs that forward after the change: before the rings send them flows.
	for _, idx := range sortedKeys(want.TMs) {
		e := want.TMs[idx]
		if old, ok := w.TMs[idx]; usable(e) && (!ok || old != e) {
			if err := d.dp.SetTM(idx, e); err != nil {
				return fmt.Errorf("traffic manager %s: %w", d.tmName(idx), err)
			}
			w.TMs[idx] = e
		}
	}
	if err := d.writeSignalState(want); err != nil {
		return err
	}
	// Removed services, so that their indexes can be reused.
	for k, v := range w.Services {
		if _, ok := want.Services[k]; ok {
			continue
		}
		if err := d.dp.DeleteService(k); err != nil {
			return fmt.Errorf("service index %d: %w", v.Index, err)
		}
		delete(w.Services, k)
		delete(w.Rings, v.Index)
		delete(w.Pools, v.Index)
	}
	// A new service starts with zeroed counters, whoever had its index.
	for k, v := range want.Services {
		if _, ok := w.Services[k]; !ok {
			if err := d.dp.ResetTraffic(true, v.Index); err != nil {
				return fmt.Errorf("service %s: reset counters: %w", d.svcName(v.Index), err)
			}
		}
	}
	// Rings, then service keys: established flows do not read the ring, so
	// rewriting slots moves none.
	for _, idx := range sortedKeys(want.Rings) {
		ring := want.Rings[idx]
		old, ok := w.Rings[idx]
		var slots []uint32 // nil: write all
		if ok {
			slots = selector.Changed(old, ring)
			if len(slots) == 0 {
				continue
			}
		}
		if err := d.dp.WriteRing(idx, ring, slots); err != nil {
			return fmt.Errorf("service index %d: %w", idx, err)
		}
		w.Rings[idx] = ring
		if !slices.Equal(w.Pools[idx], want.Pools[idx]) {
			d.log.Info("service pool", "service", d.svcName(idx), "eligible", d.tmNames(want.Pools[idx]), "slots_changed", len(slots))
		}
		w.Pools[idx] = want.Pools[idx]
	}
	if err := d.writeQoS(want); err != nil {
		return err
	}
	for k, v := range want.Services {
		if old, ok := w.Services[k]; ok && old == v {
			continue
		}
		if err := d.dp.SetService(k, v); err != nil {
			return fmt.Errorf("service %s: %w", d.svcName(v.Index), err)
		}
		w.Services[k] = v
	}
	maps.Copy(w.Pools, want.Pools)
	if err := d.prunePersistence(want.Pools); err != nil {
		return err
	}
	// VIPs: an address is a VIP while a service uses it.
	if err := syncTable(w.VIPs, want.VIPs, d.dp.SetVIP, func(k datapath.VIPKey) error { return d.dp.SetVIP(k, 0) }); err != nil {
		return err
	}
	// TMs that stop forwarding (disabled, removed, unresolved) or change
	// otherwise: now that no ring slot points at them.
	for _, idx := range sortedKeys(want.TMs) {
		e := want.TMs[idx]
		if old, ok := w.TMs[idx]; ok && old == e {
			continue
		}
		if err := d.dp.SetTM(idx, e); err != nil {
			return fmt.Errorf("traffic manager %s: %w", d.tmName(idx), err)
		}
		w.TMs[idx] = e
	}
	return nil
}

// writeSignalState programs who may signal (TM MACs), where learning
// applies (TM and shared SNAT addresses), the second-key masks and the
// signal multicast MAC.
func (d *Daemon) writeSignalState(want State) error {
	w := &d.written
	for mac, ids := range want.SharedMACs {
		if !slices.Equal(w.SharedMACs[mac], ids) {
			d.log.Error("traffic managers share a MAC; their signals are refused", "mac", net.HardwareAddr(mac[:]), "tms", ids)
		}
	}
	w.SharedMACs = want.SharedMACs
	if err := syncTable(w.Senders, want.Senders, d.dp.SetSender, d.dp.DeleteSender); err != nil {
		return err
	}
	if err := syncTable(w.LearnSrcs, want.LearnSrcs, d.dp.SetLearnSource, d.dp.DeleteLearnSource); err != nil {
		return err
	}
	if w.PolicyWeights == nil {
		w.PolicyWeights = map[uint32]uint32{}
	}
	if err := syncTable(w.PolicyWeights, want.PolicyWeights, d.dp.SetPolicyWeight,
		func(idx uint32) error { return d.dp.SetPolicyWeight(idx, 0) }); err != nil {
		return err
	}
	if w.Masks == nil || !slices.Equal(w.Masks, want.Masks) {
		if err := d.dp.SetMasks(want.Masks); err != nil {
			return err
		}
		w.Masks = append([]uint32{}, want.Masks...)
	}
	if !d.settingsWritten || w.Settings != want.Settings {
		if err := d.dp.SetSettings(want.Settings); err != nil {
			return err
		}
		w.Settings, d.settingsWritten = want.Settings, true
	}
	return nil
}

// syncTable makes a data-path table go from cur to want, writing only the
// entries that differ; cur follows each write.
func syncTable[K comparable](cur, want map[K]uint32, put func(K, uint32) error, del func(K) error) error {
	for k := range cur {
		if _, ok := want[k]; !ok {
			if err := del(k); err != nil {
				return err
			}
			delete(cur, k)
		}
	}
	for k, v := range want {
		if old, ok := cur[k]; !ok || old != v {
			if err := put(k, v); err != nil {
				return err
			}
			cur[k] = v
		}
	}
	return nil
}

// prunePersistence removes persistence keys whose TM is no longer eligible
// for their service (drained, removed from the pool, not ready), so that a
// returning client is selected afresh. RELATE keys stay: a drained TM keeps
// its flows and what they relate.
func (d *Daemon) prunePersistence(pools map[uint32][]uint32) error {
	eligible := map[uint16]map[uint16]bool{}
	for svc, pool := range pools {
		m := map[uint16]bool{}
		for _, idx := range pool {
			m[uint16(idx)] = true
		}
		eligible[uint16(svc)] = m
	}
	_, err := d.dp.DeleteSecondKeysWhere(func(_ datapath.SecondKey, v datapath.Second) bool {
		return v.Svc != datapath.SvcNone && !eligible[v.Svc][v.Tm]
	}, 0)
	if err != nil {
		return fmt.Errorf("prune persistence: %w", err)
	}
	return nil
}

func sortedKeys[K interface{ ~uint32 }, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}

// tmName names TM index idx for messages.
func (d *Daemon) tmName(idx uint32) string {
	for id, s := range d.tms {
		if s.index == idx {
			return id
		}
	}
	return fmt.Sprintf("#%d", idx)
}

func (d *Daemon) tmNames(idxs []uint32) []string {
	out := make([]string, 0, len(idxs))
	for _, i := range idxs {
		out = append(out, d.tmName(i))
	}
	return out
}

// svcName names service index idx for messages.
func (d *Daemon) svcName(idx uint32) string {
	for _, s := range d.svcs {
		if s.index == idx {
			return s.name
		}
	}
	return fmt.Sprintf("#%d", idx)
}

// groupOf returns the backends and TM indexes of the priority group that
// gets new flows of service s: the first of groups (the pool, the fallback
// pool, then priority_groups) with at least its min_eligible eligible TMs;
// with none such, the first with any (an empty ring if none has any: new
// flows dropped, counted as drop_no_tm).
func groupOf(groups []config.PriorityGroup, tms map[string]*tmSlot, s *svcSlot) ([]selector.Backend, []uint32) {
	first := -1
	var fb []selector.Backend
	var fp []uint32
	for i, g := range groups {
		backends, pool := poolOf(g.TrafficManagers, tms, s)
		if len(pool) >= int(max(g.MinEligible, 1)) {
			return backends, pool
		}
		if first < 0 && len(pool) > 0 {
			first, fb, fp = i, backends, pool
		}
	}
	return fb, fp
}

// poolOf returns the TMs of ids (in order) that get new flows of service s:
// eligible (eligibleSlot) and not unhealthy for s.
func poolOf(ids []string, tms map[string]*tmSlot, s *svcSlot) ([]selector.Backend, []uint32) {
	var backends []selector.Backend
	var pool []uint32
	for _, tid := range ids {
		tm := tms[tid]
		if !eligibleSlot(tm) || s.down[tid] {
			continue
		}
		w := tm.cfg.Weight
		if mw, ok := s.weights[tid]; ok {
			w = mw
		}
		backends = append(backends, selector.Backend{Index: tm.index, Name: tid, Weight: w})
		pool = append(pool, tm.index)
	}
	return backends, pool
}
