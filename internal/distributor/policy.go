package distributor

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/health"
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
func (d *Daemon) resyncActive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.health.closed.Load() || d.cfg == nil || !leastConnections(d.cfg) {
		return
	}
	d.resyncTicks++
	if d.resyncTicks < resyncActiveEvery {
		return
	}
	d.resyncTicks = 0
	if err := d.resyncActiveNow(); err != nil {
		d.log.Error("resync active flows", "error", err)
	}
}

// resyncActiveNow counts the flow and half-open entries of each TM and writes
// the counts to the data path's active-flow counters. Called with d.mu held.
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

// measuredWeights are the weights of a packet-rate or completion-rate
// service: costWeights over each measured TM's damped packet rate (at
// least packetRateFloor), or over the inverse of its damped completion
// share (at least completionFloor).
func (d *Daemon) measuredWeights(sc config.Service) map[string]uint32 {
	costs := map[string]float64{}
	for _, tid := range slices.Concat(sc.TrafficManagers, sc.FallbackTrafficManagers) {
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
	return d.costWeights(sc, costs)
}

// costWeights turns measured costs (lower is better: an RTT, a packet
// rate, an inverse completion share) into weights for service sc: each
// measured TM's configured weight × 100 × (the lowest cost / its own),
// within 1..1000. A TM without a measurement keeps its configured weight
// × 100, so that it competes as the best would.
func (d *Daemon) costWeights(sc config.Service, costs map[string]float64) map[string]uint32 {
	best := 0.0
	for _, c := range costs {
		if best == 0 || c < best {
			best = c
		}
	}
	out := map[string]uint32{}
	for _, tid := range slices.Concat(sc.TrafficManagers, sc.FallbackTrafficManagers) {
		tm := d.tms[tid]
		if tm == nil {
			continue
		}
		w := float64(tm.cfg.Weight) * 100
		if c, ok := costs[tid]; ok && c > 0 {
			w *= best / c
		}
		out[tid] = uint32(min(max(w+0.5, 1), config.MaxWeight))
	}
	return out
}
