package lab

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/loadgen"
)

// Result is the outcome of RunLab.
type Result struct {
	// Pass is true when every check passed.
	Pass   bool
	Checks []Check
	// Errors and Moved are the load generator's totals (both must be 0).
	Errors, Moved uint64
	TMs           []TMResult
	Phases        []Phase
	// Added is the TM added at 1/3 ("" if the run ended before);
	// AddedShortAfter and AddedNewFlowsAfter count its short connections
	// (load generator) and new flows (distributor) after the change took
	// effect; AddTookEffect says whether it did before the run ended.
	Added                                   string
	AddedShortAfter, AddedNewFlowsAfter     uint64
	AddTookEffect                           bool
	Drained                                 string
	DrainedShortAfter, DrainedNewFlowsAfter uint64
	DrainTookEffect                         bool
	// DrainedConnsAfter counts TCP connections opened after the drain took
	// effect that the drained TM answered; DrainedReusedAfter those of them
	// whose client address and port had last been used by a connection to
	// the drained TM (same 5-tuple as an earlier, closed connection).
	DrainedConnsAfter, DrainedReusedAfter uint64
	// APIPath is the distributor's admin socket.
	APIPath string
	// Load is the load generator's final report.
	Load loadgen.Report
	// Distributors are each distributor at the end; Router the router in
	// front of them and Failover what the kill and return did (both nil
	// with one distributor).
	Distributors []DistResult
	Router       *RouterResult
	Failover     *FailoverResult
	// Timeline is the run sampled once a second, with the scenario's
	// events (the HTML report's plots).
	Timeline Timeline
}

// DistResult is one distributor at the end of the run.
type DistResult struct {
	Name string
	// Up is false when it was not running (or not answering) at the end.
	Up bool
	// FlowEntries and FlowCapacity are its flow table's fill at the end.
	FlowEntries  uint64
	FlowCapacity uint32
	// NewFlows and Packets are its services' counters, summed across its
	// restarts.
	NewFlows, Packets uint64
	// Peers are its peers at the end.
	Peers []api.PeerStats
}

// RouterResult is the router between the client and the distributors.
type RouterResult struct {
	Kind string
	// Via are the distributors in its route at the end.
	Via []string
}

// FailoverResult is what killing a distributor and bringing it back did
// to the load.
type FailoverResult struct {
	Killed string
	// KillTookEffect and Back say whether the kill and the return happened
	// before the run ended, and when (since the load started).
	KillTookEffect, Back bool
	KilledAt, BackAt     time.Duration
	// Rerouted is the time from the kill to the router's route without the
	// distributor; Resync from its restart to its peers synced (when it
	// went back into the route).
	Rerouted, Resync time.Duration
	// Errors and Moved are the load's failed requests or connections and
	// flows that changed TM, from just before the kill to the end.
	Errors, Moved uint64
	// KeepAliveReconnects are the keep-alive connections opened after the
	// kill: each replaced one that broke.
	KeepAliveReconnects uint64
	// UDPWindowLost are the UDP requests sent between the kill and the
	// route without the distributor that got no reply (the router still
	// sent them to the dead distributor); they are among Errors, and are
	// lost datagrams, not broken flows (the flow goes on, on its TM).
	UDPWindowLost             uint64
	ErrorSamples, MoveSamples []string
}

// Timeline is the run sampled about once a second.
type Timeline struct {
	Samples []Sample
	Events  []Event
	// TMs and Distributors name the series, in order.
	TMs, Distributors []string
}

// Event is a step of the scenario on the timeline.
type Event struct {
	At    time.Duration
	Label string
}

// Sample is one interval of the run, ending at At.
type Sample struct {
	At time.Duration
	// NewFlows are the new flows the distributors sent each TM in the
	// interval (summed over the distributors); nil when they did not answer.
	NewFlows map[string]uint64
	// P50 and P99 are the HTTP requests' latency in the interval (time to
	// the first byte of the response); Requests how many there were.
	P50, P99 time.Duration
	Requests int
	Dist     []DistSample
}

// DistSample is one distributor in one interval.
type DistSample struct {
	Name string
	Up   bool
	// FlowEntries of FlowCapacity in its flow table.
	FlowEntries  uint64
	FlowCapacity uint32
	// NewPerSec and PktPerSec are its services' new flows and packets per
	// second.
	NewPerSec, PktPerSec float64
}

// timelineRecorder turns the once-a-second polls into Samples.
type timelineRecorder struct {
	lat     *latencies
	prevNew map[string]uint64
	samples []Sample
}

