package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/loadgen"
)

// progress renders the once-a-second block.
type progress struct {
	duration time.Duration
	prevAt   time.Duration
	prevPkts map[string]uint64
	prevReqs uint64
}

// render returns the block: a head line, the TMs (distributor counters
// summed over the distributors), then tiers (the router and distributors,
// fleet.tierLines).
func (g *progress) render(at time.Duration, rep loadgen.Report, st api.Stats, stErr error, tiers []string) []string {
	dt := (at - g.prevAt).Seconds()
	reqRate := 0.0
	if dt > 0 {
		reqRate = float64(rep.Requests-g.prevReqs) / dt
	}
	head := fmt.Sprintf("[%5.1fs/%v] %d requests (%.0f/s), %d tcp connections, errors %d, flows moved %d",
		at.Seconds(), g.duration, rep.Requests, reqRate, rep.Connections, rep.Errors, rep.FlowsMoved)
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
		// The weight is the distributor's (0: a TM it does not know).
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t\n", id, state, t.Weight, c.KeepAliveConns, c.ShortConns, c.Requests, t.Packets, rate, t.NewFlows)
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
	lines = append(lines, tiers...)
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

	// lat, if set, gets each HTTP request's time to the first byte of its
	// response.
	lat *latencies

	// keepAlive counts the keep-alive TCP connections opened (their first
	// request asks for keep-alive): beyond the load's keep-alive count,
	// each one replaces a connection that broke.
	keepAlive atomic.Uint64
	// winFrom and winTo (unix ns) are the failover window: from the kill
	// of a distributor to the router's route without it. udpWindowLost
	// counts UDP requests sent in it (give or take windowMargin) that got
	// no reply: datagrams the router sent to the dead distributor.
	winFrom, winTo atomic.Int64
	udpWindowLost  atomic.Uint64
	// loadDone reports that the load is ending (timeouts then are the
	// run's end, not losses).
	loadDone func() bool
}

// windowMargin widens the failover window for datagrams in flight.
const windowMargin = 50 * time.Millisecond

// inWindow reports whether t is in the failover window.
func (k *tupleTracker) inWindow(t time.Time) bool {
	from, to := k.winFrom.Load(), k.winTo.Load()
	if from == 0 || to == 0 {
		return false
	}
	ns := t.UnixNano()
	return ns >= from-int64(windowMargin) && ns <= to+int64(windowMargin)
}

// wrapPacket wraps the load generator's UDP sockets to count the requests
// lost in the failover window.
func (k *tupleTracker) wrapPacket(listen func(network, addr string) (net.PacketConn, error)) func(network, addr string) (net.PacketConn, error) {
	return func(network, addr string) (net.PacketConn, error) {
		pc, err := listen(network, addr)
		if err != nil {
			return pc, err
		}
		return &trackedPacketConn{PacketConn: pc, k: k}, nil
	}
}

// trackedPacketConn notes when each request went out, and counts a read
// timeout (no reply) for a request sent in the failover window.
type trackedPacketConn struct {
	net.PacketConn
	k    *tupleTracker
	sent time.Time
}

func (c *trackedPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.sent = time.Now()
	return c.PacketConn.WriteTo(p, addr)
}

func (c *trackedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(p)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && !c.sent.IsZero() && c.k.inWindow(c.sent) &&
		(c.k.loadDone == nil || !c.k.loadDone()) {
		c.k.udpWindowLost.Add(1)
		c.sent = time.Time{}
	}
	return n, a, err
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
	sent       time.Time // a request written, its response not read yet
	wrote      bool
}

var connClose = []byte("\r\nconnection: close\r\n")

// Write notes when a request goes out, for the latency timeline, and
// counts keep-alive connections by their first request.
func (c *trackedConn) Write(p []byte) (int, error) {
	if !c.wrote {
		c.wrote = true
		if !bytes.Contains(bytes.ToLower(p), connClose) {
			c.k.keepAlive.Add(1)
		}
	}
	if c.k.lat != nil && c.sent.IsZero() {
		c.sent = time.Now()
	}
	return c.Conn.Write(p)
}

var tmHeader = []byte("\nx-switchyard-tm:")

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.sent.IsZero() {
		c.k.lat.add(time.Since(c.sent))
		c.sent = time.Time{}
	}
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

// maxLatencySamples bounds the samples kept per interval; later ones in
// the same interval are counted but not kept.
const maxLatencySamples = 100_000

// latencies collects request latencies between takes.
type latencies struct {
	mu      sync.Mutex
	samples []time.Duration
	dropped int
}

func newLatencies() *latencies { return &latencies{} }

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) >= maxLatencySamples {
		l.dropped++
		return
	}
	l.samples = append(l.samples, d)
}

// take returns the p50 and p99 of the samples since the last take and how
// many there were, and starts a new interval.
func (l *latencies) take() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	s := l.samples
	n = len(s) + l.dropped
	l.samples, l.dropped = nil, 0
	l.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, n
	}
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return q(0.50), q(0.99), n
}

// tierLines are the live view's lines for the router and the distributors.
func (f *fleet) tierLines(per []distView) []string {
	var lines []string
	if f.router != nil {
		lines = append(lines, fmt.Sprintf("  router %s (%s) → %s", f.router.host().Name, f.router.kind(), orNone(f.router.via())))
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DISTRIBUTOR\tSTATE\tFLOWS\tFROM PEERS\tFILL\tNEW FLOWS/S\tPKT/S\tPEERS (state, lag)\t")
	for _, v := range per {
		switch {
		case !v.up:
			fmt.Fprintf(tw, "  %s\tdown\t-\t-\t-\t-\t-\t-\t\n", v.name)
		case v.err != nil:
			fmt.Fprintf(tw, "  %s\tno answer\t-\t-\t-\t-\t-\t%v\t\n", v.name, v.err)
		default:
			fmt.Fprintf(tw, "  %s\tup\t%d\t%d\t%s\t%.0f\t%.0f\t%s\t\n", v.name, v.stats.FlowEntries, v.stats.FlowsByOrigin["peer"], fill(v.stats.FlowEntries, v.stats.FlowCapacity),
				v.newPerSec, v.pktPerSec, peerSummary(v.stats.Peers))
		}
	}
	tw.Flush()
	return append(lines, strings.Split(strings.TrimRight(b.String(), "\n"), "\n")...)
}

// fill is entries as a share of capacity.
func fill(entries uint64, capacity uint32) string {
	if capacity == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(entries)/float64(capacity))
}

// peerSummary is "d2 synced lag 0, …" (peers by id when they have no name).
func peerSummary(ps []api.PeerStats) string {
	if len(ps) == 0 {
		return "none"
	}
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%d@%s %s lag %d", p.ID, p.Addr, p.State, p.Lag))
	}
	return strings.Join(s, ", ")
}
