package distributor

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/health"
)

// healthChecks runs the services' health checks (services[].health) and
// turns their state changes into applies: an unhealthy TM leaves the
// service's ring (svcSlot.down, read by desired), so that it gets no new
// flows while the flows it has stay where they are.
type healthChecks struct {
	c      *health.Checker
	closed atomic.Bool
	// stop ends the reweigh loop; done is closed when it has (or at
	// close, if it never started); once starts it.
	stop, done chan struct{}
	once       sync.Once
	// refs maps a checker key to what it checks; guarded by the daemon's mu.
	refs map[string]healthRef
}

// healthRef is what one health target checks: a TM for a service.
type healthRef struct {
	svc serviceID
	tm  string
}

func newHealthChecks(d *Daemon) *healthChecks {
	h := &healthChecks{refs: map[string]healthRef{}, stop: make(chan struct{}), done: make(chan struct{})}
	h.c = health.NewChecker(d.log, func(key string, healthy bool) { d.healthChanged(key, healthy) })
	return h
}

// startReweigh starts the loop that recomputes measured weights, once.
// Called with d.mu held, from syncHealth: d.health is set by then.
func (h *healthChecks) startReweigh(d *Daemon) {
	h.once.Do(func() {
		go func() {
			defer close(h.done)
			t := time.NewTicker(reweighEvery)
			defer t.Stop()
			for {
				select {
				case <-h.stop:
					return
				case <-t.C:
					d.pollAgents()
					d.reweigh()
					d.resyncActive()
				}
			}
		}()
	})
}

func (h *healthChecks) close() {
	if h.closed.Swap(true) {
		return
	}
	close(h.stop)
	h.once.Do(func() { close(h.done) }) // never started
	<-h.done
	h.c.Close()
}

// healthKey names the check of TM tm for service id: by the service's
// VIP, port and protocol, which a reload cannot change (a renamed service
// keeps its TMs' health).
func healthKey(id serviceID, tm string) string {
	return fmt.Sprintf("%s/%s/%s", protoName(id.proto), netip.AddrPortFrom(id.vip, id.port), tm)
}

func protoName(p uint8) string {
	if p == protoNumber(config.ProtocolUDP) {
		return config.ProtocolUDP
	}
	return config.ProtocolTCP
}

// probeAddr is where a TM is probed for a service on vip: healthAddr. Tests
// point it at loopback addresses, where their TMs' listeners are.
var probeAddr = healthAddr

// healthAddr is the address tm is probed at for a service on vip: its
// first address of the VIP's family, else its first.
func healthAddr(tm config.TrafficManager, vip netip.Addr) netip.Addr {
	addrs := tm.AllAddresses()
	for _, a := range addrs {
		if a.Is4() == vip.Is4() {
			return a
		}
	}
	if len(addrs) > 0 {
		return addrs[0]
	}
	return netip.Addr{}
}

func specOf(h *config.Health) health.Spec {
	return health.Spec{
		Kind: h.Type, Port: h.Port, Path: h.Path, Status: int(h.Status), Send: h.Send, Expect: h.Expect,
		Interval: time.Duration(h.IntervalMS) * time.Millisecond,
		Timeout:  time.Duration(h.TimeoutMS) * time.Millisecond,
		Rise:     int(h.Rise), Fall: int(h.Fall),
	}
}

// syncHealth makes the checker probe what cfg asks for (each TM of each
// checked service's pool and fallback pool) and records, in each service
// slot, the TMs that are unhealthy for it. Called with d.mu held, after
// assign (the slots exist) and before desired (which reads them).
func (d *Daemon) syncHealth(cfg *config.Config) {
	var targets []health.Target
	refs := map[string]healthRef{}
	for _, sc := range cfg.Services {
		if sc.Health == nil {
			continue
		}
		id := idOf(sc)
		spec := specOf(sc.Health)
		for _, tid := range sc.AllTrafficManagers() {
			tm, ok := cfg.TM(tid)
			if !ok {
				continue
			}
			key := healthKey(id, tid)
			targets = append(targets, health.Target{Key: key, Addr: probeAddr(tm, id.vip), Spec: spec})
			refs[key] = healthRef{svc: id, tm: tid}
		}
	}
	d.health.c.Set(targets)
	d.health.refs = refs
	if len(targets) > 0 || leastConnections(cfg) || measured(cfg) {
		d.health.startReweigh(d)
	}
	for _, s := range d.svcs {
		s.down = nil
	}
	for key, r := range refs {
		s := d.svcs[r.svc]
		if s == nil || d.health.c.Healthy(key) {
			continue
		}
		if s.down == nil {
			s.down = map[string]bool{}
		}
		s.down[r.tm] = true
	}
}