func (r *timelineRecorder) sample(at time.Duration, agg api.Stats, per []distView, ok bool) {
	s := Sample{At: at}
	s.P50, s.P99, s.Requests = r.lat.take()
	if ok {
		cur := map[string]uint64{}
		s.NewFlows = map[string]uint64{}
		for _, t := range agg.TrafficManagers {
			cur[t.ID] = t.NewFlows
			s.NewFlows[t.ID] = t.NewFlows - min(r.prevNew[t.ID], t.NewFlows)
		}
		r.prevNew = cur
	}
	for _, v := range per {
		d := DistSample{Name: v.name, Up: v.up && v.err == nil}
		if d.Up {
			d.FlowEntries, d.FlowCapacity, d.NewPerSec, d.PktPerSec = v.stats.FlowEntries, v.stats.FlowCapacity, v.newPerSec, v.pktPerSec
		}
		s.Dist = append(s.Dist, d)
	}
	r.samples = append(r.samples, s)
}

func (r *timelineRecorder) finish(events []Event, tms, dists []string) Timeline {
	return Timeline{Samples: r.samples, Events: events, TMs: tms, Distributors: dists}
}

// results are the distributors at the end (after the last poll).
func (f *fleet) results() []DistResult {
	live := f.live()
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []DistResult
	for i, h := range f.hosts {
		c := f.cnt[i]
		tot := c.svcTotal()
		r := DistResult{Name: h.Name, NewFlows: tot[0], Packets: tot[1]}
		if _, up := live[i]; up && c.answered {
			r.Up, r.FlowEntries, r.FlowCapacity, r.Peers = true, c.stats.FlowEntries, c.stats.FlowCapacity, c.stats.Peers
		}
		rs = append(rs, r)
	}
	return rs
}

// Check is one PASS/FAIL criterion.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// TMResult are one TM's totals.
type TMResult struct {
	ID       string
	Weight   int
	State    string // at the end, from the distributor
	NewFlows uint64 // distributor: flows it sent to this TM
	Packets  uint64 // distributor
	loadgen.Counts
}

// Phase is a stretch of the run with one set of eligible TMs.
type Phase struct {
	Name     string
	From, To time.Duration // since load start
	Eligible []string
	// Short are the short connections each TM answered in the phase.
	Short map[string]uint64
	Total uint64
	// Expected is each eligible TM's share by weight.
	Expected map[string]float64
}

// Observed is TM id's share of the phase's short connections.
func (p Phase) Observed(id string) float64 {
	if p.Total == 0 {
		return 0
	}
	return float64(p.Short[id]) / float64(p.Total)
}

// minJudged is the number of short connections below which a phase's shares
// are shown but not judged.
const minJudged = 100

// shareOK reports whether an observed share is close enough to the expected
// one for n samples: 3 percentage points plus 4 binomial standard deviations.
func shareOK(obs, exp float64, n uint64) bool {
	sigma := math.Sqrt(exp * (1 - exp) / float64(n))
	return math.Abs(obs-exp) <= 0.03+4*sigma
}

// snapshot is the load generator's and the distributor's counters at a moment.
type snapshot struct {
	at   time.Duration
	load loadgen.Report
	dist map[string]api.TMStats
}

func (s snapshot) short(id string) uint64    { return s.load.PerTM[id].ShortConns }
func (s snapshot) newFlows(id string) uint64 { return s.dist[id].NewFlows }

func tmMap(st api.Stats) map[string]api.TMStats {
	m := map[string]api.TMStats{}
	for _, t := range st.TrafficManagers {
		m[t.ID] = t
	}
	return m
}

// span is a phase as recorded during the run: the step that started it (nil
// for the first phase), the TMs eligible in it, and the snapshots that bound
// it. The last phase's to is the final snapshot.
type span struct {
	step     *step
	name     string
	eligible []string
	from, to snapshot
}

// accounting is what the run recorded, for account.
type accounting struct {
	// spans are the phases in order, each with both bounds.
	spans []span
	// last is the final snapshot.
	last snapshot
	// tms are every TM that took part, in order, and their weights.
	tms     []string
	weights map[string]int
	// drainedConns and drainedReused are the tuple tracker's counts.
	drainedConns, drainedReused uint64
}

