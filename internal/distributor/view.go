package distributor

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// flowCountsMaxAge bounds how often Stats walks the whole flow table.
const flowCountsMaxAge = 2 * time.Second

type flowCounts struct {
	at      time.Time
	entries uint64
	bySvc   map[uint16]uint64
	byTM    map[uint16]uint64
	// halfOpen: entries of the half-open table; byState: flow-table
	// entries by TCP phase ("udp", "other" for the rest); byOrigin: by
	// origin flag (an entry may have two).
	halfOpen uint64
	byState  map[string]uint64
	byOrigin map[string]uint64
}

// counts returns the per-service and per-TM entry counts, walking the table
// when the last count is too old.
func (d *Daemon) counts() (*flowCounts, error) {
	d.countsMu.Lock()
	defer d.countsMu.Unlock()
	if d.flowCounts != nil && time.Since(d.flowCounts.at) < flowCountsMaxAge {
		return d.flowCounts, nil
	}
	c := &flowCounts{at: time.Now(), bySvc: map[uint16]uint64{}, byTM: map[uint16]uint64{},
		byState: map[string]uint64{}, byOrigin: map[string]uint64{}}
	err := d.dp.WalkFlows(func(k datapath.FlowKey, f datapath.Flow) bool {
		c.entries++
		c.bySvc[f.Svc]++
		c.byTM[f.Tm]++
		c.byState[stateName(k, f)]++
		for _, o := range origins(f.Flags) {
			c.byOrigin[o]++
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	err = d.dp.WalkHalfOpen(func(datapath.FlowKey, datapath.Flow) bool {
		c.halfOpen++
		return true
	})
	if err != nil {
		return nil, err
	}
	d.flowCounts = c
	return c, nil
}

// Status implements api.Backend.
func (d *Daemon) Status() api.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := api.Status{
		ID:              d.cfg.Distributor.ID,
		ConfigPath:      d.cfgPath,
		LoadedAt:        d.loadedAt.UTC().Format(time.RFC3339),
		Reloads:         d.reloads,
		LastReloadError: d.reloadErr,
	}
	for _, ifc := range d.ifaces {
		s.Interfaces = append(s.Interfaces, api.Interface{Name: ifc.name, Role: ifc.role, Index: ifc.index, Mode: string(ifc.mode)})
	}
	return s
}

func (d *Daemon) tmState(s *tmSlot) string {
	if !s.present {
		return "removed"
	}
	return s.cfg.State
}

// Stats implements api.Backend.
func (d *Daemon) Stats() (api.Stats, error) {
	fc, err := d.counts()
	if err != nil {
		return api.Stats{}, err
	}
	counters, err := d.dp.ReadCounters()
	if err != nil {
		return api.Stats{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.Stats{
		ID:               d.cfg.Distributor.ID,
		FlowEntries:      fc.entries,
		FlowCapacity:     d.cfg.FlowTable.MaxFlows,
		FlowsCountedAt:   fc.at.UTC().Format(time.RFC3339Nano),
		HalfOpenEntries:  fc.halfOpen,
		HalfOpenCapacity: datapath.HalfOpenSize(d.cfg.FlowTable.MaxFlows),
		FlowsByState:     fc.byState,
		FlowsByOrigin:    fc.byOrigin,
	}
	d.life.stats(&st)
	d.peerStats(&st)
	for _, sc := range d.cfg.Services {
		s := d.svcs[idOf(sc)]
		if s == nil {
			continue
		}
		t, err := d.dp.ServiceTraffic(s.index)
		if err != nil {
			return api.Stats{}, fmt.Errorf("service %s: %w", sc.Name, err)
		}
		st.Services = append(st.Services, api.ServiceStats{
			Name: sc.Name, VIP: sc.VIP.String(), Port: sc.Port, Protocol: sc.Protocol, Policy: sc.Policy, Index: s.index,
			Eligible: d.tmNames(d.written.Pools[s.index]),
			Packets:  t.Packets, Bytes: t.Bytes, NewFlows: t.NewFlows, ActiveFlows: fc.bySvc[uint16(s.index)],
		})
		st.Services[len(st.Services)-1].Health = d.healthStats(s.id)
		st.Services[len(st.Services)-1].Fallback = inFallback(sc, d.tms, d.written.Pools[s.index])
	}
	for id, s := range d.tms {
		t, err := d.dp.TMTraffic(s.index)
		if err != nil {
			return api.Stats{}, fmt.Errorf("traffic manager %s: %w", id, err)
		}
		ts := api.TMStats{
			ID: id, Address: firstAddr(s.cfg.AllAddresses()), Addresses: addrStrings(s.cfg.AllAddresses()), Index: s.index, State: d.tmState(s), Weight: s.cfg.Weight,
			Ready: s.ready(), Reason: s.reason,
			Packets: t.Packets, Bytes: t.Bytes, NewFlows: t.NewFlows, ActiveFlows: fc.byTM[uint16(s.index)],
		}
		if s.mac != nil {
			ts.MAC = s.mac.String()
		}
		st.TrafficManagers = append(st.TrafficManagers, ts)
	}
	sort.Slice(st.TrafficManagers, func(i, j int) bool { return st.TrafficManagers[i].Index < st.TrafficManagers[j].Index })
	if d.udp != nil {
		st.UDPSignals = d.udp.Counters()
	}
	for i, c := range counters {
		st.Counters = append(st.Counters, api.Counter{
			Name: datapath.CounterName(datapath.Counter(i)), Drop: datapath.IsDrop(datapath.Counter(i)),
			Packets: c.Packets, Bytes: c.Bytes,
		})
	}
	return st, nil
}

// names maps data-path indexes back to names, as of now.
func (d *Daemon) names() (svcs map[uint16]string, tms map[uint16]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	svcs, tms = map[uint16]string{}, map[uint16]string{}
	for _, s := range d.svcs {
		svcs[uint16(s.index)] = s.name
	}
	for id, s := range d.tms {
		tms[uint16(s.index)] = id
	}
	return svcs, tms
}

// origins names an entry's flags.
func origins(flags uint16) []string {
	var o []string
	for _, f := range []struct {
		bit  uint16
		name string
	}{
		{datapath.FlowSelected, "selected"},
		{datapath.FlowMemorized, "memorized"},
		{datapath.FlowLearned, "learned"},
		{datapath.FlowSecondKey, "second-key"},
		{datapath.FlowMirror, "mirror"},
		{datapath.FlowPeer, "peer"},
	} {
		if flags&f.bit != 0 {
			o = append(o, f.name)
		}
	}
	if len(o) == 0 {
		o = append(o, "unknown")
	}
	return o
}

// parent finds the flow that related a second-key entry: the second key
// it matched holds it.
func (d *Daemon) parent(k datapath.FlowKey, e datapath.Flow) string {
	if e.Flags&datapath.FlowSecondKey == 0 {
		return ""
	}
	mask := uint32(e.Mask)
	s, err := d.dp.LookupSecondKey(datapath.SecondKey{Key: flow.MaskKey(k, mask), Mask: mask})
	if err != nil {
		return "(second key expired)"
	}
	if s.Parent == (datapath.FlowKey{}) {
		return "persistence"
	}
	return flow.String(s.Parent)
}

// WalkFlows implements api.Backend.
func (d *Daemon) WalkFlows(f api.FlowFilter, fn func(api.Flow) bool) error {
	svcs, tms := d.names()
	now := d.clock()
	return d.dp.WalkFlows(func(k datapath.FlowKey, e datapath.Flow) bool {
		if f.Service != "" && svcs[e.Svc] != f.Service {
			return true
		}
		if f.TM != "" && tms[e.Tm] != f.TM {
			return true
		}
		if f.Addr.IsValid() && flow.Src(k) != f.Addr && flow.Dst(k) != f.Addr {
			return true
		}
		idle := 0.0
		if now > e.LastSeen {
			idle = float64(now - e.LastSeen)
		}
		return fn(api.Flow{
			Proto:          flow.ProtoName(k.Proto),
			Src:            addrPort(flow.Src(k), flow.SrcPort(k)),
			Dst:            addrPort(flow.Dst(k), flow.DstPort(k)),
			VLAN:           k.Vlan,
			TM:             tms[e.Tm],
			TMIndex:        e.Tm,
			Service:        svcs[e.Svc],
			Origin:         origins(e.Flags),
			Parent:         d.parent(k, e),
			IdleSeconds:    idle,
			TimeoutSeconds: e.Timeout,
			TCPState:       tcpState(k, e),
		})
	})
}

func addrPort(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }

// stateName is an entry's state for counts: its TCP phase, or "udp" or
// "other".
func stateName(k datapath.FlowKey, e datapath.Flow) string {
	switch k.Proto {
	case flow.ProtoTCP:
		return flow.TCPPhaseOf(e.TcpState).String()
	case flow.ProtoUDP:
		return "udp"
	}
	return "other"
}

func tcpState(k datapath.FlowKey, e datapath.Flow) string {
	if k.Proto != flow.ProtoTCP {
		return ""
	}
	return flow.TCPPhaseOf(e.TcpState).String()
}

func firstAddr(as []netip.Addr) string {
	if len(as) == 0 {
		return ""
	}
	return as[0].String()
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// inFallback reports whether pool (what the ring holds) is a lower
// priority group than the service's pool: its fallback pool or one of its
// priority_groups.
func inFallback(sc config.Service, tms map[string]*tmSlot, pool []uint32) bool {
	for _, id := range sc.AllTrafficManagers()[len(sc.TrafficManagers):] {
		if s := tms[id]; s != nil && slices.Contains(pool, s.index) {
			return true
		}
	}
	return false
}
