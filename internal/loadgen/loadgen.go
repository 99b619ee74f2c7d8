// Package loadgen generates real client load against a Switchyard service and
// gives its verdicts: which TM answered how many requests, and whether any
// connection or UDP flow ever moved from one TM to another.
//
// Three kinds of workers run concurrently:
//
//   - keep-alive workers: one TCP connection each, for its whole life, with
//     hand-written HTTP/1.1 requests in a loop. The TM id of the first response
//     is the connection's TM; a later response with another id counts as a
//     moved flow.
//   - short workers: one HTTP request per new TCP connection.
//   - UDP flows: one socket with a fixed local port each, doing request and
//     response in a loop; the TM id in the first reply is the flow's TM.
//
// Sockets are made with Options.Dial and Options.ListenPacket, so that the lab
// can create them inside a client namespace (see NSDialer).
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Target says where to send load. A zero address means none of that kind.
type Target struct {
	// HTTP is the address of the HTTP service (keep-alive and short workers).
	HTTP netip.AddrPort
	// UDP is the address of the UDP echo (UDP flows).
	UDP netip.AddrPort
}

// Options say how much load to generate and how.
type Options struct {
	// KeepAlive is the number of concurrent keep-alive HTTP connections, each
	// sending requests in a loop.
	KeepAlive int
	// Short is the number of concurrent workers doing one HTTP request per new
	// TCP connection.
	Short int
	// UDPFlows is the number of concurrent UDP flows: a socket with a fixed
	// source port doing request/response.
	UDPFlows int
	// Interval is the pause between requests within one worker (0: as fast as
	// possible).
	Interval time.Duration
	// Timeout bounds each request (and each TCP connect); 0 means 2s.
	Timeout time.Duration
	// Path is the HTTP request target; "" means "/". "/bytes?n=N" of the
	// reference TM makes throughput load.
	Path string
	// Dial opens TCP connections; nil means a net.Dialer. The lab passes one
	// that creates the sockets inside the client namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket opens UDP sockets; nil means net.ListenPacket.
	ListenPacket func(network, addr string) (net.PacketConn, error)
}

// Counts are the results attributed to one TM.
type Counts struct {
	// Requests answered by the TM (HTTP and UDP).
	Requests uint64
	// KeepAliveConns is the number of keep-alive connections whose first
	// response came from the TM.
	KeepAliveConns uint64
	// ShortConns is the number of short connections the TM answered.
	ShortConns uint64
	// UDPFlows is the number of UDP flows whose first reply came from the TM.
	UDPFlows uint64
}

// Latency summarizes request latencies (from sending a request to having read
// its whole response; TCP connect excluded). Quantiles are upper bounds of
// histogram buckets, within about 10%.
type Latency struct {
	P50, P90, P99, Max time.Duration
}

// Report is the verdict of a run so far.
type Report struct {
	// PerTM are the counts by the TM id seen in responses.
	PerTM map[string]Counts
	// Requests is the number of successful request/response exchanges (HTTP
	// and UDP); HTTPRequests and UDPRequests split it.
	Requests, HTTPRequests, UDPRequests uint64
	// Errors counts failed requests and connects, unexpected connection
	// closes, and responses that are not 2xx or carry no TM id. Requests
	// cancelled by the end of the run are not errors.
	Errors uint64
	// ErrorSamples are the first few error messages.
	ErrorSamples []string
	// FlowsMoved is the number of keep-alive connections or UDP flows that saw
	// more than one TM id during their life (must be 0).
	FlowsMoved uint64
	// MoveSamples describe the first few moves.
	MoveSamples []string
	// Connections is the number of TCP connections opened.
	Connections uint64
	// Bytes is the number of HTTP body and UDP reply bytes received.
	Bytes uint64
	// Latency of successful requests.
	Latency Latency
	// Elapsed is the time since Start (until the last worker ended, for Wait).
	Elapsed time.Duration
}

// maxSamples bounds ErrorSamples and MoveSamples.
const maxSamples = 10

// errPause is how long a worker pauses after an error.
const errPause = 50 * time.Millisecond

