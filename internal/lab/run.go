package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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

// defaults fills o's zero fields and checks the rest.
func (o *LabOptions) defaults() error {
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

// RunLab builds the default topology, runs a distributor and load against it,
// plays the scenario (defaultSteps: a TM added at 1/3 of the duration, tm1
// drained at 2/3), shows progress on out and ends with a report. It removes
// everything it made before it returns. An error means the lab could not run
// (or was interrupted); a run whose checks fail returns a Result with Pass
// false and no error.
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

	state := newLabState(env, o.Weights, o.IPv6)
	apiPath := APIPath(dir, env.Topo.Distributors[0])
	fmt.Fprintf(out, "starting distributor (namespace %s, admin API unix:%s) …\n", env.Topo.Distributors[0].NS.Name, apiPath)
	d, err := env.StartDistributor(ctx, state.config())
	if err != nil {
		return res, err
	}
	distErr := func(err error) error {
		if d.Exited() {
			return fmt.Errorf("%w; distributor exited:\n%s", err, d.Output())
		}
		return err
	}
	if _, err := waitEligible(ctx, d.API, state.eligible()); err != nil {
		return res, distErr(err)
	}

	drained := state.tms[0]
	tracker := &tupleTracker{drained: drained, last: map[string]string{}}
	target := env.Target(o.IPv6)
	lo := loadgen.Options{KeepAlive: o.KeepAlive, Short: o.Short, UDPFlows: o.UDP, Interval: o.Interval}
	env.ClientDialer(0, &lo)
	lo.Dial = tracker.wrap(lo.Dial)
	fmt.Fprintf(out, "load for %v: %d keep-alive connections, %d short-connection workers, %d UDP flows to %s and %s, every %v\n",
		o.Duration, o.KeepAlive, o.Short, o.UDP, target.HTTP, target.UDP, o.Interval)
	loadCtx, stopLoad := context.WithTimeout(ctx, o.Duration)
	defer stopLoad()
	run := loadgen.Start(loadCtx, target, lo)
	defer func() {
		stopLoad()
		run.Wait()
	}()
	sc := &scenario{state: state, d: d, run: run, start: time.Now(), duration: o.Duration, settle: o.Settle, p: p,
		spans: []span{{name: fmt.Sprintf("%d TMs active", len(state.tms)), eligible: state.eligible()}}}
	evErr := make(chan error, 1)
	go func() { evErr <- sc.play(loadCtx, defaultSteps(drained, tracker)) }()

	final, err := watch(ctx, loadCtx, stopLoad, sc, evErr, o.Duration)
	if err != nil {
		return res, distErr(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := d.API.Stats(sctx)
	cancel()
	if err != nil {
		return res, distErr(fmt.Errorf("final stats: %w", err))
	}
	p.finish()

	last := snapshot{at: final.Elapsed, load: final, dist: tmMap(st)}
	var tms []string
	for _, id := range state.tms {
		if _, ok := last.dist[id]; ok {
			tms = append(tms, id)
		}
	}
	res = account(accounting{spans: sc.finish(last), last: last, tms: tms, weights: state.weight,
		drainedConns: tracker.hits.Load(), drainedReused: tracker.reused.Load()})
	res.APIPath, res.Drained = apiPath, drained
	if len(state.tms) > o.TMs {
		res.Added = state.tms[o.TMs]
	}
	res.judge()
	res.print(out, o)
	if o.Keep {
		keep(ctx, out, env, res.APIPath, target)
	}
	return res, nil
}

// watch shows progress once a second until the load ends or the scenario
// fails, and returns the load's final report. Its error is the scenario's,
// the distributor's exit, or ctx's.
func watch(ctx, loadCtx context.Context, stopLoad func(), sc *scenario, evErr <-chan error, duration time.Duration) (loadgen.Report, error) {
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
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, serr := sc.d.API.Stats(sctx)
			cancel()
			sc.p.block(prog.render(sc.since(), sc.run.Snapshot(), st, serr))
			if sc.d.Exited() {
				stopLoad()
				eventErr = errors.New("distributor exited during the run")
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
func keep(ctx context.Context, out io.Writer, env *Env, apiPath string, target loadgen.Target) {
	fmt.Fprintf(out, "\n--keep: the topology stays up (load stopped) until Ctrl-C.\n")
	fmt.Fprintf(out, "  switchyard stats --api unix:%s\n", apiPath)
	fmt.Fprintf(out, "  switchyard flows --api unix:%s --limit 20\n", apiPath)
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
