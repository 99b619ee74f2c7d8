package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// LabOptions configure RunLab (`switchyard lab`).
type LabOptions struct {
	// Bin is the switchyard binary that runs the distributor.
	Bin string
	// Dir holds configs and the admin socket; "" means a new temporary
	// directory, removed at the end.
	Dir string
	// Duration of the load; 0 means 30s. A TM is added at 1/3 of it and tm1
	// drained at 2/3.
	Duration time.Duration
	// TMs is the initial number of TMs; 0 means 3.
	TMs int
	// IPv6 sends the load to the IPv6 VIP instead of the IPv4 one.
	IPv6 bool
	// KeepAlive, Short and UDP size the load (see loadgen.Options).
	KeepAlive, Short, UDP int
	// Interval is the pause between requests in each worker; 0 means 20ms.
	Interval time.Duration
	// Weights of tm1, tm2, …; TMs without one (including the added one when
	// the list is short) get weight 1. At most TMs+1 entries.
	Weights []int
	// Live redraws the progress block in place with ANSI escapes; otherwise
	// a block is printed every second.
	Live bool
	// Keep leaves the topology and distributor up after the report until
	// ctx is done.
	Keep bool
	// Settle is how long to wait after a config change took effect before a
	// phase starts counting short connections (so that connections opened
	// before the change are not counted in the new phase); 0 means 500ms.
	Settle time.Duration
}