// account turns the recorded phases and the final snapshot into a Result's
// counts: per TM totals, per phase shares, and the changes' after-counts.
// It does not judge (see judge).
func account(a accounting) Result {
	var r Result
	r.Load = a.last.load
	r.Errors, r.Moved = a.last.load.Errors, a.last.load.FlowsMoved
	for _, id := range a.tms {
		t := a.last.dist[id]
		r.TMs = append(r.TMs, TMResult{ID: id, Weight: a.weights[id], State: t.State, NewFlows: t.NewFlows, Packets: t.Packets, Counts: a.last.load.PerTM[id]})
	}
	for _, sp := range a.spans {
		ph := Phase{Name: sp.name, From: sp.from.at, To: sp.to.at, Eligible: sp.eligible,
			Short: map[string]uint64{}, Expected: map[string]float64{}}
		sum := 0
		for _, id := range sp.eligible {
			sum += a.weights[id]
		}
		for _, id := range a.tms {
			n := sp.to.short(id) - sp.from.short(id)
			ph.Short[id] = n
			ph.Total += n
			if slices.Contains(sp.eligible, id) && sum > 0 {
				ph.Expected[id] = float64(a.weights[id]) / float64(sum)
			}
		}
		r.Phases = append(r.Phases, ph)
		if sp.step == nil {
			continue
		}
		// The after-counts run from the phase's start to the end of the run,
		// across later phases.
		tm := sp.step.tm
		short, flows := a.last.short(tm)-sp.from.short(tm), a.last.newFlows(tm)-sp.from.newFlows(tm)
		switch sp.step.kind {
		case stepAdd:
			r.AddTookEffect, r.AddedShortAfter, r.AddedNewFlowsAfter = true, short, flows
		case stepDrain:
			r.DrainTookEffect, r.DrainedShortAfter, r.DrainedNewFlowsAfter = true, short, flows
		}
	}
	r.DrainedConnsAfter, r.DrainedReusedAfter = a.drainedConns, a.drainedReused
	return r
}

