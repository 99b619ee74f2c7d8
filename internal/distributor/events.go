package distributor

import (
	"context"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// Flow events: the data path's (ring buffer, read every eventsEvery) and the
// sweeper's expirations, fanned out to the followers (`switchyard flows
// --follow`). A follower that does not keep up loses events, counted and
// told in the stream; it never holds up the reader or the sweeper.

const (
	// eventsEvery is how often the data path's ring buffer is drained.
	eventsEvery = 100 * time.Millisecond
	// followerBuffer is how many events wait for one follower.
	followerBuffer = 4096
	// maxExpiredEvents bounds the expirations one sweep reports; the rest
	// are counted as lost.
	maxExpiredEvents = 10_000
)

type follower struct {
	ch   chan api.FlowEvent
	lost uint64 // guarded by eventHub.mu
}

// eventHub is the set of followers.
type eventHub struct {
	mu   sync.Mutex
	subs map[*follower]struct{}
}

func (h *eventHub) any() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

// publish gives ev to every follower with room, and counts it lost for the
// others.
func (h *eventHub) publish(ev api.FlowEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for f := range h.subs {
		select {
		case f.ch <- ev:
		default:
			f.lost++
		}
	}
}

// lose counts n events lost for every follower.
func (h *eventHub) lose(n uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for f := range h.subs {
		f.lost += n
	}
}

// event converts a data-path event for the API.
func (d *Daemon) event(ev datapath.Event, tms map[uint16]string, reason string) api.FlowEvent {
	k := ev.Key
	out := api.FlowEvent{
		Type:     eventName(ev.Type),
		Time:     ev.Time,
		Proto:    flow.ProtoName(k.Proto),
		Src:      addrPort(flow.Src(k), flow.SrcPort(k)),
		Dst:      addrPort(flow.Dst(k), flow.DstPort(k)),
		VLAN:     k.Vlan,
		TM:       tms[ev.Tm],
		TMIndex:  ev.Tm,
		Origin:   origins(ev.Flags),
		TCPState: tcpState(k, datapath.Flow{TcpState: ev.TcpState}),
		Reason:   reason,
	}
	return out
}

func eventName(t uint8) string {
	switch t {
	case datapath.EventNew:
		return "new"
	case datapath.EventState:
		return "state"
	case datapath.EventRefused:
		return "refused"
	case datapath.EventExpired:
		return "expired"
	case datapath.EventForgot:
		return "forgotten"
	}
	return "unknown"
}

// readEvents drains the data path's ring buffer into the followers. It runs
// whether or not anyone follows, so that the ring never stays full.
func (d *Daemon) readEvents() {
	follow := d.hub.any()
	var tms map[uint16]string
	if follow {
		_, tms = d.names()
	}
	_, err := d.dp.ReadEvents(func(ev datapath.Event) {
		d.offerPeers(ev)
		d.countEnd(ev)
		if follow {
			d.hub.publish(d.event(ev, tms, ""))
		}
	})
	if err != nil {
		d.log.Error("read flow events", "error", err)
	}
}

// publishExpired reports the flows a sweep removed, with the reason.
func (d *Daemon) publishExpired(t *tally[datapath.FlowKey], flows map[datapath.FlowKey]datapath.Flow) {
	if d.peers.Load() != nil {
		for k, r := range t.reason {
			if r != "" {
				d.offerPeers(datapath.Event{Key: k, Time: d.clock(), Type: datapath.EventExpired})
			}
		}
	}
	for k, r := range t.reason {
		if r != "" {
			d.countExpired(flows[k], k.Proto)
		}
	}
	if !d.hub.any() {
		return
	}
	_, tms := d.names()
	n := 0
	for k, r := range t.reason {
		if r == "" {
			continue
		}
		if n >= maxExpiredEvents {
			n++
			continue
		}
		n++
		f := flows[k]
		d.hub.publish(d.event(datapath.Event{Key: k, Time: d.clock(), Tm: f.Tm, Flags: f.Flags,
			Type: datapath.EventExpired, TcpState: f.TcpState}, tms, r))
	}
	if n > maxExpiredEvents {
		d.hub.lose(uint64(n - maxExpiredEvents))
	}
}

// FollowFlows implements api.Backend: flow events as they happen, until
// ctx is done or fn fails. Lost events are told as one "lost" event with
// their count.
func (d *Daemon) FollowFlows(ctx context.Context, fn func(api.FlowEvent) error) error {
	f := &follower{ch: make(chan api.FlowEvent, followerBuffer)}
	d.hub.mu.Lock()
	if d.hub.subs == nil {
		d.hub.subs = map[*follower]struct{}{}
	}
	d.hub.subs[f] = struct{}{}
	d.hub.mu.Unlock()
	defer func() {
		d.hub.mu.Lock()
		delete(d.hub.subs, f)
		d.hub.mu.Unlock()
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-f.ch:
			if err := fn(ev); err != nil {
				return err
			}
		case <-tick.C:
		}
		d.hub.mu.Lock()
		lost := f.lost
		f.lost = 0
		d.hub.mu.Unlock()
		if lost > 0 {
			if err := fn(api.FlowEvent{Type: "lost", Lost: lost}); err != nil {
				return err
			}
		}
	}
}