// healthChanged applies a TM's new health for a service: the ring is
// rewritten (only new flows move); with on_unhealthy: reselect, the TM's
// established flows of the service are removed so that they select again.
func (d *Daemon) healthChanged(key string, healthy bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.health.closed.Load() || d.cfg == nil {
		return // closing, or the first apply failed
	}
	r, ok := d.health.refs[key]
	if !ok {
		return // no longer checked: a reload removed it meanwhile
	}
	svc, tm := d.svcs[r.svc], d.tms[r.tm]
	name := key
	if svc != nil {
		name = svc.name
	}
	d.log.Info("traffic manager health changed", "service", name, "tm", r.tm, "healthy", healthy)
	if err := d.apply(d.cfg); err != nil {
		d.log.Error("apply after health change", "service", name, "tm", r.tm, "error", err)
		return
	}
	if healthy || svc == nil || tm == nil {
		return
	}
	for _, sc := range d.cfg.Services {
		if idOf(sc) != r.svc || sc.Health == nil || sc.Health.OnUnhealthy != config.OnUnhealthyReselect {
			continue
		}
		svcIdx, tmIdx := uint16(svc.index), uint16(tm.index)
		n, err := d.dp.DeleteFlowsWhere(func(_ datapath.FlowKey, f datapath.Flow) bool {
			return f.Tm == tmIdx && f.Svc == svcIdx
		}, 0)
		if err != nil {
			d.log.Error("re-select the flows of an unhealthy traffic manager", "service", name, "tm", r.tm, "error", err)
			return
		}
		d.log.Info("flows of an unhealthy traffic manager removed: they select again", "service", name, "tm", r.tm, "flows", n)
	}
}

// healthStats is the health of service id's checked TMs, for Stats.
// Called with d.mu held.
func (d *Daemon) healthStats(id serviceID) []api.HealthState {
	var out []api.HealthState
	for key, r := range d.health.refs {
		if r.svc != id {
			continue
		}
		s, ok := d.health.c.State(key)
		if !ok {
			continue
		}
		out = append(out, api.HealthState{
			TM: r.tm, Healthy: s.Healthy, Checked: s.Checked, LastError: s.LastError,
			RTTSeconds: s.LastRTT.Seconds(), Changes: s.Changes, Since: s.Since.UTC().Format(time.RFC3339),
		})
	}
	slices.SortFunc(out, func(a, b api.HealthState) int {
		switch {
		case a.TM < b.TM:
			return -1
		case a.TM > b.TM:
			return 1
		}
		return 0
	})
	return out
}

// Measured weights (policy fastest-rtt).
const (
	// reweighEvery is how often measured weights are recomputed.
	reweighEvery = time.Second
	// rttFloor: round-trip times below it count as it, so that the
	// microseconds of jitter between fast TMs move no weight.
	rttFloor = time.Millisecond
	// reweighThreshold is the relative change of a TM's weight that
	// rewrites the ring; smaller changes are damped away.
	reweighThreshold = 0.2
)

// rttWeights are the weights of fastest-rtt for service sc: each measured
// TM's configured weight × 100 × (the fastest damped RTT / its own),
// within 1..1000 (costWeights). A TM without a measurement yet keeps its
// configured weight (× 100, so that it competes as the fastest would).
func (d *Daemon) rttWeights(sc config.Service) map[string]uint32 {
	rtts := map[string]float64{}
	for _, tid := range sc.AllTrafficManagers() {
		st, ok := d.health.c.State(healthKey(idOf(sc), tid))
		if !ok || !st.Checked || st.AvgRTT == 0 {
			continue
		}
		rtts[tid] = float64(max(st.AvgRTT, rttFloor))
	}
	return d.costWeights(sc, rtts)
}

// weightsMoved reports whether next differs from cur by more than the
// damping threshold for some TM (or in which TMs it has).
func weightsMoved(cur, next map[string]uint32) bool {
	if len(cur) != len(next) {
		return true
	}
	for tid, w := range next {
		c, ok := cur[tid]
		if !ok {
			return true
		}
		if d := float64(w) - float64(c); d > reweighThreshold*float64(c) || -d > reweighThreshold*float64(c) {
			return true
		}
	}
	return false
}

// reweigh recomputes the measured weights of the fastest-rtt, packet-rate
// and completion-rate services and
// rewrites the rings whose weights moved beyond the damping threshold:
// only new flows move.
func (d *Daemon) reweigh() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.health.closed.Load() || d.cfg == nil {
		return
	}
	changed := false
	d.measure()
	for _, sc := range d.cfg.Services {
		s := d.svcs[idOf(sc)]
		if s == nil {
			continue
		}
		var next map[string]uint32
		switch {
		case sc.Policy == config.PolicyFastestRTT && sc.Health != nil:
			next = d.rttWeights(sc)
		case config.IsMeasured(sc.Policy):
			next = d.measuredWeights(sc)
		default:
			if s.weights != nil {
				s.weights, changed = nil, true
			}
			continue
		}
		if weightsMoved(s.weights, next) {
			d.log.Info("measured weights", "service", sc.Name, "policy", sc.Policy, "weights", next)
			s.weights, changed = next, true
		}
	}
	if changed {
		if err := d.apply(d.cfg); err != nil {
			d.log.Error("apply measured weights", "error", err)
		}
	}
}
