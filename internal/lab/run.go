package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
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
	// Duration of the load; 0 means 30s. The scenario's steps happen at
	// fractions of it (see RunLab).
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
	// Distributors is the number of distributors; 0 means 2. With one, the
	// client sends straight to d1 and nothing is killed; with more, a
	// router spreads the client's flows over them, they mirror each other,
	// and d1 is killed and brought back.
	Distributors int
	// HTML, if set, is where the report is also written as an HTML page.
	HTML string
	// Settle is how long to wait after a config change took effect before a
	// phase starts counting short connections (so that connections opened
	// before the change are not counted in the new phase); 0 means 500ms.
	Settle time.Duration
}

// defaults fills o's zero fields and checks the rest.
func (o *LabOptions) defaults() error {
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.TMs <= 0 {
		o.TMs = 3
	}
	if o.Distributors <= 0 {
		o.Distributors = 2
	}
	if o.Distributors > 9 {
		return fmt.Errorf("%d distributors: at most 9", o.Distributors)
	}
	if o.Interval <= 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Settle <= 0 {
		o.Settle = 500 * time.Millisecond
	}
	if len(o.Weights) > o.TMs+1 {
		return fmt.Errorf("%d weights for %d TMs (%d with the added one)", len(o.Weights), o.TMs, o.TMs+1)
	}
	for _, w := range o.Weights {
		if w < 1 {
			return fmt.Errorf("weights must be at least 1: %v", o.Weights)
		}
	}
	if o.Bin == "" {
		return errors.New("no switchyard binary to run the distributor with")
	}
	return nil
}