// judge fills Checks and Pass.
func (r *Result) judge() {
	r.Checks = nil
	add := func(name string, ok bool, detail string) {
		r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: detail})
	}
	var lost uint64
	if r.Failover != nil {
		lost = min(r.Failover.UDPWindowLost, r.Errors)
	}
	if lost > 0 {
		add("no errors", r.Errors-lost == 0, fmt.Sprintf("%d errors, not counting %d UDP requests lost between the kill and the route update", r.Errors-lost, lost))
	} else {
		add("no errors", r.Errors == 0, fmt.Sprintf("%d errors", r.Errors))
	}
	add("no flow changed TM", r.Moved == 0, fmt.Sprintf("%d keep-alive connections or UDP flows moved", r.Moved))
	var idle []string
	for _, t := range r.TMs {
		if t.Requests == 0 {
			idle = append(idle, t.ID)
		}
	}
	if len(r.TMs) == 0 {
		idle = append(idle, "(no TMs)")
	}
	add("every TM answered requests", len(idle) == 0, "without traffic: "+orNone(idle))
	added := r.Added
	if added == "" {
		added = "the added TM"
	}
	if r.AddTookEffect {
		add(added+" got new connections after it was added", r.AddedShortAfter > 0 && r.AddedNewFlowsAfter > 0,
			fmt.Sprintf("%d short connections, %d new flows in the distributor", r.AddedShortAfter, r.AddedNewFlowsAfter))
	} else {
		add(added+" got new connections after it was added", false, "the run ended before it was added")
	}
	if r.DrainTookEffect {
		add(r.Drained+" was chosen for no new flow after the drain", r.DrainedNewFlowsAfter == 0,
			fmt.Sprintf("%d new flows in the distributor's counters", r.DrainedNewFlowsAfter))
		detail := fmt.Sprintf("%d short connections, %d new TCP connections in all", r.DrainedShortAfter, r.DrainedConnsAfter)
		if r.DrainedReusedAfter > 0 {
			detail += fmt.Sprintf("; %d of them reused the client address and port of an earlier, closed connection to %s, "+
				"and the distributor's flow entry for that 5-tuple still sends it there (a SYN on an entry of a closed connection is not re-selected)",
				r.DrainedReusedAfter, r.Drained)
		}
		add(r.Drained+" got no new connections after the drain", r.DrainedShortAfter == 0 && r.DrainedConnsAfter == 0, detail)
	} else {
		add(r.Drained+" got no new connections after the drain", false, "the run ended before the drain")
	}
	for i, ph := range r.Phases {
		name := fmt.Sprintf("phase %d (%s): short connections follow the weights", i+1, ph.Name)
		if ph.Total < minJudged {
			add(name, true, fmt.Sprintf("only %d connections: not judged", ph.Total))
			continue
		}
		var off []string
		for id := range ph.Short {
			if obs, exp := ph.Observed(id), ph.Expected[id]; !shareOK(obs, exp, ph.Total) {
				off = append(off, fmt.Sprintf("%s %.1f%% (expected %.1f%%)", id, 100*obs, 100*exp))
			}
		}
		slices.Sort(off)
		add(name, len(off) == 0, fmt.Sprintf("%d connections; off by more than 3 points + 4σ: %s", ph.Total, orNone(off)))
	}
	if f := r.Failover; f != nil {
		name := "0 connections broken across the kill and the return of " + orDefault(f.Killed, "a distributor")
		switch {
		case !f.KillTookEffect:
			add(name, false, "the run ended before the kill")
		case !f.Back:
			add(name, false, fmt.Sprintf("%s was not back before the run ended; %d errors, %d flows moved since the kill", f.Killed, f.Errors, f.Moved))
		default:
			other := f.Errors - min(f.UDPWindowLost, f.Errors)
			detail := fmt.Sprintf("from the kill at %.1fs to the end: %d keep-alive connections broke (reconnected), %d keep-alive connections or UDP flows moved, "+
				"%d other errors, %d UDP requests lost in the %.0f ms before the route update "+
				"(back in the route at %.1fs, %.2fs after its restart)",
				f.KilledAt.Seconds(), f.KeepAliveReconnects, f.Moved, other, f.UDPWindowLost, float64(f.Rerouted)/float64(time.Millisecond), f.BackAt.Seconds(), f.Resync.Seconds())
			if f.Errors > 0 && len(f.ErrorSamples) > 0 {
				detail += "; e.g. " + f.ErrorSamples[0]
			}
			if f.Moved > 0 && len(f.MoveSamples) > 0 {
				detail += "; e.g. " + f.MoveSamples[0]
			}
			add(name, f.KeepAliveReconnects == 0 && f.Moved == 0 && other == 0, detail)
		}
	}
	r.Pass = true
	for _, c := range r.Checks {
		r.Pass = r.Pass && c.OK
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func (r *Result) print(w io.Writer, o LabOptions) {
	fmt.Fprintf(w, "\n=== report: %.1fs of load over IPv%s ===\n", r.Load.Elapsed.Seconds(), map[bool]string{false: "4", true: "6"}[o.IPv6])
	fmt.Fprint(w, r.Load.String())
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TM\tWEIGHT\tSTATE\tNEW FLOWS\tPACKETS\tREQUESTS\tKEEP-ALIVE\tSHORT\tUDP FLOWS\t")
	for _, t := range r.TMs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", t.ID, t.Weight, t.State, t.NewFlows, t.Packets, t.Requests, t.KeepAliveConns, t.ShortConns, t.UDPFlows)
	}
	tw.Flush()

	if len(r.Distributors) > 0 {
		fmt.Fprintln(w)
		if r.Router != nil {
			fmt.Fprintf(w, "Router: %s; in the route at the end: %s\n", r.Router.Kind, orNone(r.Router.Via))
		}
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DISTRIBUTOR\tAT THE END\tNEW FLOWS\tPACKETS\tFLOWS\tFILL\tPEERS (state, lag)\t")
		for _, d := range r.Distributors {
			state, flows, fl, peers := "down", "-", "-", "-"
			if d.Up {
				state, flows, fl, peers = "up", fmt.Sprint(d.FlowEntries), fill(d.FlowEntries, d.FlowCapacity), peerSummary(d.Peers)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", d.Name, state, d.NewFlows, d.Packets, flows, fl, peers)
		}
		tw.Flush()
		fmt.Fprintln(w, "Servers: none (the reference TMs answer the requests themselves).")
	}
	if len(r.Timeline.Events) > 0 {
		fmt.Fprintln(w, "\nEvents:")
		for _, e := range r.Timeline.Events {
			fmt.Fprintf(w, "  %6.1fs  %s\n", e.At.Seconds(), e.Label)
		}
	}

	fmt.Fprintln(w, "\nShort connections opened in each phase, share per TM: observed (expected by the weights of the TMs")
	fmt.Fprintln(w, "eligible in that phase). Phases start once the distributor reports the new eligible set; connections")
	fmt.Fprintln(w, "opened while a change was being applied are in no phase.")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "PHASE\tTIME\tELIGIBLE\tCONNS\t")
	for _, t := range r.TMs {
		fmt.Fprintf(tw, "%s\t", t.ID)
	}
	fmt.Fprintln(tw)
	for i, ph := range r.Phases {
		fmt.Fprintf(tw, "%d %s\t%.1f–%.1fs\t%s\t%d\t", i+1, ph.Name, ph.From.Seconds(), ph.To.Seconds(), strings.Join(ph.Eligible, ","), ph.Total)
		for _, t := range r.TMs {
			exp, eligible := ph.Expected[t.ID]
			switch {
			case eligible:
				fmt.Fprintf(tw, "%.1f%% (%.1f%%)\t", 100*ph.Observed(t.ID), 100*exp)
			case ph.Short[t.ID] > 0:
				fmt.Fprintf(tw, "%d conns! (0%%)\t", ph.Short[t.ID])
			default:
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nChecks:")
	for _, c := range r.Checks {
		v := "PASS"
		if !c.OK {
			v = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", v, c.Name, c.Detail)
	}
	if r.Pass {
		fmt.Fprintln(w, "\nPASS")
	} else {
		fmt.Fprintln(w, "\nFAIL")
	}
}
