package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/loadgen"
)

// stepKind says what a step changes, so that the report can find the
// change's TM and counts without looking at names.
type stepKind int

const (
	stepAdd   stepKind = iota + 1 // a new TM joins the config
	stepDrain                     // a TM goes to state draining
)

// step is one change of the lab's scenario, at a fraction of the run.
type step struct {
	kind stepKind
	// at is when the step starts, as a fraction of the duration.
	at float64
	// tm is the TM the step concerns; an add step sets it when it applies.
	tm string
	// event is the line printed when the step starts; phase names the phase
	// that starts once the change took effect. Both are for people only.
	event func(s *labState) string
	phase func(s *labState) string
	// apply changes the environment and the lab's state (and may set the
	// step's tm); the scenario then reloads the distributor with the state's
	// config.
	apply func(ctx context.Context, s *labState, st *step) error
	// effective, if set, is called once the change took effect (after the
	// settle time), when the new phase starts.
	effective func()
}

// labState is the TMs the lab configures: their order, weights and states.
// Weights come from the options by position (tm1 first, the added TM last),
// never from the TMs' names.
type labState struct {
	env     *Env
	ipv6    bool
	weights []int // LabOptions.Weights
	tms     []string
	weight  map[string]int
	state   map[string]string
}

func newLabState(env *Env, weights []int, ipv6 bool) *labState {
	s := &labState{env: env, ipv6: ipv6, weights: weights, weight: map[string]int{}, state: map[string]string{}}
	for _, h := range env.Topo.TMs {
		s.join(h.Name)
	}
	return s
}

// join adds TM id with the next position's weight (1 without one).
func (s *labState) join(id string) {
	w := 1
	if i := len(s.tms); i < len(s.weights) {
		w = s.weights[i]
	}
	s.tms = append(s.tms, id)
	s.weight[id] = w
}

// eligible are the TMs new flows may go to, in config order.
func (s *labState) eligible() []string {
	return slices.DeleteFunc(slices.Clone(s.tms), func(id string) bool { return s.state[id] == "draining" })
}

// config renders the distributor's config for the state.
func (s *labState) config() string {
	return s.env.Config(ConfigOptions{Weights: s.weight, States: s.state, IPv6: true})
}

// nextWeight is the weight the next TM to join gets.
func (s *labState) nextWeight() int {
	if i := len(s.tms); i < len(s.weights) {
		return s.weights[i]
	}
	return 1
}

// defaultSteps is the lab's scenario: a TM added at 1/3 of the run, the
// first TM (drained) drained at 2/3.
func defaultSteps(drained string, tracker *tupleTracker) []step {
	return []step{
		{
			kind: stepAdd, at: 1.0 / 3,
			event: func(s *labState) string {
				return fmt.Sprintf("adding a TM (weight %d): new namespace, reference TM, config reload", s.nextWeight())
			},
			phase: func(s *labState) string { return s.tms[len(s.tms)-1] + " added" },
			apply: func(ctx context.Context, s *labState, st *step) error {
				h, err := s.env.AddTM(ctx)
				if err != nil {
					return fmt.Errorf("add TM: %w", err)
				}
				st.tm = h.Name
				s.join(h.Name)
				return nil
			},
		},
		{
			kind: stepDrain, at: 2.0 / 3, tm: drained,
			event: func(*labState) string {
				return fmt.Sprintf("draining %s: state draining in the config, reload (its established flows stay)", drained)
			},
			phase: func(*labState) string { return drained + " draining" },
			apply: func(_ context.Context, s *labState, _ *step) error {
				s.state[drained] = "draining"
				return nil
			},
			effective: func() { tracker.after.Store(time.Now().UnixNano()) },
		},
	}
}

// scenario plays steps against a running distributor and load, and records
// the phases they bound.
type scenario struct {
	state    *labState
	d        *Distributor
	run      *loadgen.Run
	start    time.Time
	duration time.Duration
	settle   time.Duration
	p        *printer

	mu    sync.Mutex
	spans []span // the last one's to is set by finish
}

func (sc *scenario) since() time.Duration { return time.Since(sc.start) }

// play runs the steps in order until one fails or ctx (the load's context)
// ends. The run ending during a step is not a failure of the lab.
func (sc *scenario) play(ctx context.Context, steps []step) error {
	for i := range steps {
		err := sc.apply(ctx, &steps[i])
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// apply runs one step: wait for its time, change, end the current phase
// (snapshot before the reload), reload, wait until the distributor reports
// the new eligible set, settle, and start the next phase.
func (sc *scenario) apply(ctx context.Context, st *step) error {
	if !sleepUntil(ctx, sc.start.Add(time.Duration(st.at*float64(sc.duration)))) {
		return nil
	}
	sc.p.event(fmt.Sprintf("[%5.1fs] %s", sc.since().Seconds(), st.event(sc.state)))
	if err := st.apply(ctx, sc.state, st); err != nil {
		return err
	}
	end, err := takeSnapshot(ctx, sc.run, sc.d.API, sc.since())
	if err != nil {
		return err
	}
	if err := sc.d.Reload(sc.state.config()); err != nil {
		return err
	}
	want := sc.state.eligible()
	stats, err := waitEligible(ctx, sc.d.API, want)
	if err != nil {
		return err
	}
	took := sc.since() - end.at
	if !sleepUntil(ctx, time.Now().Add(sc.settle)) {
		return nil
	}
	if st.effective != nil {
		st.effective()
	}
	from := snapshot{at: sc.since(), load: sc.run.Snapshot(), dist: tmMap(stats)}
	sc.mu.Lock()
	sc.spans[len(sc.spans)-1].to = end
	sc.spans = append(sc.spans, span{step: st, name: st.phase(sc.state), eligible: want, from: from})
	sc.mu.Unlock()
	sc.p.event(fmt.Sprintf("[%5.1fs] config reloaded; eligible TMs now %s (took effect after %.2fs)", sc.since().Seconds(), strings.Join(want, ","), took.Seconds()))
	return nil
}

// finish closes the last phase with the final snapshot and returns the
// phases.
func (sc *scenario) finish(last snapshot) []span {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.spans[len(sc.spans)-1].to = last
	return slices.Clone(sc.spans)
}