// Run is a load generation in progress.
type Run struct {
	t     Target
	o     Options
	ctx   context.Context
	start time.Time
	wg    sync.WaitGroup
	done  chan struct{}
	end   time.Time // set before done is closed

	mu       sync.RWMutex
	perTM    map[string]*tmCounts
	samples  []string
	moves    []string
	nErrors  atomic.Uint64
	nMoved   atomic.Uint64
	nConns   atomic.Uint64
	nHTTP    atomic.Uint64
	nUDP     atomic.Uint64
	nBytes   atomic.Uint64
	latency  histogram
	maxLatNS atomic.Int64
}

type tmCounts struct {
	requests, keepAlive, short, udpFlows atomic.Uint64
}

// Start starts the workers that Options ask for and returns at once. Load runs
// until ctx is done; Wait returns the final report.
func Start(ctx context.Context, t Target, o Options) *Run {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Path == "" {
		o.Path = "/"
	}
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	if o.ListenPacket == nil {
		o.ListenPacket = net.ListenPacket
	}
	r := &Run{t: t, o: o, ctx: ctx, start: time.Now(), done: make(chan struct{}), perTM: map[string]*tmCounts{}}
	if t.HTTP.IsValid() {
		for i := 0; i < o.KeepAlive; i++ {
			r.spawn(r.keepAliveWorker)
		}
		for i := 0; i < o.Short; i++ {
			r.spawn(r.shortWorker)
		}
	}
	if t.UDP.IsValid() {
		for i := 0; i < o.UDPFlows; i++ {
			r.spawn(func() { r.udpWorker(i) })
		}
	}
	go func() {
		r.wg.Wait()
		r.end = time.Now()
		close(r.done)
	}()
	return r
}

func (r *Run) spawn(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// Wait waits until every worker has ended (after ctx is done) and returns the
// final report.
func (r *Run) Wait() Report {
	<-r.done
	return r.Snapshot()
}

// Snapshot returns the report so far; it is safe to call while the run goes on.
func (r *Run) Snapshot() Report {
	rep := Report{
		PerTM:        map[string]Counts{},
		HTTPRequests: r.nHTTP.Load(),
		UDPRequests:  r.nUDP.Load(),
		Errors:       r.nErrors.Load(),
		FlowsMoved:   r.nMoved.Load(),
		Connections:  r.nConns.Load(),
		Bytes:        r.nBytes.Load(),
		Latency:      r.latency.summary(),
	}
	rep.Latency.Max = time.Duration(r.maxLatNS.Load())
	rep.Requests = rep.HTTPRequests + rep.UDPRequests
	r.mu.RLock()
	for id, c := range r.perTM {
		rep.PerTM[id] = Counts{
			Requests:       c.requests.Load(),
			KeepAliveConns: c.keepAlive.Load(),
			ShortConns:     c.short.Load(),
			UDPFlows:       c.udpFlows.Load(),
		}
	}
	rep.ErrorSamples = append([]string(nil), r.samples...)
	rep.MoveSamples = append([]string(nil), r.moves...)
	r.mu.RUnlock()
	select {
	case <-r.done:
		rep.Elapsed = r.end.Sub(r.start)
	default:
		rep.Elapsed = time.Since(r.start)
	}
	return rep
}

// String formats a report on a few lines, TMs sorted by id.
func (rep Report) String() string {
	var b strings.Builder
	secs := rep.Elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(rep.Requests) / secs
	}
	fmt.Fprintf(&b, "%d requests (%d http, %d udp) in %.1fs, %.0f/s; %d errors; %d flows moved; %d tcp connections; latency p50 %v p99 %v max %v\n",
		rep.Requests, rep.HTTPRequests, rep.UDPRequests, secs, rate, rep.Errors, rep.FlowsMoved, rep.Connections,
		rep.Latency.P50, rep.Latency.P99, rep.Latency.Max)
	ids := make([]string, 0, len(rep.PerTM))
	for id := range rep.PerTM {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := rep.PerTM[id]
		fmt.Fprintf(&b, "  %s: %d requests, %d keep-alive conns, %d short conns, %d udp flows\n",
			id, c.Requests, c.KeepAliveConns, c.ShortConns, c.UDPFlows)
	}
	for _, s := range rep.ErrorSamples {
		fmt.Fprintf(&b, "  error: %s\n", s)
	}
	for _, s := range rep.MoveSamples {
		fmt.Fprintf(&b, "  moved: %s\n", s)
	}
	return b.String()
}

