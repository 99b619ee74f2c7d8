package distributor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/health"
	"github.com/switchyard/switchyard/internal/selector"
	"github.com/vishvananda/netlink"
)

// The least-connections policies read the data path's per-TM active-flow
// counters (policy_active). The data path and the seam count each entry
// made and deleted; overwrites and the races of user-space adds make the
// counters drift, so the daemon rewrites them from a walk of the flow and
// half-open tables every resyncActiveEvery ticks of the reweigh loop. The
// drift is then bounded by what changed during one walk: it cannot grow.

// resyncActiveEvery is the number of reweigh ticks (reweighEvery) between
// two resyncs of the active-flow counters.
const resyncActiveEvery = 5

// leastConnections reports whether some service of cfg uses a
// least-connections policy.
func leastConnections(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Services, func(s config.Service) bool { return config.IsLeastConnections(s.Policy) })
}

// resyncActive rewrites the active-flow counters from a walk, every
// resyncActiveEvery calls, while some service uses least-connections.
// The walk runs without d.mu, like the sweeper's: a big table takes a while.
func (d *Daemon) resyncActive() {
	d.mu.Lock()
	if d.health.closed.Load() || d.cfg == nil || !leastConnections(d.cfg) {
		d.mu.Unlock()
		return
	}
	d.resyncTicks++
	due := d.resyncTicks >= resyncActiveEvery
	if due {
		d.resyncTicks = 0
	}
	d.mu.Unlock()
	if !due {
		return
	}
	if err := d.resyncActiveNow(); err != nil {
		d.log.Error("resync active flows", "error", err)
	}
}

// resyncActiveNow counts the flow and half-open entries of each TM and writes
// the counts to the data path's active-flow counters.
func (d *Daemon) resyncActiveNow() error {
	n, err := datapath.CountActive(d.dp)
	if err != nil {
		return err
	}
	return d.dp.SetActive(n)
}

// Measured weights (packet-rate, completion-rate, and fastest-rtt's shape):
// every reweigh tick the daemon samples per-TM counters of the data path,
// damps them (an exponential moving average with the health probes' RTT
// weight, health.RTTWeight), and turns them into Maglev weights with
// costWeights; reweigh rewrites a ring only when some weight moved by more
// than reweighThreshold.
const (
	// packetRateFloor: packet rates below it (packets per second) count
	// as it, so that idle TMs are equal rather than infinitely light.
	packetRateFloor = 100
	// completionFloor: completion shares below it count as it, so that a
	// TM whose every flow resets keeps the smallest weight, not none.
	completionFloor = 0.01
)

// tmMeasure is what the daemon measures of one TM index for the measured
// policies. fin and bad count TCP flows that ended by a FIN, and by a
// reset or an idle timeout before any FIN, as the flow events and the
// sweeper report them (written by the event reader and the sweeper,
// read by reweigh: atomics).
type tmMeasure struct {
	fin, bad atomic.Uint64

	// Guarded by the daemon's mu (reweigh).
	lastPackets       uint64
	lastFin, lastBad  uint64
	lastAt            time.Time
	rate, completion  float64 // damped; valid when rateOK, completionOK
	rateOK, completOK bool
	agent             agentLoad // damped; valid when agentOK
	agentOK, agentErr bool      // agentErr: the last poll failed (logged once)
}

// measures are the daemon's per-TM measurements, by TM index.
type measures [datapath.MaxTMs]tmMeasure

// measured reports whether some service of cfg uses a measured policy.
func measured(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Services, func(s config.Service) bool { return config.IsMeasured(s.Policy) })
}

// damp is the moving average of the measured policies: a new sample
// weighs health.RTTWeight, like a new probe's RTT in fastest-rtt.
func damp(avg, sample float64, ok bool) float64 {
	if !ok {
		return sample
	}
	return avg + health.RTTWeight*(sample-avg)
}

