// Package agent is the TM-host side of Switchyard: it learns which flows the
// host's TM software owns from the kernel's conntrack events and tells the
// distributor with signals (MEMORIZE, FORGET, RELATE), and it serves TM
// software a local API on a unix socket for the signals only the software
// can know (mirror, age, its own relates).
//
// The agent never looks at packets, but for the FTP hold (ftphold.go):
// with --ftp-port it holds the FTP control packets that make the kernel's
// helper create an expectation until their RELATE is sent. A conntrack entry whose original
// destination is a VIP is a client's flow the TM accepted (its key is the
// original tuple, client → VIP); an entry whose reply destination is a VIP
// or a shared SNAT address is a flow the TM opened (its key is the reply
// tuple, server → SNAT, which is how the server's packets arrive at the
// distributor). An entry that came to a shared SNAT address and that NAT
// mapped to a VIP (a server's active FTP data connection through a TM that
// NATs FTP, InboundOf) has both keys. Everything else on the host is
// ignored.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/signal"
)

// Sender sends one signal message to the distributor: a
// *signal.FrameSender, a *signal.UDPSender, or anything that delivers the
// same bytes.
type Sender interface {
	Send(m signal.Message) error
}

// Limits of the agent's own state.
const (
	// DefaultMaxFlows bounds the set of flows the agent tracks as owned
	// (for the active-flow count and to FORGET only what it memorized).
	DefaultMaxFlows = 1 << 20
	// queueLen is the number of ops waiting for the sender. A full queue
	// blocks the conntrack reader; the kernel then drops events
	// (ENOBUFS) and the agent resynchronises from a dump.
	queueLen = 4096
)

// Config is what the agent needs to know about its host.
type Config struct {
	// VIPs are the service addresses (prefixes) the TM accepts flows on.
	VIPs []netip.Prefix
	// SNAT are the shared source addresses the TM opens server-side
	// connections from.
	SNAT []netip.Prefix
	// Timeout is the idle timeout sent with every MEMORIZE (0: the
	// distributor's default for the protocol).
	Timeout time.Duration
	// Mirror sets the MIRROR flag on every MEMORIZE.
	Mirror bool
	// MaxFlows bounds the tracked flows; 0 means DefaultMaxFlows. Flows
	// beyond it are still memorized but not tracked (counted in
	// Stats.Untracked), so their FORGET is still sent.
	MaxFlows int
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
	// Pending, if set, carries MEMORIZEs in-band (a *Shim): the flow's
	// next packet to the distributor takes it; if none did within
	// Deadline, the agent sends it in a frame (or over UDP). FORGET and
	// RELATE always go at once: a RELATE must be there before the
	// related connection, which may come before any packet of its parent.
	Pending Pending
	// Deadline is how long a MEMORIZE waits for a packet of its flow; 0
	// means DefaultDeadline.
	Deadline time.Duration
}

// Pending is where the agent leaves in-band signals (*Shim implements it).
type Pending interface {
	// Put makes m the pending signal of flow k.
	Put(k signal.Key, m signal.Message) error
	// Take removes it and reports whether no packet carried it.
	Take(k signal.Key) bool
}

// DefaultDeadline is how long a MEMORIZE waits for its flow's next packet
// before it goes in a frame of its own.
const DefaultDeadline = 50 * time.Millisecond

// Stats are the agent's counters and load figures.
type Stats struct {
	// Ready: the first announcement is done and events are followed.
	Ready bool `json:"ready"`
	// Active is the number of owned flows tracked now.
	Active int `json:"active_flows"`
	// NewPerSec is the number of new owned flows in the last second.
	NewPerSec uint64 `json:"new_flows_per_sec"`
	// CPU is the host's CPU busy fraction (0..1) over the last second.
	CPU float64 `json:"cpu"`
	// AgentCPU is the agent process's CPU use (0..1 of one core) over the
	// last second.
	AgentCPU float64 `json:"agent_cpu"`

	New        uint64 `json:"new_flows"`
	Ended      uint64 `json:"ended_flows"`
	Relates    uint64 `json:"relates"`
	Untracked  uint64 `json:"untracked"`
	Ignored    uint64 `json:"ignored_events"`
	Ops        uint64 `json:"ops_sent"`
	Messages   uint64 `json:"messages_sent"`
	SendErrors uint64 `json:"send_errors"`
	Resyncs    uint64 `json:"resyncs"`
	Announced  uint64 `json:"announced"`
	APIOps     uint64 `json:"api_ops"`
	APIErrors  uint64 `json:"api_errors"`
	// InBand counts MEMORIZEs left for the in-band program; InBandLate
	// those no packet took within the deadline (sent as frames);
	// InBandFull those sent as frames at once for want of room.
	InBand     uint64 `json:"inband"`
	InBandLate uint64 `json:"inband_late"`
	InBandFull uint64 `json:"inband_full"`
	// Shim is the in-band program's own counters (nil without it).
	Shim *ShimCounters `json:"shim,omitempty"`
	// FTPHold is the FTP hold's counters (HoldFTP).
	FTPHold FTPHoldStats `json:"ftp_hold"`
}

