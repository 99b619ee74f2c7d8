package tm

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// backend is one server of a pool.
type backend struct {
	addr   netip.AddrPort
	up     atomic.Bool
	active atomic.Int64
	picked atomic.Uint64
}

// pool balances over its servers: the healthy server with the fewest active
// connections, starting the scan at a rotating index so that equals take
// turns.
type pool struct {
	servers []*backend
	next    atomic.Uint64
}

func newPool(addrs []netip.AddrPort) *pool {
	p := &pool{}
	for _, a := range addrs {
		b := &backend{addr: a}
		// Up until a health check says otherwise: a TM that starts before
		// its first check must not refuse its first clients.
		b.up.Store(true)
		p.servers = append(p.servers, b)
	}
	return p
}

// pick returns the chosen server with its active count raised (release it
// with done), or nil when no server is up.
func (p *pool) pick() *backend {
	n := len(p.servers)
	start := int(p.next.Add(1) % uint64(n))
	var best *backend
	for i := range n {
		b := p.servers[(start+i)%n]
		if !b.up.Load() {
			continue
		}
		if best == nil || b.active.Load() < best.active.Load() {
			best = b
		}
	}
	if best != nil {
		best.active.Add(1)
		best.picked.Add(1)
	}
	return best
}

func (b *backend) done() { b.active.Add(-1) }

func (p *pool) anyUp() bool {
	for _, b := range p.servers {
		if b.up.Load() {
			return true
		}
	}
	return false
}

func (p *pool) status() []ServerStatus {
	out := make([]ServerStatus, 0, len(p.servers))
	for _, b := range p.servers {
		out = append(out, ServerStatus{Addr: b.addr.String(), Up: b.up.Load(), Active: b.active.Load(), Picked: b.picked.Load()})
	}
	return out
}

// healthLoop checks every server with a TCP connect (from the TM's own
// address, not the SNAT one, so checks use no SNAT ports) until t closes. A
// server goes down after 2 failed checks in a row and up after 1 success.
func (p *pool) healthLoop(t *TM) {
	fails := make([]int, len(p.servers))
	tick := time.NewTicker(t.cfg.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		for i, b := range p.servers {
			ctx, cancel := context.WithTimeout(t.ctx, t.cfg.HealthTimeout)
			err := t.cfg.Do(func() error {
				var d net.Dialer
				c, err := d.DialContext(ctx, network("tcp", b.addr.Addr()), b.addr.String())
				if err == nil {
					c.Close()
				}
				return err
			})
			cancel()
			if t.ctx.Err() != nil {
				return
			}
			if err != nil {
				fails[i]++
				if fails[i] >= 2 && b.up.Swap(false) {
					t.log.Warn("server down", "server", b.addr, "error", err)
				}
				continue
			}
			fails[i] = 0
			if !b.up.Swap(true) {
				t.log.Info("server up", "server", b.addr)
			}
		}
	}
}