// countEnd counts a flow event's end for completion-rate: the first FIN
// of a TCP flow is a completion, a reset before any FIN a failure.
func (d *Daemon) countEnd(ev datapath.Event) {
	if ev.Type != datapath.EventState || ev.Key.Proto != flow.ProtoTCP || int(ev.Tm) >= datapath.MaxTMs {
		return
	}
	fins := ev.TcpState & (datapath.TCPFinFwd | datapath.TCPFinRev)
	switch {
	case fins != 0 && ev.TcpState&datapath.TCPReset == 0 && fins != datapath.TCPFinFwd|datapath.TCPFinRev:
		d.meas[ev.Tm].fin.Add(1)
	case fins == 0 && ev.TcpState&datapath.TCPReset != 0:
		d.meas[ev.Tm].bad.Add(1)
	}
}

// countExpired counts the TCP flows a sweep removed before they ended (an
// idle timeout) as failures for completion-rate.
func (d *Daemon) countExpired(f datapath.Flow, proto uint8) {
	if proto == flow.ProtoTCP && f.TcpState&datapath.TCPEnded == 0 && int(f.Tm) < datapath.MaxTMs {
		d.meas[f.Tm].bad.Add(1)
	}
}

// measure samples the data path's per-TM packets and the counted ends
// since the last tick, and damps them. Called with d.mu held.
func (d *Daemon) measure() {
	if d.cfg == nil || !measured(d.cfg) {
		return
	}
	now := time.Now()
	for _, tm := range d.tms {
		m := &d.meas[tm.index]
		tr, err := d.dp.TMTraffic(tm.index)
		if err != nil {
			continue
		}
		fin, bad := m.fin.Load(), m.bad.Load()
		if !m.lastAt.IsZero() {
			if dt := now.Sub(m.lastAt).Seconds(); dt > 0 && tr.Packets >= m.lastPackets {
				m.rate = damp(m.rate, float64(tr.Packets-m.lastPackets)/dt, m.rateOK)
				m.rateOK = true
			}
			if n := (fin - m.lastFin) + (bad - m.lastBad); n > 0 {
				m.completion = damp(m.completion, float64(fin-m.lastFin)/float64(n), m.completOK)
				m.completOK = true
			}
		}
		m.lastPackets, m.lastFin, m.lastBad, m.lastAt = tr.Packets, fin, bad, now
	}
}

// measuredWeights are the weights of a packet-rate, completion-rate or
// ratio-dynamic service: costWeights over each measured TM's damped packet
// rate (at least packetRateFloor), over the inverse of its damped
// completion share (at least completionFloor), or over its agent's load
// (loadCosts).
func (d *Daemon) measuredWeights(sc config.Service) map[string]uint32 {
	costs := map[string]float64{}
	for _, tid := range sc.AllTrafficManagers() {
		tm := d.tms[tid]
		if tm == nil {
			continue
		}
		m := &d.meas[tm.index]
		switch {
		case sc.Policy == config.PolicyPacketRate && m.rateOK:
			costs[tid] = max(m.rate, packetRateFloor)
		case sc.Policy == config.PolicyCompletionRate && m.completOK:
			costs[tid] = 1 / max(m.completion, completionFloor)
		}
	}
	if sc.Policy == config.PolicyRatioDynamic {
		costs = d.loadCosts(sc.AllTrafficManagers())
	}
	return d.costWeights(sc, costs)
}

// costWeights turns measured costs (lower is better: an RTT, a packet
// rate, an inverse completion share) into weights for service sc
// (weightsOf over its TMs' configured weights).
func (d *Daemon) costWeights(sc config.Service, costs map[string]float64) map[string]uint32 {
	cfgWeights := map[string]uint32{}
	var ids []string
	for _, tid := range sc.AllTrafficManagers() {
		if tm := d.tms[tid]; tm != nil {
			ids = append(ids, tid)
			cfgWeights[tid] = tm.cfg.Weight
		}
	}
	return weightsOf(ids, cfgWeights, costs)
}