// Agent turns flow events into signals. Create it with New, feed it with
// Run (conntrack) or the Flow* methods, and serve its API with Serve.
type Agent struct {
	cfg    Config
	sender Sender
	log    *slog.Logger
	queue  chan signal.Op

	mu    sync.Mutex
	owned map[signal.Key]struct{}
	load  loadMeter

	ready     chan struct{}
	readyOnce sync.Once
	deadlines chan deadline

	newFlows, ended, relates, untracked, ignored atomic.Uint64
	ops, msgs, sendErrs, resyncs, announced      atomic.Uint64
	apiOps, apiErrs                              atomic.Uint64
	shimPut, shimLate, shimFull                  atomic.Uint64
	// The FTP hold's counters (ftphold.go).
	holdHeld, holdRelated, holdDeadline, holdPassed atomic.Uint64
	holdSends                                       chan struct{}
}

// New makes an agent that sends through s.
func New(cfg Config, s Sender) (*Agent, error) {
	if len(cfg.VIPs) == 0 && len(cfg.SNAT) == 0 {
		return nil, errors.New("agent: no VIPs and no SNAT addresses: nothing would be owned")
	}
	if cfg.Timeout < 0 || cfg.Timeout > signal.MaxMemorizeTimeout {
		return nil, fmt.Errorf("agent: timeout %v out of 0..%v", cfg.Timeout, signal.MaxMemorizeTimeout)
	}
	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.MaxFlows < 0 {
		return nil, fmt.Errorf("agent: max flows %d is negative", cfg.MaxFlows)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	return &Agent{
		cfg:    cfg,
		sender: s,
		log:    cfg.Logger,
		queue:  make(chan signal.Op, queueLen),
		owned:  map[signal.Key]struct{}{},
		ready:  make(chan struct{}),
		// The FTP hold's sends in flight.
		holdSends: make(chan struct{}, ftpHoldSends),
		// One slot per entry of the program's pending table.
		deadlines: make(chan deadline, int(shimSyAgentConstsSY_AGENT_MAX_PENDING)),
	}, nil
}

// isLocal reports whether a is one of the TM's service or SNAT addresses.
func (a *Agent) isVIP(addr netip.Addr) bool { return in(a.cfg.VIPs, addr) }
func (a *Agent) isLocal(addr netip.Addr) bool {
	return in(a.cfg.VIPs, addr) || in(a.cfg.SNAT, addr)
}

func in(ps []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Tuple is one direction of a connection as conntrack reports it.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

func (t Tuple) key() signal.Key {
	return signal.Key{Src: t.Src.Unmap(), Dst: t.Dst.Unmap(), SrcPort: t.SrcPort, DstPort: t.DstPort, Proto: t.Proto}
}

func (t Tuple) reverse() Tuple {
	return Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort, Proto: t.Proto}
}

// KeyOf returns the distributor's key for a connection the TM owns, given
// its conntrack original and reply tuples, and false for connections that
// are not the TM's business (not TCP or UDP, or neither to a VIP nor back
// to a VIP or SNAT address).
func (a *Agent) KeyOf(orig, reply Tuple) (signal.Key, bool) {
	if orig.Proto != 6 && orig.Proto != 17 {
		return signal.Key{}, false
	}
	if a.isVIP(orig.Dst) {
		return orig.key(), true
	}
	if a.isLocal(reply.Dst) {
		return reply.key(), true
	}
	return signal.Key{}, false
}

// InboundOf returns the second key of a connection that arrives at the
// distributor from both sides: one that came to an SNAT address and that
// the TM mapped to a VIP (a server's active FTP data connection through a
// TM that NATs FTP): its original tuple (server → SNAT address), KeyOf
// giving its reply tuple (client → VIP).
func (a *Agent) InboundOf(orig, reply Tuple) (signal.Key, bool) {
	if (orig.Proto != 6 && orig.Proto != 17) || a.isVIP(orig.Dst) || !in(a.cfg.SNAT, orig.Dst) || !a.isVIP(reply.Dst) {
		return signal.Key{}, false
	}
	return orig.key(), true
}

// FlowNew is a new connection: the agent memorizes it if it is the TM's.
func (a *Agent) FlowNew(ctx context.Context, orig, reply Tuple) error {
	k, ok := a.KeyOf(orig, reply)
	if !ok {
		a.ignored.Add(1)
		return nil
	}
	a.newFlows.Add(1)
	a.track(k)
	if k2, ok := a.InboundOf(orig, reply); ok {
		a.track(k2)
		if err := a.memorizeSoon(ctx, k2); err != nil {
			return err
		}
	}
	return a.memorizeSoon(ctx, k)
}

// deadline is a MEMORIZE left for the in-band program, to be sent as a
// frame at due if no packet took it.
type deadline struct {
	k   signal.Key
	due time.Time
}

// memorizeSoon leaves the MEMORIZE of k for the flow's next packet, or
// queues it for a frame when there is no in-band program or no room.
func (a *Agent) memorizeSoon(ctx context.Context, k signal.Key) error {
	if a.cfg.Pending == nil {
		return a.enqueue(ctx, a.memorize(k))
	}
	if err := a.cfg.Pending.Put(k, signal.Message{Ops: []signal.Op{a.memorize(k)}}); err != nil {
		a.shimFull.Add(1)
		return a.enqueue(ctx, a.memorize(k))
	}
	select {
	case a.deadlines <- deadline{k: k, due: time.Now().Add(a.cfg.Deadline)}:
		a.shimPut.Add(1)
		return nil
	default:
		// More waiting than the table holds: do not wait for this one.
		a.cfg.Pending.Take(k)
		a.shimFull.Add(1)
		return a.enqueue(ctx, a.memorize(k))
	}
}

// Deadlines sends, as frames, the pending MEMORIZEs no packet carried
// within the deadline, until ctx ends. Deadlines are all the same length,
// so the channel is in due order.
func (a *Agent) Deadlines(ctx context.Context) {
	if a.cfg.Pending == nil {
		return
	}
	for {
		var d deadline
		select {
		case d = <-a.deadlines:
		case <-ctx.Done():
			return
		}
		if w := time.Until(d.due); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
				return
			}
		}
		if a.cfg.Pending.Take(d.k) {
			a.shimLate.Add(1)
			if err := a.enqueue(ctx, a.memorize(d.k)); err != nil {
				return
			}
		}
	}
}