// RunLab builds the lab's topology, runs the distributors and load against
// them, plays the scenario, shows progress on out and ends with a report
// (and the HTML page, with o.HTML). With one distributor: the client
// straight on d1, a TM added at 1/3 of the duration, tm1 drained at 2/3
// (defaultSteps). With more: a router between the client and the
// distributors, which mirror each other; a TM added at 1/5, tm1 drained at
// 2/5, d1 killed at 3/5 and brought back at 4/5 (systemSteps). It removes
// everything it made before it returns. An error means the lab could not
// run (or was interrupted); a run whose checks fail returns a Result with
// Pass false and no error.
func RunLab(ctx context.Context, o LabOptions, out io.Writer) (res Result, err error) {
	if err := o.defaults(); err != nil {
		return res, err
	}
	p := &printer{w: out, live: o.Live}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "switchyard-lab-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}

	multi := o.Distributors > 1
	if multi {
		fmt.Fprintf(out, "building topology: 1 client, a router, %d distributors, %d TMs …\n", o.Distributors, o.TMs)
	} else {
		fmt.Fprintf(out, "building topology: 1 client, 1 distributor, %d TMs …\n", o.TMs)
	}
	env, err := NewEnv(ctx, netlab.Spec{Clients: 1, Distributors: o.Distributors, TMs: o.TMs}, dir, o.Bin)
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

	state := newLabState(env, o.Weights, o.IPv6)
	f := newFleet(env, state)
	var rt router
	client := env.Topo.Clients[0]
	if multi {
		nr, err := env.Topo.AddEdgeRouter(ctx, 1)
		if err != nil {
			return res, fmt.Errorf("build router: %w", err)
		}
		if rt, err = newStaticRouter(nr, env.Topo.VIP4, env.Topo.VIP6); err != nil {
			return res, err
		}
		state.router = nr
		client = nr.Clients[0]
		f.router = rt
	}
	// All at once: each holds its start gate until it has synced with its
	// peers (docs/mirror.md), so they must come up together.
	for _, h := range f.hosts {
		fmt.Fprintf(out, "starting distributor %s (namespace %s, admin API unix:%s) …\n", h.Name, h.NS.Name, APIPath(dir, h))
	}
	if err := f.startAll(ctx); err != nil {
		return res, err
	}
	if err := f.waitEligible(ctx, state.eligible()); err != nil {
		return res, f.explain(err)
	}
	if multi {
		if err := f.waitSynced(ctx); err != nil {
			return res, f.explain(err)
		}
		for _, h := range f.hosts {
			if err := rt.join(ctx, h); err != nil {
				return res, err
			}
		}
		fmt.Fprintf(out, "router %s: %s over %s (peers synced)\n", rt.host().NS.Name, rt.kind(), strings.Join(rt.via(), ", "))
	}

	drained := state.tms[0]
	tracker := &tupleTracker{drained: drained, last: map[string]string{}, lat: newLatencies()}
	target := env.Target(o.IPv6)
	lo := loadgen.Options{KeepAlive: o.KeepAlive, Short: o.Short, UDPFlows: o.UDP, Interval: o.Interval}
	lo.Dial, lo.ListenPacket = loadgen.NSDialer(client.NS.Do)
	lo.Dial, lo.ListenPacket = tracker.wrap(lo.Dial), tracker.wrapPacket(lo.ListenPacket)
	fmt.Fprintf(out, "load for %v from %s: %d keep-alive connections, %d short-connection workers, %d UDP flows to %s and %s, every %v\n",
		o.Duration, client.Name, o.KeepAlive, o.Short, o.UDP, target.HTTP, target.UDP, o.Interval)
	loadCtx, stopLoad := context.WithTimeout(ctx, o.Duration)
	defer stopLoad()
	tracker.loadDone = func() bool { return loadCtx.Err() != nil }
	run := loadgen.Start(loadCtx, target, lo)
	defer func() {
		stopLoad()
		run.Wait()
	}()
	sc := &scenario{state: state, f: f, tracker: tracker, run: run, start: time.Now(), duration: o.Duration, settle: o.Settle, p: p,
		spans: []span{{name: fmt.Sprintf("%d TMs active", len(state.tms)), eligible: state.eligible()}}}
	steps := defaultSteps(drained, tracker)
	if multi {
		steps = systemSteps(drained, tracker, f, 0)
	}
	evErr := make(chan error, 1)
	go func() { evErr <- sc.play(loadCtx, steps) }()

	tl := &timelineRecorder{lat: tracker.lat}
	final, err := watch(ctx, loadCtx, stopLoad, sc, evErr, o.Duration, tl)
	if err != nil {
		return res, f.explain(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	agg, _, err := f.poll(sctx)
	cancel()
	if err != nil {
		return res, f.explain(fmt.Errorf("final stats: %w", err))
	}
	p.finish()

	last := snapshot{at: final.Elapsed, load: final, dist: tmMap(agg)}
	var tms []string
	for _, id := range state.tms {
		if _, ok := last.dist[id]; ok {
			tms = append(tms, id)
		}
	}
	res = account(accounting{spans: sc.finish(last), last: last, tms: tms, weights: state.weight,
		drainedConns: tracker.hits.Load(), drainedReused: tracker.reused.Load()})
	res.APIPath, res.Drained = APIPath(dir, f.hosts[0]), drained
	if len(state.tms) > o.TMs {
		res.Added = state.tms[o.TMs]
	}
	res.Timeline = tl.finish(sc.eventList(), state.tms, f.names())
	res.Distributors = f.results()
	if multi {
		res.Router = &RouterResult{Kind: rt.kind(), Via: rt.via()}
		res.Failover = sc.failover(final)
	}
	res.judge()
	res.print(out, o)
	if o.HTML != "" {
		if err := res.WriteHTMLFile(o.HTML, o); err != nil {
			return res, err
		}
		fmt.Fprintf(out, "\nHTML report: %s\n", o.HTML)
	}
	if o.Keep {
		keep(ctx, out, env, f, client, target)
	}
	return res, nil
}

// watch shows progress once a second until the load ends or the scenario
// fails, records the timeline, and returns the load's final report. Its
// error is the scenario's, a distributor's unexpected exit, or ctx's.
func watch(ctx, loadCtx context.Context, stopLoad func(), sc *scenario, evErr <-chan error, duration time.Duration, tl *timelineRecorder) (loadgen.Report, error) {
	prog := &progress{duration: duration}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
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
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			agg, per, serr := sc.f.poll(sctx)
			cancel()
			at, rep := sc.since(), sc.run.Snapshot()
			tl.sample(at, agg, per, serr == nil)
			sc.p.block(prog.render(at, rep, agg, serr, sc.f.tierLines(per)))
			if name := sc.f.crashed(); name != "" {
				stopLoad()
				eventErr = fmt.Errorf("distributor %s exited during the run", name)
				break loop
			}
		}
	}
	final := sc.run.Wait()
	if !eventsDone {
		eventErr = errors.Join(eventErr, <-evErr)
	}
	if ctx.Err() != nil {
		return final, ctx.Err()
	}
	return final, eventErr
}

