package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// readBuffer is the conntrack event socket's receive buffer: room for a
// burst of some 20,000 events before the kernel drops (and the agent
// resynchronises).
const readBuffer = 8 << 20

func tupleOf(t conntrack.Tuple) Tuple {
	return Tuple{
		Src: t.IP.SourceAddress, Dst: t.IP.DestinationAddress,
		SrcPort: t.Proto.SourcePort, DstPort: t.Proto.DestinationPort,
		Proto: t.Proto.Protocol,
	}
}

func expectationOf(e *conntrack.Expect) Expectation {
	return Expectation{
		Master: tupleOf(e.TupleMaster), Tuple: tupleOf(e.Tuple), Mask: tupleOf(e.Mask),
		Timeout: time.Duration(e.Timeout) * time.Second,
		// The kernel reports NAT's saved address and port as the source
		// of CTA_EXPECT_NAT_TUPLE (zero without NAT).
		NATAddr: e.NAT.Tuple.IP.SourceAddress, NATPort: e.NAT.Tuple.Proto.SourcePort,
		Helper: e.HelpName,
	}
}

// Run follows the host's conntrack events until ctx ends: it joins the
// event groups, then announces every flow and expectation the host already
// has (so a restarted agent re-memorizes what it owns), then handles events.
// When the kernel drops events (the socket's buffer overflowed) or the
// socket fails, it starts over: listen, then announce from a fresh dump.
func (a *Agent) Run(ctx context.Context) error {
	for {
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.resyncs.Add(1)
		a.log.Warn("agent: conntrack events lost; resynchronising from a dump", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Ready is closed after the first announcement, when the agent follows
// events; tests and the API wait on it.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

func (a *Agent) session(ctx context.Context) error {
	lc, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("conntrack: dial: %w", err)
	}
	defer lc.Close()
	if err := lc.SetReadBuffer(readBuffer); err != nil {
		a.log.Warn("agent: conntrack read buffer", "err", err)
	}
	events := make(chan conntrack.Event, 1024)
	errc, err := lc.Listen(events, 1, []netfilter.NetlinkGroup{
		netfilter.GroupCTNew, netfilter.GroupCTUpdate, netfilter.GroupCTDestroy, netfilter.GroupCTExpNew,
	})
	if err != nil {
		return fmt.Errorf("conntrack: listen: %w", err)
	}
	// Close waits for the library's worker, which may be blocked handing
	// over an event or an error nobody reads any more: drain both until
	// it has gone. (The deferred lc.Close above then finds it closed.)
	defer func() {
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-events:
				case <-errc:
				case <-done:
					return
				}
			}
		}()
		lc.Close()
		close(done)
	}()
	if err := a.announce(ctx); err != nil {
		return err
	}
	a.readyOnce.Do(func() { close(a.ready) })
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return fmt.Errorf("conntrack events: %w", err)
		case ev := <-events:
			if err := a.handle(ctx, ev); err != nil {
				return err
			}
		}
	}
}

func (a *Agent) handle(ctx context.Context, ev conntrack.Event) error {
	switch {
	case ev.Type == conntrack.EventNew && ev.Flow != nil:
		return a.FlowNew(ctx, tupleOf(ev.Flow.TupleOrig), tupleOf(ev.Flow.TupleReply))
	case ev.Type == conntrack.EventUpdate && ev.Flow != nil:
		// The kernel reaps expired entries lazily (its GC may take a
		// minute on an idle host), so a TCP connection is over for the
		// agent when it enters TIME_WAIT or CLOSE: every packet of the
		// peer has arrived by then.
		if ev.Flow.TupleOrig.Proto.Protocol == 6 && tcpEnded(ev.Flow.ProtoInfo.TCP) {
			return a.FlowEnd(ctx, tupleOf(ev.Flow.TupleOrig), tupleOf(ev.Flow.TupleReply))
		}
	case ev.Type == conntrack.EventDestroy && ev.Flow != nil:
		return a.FlowEnd(ctx, tupleOf(ev.Flow.TupleOrig), tupleOf(ev.Flow.TupleReply))
	case ev.Type == conntrack.EventExpNew && ev.Expect != nil:
		return a.Expect(ctx, expectationOf(ev.Expect))
	}
	return nil
}

// TCP conntrack states (enum tcp_conntrack).
const (
	tcpTimeWait = 7
	tcpClose    = 8
)

func tcpEnded(p *conntrack.ProtoInfoTCP) bool {
	return p != nil && (p.State == tcpTimeWait || p.State == tcpClose)
}

// announce memorizes every owned flow and relates every expectation the
// host's conntrack table holds now.
func (a *Agent) announce(ctx context.Context) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("conntrack: dial: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return fmt.Errorf("conntrack: dump: %w", err)
	}
	for _, f := range flows {
		k, ok := a.KeyOf(tupleOf(f.TupleOrig), tupleOf(f.TupleReply))
		if !ok || (f.TupleOrig.Proto.Protocol == 6 && tcpEnded(f.ProtoInfo.TCP)) {
			continue
		}
		a.track(k)
		a.announced.Add(1)
		if err := a.memorizeSoon(ctx, k); err != nil {
			return err
		}
		if k2, ok := a.InboundOf(tupleOf(f.TupleOrig), tupleOf(f.TupleReply)); ok {
			a.track(k2)
			if err := a.memorizeSoon(ctx, k2); err != nil {
				return err
			}
		}
	}
	exps, err := c.DumpExpect()
	if err != nil {
		return fmt.Errorf("conntrack: dump expectations: %w", err)
	}
	for i := range exps {
		e := expectationOf(&exps[i])
		if r, ok := a.RelateOf(e); ok {
			a.announced.Add(1)
			if k, ok := a.InboundKeyOf(e); ok {
				if err := a.enqueue(ctx, a.memorize(k)); err != nil {
					return err
				}
			}
			if err := a.enqueue(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}