// track adds k to the owned set, within MaxFlows.
func (a *Agent) track(k signal.Key) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, seen := a.owned[k]; seen {
		return
	}
	if len(a.owned) >= a.cfg.MaxFlows {
		a.untracked.Add(1)
		return
	}
	a.owned[k] = struct{}{}
}

func (a *Agent) memorize(k signal.Key) signal.Op {
	return signal.Memorize{Key: k, Mirror: a.cfg.Mirror, Timeout: a.cfg.Timeout}
}

// FlowEnd is a connection that ended (its conntrack entry was destroyed,
// or a TCP connection reached TIME_WAIT or CLOSE): the agent forgets it,
// once. A flow it never saw start is forgotten only when the tracked set is
// full (it may be one the agent could not track).
func (a *Agent) FlowEnd(ctx context.Context, orig, reply Tuple) error {
	k, ok := a.KeyOf(orig, reply)
	if !ok {
		a.ignored.Add(1)
		return nil
	}
	keys := []signal.Key{k}
	if k2, ok := a.InboundOf(orig, reply); ok {
		keys = append(keys, k2)
	}
	ended := false
	for _, k := range keys {
		a.mu.Lock()
		_, owned := a.owned[k]
		full := len(a.owned) >= a.cfg.MaxFlows
		delete(a.owned, k)
		a.mu.Unlock()
		if !owned && !full {
			continue
		}
		ended = true
		// A MEMORIZE still waiting for a packet must not outlive the flow:
		// sent after the FORGET, it would pin a dead key. (If the deadline
		// worker took it first, it is queued ahead of this FORGET.)
		if a.cfg.Pending != nil {
			a.cfg.Pending.Take(k)
		}
		if err := a.enqueue(ctx, signal.Forget{Key: k}); err != nil {
			return err
		}
	}
	if ended {
		a.ended.Add(1)
	}
	return nil
}