// weightsOf is each TM of ids' configured weight × 100 × (the lowest cost
// / its own), within 1..1000. A TM without a cost keeps its configured
// weight × 100, so that it competes as the best would.
func weightsOf(ids []string, cfgWeights map[string]uint32, costs map[string]float64) map[string]uint32 {
	best := 0.0
	for _, c := range costs {
		if best == 0 || c < best {
			best = c
		}
	}
	out := make(map[string]uint32, len(ids))
	for _, tid := range ids {
		w := float64(cfgWeights[tid]) * 100
		if c, ok := costs[tid]; ok && c > 0 {
			w *= best / c
		}
		out[tid] = uint32(min(max(w+0.5, 1), config.MaxWeight))
	}
	return out
}

// ratio-dynamic: the load the TMs' agents report. Each reweigh tick the
// daemon asks every TM with traffic_managers[].agent_stats that a
// ratio-dynamic service uses for its agent's stats (the agent's
// --stats-listen, which answers stats only), at most agentPollParallel at
// once, each within agentPollTimeout and agentReplyMax bytes. A TM whose
// agent does not answer keeps its last damped load; one never measured
// keeps its configured weight.
const (
	agentPollTimeout  = 500 * time.Millisecond
	agentReplyMax     = 64 << 10
	agentPollParallel = 16
	// agentMaxActive bounds a reported active-flow count (a bad report is
	// not a weight).
	agentMaxActive = 1 << 30
)

// agentLoad is one agent report's figures.
type agentLoad struct {
	cpu, active, newPerSec float64
}

// pollAgents polls the agents of the ratio-dynamic services' TMs and damps
// their reports into d.meas. It takes d.mu only around reading the
// targets and storing the results, never during the network round trips.
func (d *Daemon) pollAgents() {
	d.mu.Lock()
	if d.cfg == nil || d.health.closed.Load() {
		d.mu.Unlock()
		return
	}
	targets := map[uint32]string{}
	for _, sc := range d.cfg.Services {
		if sc.Policy != config.PolicyRatioDynamic {
			continue
		}
		for _, tid := range sc.AllTrafficManagers() {
			if tm := d.tms[tid]; tm != nil && tm.cfg.AgentStats != "" {
				targets[tm.index] = tm.cfg.AgentStats
			}
		}
	}
	d.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	type result struct {
		idx  uint32
		load agentLoad
		err  error
	}
	out := make(chan result, len(targets))
	slots := make(chan struct{}, agentPollParallel)
	for idx, addr := range targets {
		go func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			l, err := pollAgent(addr)
			out <- result{idx, l, err}
		}()
	}
	res := make([]result, 0, len(targets))
	for range targets {
		res = append(res, <-out)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range res {
		m := &d.meas[r.idx]
		if r.err != nil {
			if !m.agentErr {
				d.log.Warn("agent load report", "tm", d.tmName(r.idx), "error", r.err)
			}
			m.agentErr = true
			continue
		}
		m.agentErr = false
		m.agent.cpu = damp(m.agent.cpu, r.load.cpu, m.agentOK)
		m.agent.active = damp(m.agent.active, r.load.active, m.agentOK)
		m.agent.newPerSec = damp(m.agent.newPerSec, r.load.newPerSec, m.agentOK)
		m.agentOK = true
	}
}

// pollAgent asks the agent stats listener at addr for one report.
func pollAgent(addr string) (agentLoad, error) {
	ctx, cancel := context.WithTimeout(context.Background(), agentPollTimeout)
	defer cancel()
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return agentLoad{}, fmt.Errorf("agent stats at %s: %w", addr, err)
	}
	defer c.Close()
	dead, _ := ctx.Deadline()
	_ = c.SetDeadline(dead)
	if _, err := io.WriteString(c, `{"op":"stats"}`+"\n"); err != nil {
		return agentLoad{}, fmt.Errorf("agent stats at %s: send: %w", addr, err)
	}
	line, err := bufio.NewReaderSize(c, agentReplyMax).ReadSlice('\n')
	if err != nil {
		return agentLoad{}, fmt.Errorf("agent stats at %s: read (at most %d bytes): %w", addr, agentReplyMax, err)
	}
	return decodeAgentLoad(line)
}

