package distributor

import (
	"context"
	"sync"
	"time"
)

// The ready gate (issue 9, failover): a (re)starting distributor takes
// traffic for its VIPs only once what must come first (the mirror's
// initial resync from its peers) is done, or after a timeout, so that it
// never black-holes flows it does not know yet. Whoever must come first
// takes a hold before the daemon attaches (HoldTraffic) and releases it when
// done; WaitReady, called by the daemon's start sequence just before
// Attach, waits for every hold or the timeout. An adopted data path is
// attached already and knows its flows: it does not wait.

type readyGate struct {
	mu    sync.Mutex
	holds map[string]bool
	done  chan struct{} // closed when the last hold is released
}

// HoldTraffic keeps the daemon from attaching until release is called (or
// WaitReady's timeout). name says who holds, for the log.
func (d *Daemon) HoldTraffic(name string) (release func()) {
	g := &d.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds == nil {
		g.holds = map[string]bool{}
	}
	if len(g.holds) == 0 || g.done == nil {
		g.done = make(chan struct{})
	}
	g.holds[name] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			delete(g.holds, name)
			if len(g.holds) == 0 {
				close(g.done)
			}
		})
	}
}

// WaitReady waits until no hold is left, timeout passes or ctx is done, and
// returns the holds still left (nil: ready).
func (d *Daemon) WaitReady(ctx context.Context, timeout time.Duration) []string {
	g := &d.gate
	g.mu.Lock()
	done := g.done
	n := len(g.holds)
	g.mu.Unlock()
	if n > 0 && done != nil {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var left []string
	for name := range g.holds {
		left = append(left, name)
	}
	return left
}
