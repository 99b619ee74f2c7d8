package distributor

import (
	"maps"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// maxSweep bounds the entries one sweep removes, so its memory stays small;
// the rest go in the next sweep.
const maxSweep = 100_000

// maxRelated bounds the related second keys one sweep looks at for ended
// parents (each costs a flow lookup); the rest wait for the next sweep.
const maxRelated = 100_000

// idleTimeout is how long entry f may stay idle. A TCP flow's timeout is
// its phase's (flow.TCPPhaseOf); a timeout a signal set (MEMORIZE, AGE)
// replaces that of a live connection and caps that of an ended one, so
// that a FIN or RST is never outlived by a long signalled timeout.
// parentEnded: a related flow whose parent ended gets the close timeout.
func idleTimeout(t config.Timeouts, k datapath.FlowKey, f datapath.Flow, parentEnded bool) uint32 {
	var def uint32
	ended := parentEnded
	switch k.Proto {
	case flow.ProtoTCP:
		switch flow.TCPPhaseOf(f.TcpState) {
		case flow.TCPPhaseSyn:
			def = t.TCPSyn
		case flow.TCPPhaseFin:
			def, ended = t.TCPFin, true
		case flow.TCPPhaseClosed, flow.TCPPhaseReset:
			def, ended = t.TCPClose, true
		default:
			def = t.TCP
		}
	case flow.ProtoUDP:
		def = t.UDP
	default:
		def = t.Other
	}
	if parentEnded && t.TCPClose < def {
		def = t.TCPClose
	}
	if f.Timeout != 0 && (!ended || uint32(f.Timeout) < def) {
		return uint32(f.Timeout)
	}
	return def
}

// idle reports whether an entry last seen at last has been idle longer than
// timeout at now (the clock is the data path's, in seconds).
func idle(now, last, timeout uint32) bool {
	return now > last && now-last > timeout
}

// secondTimeout is how long second key v may stay idle; a related one
// whose parent ended gets the close timeout.
func secondTimeout(t config.Timeouts, v datapath.Second, parentEnded bool) uint32 {
	if parentEnded {
		if v.Timeout != 0 && v.Timeout < t.TCPClose {
			return v.Timeout
		}
		return t.TCPClose
	}
	if v.Timeout != 0 {
		return v.Timeout
	}
	return t.SecondKey
}

// parentEnded reports whether the parent of a related entry is gone (FORGET,
// timeout) or has ended (a valid FIN or RST).
func parentEnded(dp datapath.Tables, parent datapath.FlowKey) bool {
	f, err := dp.LookupFlow(parent)
	if err != nil {
		return true
	}
	switch flow.TCPPhaseOf(f.TcpState) {
	case flow.TCPPhaseFin, flow.TCPPhaseClosed, flow.TCPPhaseReset:
		return parent.Proto == flow.ProtoTCP
	}
	return false
}

// orphans returns the related second keys (made by RELATE: they have a
// parent) whose parent ended: they, and the flows they made, age with the
// close timeout.
func (d *Daemon) orphans() (map[datapath.SecondKey]bool, error) {
	out := map[datapath.SecondKey]bool{}
	n := 0
	err := d.dp.WalkSecondKeys(func(k datapath.SecondKey, v datapath.Second) bool {
		if v.Parent.Family == 0 {
			return true // persistence: no parent
		}
		n++
		if parentEnded(d.dp, v.Parent) {
			out[k] = true
		}
		return n < maxRelated
	})
	return out, err
}

// lifeStats is what the sweeper tells operators: entries aged by reason,
// the last sweep's cost, and when it last warned of pressure.
type lifeStats struct {
	mu          sync.Mutex
	aged        map[string]uint64
	last        *api.SweepStats
	warnedAt    time.Time
	lastRefused uint64 // flow_refused + half_open_refused at the last sweep
}

// stats copies the sweeper's figures into st.
func (l *lifeStats) stats(st *api.Stats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st.Aged = maps.Clone(l.aged)
	if l.last != nil {
		c := *l.last
		st.LastSweep = &c
	}
}

// sweepRate bounds how many entries a sweep walks per second, so that a
// sweep of a big table spreads over time instead of taking a CPU whole
// (BenchmarkSweepWalk: ~0.4 µs of CPU per entry).
const sweepRate = 2_000_000

// pacer holds a walk to rate entries per second: every batch entries it
// sleeps until the walk is no longer ahead of the rate.
type pacer struct {
	rate  int
	start time.Time
	n     int
	now   func() time.Time
	sleep func(time.Duration)
}

const pacerBatch = 4096

func newPacer(rate int) *pacer {
	return &pacer{rate: rate, start: time.Now(), now: time.Now, sleep: time.Sleep}
}

func (p *pacer) tick() {
	p.n++
	if p.n%pacerBatch != 0 {
		return
	}
	due := time.Duration(float64(p.n) / float64(p.rate) * float64(time.Second))
	if ahead := due - p.now().Sub(p.start); ahead > 0 {
		p.sleep(ahead)
	}
}

// pressureEvery rate-limits the "under pressure" log line.
const pressureEvery = time.Minute

// tally wraps a sweep's match function: it counts the calls and remembers,
// per matched key, the reason of its last call, so that after
// Delete*Where (which calls match once per entry, then once more for each
// candidate just before deleting it) the entries walked and the removed
// entries by reason are known.
type tally[K comparable] struct {
	calls  uint64
	reason map[K]string // "" when the last call did not match
}

func (t *tally[K]) match(k K, reason string, ok bool) bool {
	t.calls++
	if ok {
		t.reason[k] = reason
	} else if _, seen := t.reason[k]; seen {
		t.reason[k] = ""
	}
	return ok
}

// walked is the entries walked: every entry once, candidates twice.
func (t *tally[K]) walked() uint64 { return t.calls - uint64(len(t.reason)) }

func (t *tally[K]) add(aged map[string]uint64) {
	for _, r := range t.reason {
		if r != "" {
			aged[r]++
		}
	}
}

// flowReason names why entry f would age: its TCP phase, udp or other, or
// related when its parent's end shortened it.
func flowReason(k datapath.FlowKey, f datapath.Flow, related bool) string {
	if related {
		return "related"
	}
	return stateName(k, f)
}

// sweep removes flow-table, half-open and second-key entries idle longer
// than their timeouts, counts them by reason, and warns (at most once a
// minute) when the tables are under pressure. An entry refreshed by the
// data path between the walk and the delete is kept (Delete*Where matches
// again just before deleting).
func (d *Daemon) sweep() (flows, seconds int, err error) {
	start := time.Now()
	d.mu.Lock()
	t := d.cfg.Timeouts
	maxFlows := d.cfg.FlowTable.MaxFlows
	// Services with timeouts of their own, by the index their flows carry.
	bySvc := map[uint16]config.Timeouts{}
	for _, sc := range d.cfg.Services {
		if s := d.svcs[idOf(sc)]; s != nil && sc.Timeouts != nil {
			bySvc[uint16(s.index)] = sc.Timeouts.Apply(t)
		}
	}
	d.mu.Unlock()
	timeouts := func(f datapath.Flow) config.Timeouts {
		if st, ok := bySvc[f.Svc]; ok {
			return st
		}
		return t
	}
	now := d.clock()
	orphans, err := d.orphans()
	if err != nil {
		return 0, 0, err
	}
	pace := newPacer(sweepRate)
	ft := tally[datapath.FlowKey]{reason: map[datapath.FlowKey]string{}}
	following := d.hub.any() || d.peers.Load() != nil // followers, or peers to tell
	gone := map[datapath.FlowKey]datapath.Flow{}      // for the expired events, when followed
	flows, err = d.dp.DeleteFlowsWhere(func(k datapath.FlowKey, f datapath.Flow) bool {
		pace.tick()
		related := len(orphans) > 0 && f.Flags&datapath.FlowSecondKey != 0 &&
			orphans[datapath.SecondKey{Key: flow.MaskKey(k, uint32(f.Mask)), Mask: uint32(f.Mask)}]
		ok := ft.match(k, flowReason(k, f, related), idle(now, f.LastSeen, idleTimeout(timeouts(f), k, f, related)))
		if ok && following {
			gone[k] = f
		}
		return ok
	}, maxSweep)
	if err != nil {
		return flows, 0, err
	}
	if following {
		d.publishExpired(&ft, gone)
	}
	ht := tally[datapath.FlowKey]{reason: map[datapath.FlowKey]string{}}
	half, err := d.dp.DeleteHalfOpenWhere(func(k datapath.FlowKey, f datapath.Flow) bool {
		pace.tick()
		ft := timeouts(f)
		return ht.match(k, "half_open", idle(now, f.LastSeen, min(ft.TCPSyn, idleTimeout(ft, k, f, false))))
	}, maxSweep)
	if err != nil {
		return flows, 0, err
	}
	st := tally[datapath.SecondKey]{reason: map[datapath.SecondKey]string{}}
	seconds, err = d.dp.DeleteSecondKeysWhere(func(k datapath.SecondKey, v datapath.Second) bool {
		pace.tick()
		r := "second_key"
		if orphans[k] {
			r = "related_second_key"
		}
		return st.match(k, r, idle(now, v.LastSeen, secondTimeout(t, v, orphans[k])))
	}, maxSweep)
	if err != nil {
		return flows, seconds, err
	}

	l := &d.life
	l.mu.Lock()
	if l.aged == nil {
		l.aged = map[string]uint64{}
	}
	ft.add(l.aged)
	ht.add(l.aged)
	st.add(l.aged)
	l.last = &api.SweepStats{At: start.UTC().Format(time.RFC3339Nano), Seconds: time.Since(start).Seconds(),
		Walked: ft.walked() + ht.walked() + st.walked(), Removed: uint64(flows + half + seconds)}
	l.mu.Unlock()
	d.pressure(maxFlows, ft.walked()-uint64(flows), ht.walked()-uint64(half))
	return flows + half, seconds, nil
}

// pressure logs, at most once per pressureEvery, that the flow or
// half-open table is 90% full or refused entries since the last sweep.
func (d *Daemon) pressure(maxFlows uint32, flows, half uint64) {
	var refused uint64
	if c, err := d.dp.ReadCounters(); err == nil {
		refused = c[datapath.CounterFlowRefused].Packets + c[datapath.CounterHalfOpenRefused].Packets
	}
	halfCap := uint64(datapath.HalfOpenSize(maxFlows))
	flowCap := uint64(maxFlows) - halfCap
	l := &d.life
	l.mu.Lock()
	moved := refused - l.lastRefused
	l.lastRefused = refused
	warn := (moved > 0 || flows*10 >= flowCap*9 || half*10 >= halfCap*9) && time.Since(l.warnedAt) >= pressureEvery
	if warn {
		l.warnedAt = time.Now()
	}
	l.mu.Unlock()
	if warn {
		d.log.Warn("flow table under pressure", "flows", flows, "flow_capacity", flowCap,
			"half_open", half, "half_open_capacity", halfCap, "refused_since_last_sweep", moved)
	}
}