// decodeAgentLoad checks and converts an agent's stats reply line.
func decodeAgentLoad(line []byte) (agentLoad, error) {
	var rep agent.APIReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return agentLoad{}, fmt.Errorf("agent stats: bad reply: %w", err)
	}
	if !rep.OK || rep.Stats == nil {
		return agentLoad{}, fmt.Errorf("agent stats: refused: %q", rep.Error)
	}
	s := rep.Stats
	if !(s.CPU >= 0 && s.CPU <= 1) || s.Active < 0 || s.Active > agentMaxActive || s.NewPerSec > agentMaxActive {
		return agentLoad{}, fmt.Errorf("agent stats: figures out of range: cpu %v, active flows %d, new flows/s %d", s.CPU, s.Active, s.NewPerSec)
	}
	return agentLoad{cpu: s.CPU, active: float64(s.Active), newPerSec: float64(s.NewPerSec)}, nil
}

// loadCosts are the ratio-dynamic costs of the measured TMs of ids: for
// each figure the agents report (CPU, active flows, new flows per second)
// a TM's share of the measured TMs' sum, averaged over the figures that
// are not zero for all, and at least a tenth of an even share.
func (d *Daemon) loadCosts(ids []string) map[string]float64 {
	var tids []string
	var loads []agentLoad
	for _, tid := range ids {
		if tm := d.tms[tid]; tm != nil && d.meas[tm.index].agentOK && !slices.Contains(tids, tid) {
			tids = append(tids, tid)
			loads = append(loads, d.meas[tm.index].agent)
		}
	}
	costs := map[string]float64{}
	if len(tids) == 0 {
		return costs
	}
	figures := []func(agentLoad) float64{
		func(l agentLoad) float64 { return l.cpu },
		func(l agentLoad) float64 { return l.active },
		func(l agentLoad) float64 { return l.newPerSec },
	}
	used := 0
	sums := make([]float64, len(tids))
	for _, f := range figures {
		total := 0.0
		for _, l := range loads {
			total += f(l)
		}
		if total <= 0 {
			continue
		}
		used++
		for i, l := range loads {
			sums[i] += f(l) / total
		}
	}
	if used == 0 {
		return costs
	}
	floor := 0.1 / float64(len(tids))
	for i, tid := range tids {
		costs[tid] = max(sums[i]/float64(used), floor)
	}
	return costs
}

// zoneGroups are the priority groups of policy topology: the pool's TMs
// tagged with zone, then the rest of the pool (each with the pool's
// min_eligible), then the further groups: new flows stay in the zone while
// it has enough eligible TMs and spill over when it has not.
func zoneGroups(groups []config.PriorityGroup, zone string, tms map[string]*tmSlot) []config.PriorityGroup {
	var in, out []string
	for _, tid := range groups[0].TrafficManagers {
		if tm := tms[tid]; tm != nil && slices.Contains(tm.cfg.Tags, zone) {
			in = append(in, tid)
		} else {
			out = append(out, tid)
		}
	}
	return splitFirst(groups, in, out)
}

// metricGroups are the priority groups of policy hop-metric: the pool's TMs
// by ascending route metric from the distributor, one group per metric
// (each with the pool's min_eligible), then the further groups.
func metricGroups(groups []config.PriorityGroup, tms map[string]*tmSlot) []config.PriorityGroup {
	byMetric := map[int][]string{}
	var metrics []int
	for _, tid := range groups[0].TrafficManagers {
		m := 0
		if tm := tms[tid]; tm != nil {
			m = tm.metric
		}
		if _, ok := byMetric[m]; !ok {
			metrics = append(metrics, m)
		}
		byMetric[m] = append(byMetric[m], tid)
	}
	slices.Sort(metrics)
	parts := make([][]string, 0, len(metrics))
	for _, m := range metrics {
		parts = append(parts, byMetric[m])
	}
	return splitFirst(groups, parts...)
}