// Expectation is a related connection the kernel expects (a conntrack
// helper's expectation, e.g. an FTP data connection): Master is the
// original tuple of the connection that announced it, Tuple the expected
// connection's original tuple and Mask the fields of Tuple that must match
// (a zero address or port is a wildcard).
type Expectation struct {
	Master, Tuple, Mask Tuple
	Timeout             time.Duration
	// NATAddr and NATPort are, when the TM NATs the master (nf_nat_ftp),
	// where the expected connection is mapped to (the kernel's saved
	// address and port): for an active FTP data connection to the SNAT
	// address, the port of the client's PORT command (nf_nat_ftp saves
	// no address: the connection goes to the master's peer). Zero
	// without NAT.
	NATAddr netip.Addr
	NATPort uint16
	// Helper is the kernel helper that made the expectation ("ftp").
	Helper string
}

// RelateOf returns the RELATE for an expectation, or false if its master
// is not the TM's. An expected connection towards a VIP (passive FTP) is
// related as is; one the TM side opens (active FTP) is related as the
// distributor sees its replies: from the peer to the master's local
// address.
func (a *Agent) RelateOf(e Expectation) (signal.Relate, bool) {
	parent, ok := a.KeyOf(e.Master, e.Master.reverse())
	if !ok || (e.Tuple.Proto != 6 && e.Tuple.Proto != 17) {
		return signal.Relate{}, false
	}
	r := signal.Relate{Parent: parent}
	mask := signal.FieldProto
	if a.isVIP(e.Tuple.Dst) {
		r.Second = e.Tuple.key()
		if maskAddr(e.Mask.Src) {
			mask |= signal.FieldSrc
		}
		if maskAddr(e.Mask.Dst) {
			mask |= signal.FieldDst
		}
		if e.Mask.SrcPort != 0 {
			mask |= signal.FieldSrcPort
		}
		if e.Mask.DstPort != 0 {
			mask |= signal.FieldDstPort
		}
	} else {
		// The TM side opens it; the peer's answers come to the local
		// address of the parent (where NAT maps the TM's side).
		peer, port := e.Tuple.Dst.Unmap(), e.Tuple.DstPort
		if e.NATPort != 0 {
			// The TM NATs it (a server's active FTP data connection to
			// the SNAT address): the peer is where NAT maps it, the
			// client of the PORT command. nf_nat_ftp saves only the
			// port; the kernel then maps the address to the master's
			// peer (nf_nat_follow_master).
			peer, port = e.Master.Src.Unmap(), e.NATPort
			if e.NATAddr.IsValid() && !e.NATAddr.IsUnspecified() {
				peer = e.NATAddr.Unmap()
			}
		}
		r.Second = signal.Key{Src: peer, SrcPort: port, Dst: parent.Dst, Proto: e.Tuple.Proto}
		mask |= signal.FieldDst
		if maskAddr(e.Mask.Dst) {
			mask |= signal.FieldSrc
		}
		if e.Mask.DstPort != 0 {
			mask |= signal.FieldSrcPort
		}
	}
	r.Mask = mask
	// Zero what the mask does not keep, as the format asks.
	if mask&signal.FieldSrc == 0 {
		r.Second.Src = unspecified(r.Second.Dst)
	}
	if mask&signal.FieldSrcPort == 0 {
		r.Second.SrcPort = 0
	}
	if mask&signal.FieldDstPort == 0 {
		r.Second.DstPort = 0
	}
	r.Timeout = min(e.Timeout, signal.MaxMemorizeTimeout)
	return r, true
}

func maskAddr(a netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() }

