package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// stepKind says what a step changes, so that the report can find the
// change's TM and counts without looking at names.
type stepKind int

const (
	stepAdd    stepKind = iota + 1 // a new TM joins the config
	stepDrain                      // a TM goes to state draining
	stepKill                       // a distributor is killed (no reload)
	stepReturn                     // the killed distributor comes back (no reload)
)

// step is one change of the lab's scenario, at a fraction of the run.
type step struct {
	kind stepKind
	// at is when the step starts, as a fraction of the duration.
	at float64
	// tm is the TM the step concerns (an add step sets it when it applies),
	// or the distributor for a kill or return step.
	tm string
	// event is the line printed when the step starts; phase names the phase
	// that starts once the change took effect. Both are for people only. A
	// step without phase changes no TM's eligibility: the scenario applies
	// it without a reload and starts no phase; apply may set note, printed
	// once it is done.
	event func(s *labState) string
	phase func(s *labState) string
	note  string
	// took is what a kill or return step measured: the kill to the route
	// without the distributor, the restart to its peers synced.
	took time.Duration
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
	env *Env
	// router, if set, is the router in front of the distributors; TMs
	// added during the run get their route to the clients through it.
	router  *netlab.EdgeRouter
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

// mirrorKey is the peers' shared key in the lab.
var mirrorKey = []byte("switchyard-lab-mirror-key-012345")

// mirrorPort is the peers' UDP port on the distributors' int0.
const mirrorPort = 7947

// config renders distributor i's config for the state: with more than one
// distributor, each mirrors all its flows to all the others over int0.
func (s *labState) config(i int) string {
	ds := s.env.Topo.Distributors
	h := ds[i]
	o := ConfigOptions{ID: h.Name, APIPath: APIPath(s.env.Dir, h), Weights: s.weight, States: s.state, IPv6: true}
	if len(ds) > 1 {
		addr := func(h *netlab.Host) string {
			return netip.AddrPortFrom(h.Links["int0"].Addr4.Addr(), mirrorPort).String()
		}
		var others []string
		for j, x := range ds {
			if j != i {
				others = append(others, addr(x))
			}
		}
		o.Mutate = func(c *config.Config) {
			c.Peers = config.Peers{ID: uint32(i + 1), Listen: addr(h), Addresses: others, Key: mirrorKey, Mirror: "all"}
		}
	}
	return s.env.Config(o)
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
				if s.router != nil {
					if err := s.router.RouteEdge(h, "eth0"); err != nil {
						return fmt.Errorf("add TM: %w", err)
					}
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

// systemSteps is the scenario with more than one distributor: a TM added
// at 1/6 of the run, the first TM drained at 1/3, distributor victim
// killed at 1/2 (SIGKILL, its links down, out of the router's route) and
// brought back at 2/3 (restarted on its pinned data path, back in the route
// once its peers are synced), which leaves a third of the run for the
// resync and for traffic through it again.
func systemSteps(drained string, tracker *tupleTracker, f *fleet, victim int) []step {
	steps := defaultSteps(drained, tracker)
	steps[0].at, steps[1].at = 1.0/6, 1.0/3
	name := f.hosts[victim].Name
	return append(steps,
		step{
			kind: stepKill, at: 1.0 / 2, tm: name,
			event: func(*labState) string {
				return fmt.Sprintf("killing %s: SIGKILL, its links down, the router's route without it", name)
			},
			apply: func(ctx context.Context, _ *labState, st *step) error {
				tracker.winFrom.Store(time.Now().UnixNano())
				took, err := f.kill(ctx, victim)
				tracker.winTo.Store(time.Now().UnixNano())
				if err != nil {
					return err
				}
				st.took = took
				st.note = fmt.Sprintf("%s is down; the router sends to %s (route updated %.0f ms after the kill)",
					name, strings.Join(f.router.via(), ","), took.Seconds()*1000)
				return nil
			},
		},
		step{
			kind: stepReturn, at: 2.0 / 3, tm: name,
			event: func(*labState) string {
				return fmt.Sprintf("bringing %s back: links up, restart on its pinned data path, resync from its peers", name)
			},
			apply: func(ctx context.Context, _ *labState, st *step) error {
				synced, err := f.revive(ctx, victim)
				if err != nil {
					return err
				}
				st.took = synced
				st.note = fmt.Sprintf("%s synced with its peers after %.2fs; back in the route: %s", name, synced.Seconds(), strings.Join(f.router.via(), ","))
				return nil
			},
		})
}

// scenario plays steps against a running distributor and load, and records
// the phases they bound.
type scenario struct {
	state    *labState
	f        *fleet
	tracker  *tupleTracker
	run      *loadgen.Run
	start    time.Time
	duration time.Duration
	settle   time.Duration
	p        *printer

	mu     sync.Mutex
	spans  []span // the last one's to is set by finish
	events []Event
	// The kill and return steps' times, and the load just before the kill.
	killed           string
	killAt, backAt   time.Duration
	killLoad         loadgen.Report
	killKeepAlive    uint64 // keep-alive connections opened before the kill
	killDone, backOK bool
	rerouted, resync time.Duration
}

// mark records an event for the timeline.
func (sc *scenario) mark(at time.Duration, label string) {
	sc.mu.Lock()
	sc.events = append(sc.events, Event{At: at, Label: label})
	sc.mu.Unlock()
}

// eventList returns the recorded events.
func (sc *scenario) eventList() []Event {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return slices.Clone(sc.events)
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
	if st.phase == nil {
		return sc.applyEvent(ctx, st)
	}
	if err := st.apply(ctx, sc.state, st); err != nil {
		return err
	}
	end, err := takeSnapshot(ctx, sc.run, sc.f, sc.since())
	if err != nil {
		return err
	}
	sc.mark(end.at, st.phase(sc.state))
	if err := sc.f.reload(); err != nil {
		return err
	}
	want := sc.state.eligible()
	if err := sc.f.waitEligible(ctx, want); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	stats, _, err := sc.f.poll(sctx)
	cancel()
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

// applyEvent runs a step that changes no eligibility (a distributor
// killed or brought back): no reload, no new phase, an event on the
// timeline.
func (sc *scenario) applyEvent(ctx context.Context, st *step) error {
	at := sc.since()
	if st.kind == stepKill {
		sc.mu.Lock()
		sc.killAt, sc.killLoad, sc.killKeepAlive = at, sc.run.Snapshot(), sc.tracker.keepAlive.Load()
		sc.mu.Unlock()
	}
	label := map[stepKind]string{stepKill: "killed", stepReturn: "restarts"}[st.kind]
	sc.mark(at, st.tm+" "+label)
	if err := st.apply(ctx, sc.state, st); err != nil {
		return err
	}
	if st.kind == stepReturn {
		sc.mark(sc.since(), st.tm+" in the route")
	}
	sc.mu.Lock()
	switch st.kind {
	case stepKill:
		sc.killDone, sc.killed, sc.rerouted = true, st.tm, st.took
	case stepReturn:
		sc.backOK, sc.backAt, sc.resync = true, sc.since(), st.took
	}
	sc.mu.Unlock()
	if st.note != "" {
		sc.p.event(fmt.Sprintf("[%5.1fs] %s", sc.since().Seconds(), st.note))
	}
	return nil
}

// failover is what the kill and the return did to the load: the errors
// and moved flows from just before the kill to the end of the run.
func (sc *scenario) failover(final loadgen.Report) *FailoverResult {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	fr := &FailoverResult{Killed: sc.killed, KillTookEffect: sc.killDone, Back: sc.backOK, KilledAt: sc.killAt, BackAt: sc.backAt,
		Rerouted: sc.rerouted, Resync: sc.resync}
	if sc.killDone {
		fr.Errors = final.Errors - sc.killLoad.Errors
		fr.Moved = final.FlowsMoved - sc.killLoad.FlowsMoved
		fr.KeepAliveReconnects = sc.tracker.keepAlive.Load() - sc.killKeepAlive
		fr.UDPWindowLost = sc.tracker.udpWindowLost.Load()
		fr.ErrorSamples, fr.MoveSamples = final.ErrorSamples, final.MoveSamples
	}
	return fr
}

// finish closes the last phase with the final snapshot and returns the
// phases.
func (sc *scenario) finish(last snapshot) []span {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.spans[len(sc.spans)-1].to = last
	return slices.Clone(sc.spans)
}