// Result is the outcome of RunLab.
type Result struct {
	// Pass is true when every check passed.
	Pass   bool
	Checks []Check
	// Errors and Moved are the load generator's totals (both must be 0).
	Errors, Moved uint64
	TMs           []TMResult
	Phases        []Phase
	// Added is the TM added at 1/3; AddedShortAfter and AddedNewFlowsAfter
	// count its short connections (load generator) and new flows
	// (distributor) after the change took effect.
	Added                                   string
	AddedShortAfter, AddedNewFlowsAfter     uint64
	Drained                                 string
	DrainedShortAfter, DrainedNewFlowsAfter uint64
	// DrainedConnsAfter counts TCP connections opened after the drain took
	// effect that the drained TM answered; DrainedReusedAfter those of them
	// whose client address and port had last been used by a connection to
	// the drained TM (same 5-tuple as an earlier, closed connection).
	DrainedConnsAfter, DrainedReusedAfter uint64
	// APIPath is the distributor's admin socket.
	APIPath string
	// Load is the load generator's final report.
	Load loadgen.Report
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

func (s snapshot) short(id string) uint64 { return s.load.PerTM[id].ShortConns }
func (s snapshot) newFlows(id string) uint64 {
	return s.dist[id].NewFlows
}

func tmMap(st api.Stats) map[string]api.TMStats {
	m := map[string]api.TMStats{}
	for _, t := range st.TrafficManagers {
		m[t.ID] = t
	}
	return m
}

// RunLab builds the default topology, runs a distributor and load against it,
// adds a TM at 1/3 of the duration and drains tm1 at 2/3, shows progress on
// out and ends with a report. It removes everything it made before it
// returns. An error means the lab could not run (or was interrupted); a run
// whose checks fail returns a Result with Pass false and no error.
func RunLab(ctx context.Context, o LabOptions, out io.Writer) (res Result, err error) {
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.TMs <= 0 {
		o.TMs = 3
	}
	if o.Interval <= 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Settle <= 0 {
		o.Settle = 500 * time.Millisecond
	}
	if len(o.Weights) > o.TMs+1 {
		return res, fmt.Errorf("%d weights for %d TMs (%d with the added one)", len(o.Weights), o.TMs, o.TMs+1)
	}
	for _, w := range o.Weights {
		if w < 1 {
			return res, fmt.Errorf("weights must be at least 1: %v", o.Weights)
		}
	}
	if o.Bin == "" {
		return res, errors.New("no switchyard binary to run the distributor with")
	}
	weight := func(id string) int {
		var i int
		if _, err := fmt.Sscanf(id, "tm%d", &i); err == nil && i >= 1 && i <= len(o.Weights) {
			return o.Weights[i-1]
		}
		return 1
	}
	p := &printer{w: out, live: o.Live}

	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "switchyard-lab-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}

	fmt.Fprintf(out, "building topology: 1 client, 1 distributor, %d TMs …\n", o.TMs)
	env, err := NewEnv(ctx, netlab.Spec{Clients: 1, Distributors: 1, TMs: o.TMs}, dir, o.Bin)
	if err != nil {
		return res, fmt.Errorf("build topology: %w", err)
	}
	defer func() {
		p.finish()
		fmt.Fprintf(out, "removing namespaces %s-* …\n", env.Topo.Prefix)
		if cerr := env.Close(); cerr != nil && err == nil && ctx.Err() == nil {
			err = fmt.Errorf("cleanup: %w", cerr)
		}
	}()

	weights := map[string]int{}
	var initial []string
	for _, h := range env.Topo.TMs {
		weights[h.Name] = weight(h.Name)
		initial = append(initial, h.Name)
	}
	states := map[string]string{}
	cfgOpts := func() ConfigOptions {
		return ConfigOptions{Weights: weights, States: states, IPv6: true}
	}
	res.APIPath = APIPath(dir, env.Topo.Distributors[0])
	fmt.Fprintf(out, "starting distributor (namespace %s, admin API unix:%s) …\n", env.Topo.Distributors[0].NS.Name, res.APIPath)
	d, err := env.StartDistributor(ctx, env.Config(cfgOpts()))
	if err != nil {
		return res, err
	}
	distErr := func(err error) error {
		if d.Exited() {
			return fmt.Errorf("%w; distributor exited:\n%s", err, d.Output())
		}
		return err
	}
	if _, err := waitEligible(ctx, d.API, initial); err != nil {
		return res, distErr(err)
	}

	target := env.Target(o.IPv6)
	lo := loadgen.Options{KeepAlive: o.KeepAlive, Short: o.Short, UDPFlows: o.UDP, Interval: o.Interval}
	env.ClientDialer(0, &lo)
	tracker := &tupleTracker{drained: "tm1", last: map[string]string{}}
	lo.Dial = tracker.wrap(lo.Dial)
	fmt.Fprintf(out, "load for %v: %d keep-alive connections, %d short-connection workers, %d UDP flows to %s and %s, every %v\n",
		o.Duration, o.KeepAlive, o.Short, o.UDP, target.HTTP, target.UDP, o.Interval)
	loadCtx, stopLoad := context.WithTimeout(ctx, o.Duration)
	defer stopLoad()
	start := time.Now()
	run := loadgen.Start(loadCtx, target, lo)
	defer func() {
		stopLoad()
		run.Wait()
	}()
	since := func() time.Duration { return time.Since(start) }

	// Events: add a TM at 1/3, drain tm1 at 2/3. Each change ends a phase
	// (snapshot before the reload) and starts the next one (snapshot once
	// the distributor reports the new eligible set, plus Settle).
	added := fmt.Sprintf("tm%d", o.TMs+1)
	drained := "tm1"
	res.Added, res.Drained = added, drained
	phases := []Phase{{Name: fmt.Sprintf("%d TMs active", o.TMs), Eligible: initial}}
	bounds := []snapshot{{}} // from of each phase
	var ends []snapshot      // to of each phase but the last
	var evMu sync.Mutex
	evErr := make(chan error, 1)
	go func() {
		evErr <- func() error {
			change := func(at time.Duration, name, what string, apply func() error, want []string) (err error) {
				defer func() {
					if loadCtx.Err() != nil {
						err = nil // the run ended during the change: not a failure of the lab
					}
				}()
				if !sleepUntil(loadCtx, start.Add(at)) {
					return nil
				}
				p.event(fmt.Sprintf("[%5.1fs] %s", since().Seconds(), what))
				if err := apply(); err != nil {
					return err
				}
				end, err := takeSnapshot(loadCtx, run, d.API, since())
				if err != nil {
					return err
				}
				if err := d.Reload(env.Config(cfgOpts())); err != nil {
					return err
				}
				st, err := waitEligible(loadCtx, d.API, want)
				if err != nil {
					return err
				}
				took := since() - end.at
				if !sleepUntil(loadCtx, time.Now().Add(o.Settle)) {
					return nil
				}
				if name == drained+" draining" {
					tracker.after.Store(time.Now().UnixNano())
				}
				from := snapshot{at: since(), load: run.Snapshot(), dist: tmMap(st)}
				evMu.Lock()
				ends = append(ends, end)
				bounds = append(bounds, from)
				phases = append(phases, Phase{Name: name, Eligible: want})
				evMu.Unlock()
				p.event(fmt.Sprintf("[%5.1fs] config reloaded; eligible TMs now %s (took effect after %.2fs)", since().Seconds(), strings.Join(want, ","), took.Seconds()))
				return nil
			}
			withAdded := append(slices.Clone(initial), added)
			err := change(o.Duration/3, added+" added", fmt.Sprintf("adding %s (weight %d): new namespace, reference TM, config reload", added, weight(added)), func() error {
				h, err := env.AddTM(loadCtx)
				if err != nil {
					return fmt.Errorf("add TM: %w", err)
				}
				weights[h.Name] = weight(h.Name)
				return nil
			}, withAdded)
			if err != nil || loadCtx.Err() != nil {
				return err
			}
			afterDrain := slices.DeleteFunc(slices.Clone(withAdded), func(id string) bool { return id == drained })
			return change(2*o.Duration/3, drained+" draining", fmt.Sprintf("draining %s: state draining in the config, reload (its established flows stay)", drained), func() error {
				states[drained] = "draining"
				return nil
			}, afterDrain)
		}()
	}()

	// Progress, once a second, until the load ends.
	prog := &progress{o: o, weight: weight}
	tick := time.NewTicker(time.Second)
	var eventErr error
	eventsDone := false
loop:
	for {
		select {
		case <-loadCtx.Done():
			break loop
		case eventErr = <-evErr:
			eventsDone = true
			if eventErr != nil {
				stopLoad()
				break loop
			}
		case <-tick.C:
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, serr := d.API.Stats(sctx)
			cancel()
			p.block(prog.render(since(), run.Snapshot(), st, serr))
			if d.Exited() {
				stopLoad()
				eventErr = errors.New("distributor exited during the run")
				break loop
			}
		}
	}
	tick.Stop()
	final := run.Wait()
	if !eventsDone {
		eventErr = errors.Join(eventErr, <-evErr)
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if eventErr != nil {
		return res, distErr(eventErr)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := d.API.Stats(sctx)
	cancel()
	if err != nil {
		return res, distErr(fmt.Errorf("final stats: %w", err))
	}
	p.finish()
	last := snapshot{at: final.Elapsed, load: final, dist: tmMap(st)}
	ends = append(ends, last)

	res.Load = final
	res.Errors, res.Moved = final.Errors, final.FlowsMoved
	ids := slices.Clone(initial)
	if _, ok := last.dist[added]; ok {
		ids = append(ids, added)
	}
	for _, id := range ids {
		t := last.dist[id]
		res.TMs = append(res.TMs, TMResult{ID: id, Weight: weight(id), State: t.State, NewFlows: t.NewFlows, Packets: t.Packets, Counts: final.PerTM[id]})
	}
	for i := range phases {
		ph := &phases[i]
		from, to := bounds[i], ends[i]
		ph.From, ph.To = from.at, to.at
		ph.Short, ph.Expected = map[string]uint64{}, map[string]float64{}
		sum := 0
		for _, id := range ph.Eligible {
			sum += weight(id)
		}
		for _, id := range ids {
			n := to.short(id) - from.short(id)
			ph.Short[id] = n
			ph.Total += n
			if slices.Contains(ph.Eligible, id) {
				ph.Expected[id] = float64(weight(id)) / float64(sum)
			}
		}
	}
	res.Phases = phases
	if len(bounds) > 1 {
		res.AddedShortAfter = last.short(added) - bounds[1].short(added)
		res.AddedNewFlowsAfter = last.newFlows(added) - bounds[1].newFlows(added)
	}
	if len(bounds) > 2 {
		res.DrainedShortAfter = last.short(drained) - bounds[2].short(drained)
		res.DrainedNewFlowsAfter = last.newFlows(drained) - bounds[2].newFlows(drained)
	}
	res.DrainedConnsAfter, res.DrainedReusedAfter = tracker.hits.Load(), tracker.reused.Load()
	res.judge(len(bounds))
	res.print(out, o)

	if o.Keep {
		fmt.Fprintf(out, "\n--keep: the topology stays up (load stopped) until Ctrl-C.\n")
		fmt.Fprintf(out, "  switchyard stats --api unix:%s\n", res.APIPath)
		fmt.Fprintf(out, "  switchyard flows --api unix:%s --limit 20\n", res.APIPath)
		fmt.Fprintf(out, "  ip netns exec %s curl -s http://%s/\n", env.Topo.Clients[0].NS.Name, target.HTTP)
		fmt.Fprintf(out, "  namespaces: ")
		for i, h := range env.Topo.Hosts() {
			if i > 0 {
				fmt.Fprint(out, " ")
			}
			fmt.Fprint(out, h.NS.Name)
		}
		fmt.Fprintln(out)
		<-ctx.Done()
	}
	return res, nil
}

// judge fills Checks and Pass; phases is the number of phases that started.
func (r *Result) judge(phases int) {
	add := func(name string, ok bool, detail string) {
		r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: detail})
	}
	add("no errors", r.Errors == 0, fmt.Sprintf("%d errors", r.Errors))
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
	if phases > 1 {
		add(r.Added+" got new connections after it was added", r.AddedShortAfter > 0 && r.AddedNewFlowsAfter > 0,
			fmt.Sprintf("%d short connections, %d new flows in the distributor", r.AddedShortAfter, r.AddedNewFlowsAfter))
	} else {
		add(r.Added+" got new connections after it was added", false, "the run ended before it was added")
	}
	if phases > 2 {
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
	r.Pass = true
	for _, c := range r.Checks {
		r.Pass = r.Pass && c.OK
	}
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

// waitEligible polls the distributor until every service's eligible TMs are
// want (in order), for up to 15s, and returns the stats that showed it.
func waitEligible(ctx context.Context, c *api.Client, want []string) (api.Stats, error) {
	deadline := time.Now().Add(15 * time.Second)
	var last api.Stats
	var lastErr error
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Stats(sctx)
		cancel()
		if err == nil {
			last, lastErr = st, nil
			ok := len(st.Services) > 0
			for _, s := range st.Services {
				ok = ok && slices.Equal(s.Eligible, want)
			}
			if ok {
				return st, nil
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return last, fmt.Errorf("distributor: eligible TMs are not %v after 15s: %w", want, lastErr)
			}
			msg := fmt.Sprintf("distributor: eligible TMs are not %v after 15s:", want)
			for _, s := range last.Services {
				msg += fmt.Sprintf(" %s %v;", s.Name, s.Eligible)
			}
			for _, t := range last.TrafficManagers {
				if !t.Ready {
					msg += fmt.Sprintf(" %s not ready (%s);", t.ID, t.Reason)
				}
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			if s, err := c.Status(sctx); err == nil && s.LastReloadError != "" {
				msg += " last reload error: " + s.LastReloadError
			}
			cancel()
			return last, errors.New(msg)
		}
		if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			return last, ctx.Err()
		}
	}
}

func takeSnapshot(ctx context.Context, run *loadgen.Run, c *api.Client, at time.Duration) (snapshot, error) {
	s := snapshot{at: at, load: run.Snapshot()}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.Stats(sctx)
	if err != nil {
		return s, fmt.Errorf("distributor stats: %w", err)
	}
	s.dist = tmMap(st)
	return s, nil
}

// sleepUntil waits until t or ctx is done and reports whether ctx goes on.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// progress renders the once-a-second block.
type progress struct {
	o        LabOptions
	weight   func(string) int
	prevAt   time.Duration
	prevPkts map[string]uint64
	prevReqs uint64
}

func (g *progress) render(at time.Duration, rep loadgen.Report, st api.Stats, stErr error) []string {
	dt := (at - g.prevAt).Seconds()
	reqRate := 0.0
	if dt > 0 {
		reqRate = float64(rep.Requests-g.prevReqs) / dt
	}
	head := fmt.Sprintf("[%5.1fs/%v] %d requests (%.0f/s), %d tcp connections, errors %d, flows moved %d",
		at.Seconds(), g.o.Duration, rep.Requests, reqRate, rep.Connections, rep.Errors, rep.FlowsMoved)
	if stErr != nil {
		head += fmt.Sprintf("  (stats: %v)", stErr)
	} else {
		head += fmt.Sprintf(", %d flow entries", st.FlowEntries)
	}
	lines := []string{head}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  TM\tSTATE\tWEIGHT\tKEEP-ALIVE\tSHORT\tREQUESTS\tPACKETS\tPKT/S\tNEW FLOWS\t")
	seen := map[string]bool{}
	pkts := map[string]uint64{}
	row := func(id, state string, t api.TMStats) {
		c := rep.PerTM[id]
		rate := "-"
		if prev, ok := g.prevPkts[id]; ok && dt > 0 && g.prevAt > 0 {
			rate = fmt.Sprintf("%.0f", float64(t.Packets-prev)/dt)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t\n", id, state, g.weight(id), c.KeepAliveConns, c.ShortConns, c.Requests, t.Packets, rate, t.NewFlows)
	}
	for _, t := range st.TrafficManagers {
		seen[t.ID] = true
		pkts[t.ID] = t.Packets
		state := t.State
		if !t.Ready {
			state += " (not ready)"
		}
		row(t.ID, state, t)
	}
	var extra []string
	for id := range rep.PerTM {
		if !seen[id] {
			extra = append(extra, id)
		}
	}
	slices.Sort(extra)
	for _, id := range extra {
		row(id, "?", api.TMStats{})
	}
	tw.Flush()
	lines = append(lines, strings.Split(strings.TrimRight(b.String(), "\n"), "\n")...)
	if stErr == nil {
		g.prevPkts = pkts
	}
	g.prevAt, g.prevReqs = at, rep.Requests
	return lines
}

// printer writes events and progress blocks; in live mode the block is
// redrawn in place and events scroll above it.
type printer struct {
	mu    sync.Mutex
	w     io.Writer
	live  bool
	last  []string
	shown int // lines of the block on screen (live mode)
}

func (p *printer) clear() {
	if p.shown > 0 {
		fmt.Fprintf(p.w, "\x1b[%dF\x1b[J", p.shown)
		p.shown = 0
	}
}

func (p *printer) draw() {
	for _, l := range p.last {
		fmt.Fprintln(p.w, l)
	}
	p.shown = len(p.last)
}

func (p *printer) event(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.live {
		fmt.Fprintln(p.w, s)
		return
	}
	p.clear()
	fmt.Fprintln(p.w, s)
	p.draw()
}

func (p *printer) block(lines []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = lines
	if !p.live {
		p.draw()
		return
	}
	p.clear()
	p.draw()
}

// finish leaves the last block on screen; later output goes below it.
func (p *printer) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shown = 0
	p.last = nil
}

// tupleTracker wraps the load generator's dialer to learn which TM answered
// each TCP connection (from the response header) and whether a connection
// reused the client address and port of an earlier one: such a connection has
// the same 5-tuple, so a flow entry left by the earlier one decides its TM.
type tupleTracker struct {
	drained string
	after   atomic.Int64 // unix ns when the drain took effect; 0 before

	mu   sync.Mutex
	last map[string]string // client addr:port → TM of its last connection

	hits, reused atomic.Uint64
}

func (k *tupleTracker) wrap(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return c, err
		}
		at := k.after.Load()
		local := c.LocalAddr().String()
		k.mu.Lock()
		prev := k.last[local]
		k.mu.Unlock()
		return &trackedConn{Conn: c, k: k, local: local, prev: prev, afterDrain: at != 0}, nil
	}
}

// trackedConn notes the TM id in the first response read from it.
type trackedConn struct {
	net.Conn
	k          *tupleTracker
	local      string
	prev       string
	afterDrain bool
	seen       bool
	buf        []byte
}

var tmHeader = []byte("\nx-switchyard-tm:")

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.seen && n > 0 && len(c.buf) < 4096 {
		c.buf = append(c.buf, p[:n]...)
		low := bytes.ToLower(c.buf)
		if i := bytes.Index(low, tmHeader); i >= 0 {
			rest := c.buf[i+len(tmHeader):]
			if j := bytes.IndexByte(rest, '\n'); j >= 0 {
				c.seen = true
				c.observe(string(bytes.TrimSpace(rest[:j])))
				c.buf = nil
			}
		}
	}
	return n, err
}

func (c *trackedConn) observe(tm string) {
	k := c.k
	k.mu.Lock()
	k.last[c.local] = tm
	k.mu.Unlock()
	if c.afterDrain && tm == k.drained {
		k.hits.Add(1)
		if c.prev == k.drained {
			k.reused.Add(1)
		}
	}
}