// keep prints how to poke at the topology and waits for ctx (--keep).
func keep(ctx context.Context, out io.Writer, env *Env, f *fleet, client *netlab.Host, target loadgen.Target) {
	fmt.Fprintf(out, "\n--keep: the topology stays up (load stopped) until Ctrl-C.\n")
	var apis []string
	for _, h := range f.hosts {
		apis = append(apis, "--api unix:"+APIPath(env.Dir, h))
	}
	fmt.Fprintf(out, "  switchyard top %s\n", strings.Join(apis, " "))
	fmt.Fprintf(out, "  switchyard stats --api unix:%s\n", APIPath(env.Dir, f.hosts[0]))
	fmt.Fprintf(out, "  switchyard flows --api unix:%s --limit 20\n", APIPath(env.Dir, f.hosts[0]))
	fmt.Fprintf(out, "  ip netns exec %s curl -s http://%s/\n", client.NS.Name, target.HTTP)
	fmt.Fprintf(out, "  namespaces: %s-*\n", env.Topo.Prefix)
	<-ctx.Done()
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

func takeSnapshot(ctx context.Context, run *loadgen.Run, f *fleet, at time.Duration) (snapshot, error) {
	s := snapshot{at: at, load: run.Snapshot()}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	agg, _, err := f.poll(sctx)
	if err != nil {
		return s, fmt.Errorf("distributor stats: %w", err)
	}
	s.dist = tmMap(agg)
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

// fleet is the lab's distributors: their hosts, their processes (nil while
// one is down) and their counters, summed across restarts.
type fleet struct {
	env    *Env
	state  *labState
	hosts  []*netlab.Host
	router router // nil with one distributor

	mu    sync.Mutex
	procs []*Distributor
	down  []bool // killed on purpose
	cnt   []*distCounters
}

// distCounters keep one distributor's counters monotonic across restarts
// (a fresh data path starts from 0: what it counted before is kept in
// base) and its rates between polls.
type distCounters struct {
	base, last       map[string]api.TMStats
	svcBase, svcLast map[string][2]uint64 // by service: new flows, packets
	stats            api.Stats            // the last answer
	answered         bool
	prevAt           time.Time
	prevSvc          [2]uint64  // svcTotal at prevAt
	rates            [2]float64 // new flows/s, packets/s
}

func newDistCounters() *distCounters {
	return &distCounters{base: map[string]api.TMStats{}, last: map[string]api.TMStats{},
		svcBase: map[string][2]uint64{}, svcLast: map[string][2]uint64{}}
}

// svcTotal is the services' new flows and packets, across restarts.
func (c *distCounters) svcTotal() [2]uint64 {
	var t [2]uint64
	for _, m := range []map[string][2]uint64{c.svcBase, c.svcLast} {
		for _, v := range m {
			t[0] += v[0]
			t[1] += v[1]
		}
	}
	return t
}

func newFleet(env *Env, state *labState) *fleet {
	f := &fleet{env: env, state: state, hosts: env.Topo.Distributors}
	f.procs = make([]*Distributor, len(f.hosts))
	f.down = make([]bool, len(f.hosts))
	for range f.hosts {
		f.cnt = append(f.cnt, newDistCounters())
	}
	return f
}

func (f *fleet) names() []string {
	var n []string
	for _, h := range f.hosts {
		n = append(n, h.Name)
	}
	return n
}

// live returns the running distributors by index.
func (f *fleet) live() map[int]*Distributor {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[int]*Distributor{}
	for i, d := range f.procs {
		if d != nil && !f.down[i] {
			m[i] = d
		}
	}
	return m
}

// start runs distributor i with the state's config.
func (f *fleet) start(ctx context.Context, i int) error {
	d, err := f.env.StartDistributorOn(ctx, f.hosts[i], f.state.config(i))
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.procs[i], f.down[i] = d, false
	f.mu.Unlock()
	return nil
}

// startAll starts every distributor concurrently.
func (f *fleet) startAll(ctx context.Context) error {
	errs := make([]error, len(f.hosts))
	var wg sync.WaitGroup
	for i := range f.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.start(ctx, i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// reload rewrites every running distributor's config and signals it.
func (f *fleet) reload() error {
	for i, d := range f.live() {
		if err := d.Reload(f.state.config(i)); err != nil {
			return fmt.Errorf("reload %s: %w", f.hosts[i].Name, err)
		}
	}
	return nil
}

// waitEligible waits until every running distributor reports want.
func (f *fleet) waitEligible(ctx context.Context, want []string) error {
	for i, d := range f.live() {
		if _, err := waitEligible(ctx, d.API, want); err != nil {
			return fmt.Errorf("%s: %w", f.hosts[i].Name, err)
		}
	}
	return nil
}

// waitSynced waits until every running distributor reports all its peers
// synced, for up to 30s.
func (f *fleet) waitSynced(ctx context.Context) error {
	for i, d := range f.live() {
		if err := waitPeersSynced(ctx, d.API, len(f.hosts)-1); err != nil {
			return fmt.Errorf("%s: %w", f.hosts[i].Name, err)
		}
	}
	return nil
}

// waitPeersSynced polls c until it reports n peers, all synced.
func waitPeersSynced(ctx context.Context, c *api.Client, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	var last []api.PeerStats
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Stats(sctx)
		cancel()
		if err == nil {
			last = st.Peers
			ok := len(st.Peers) == n
			for _, p := range st.Peers {
				ok = ok && p.State == "synced"
			}
			if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("peers not all synced after 30s: %+v (%v)", last, err)
		}
		if !sleepUntil(ctx, time.Now().Add(100*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// setLinks brings distributor i's ext0 and int0 up or down.
func (f *fleet) setLinks(i int, up bool) error {
	h := f.hosts[i]
	for _, ifname := range []string{"ext0", "int0"} {
		l, err := h.NS.Netlink().LinkByName(ifname)
		if err == nil {
			if up {
				err = h.NS.Netlink().LinkSetUp(l)
			} else {
				err = h.NS.Netlink().LinkSetDown(l)
			}
		}
		if err != nil {
			return fmt.Errorf("%s %s up=%v: %w", h.Name, ifname, up, err)
		}
	}
	return nil
}

// kill crashes distributor i: SIGKILL (its pinned data path stays), its
// links down, and the router told it is lost. It returns the time from the
// kill to the route without it.
func (f *fleet) kill(ctx context.Context, i int) (time.Duration, error) {
	f.mu.Lock()
	d := f.procs[i]
	f.down[i] = true
	f.mu.Unlock()
	if d == nil {
		return 0, fmt.Errorf("kill %s: not running", f.hosts[i].Name)
	}
	at := time.Now()
	d.Kill()
	if err := f.setLinks(i, false); err != nil {
		return 0, err
	}
	if err := f.router.lost(ctx, f.hosts[i]); err != nil {
		return 0, err
	}
	return time.Since(at), nil
}

// revive brings killed distributor i back: links up, the daemon restarted
// (it adopts its pinned data path and asks its peers for a resync); once it
// reports its peers synced, the router takes it back. It returns the time
// from the restart to synced.
func (f *fleet) revive(ctx context.Context, i int) (time.Duration, error) {
	if err := f.setLinks(i, true); err != nil {
		return 0, err
	}
	at := time.Now()
	d, err := f.env.StartDistributorOn(ctx, f.hosts[i], f.state.config(i))
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.procs[i], f.down[i] = d, false
	f.mu.Unlock()
	if _, err := waitEligible(ctx, d.API, f.state.eligible()); err != nil {
		return 0, fmt.Errorf("%s after restart: %w", f.hosts[i].Name, err)
	}
	if err := waitPeersSynced(ctx, d.API, len(f.hosts)-1); err != nil {
		return 0, fmt.Errorf("%s after restart: %w", f.hosts[i].Name, err)
	}
	took := time.Since(at)
	return took, f.router.join(ctx, f.hosts[i])
}

// crashed names a distributor that exited without being killed, or "".
func (f *fleet) crashed() string {
	for i, d := range f.live() {
		if d.Exited() {
			return f.hosts[i].Name
		}
	}
	return ""
}

// explain adds the output of distributors that exited unexpectedly to err.
func (f *fleet) explain(err error) error {
	for i, d := range f.live() {
		if d.Exited() {
			err = fmt.Errorf("%w; distributor %s exited:\n%s", err, f.hosts[i].Name, d.Output())
		}
	}
	return err
}

// distView is one distributor as one poll saw it.
type distView struct {
	name  string
	up    bool // running (not killed)
	err   error
	stats api.Stats
	// newPerSec and pktPerSec are its services' new flows and packets per
	// second since the previous poll.
	newPerSec, pktPerSec float64
}

// poll asks every running distributor for its stats and returns the
// aggregate (TM counters summed over all distributors, including what
// killed or restarted ones counted before) and each one's view. A running
// distributor that does not answer is an error (the others still count).
func (f *fleet) poll(ctx context.Context) (api.Stats, []distView, error) {
	live := f.live()
	views := make([]distView, len(f.hosts))
	var errs []error
	now := time.Now()
	for i, h := range f.hosts {
		views[i] = distView{name: h.Name}
		d, ok := live[i]
		if !ok {
			continue
		}
		views[i].up = true
		st, err := d.API.Stats(ctx)
		if err != nil {
			views[i].err = err
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
			continue
		}
		views[i].stats = st
		f.mu.Lock()
		views[i].newPerSec, views[i].pktPerSec = f.cnt[i].update(st, now)
		f.mu.Unlock()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var agg api.Stats
	byID := map[string]int{}
	for i, c := range f.cnt {
		if !c.answered {
			continue
		}
		if views[i].up && views[i].err == nil {
			if agg.Services == nil {
				agg.Services = c.stats.Services
			}
			agg.FlowEntries += c.stats.FlowEntries
			agg.FlowCapacity += c.stats.FlowCapacity
		}
		for _, t := range c.stats.TrafficManagers {
			b, l := c.base[t.ID], c.last[t.ID]
			j, seen := byID[t.ID]
			if !seen {
				j = len(agg.TrafficManagers)
				byID[t.ID] = j
				x := t
				x.NewFlows, x.Packets, x.ActiveFlows = 0, 0, 0
				agg.TrafficManagers = append(agg.TrafficManagers, x)
			}
			a := &agg.TrafficManagers[j]
			a.NewFlows += b.NewFlows + l.NewFlows
			a.Packets += b.Packets + l.Packets
			if views[i].up {
				a.ActiveFlows += t.ActiveFlows
			}
		}
	}
	if len(live) == 0 {
		errs = append(errs, errors.New("no distributor running"))
	}
	return agg, views, errors.Join(errs...)
}

// minRateInterval is the shortest interval a distributor's rates are
// computed over.
const minRateInterval = 500 * time.Millisecond

// update takes a new answer and returns the rates since the previous one
// at least minRateInterval before (or the last rates).
func (c *distCounters) update(st api.Stats, now time.Time) (newPerSec, pktPerSec float64) {
	for _, t := range st.TrafficManagers {
		l := c.last[t.ID]
		if t.NewFlows < l.NewFlows || t.Packets < l.Packets {
			b := c.base[t.ID]
			b.NewFlows += l.NewFlows
			b.Packets += l.Packets
			c.base[t.ID] = b
		}
		c.last[t.ID] = t
	}
	// Per service by name: a service missing from one answer (as during a
	// reload) must not look like a restart.
	for _, sv := range st.Services {
		cur, l := [2]uint64{sv.NewFlows, sv.Packets}, c.svcLast[sv.Name]
		if cur[0] < l[0] || cur[1] < l[1] {
			b := c.svcBase[sv.Name]
			c.svcBase[sv.Name] = [2]uint64{b[0] + l[0], b[1] + l[1]}
		}
		c.svcLast[sv.Name] = cur
	}
	svc := c.svcTotal()
	// Rates over at least half a second: the scenario's own polls, right
	// after the watch's, must not give rates over a few milliseconds.
	switch dt := now.Sub(c.prevAt); {
	case c.prevAt.IsZero():
		c.prevAt, c.prevSvc = now, svc
	case dt >= minRateInterval:
		for k := range 2 {
			c.rates[k] = float64(svc[k]-min(c.prevSvc[k], svc[k])) / dt.Seconds()
		}
		c.prevAt, c.prevSvc = now, svc
	}
	c.stats, c.answered = st, true
	return c.rates[0], c.rates[1]
}