func (r *Run) tm(id string) *tmCounts {
	r.mu.RLock()
	c := r.perTM[id]
	r.mu.RUnlock()
	if c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c = r.perTM[id]; c == nil {
		c = &tmCounts{}
		r.perTM[id] = c
	}
	return c
}

func (r *Run) errorf(format string, a ...any) { r.note(&r.nErrors, &r.samples, format, a...) }

func (r *Run) moved(format string, a ...any) { r.note(&r.nMoved, &r.moves, format, a...) }

// note counts an event and keeps its message while there are few.
func (r *Run) note(n *atomic.Uint64, samples *[]string, format string, a ...any) {
	n.Add(1)
	r.mu.Lock()
	if len(*samples) < maxSamples {
		*samples = append(*samples, fmt.Sprintf(format, a...))
	}
	r.mu.Unlock()
}

func (r *Run) observe(d time.Duration) {
	r.latency.add(d)
	for {
		m := r.maxLatNS.Load()
		if int64(d) <= m || r.maxLatNS.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// sleep pauses for d or until the run's context is done, and reports whether
// the run goes on.
func (r *Run) sleep(d time.Duration) bool {
	if d <= 0 {
		return r.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// stopped reports whether the run has ended, so that a failure seen now is
// due to the end of the run rather than a fault. The deadline is checked as
// well as Err: a dial bounded by the run's deadline can time out a moment
// before the context reports it is done.
func (r *Run) stopped() bool {
	if r.ctx.Err() != nil {
		return true
	}
	d, ok := r.ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// dial opens a TCP connection to the HTTP target within the timeout and
// counts it.
func (r *Run) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	c, err := r.o.Dial(ctx, "tcp", r.t.HTTP.String())
	if err != nil {
		return nil, err
	}
	r.nConns.Add(1)
	return c, nil
}

// interrupt makes blocked I/O on c return at once when the run's context is
// done; call the returned stop function before closing c.
func (r *Run) interrupt(c interface{ SetDeadline(time.Time) error }) (stop func() bool) {
	return context.AfterFunc(r.ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
}

// deadline sets the per-request deadline on c and reports whether the run goes
// on. It checks the context after setting the deadline, so that a deadline set
// by interrupt is never overwritten unnoticed.
func (r *Run) deadline(c interface{ SetDeadline(time.Time) error }) bool {
	_ = c.SetDeadline(time.Now().Add(r.o.Timeout))
	return r.ctx.Err() == nil
}

func (r *Run) request(close bool) []byte {
	host := r.t.HTTP.String()
	conn := "keep-alive"
	if close {
		conn = "close"
	}
	return []byte("GET " + r.o.Path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: switchyard-loadgen\r\nConnection: " + conn + "\r\n\r\n")
}

// exchange sends one request on c and reads its response.
func (r *Run) exchange(c net.Conn, br *bufio.Reader, req []byte) (*response, time.Duration, error) {
	t0 := time.Now()
	if _, err := c.Write(req); err != nil {
		return nil, 0, err
	}
	resp, err := readResponse(br, "GET")
	if err != nil {
		if err == io.EOF {
			err = errors.New("connection closed by server before response")
		}
		return nil, 0, err
	}
	return resp, time.Since(t0), nil
}

// accept checks a response and counts it; it returns the TM id, or "" after
// counting an error.
func (r *Run) accept(what string, resp *response, lat time.Duration) string {
	if resp.Status < 200 || resp.Status > 299 {
		r.errorf("%s: status %d from %q", what, resp.Status, resp.TM)
		return ""
	}
	if resp.TM == "" {
		r.errorf("%s: response without a TM id", what)
		return ""
	}
	r.nHTTP.Add(1)
	r.nBytes.Add(uint64(resp.BodyLen))
	r.observe(lat)
	return resp.TM
}

func (r *Run) keepAliveWorker() {
	req := r.request(false)
	for !r.stopped() {
		c, err := r.dial()
		if err != nil {
			if r.stopped() {
				return
			}
			r.errorf("keep-alive connect: %v", err)
			r.sleep(errPause)
			continue
		}
		if !r.keepAliveConn(c, req) {
			return
		}
	}
}

// keepAliveConn runs requests on one connection until it fails or the run
// ends; it reports whether the run goes on.
func (r *Run) keepAliveConn(c net.Conn, req []byte) bool {
	stop := r.interrupt(c)
	defer func() {
		stop()
		c.Close()
	}()
	name := c.LocalAddr().String()
	br := bufio.NewReaderSize(c, 16<<10)
	var first string
	var counts *tmCounts
	for {
		if !r.deadline(c) {
			return false
		}
		resp, lat, err := r.exchange(c, br, req)
		if err != nil {
			if r.stopped() {
				return false
			}
			r.errorf("keep-alive %s: %v", name, err)
			return r.sleep(errPause)
		}
		id := r.accept("keep-alive "+name, resp, lat)
		if id != "" {
			switch {
			case first == "":
				first = id
				counts = r.tm(id)
				counts.keepAlive.Add(1)
			case id != first:
				r.moved("keep-alive connection %s: %s then %s", name, first, id)
				first = id // count each later move of this connection once more
				counts = r.tm(id)
			}
			counts.requests.Add(1)
		}
		if resp.Close {
			// The connection ends here: a keep-alive connection must not.
			r.errorf("keep-alive %s: server closed the connection", name)
			return r.sleep(errPause)
		}
		if id == "" && !r.sleep(errPause) {
			return false
		}
		if !r.sleep(r.o.Interval) {
			return false
		}
	}
}

func (r *Run) shortWorker() {
	req := r.request(true)
	buf := make([]byte, 512)
	for !r.stopped() {
		ok := r.shortConn(req, buf)
		if r.stopped() {
			return
		}
		if !ok {
			r.sleep(errPause)
			continue
		}
		r.sleep(r.o.Interval)
	}
}

// shortConn does one request on a new connection and reports success.
func (r *Run) shortConn(req, buf []byte) bool {
	c, err := r.dial()
	if err != nil {
		if !r.stopped() {
			r.errorf("short connect: %v", err)
		}
		return false
	}
	stop := r.interrupt(c)
	defer func() {
		stop()
		c.Close()
	}()
	if !r.deadline(c) {
		return false
	}
	br := bufio.NewReaderSize(c, 4<<10)
	resp, lat, err := r.exchange(c, br, req)
	if err != nil {
		if !r.stopped() {
			r.errorf("short %s: %v", c.LocalAddr(), err)
		}
		return false
	}
	id := r.accept("short "+c.LocalAddr().String(), resp, lat)
	if id == "" {
		return false
	}
	cnt := r.tm(id)
	cnt.requests.Add(1)
	cnt.short.Add(1)
	// Let the server close first, so that TIME_WAIT stays on its side and
	// the client does not run out of ports: wait (briefly) for its FIN.
	_ = c.SetReadDeadline(time.Now().Add(min(r.o.Timeout, 200*time.Millisecond)))
	for {
		if _, err := br.Read(buf); err != nil {
			break
		}
	}
	return true
}

func (r *Run) udpWorker(flow int) {
	network := "udp4"
	laddr := "0.0.0.0:0"
	if !r.t.UDP.Addr().Unmap().Is4() {
		network, laddr = "udp6", "[::]:0"
	}
	target := net.UDPAddrFromAddrPort(r.t.UDP)
	want := netip.AddrPortFrom(r.t.UDP.Addr().Unmap(), r.t.UDP.Port())
	buf := make([]byte, 2048)
	for !r.stopped() {
		pc, err := r.o.ListenPacket(network, laddr)
		if err != nil {
			if r.stopped() {
				return
			}
			r.errorf("udp flow %d: socket: %v", flow, err)
			r.sleep(errPause)
			continue
		}
		if !r.udpFlow(flow, pc, target, want, buf) {
			return
		}
	}
}

// udpFlow runs request/response on one socket until a socket error or the end
// of the run; it reports whether the run goes on. Lost or late replies are
// errors but keep the flow (and its source port).
func (r *Run) udpFlow(flow int, pc net.PacketConn, target *net.UDPAddr, want netip.AddrPort, buf []byte) bool {
	stop := r.interrupt(pc)
	defer func() {
		stop()
		pc.Close()
	}()
	name := fmt.Sprintf("udp flow %d (%s)", flow, pc.LocalAddr())
	var first string
	var counts *tmCounts
	for seq := uint64(1); ; seq++ {
		if !r.deadline(pc) {
			return false
		}
		payload := "flow " + strconv.Itoa(flow) + " seq " + strconv.FormatUint(seq, 10)
		t0 := time.Now()
		if _, err := pc.WriteTo([]byte(payload), target); err != nil {
			if r.stopped() {
				return false
			}
			r.errorf("%s: send: %v", name, err)
			return r.sleep(errPause)
		}
		id, n, err := r.udpReply(pc, want, payload, buf)
		if err != nil {
			if r.stopped() {
				return false
			}
			r.errorf("%s: %v", name, err)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errBadReply) {
				// Keep the flow: a lost datagram does not change its port.
				if !r.sleep(errPause) {
					return false
				}
				continue
			}
			return r.sleep(errPause)
		}
		r.nUDP.Add(1)
		r.nBytes.Add(uint64(n))
		r.observe(time.Since(t0))
		switch {
		case first == "":
			first = id
			counts = r.tm(id)
			counts.udpFlows.Add(1)
		case id != first:
			r.moved("%s: %s then %s", name, first, id)
			first = id
			counts = r.tm(id)
		}
		counts.requests.Add(1)
		if !r.sleep(r.o.Interval) {
			return false
		}
	}
}

var errBadReply = errors.New("reply without a TM id")

// udpReply reads datagrams until the reply to payload arrives from want, and
// returns the TM id in it. Stale replies (to earlier, timed-out requests) and
// datagrams from elsewhere are skipped.
func (r *Run) udpReply(pc net.PacketConn, want netip.AddrPort, payload string, buf []byte) (string, int, error) {
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return "", 0, err
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		src := ua.AddrPort()
		if netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) != want {
			continue
		}
		id, rest, ok := strings.Cut(string(buf[:n]), " ")
		if !ok || rest != payload {
			if ok && strings.HasPrefix(rest, "flow ") {
				continue // a late reply to an earlier request
			}
			return "", n, fmt.Errorf("%w: %q", errBadReply, trunc(string(buf[:n])))
		}
		if id == "" {
			return "", n, fmt.Errorf("%w: %q", errBadReply, trunc(string(buf[:n])))
		}
		return id, n, nil
	}
}

// histogram counts durations in log-linear buckets: 8 sub-buckets per power
// of two of nanoseconds, so quantiles are within 12.5%.
type histogram struct {
	b [64 * 8]atomic.Uint64
}

func bucketOf(d time.Duration) int {
	ns := uint64(max(d, 1))
	e := bits.Len64(ns) - 1 // 2^e <= ns < 2^(e+1)
	if e < 3 {
		return int(ns) // exact for 1..7
	}
	sub := (ns >> (e - 3)) & 7
	return e*8 + int(sub)
}

// bucketTop is the largest duration in bucket i.
func bucketTop(i int) time.Duration {
	e, sub := i/8, uint64(i%8)
	if e < 3 {
		return time.Duration(i)
	}
	lo := uint64(1)<<e | sub<<(e-3)
	top := lo + uint64(1)<<(e-3) - 1
	if top > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(top)
}

func (h *histogram) add(d time.Duration) { h.b[bucketOf(d)].Add(1) }

func (h *histogram) summary() Latency {
	var counts [len(histogram{}.b)]uint64
	var total uint64
	for i := range h.b {
		counts[i] = h.b[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return Latency{}
	}
	q := func(p float64) time.Duration {
		rank := uint64(math.Ceil(p * float64(total)))
		var acc uint64
		for i, c := range counts {
			acc += c
			if acc >= rank && c > 0 {
				return bucketTop(i)
			}
		}
		return bucketTop(len(counts) - 1)
	}
	return Latency{P50: q(0.50), P90: q(0.90), P99: q(0.99)}
}

// NSDialer returns a Dial and a ListenPacket function for Options that create
// their sockets through do, a function like netlab's (*NS).Do that runs its
// argument on a thread inside a network namespace. The whole TCP dial (socket
// and connect) runs inside do; sockets stay in the namespace afterwards.
func NSDialer(do func(func() error) error) (
	dial func(ctx context.Context, network, addr string) (net.Conn, error),
	listenPacket func(network, addr string) (net.PacketConn, error),
) {
	dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		if err != nil && c != nil {
			c.Close()
			c = nil
		}
		return c, err
	}
	listenPacket = func(network, addr string) (net.PacketConn, error) {
		var pc net.PacketConn
		err := do(func() error {
			var err error
			pc, err = net.ListenPacket(network, addr)
			return err
		})
		if err != nil && pc != nil {
			pc.Close()
			pc = nil
		}
		return pc, err
	}
	return dial, listenPacket
}