// splitFirst replaces the first group (the pool) by the non-empty parts,
// each with its min_eligible.
func splitFirst(groups []config.PriorityGroup, parts ...[]string) []config.PriorityGroup {
	var out []config.PriorityGroup
	for _, p := range parts {
		if len(p) > 0 {
			out = append(out, config.PriorityGroup{TrafficManagers: p, MinEligible: groups[0].MinEligible})
		}
	}
	return append(out, groups[1:]...)
}

// routeMetric is the metric of the route the kernel uses to reach addr (its
// FIB entry: a plain route lookup does not report it for IPv4), or 0 when
// the lookup fails (the TM is then not ready anyway).
func routeMetric(addr netip.Addr) int {
	routes, err := netlink.RouteGetWithOptions(addr.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil || len(routes) == 0 {
		return 0
	}
	return routes[0].Priority
}

// qos: a class of DSCPs prefers the pool's TMs tagged with the class's tag.
// Each QoS service (in config order) has one of the data path's
// PolicyQoSRings class rings.

// qosPlan is a QoS service's class entry and its ring.
type qosPlan struct {
	qos  datapath.QoS
	ring []uint32
}

// qosClass plans service sc's class: its QoS ring number, its DSCP mask,
// and the ring of the pool's TMs tagged with the class's tag, or the
// service's own ring (own) while fewer than min_eligible of them are
// eligible: the class spills over to the whole pool.
func qosClass(sc config.Service, cfg *config.Config, tms map[string]*tmSlot, s *svcSlot, own []uint32) (qosPlan, error) {
	n := 0
	for _, o := range cfg.Services {
		if o.Name == sc.Name {
			break
		}
		if o.Policy == config.PolicyQoS {
			n++
		}
	}
	if n >= int(datapath.PolicyQoSRings) {
		return qosPlan{}, fmt.Errorf("qos: only %d QoS services fit", datapath.PolicyQoSRings)
	}
	var mask uint64
	for _, d := range sc.QoS.DSCP {
		mask |= 1 << d
	}
	plan := qosPlan{qos: datapath.QoS{Dscp: mask, Ring: uint32(n)}, ring: own}
	var tagged []string
	for _, tid := range sc.TrafficManagers {
		if tm := tms[tid]; tm != nil && slices.Contains(tm.cfg.Tags, sc.QoS.Tag) {
			tagged = append(tagged, tid)
		}
	}
	if backends, _ := poolOf(tagged, tms, s); len(backends) > 0 && len(backends) >= int(max(sc.MinEligible, 1)) {
		ring, err := selector.Maglev(backends, uint32(len(own)))
		if err != nil {
			return qosPlan{}, err
		}
		plan.ring = ring
	}
	return plan, nil
}

// writeQoS writes the class rings that changed, then the QoS entries
// (a removed one zeroed), before the service keys that use them and
// before a TM they point at stops forwarding. Called with d.mu held.
func (d *Daemon) writeQoS(want State) error {
	w := &d.written
	if w.QoS == nil {
		w.QoS, w.QoSRings = map[uint32]datapath.QoS{}, map[uint32][]uint32{}
	}
	for _, i := range sortedKeys(want.QoSRings) {
		ring := want.QoSRings[i]
		var slots []uint32 // nil: all
		if old, ok := w.QoSRings[i]; ok {
			if slots = selector.Changed(old, ring); len(slots) == 0 {
				continue
			}
		}
		if err := d.dp.WriteQoSRing(i, ring, slots); err != nil {
			return err
		}
		w.QoSRings[i] = ring
	}
	for svc := range w.QoS {
		if _, ok := want.QoS[svc]; !ok {
			if err := d.dp.SetQoS(svc, datapath.QoS{}); err != nil {
				return err
			}
			delete(w.QoS, svc)
		}
	}
	for svc, q := range want.QoS {
		if old, ok := w.QoS[svc]; ok && old == q {
			continue
		}
		if err := d.dp.SetQoS(svc, q); err != nil {
			return err
		}
		w.QoS[svc] = q
	}
	return nil
}