func unspecified(like netip.Addr) netip.Addr {
	if like.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// InboundKeyOf returns, for an expectation of the FTP helper whose
// expected connection comes to a shared SNAT address (a server's active
// data connection through a TM that NATs FTP to the server, nf_nat_ftp),
// the key of that connection as it arrives at the distributor, so the
// agent can MEMORIZE it before the server connects: the distributor
// balances nothing to an SNAT address, so without an entry the server's
// SYN reaches no TM. The server's source port is not in the expectation
// (any port); it is taken as the master's port minus one, where an FTP
// server opens active data connections from (RFC 959 3.2; vsftpd
// connect_from_port_20): the TM must forward the control port unchanged
// (VIP:21 to server:21).
func (a *Agent) InboundKeyOf(e Expectation) (signal.Key, bool) {
	if e.Helper != "ftp" || e.Tuple.Proto != 6 || a.isVIP(e.Tuple.Dst) || !in(a.cfg.SNAT, e.Tuple.Dst) ||
		e.Mask.SrcPort != 0 || e.Master.DstPort < 2 {
		return signal.Key{}, false
	}
	if _, ok := a.KeyOf(e.Master, e.Master.reverse()); !ok {
		return signal.Key{}, false
	}
	return signal.Key{Src: e.Tuple.Src.Unmap(), SrcPort: e.Master.DstPort - 1, Dst: e.Tuple.Dst.Unmap(), DstPort: e.Tuple.DstPort, Proto: 6}, true
}

// Expect is a new expectation: the agent relates it to its master's TM
// (and memorizes an inbound data connection's key, InboundKeyOf).
func (a *Agent) Expect(ctx context.Context, e Expectation) error {
	r, ok := a.RelateOf(e)
	if !ok {
		a.ignored.Add(1)
		return nil
	}
	a.relates.Add(1)
	if k, ok := a.InboundKeyOf(e); ok {
		// A frame at once, before the RELATE: the server may connect as
		// soon as the PORT command reaches it.
		if err := a.enqueue(ctx, a.memorize(k)); err != nil {
			return err
		}
	}
	return a.enqueue(ctx, r)
}

func (a *Agent) enqueue(ctx context.Context, op signal.Op) error {
	select {
	case a.queue <- op:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Send runs the sender loop until ctx ends: it takes the queued ops and
// sends them in messages of up to signal.MaxOps, so a burst of events costs
// one frame per eight ops and a lone event is sent at once.
func (a *Agent) Send(ctx context.Context) {
	ops := make([]signal.Op, 0, signal.MaxOps)
	for {
		select {
		case op := <-a.queue:
			ops = append(ops[:0], op)
		case <-ctx.Done():
			return
		}
	fill:
		for len(ops) < signal.MaxOps {
			select {
			case op := <-a.queue:
				ops = append(ops, op)
			default:
				break fill
			}
		}
		if err := a.sendOps(ops); err != nil {
			a.log.Warn("agent: signal not sent", "ops", len(ops), "err", err)
		}
	}
}

// sendOps sends ops in as few messages as the format allows.
func (a *Agent) sendOps(ops []signal.Op) error {
	var errs []error
	for len(ops) > 0 {
		n := min(len(ops), signal.MaxOps)
		if err := a.sender.Send(signal.Message{Ops: ops[:n]}); err != nil {
			a.sendErrs.Add(1)
			errs = append(errs, err)
		} else {
			a.msgs.Add(1)
			a.ops.Add(uint64(n))
		}
		ops = ops[n:]
	}
	return errors.Join(errs...)
}

// Stats returns the counters and the last second's load.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	active := len(a.owned)
	l := a.load.last
	a.mu.Unlock()
	ready := false
	select {
	case <-a.ready:
		ready = true
	default:
	}
	var sc *ShimCounters
	if p, ok := a.cfg.Pending.(interface {
		Counters() (ShimCounters, error)
	}); ok {
		if c, err := p.Counters(); err == nil {
			sc = &c
		}
	}
	return Stats{
		Shim:  sc,
		Ready: ready, Active: active, NewPerSec: l.newPerSec, CPU: l.cpu, AgentCPU: l.agentCPU,
		New: a.newFlows.Load(), Ended: a.ended.Load(), Relates: a.relates.Load(),
		Untracked: a.untracked.Load(), Ignored: a.ignored.Load(),
		Ops: a.ops.Load(), Messages: a.msgs.Load(), SendErrors: a.sendErrs.Load(),
		Resyncs: a.resyncs.Load(), Announced: a.announced.Load(),
		APIOps: a.apiOps.Load(), APIErrors: a.apiErrs.Load(),
		InBand: a.shimPut.Load(), InBandLate: a.shimLate.Load(), InBandFull: a.shimFull.Load(),
		FTPHold: FTPHoldStats{Held: a.holdHeld.Load(), Related: a.holdRelated.Load(),
			Deadline: a.holdDeadline.Load(), Passed: a.holdPassed.Load()},
	}
}
