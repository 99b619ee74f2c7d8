// Package health checks traffic managers: TCP, HTTP(S) and UDP probes at an
// interval, each bounded by a timeout, turned into a healthy/unhealthy state
// with rise and fall counts (like HAProxy's), so that one lost probe does not
// take a TM out of selection and one lucky probe does not put it back.
//
// The package knows nothing of the data path: the distributor gives it
// targets (Checker.Set) and is told of each state change (the onChange
// callback), and then recomputes which TMs get new flows.
package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Probe kinds.
const (
	KindTCP   = "tcp"   // a TCP connection is accepted
	KindHTTP  = "http"  // a GET answers with the expected status
	KindHTTPS = "https" // the same over TLS (the certificate is not verified)
	KindUDP   = "udp"   // a datagram gets an answer (containing Expect, if set)
)

// maxUDPReply and maxHTTPBody bound what a probe reads from a TM.
const (
	maxUDPReply = 2048
	maxHTTPBody = 4096
)

// Spec is how one target is probed. It is comparable: a target whose Spec
// changes is restarted, one whose Spec stays keeps its state.
type Spec struct {
	Kind     string
	Port     uint16
	Path     string // HTTP(S): the request path, "/" if empty
	Status   int    // HTTP(S): the expected status; 0 = any 2xx or 3xx
	Send     string // UDP: the datagram's payload
	Expect   string // UDP: a substring the answer must hold; "" = any answer
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // consecutive successes that make an unhealthy target healthy
	Fall     int // consecutive failures that make a healthy target unhealthy
}

// Target is one thing to check: Key names it for the caller.
type Target struct {
	Key  string
	Addr netip.Addr
	Spec Spec
}

// State is what the checker knows of a target.
type State struct {
	Healthy bool
	// Checked is false until the first probe has completed.
	Checked bool
	// Successes and Failures are the current run of equal results.
	Successes, Failures int
	// LastError is the last probe's error, "" after a success.
	LastError string
	// LastRTT is the last successful probe's time to answer.
	LastRTT time.Duration
	// AvgRTT is the successful probes' time to answer, damped: an
	// exponential moving average (RTTWeight of each new probe), so that
	// one slow probe does not swing the weights computed from it.
	AvgRTT time.Duration
	// Changes counts transitions between healthy and unhealthy.
	Changes uint64
	// Since is when Healthy last changed (or the target was added).
	Since time.Time
}

// RTTWeight is the weight of a new probe's time in State.AvgRTT.
const RTTWeight = 0.3

// Probe runs one probe of spec against addr and returns how long the answer
// took, or what failed.
func Probe(ctx context.Context, addr netip.Addr, spec Spec) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	ap := netip.AddrPortFrom(addr, spec.Port).String()
	start := time.Now()
	var err error
	switch spec.Kind {
	case KindTCP:
		err = probeTCP(ctx, ap)
	case KindHTTP, KindHTTPS:
		err = probeHTTP(ctx, ap, spec)
	case KindUDP:
		err = probeUDP(ctx, ap, spec)
	default:
		err = fmt.Errorf("unknown probe kind %q", spec.Kind)
	}
	if err != nil {
		return 0, fmt.Errorf("%s probe of %s: %w", spec.Kind, ap, err)
	}
	return time.Since(start), nil
}

func probeTCP(ctx context.Context, ap string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ap)
	if err != nil {
		return err
	}
	return c.Close()
}

func probeHTTP(ctx context.Context, ap string, spec Spec) error {
	path := spec.Path
	if path == "" {
		path = "/"
	}
	scheme := "http"
	// A probe asks whether the TM answers, not whether its certificate
	// names its internal address: it is not verified.
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
	defer tr.CloseIdleConnections()
	if spec.Kind == KindHTTPS {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+ap+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "switchyard-health")
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHTTPBody))
	resp.Body.Close()
	switch {
	case spec.Status != 0 && resp.StatusCode != spec.Status:
		return fmt.Errorf("status %d, want %d", resp.StatusCode, spec.Status)
	case spec.Status == 0 && (resp.StatusCode < 200 || resp.StatusCode > 399):
		return fmt.Errorf("status %d, want 2xx or 3xx", resp.StatusCode)
	}
	return nil
}

func probeUDP(ctx context.Context, ap string, spec Spec) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", ap)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(spec.Send)); err != nil {
		return err
	}
	buf := make([]byte, maxUDPReply)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if spec.Expect != "" && !bytes.Contains(buf[:n], []byte(spec.Expect)) {
		return fmt.Errorf("answer %s does not hold %q", strconv.Quote(string(buf[:min(n, 64)])), spec.Expect)
	}
	return nil
}

// Checker probes targets, each in its own goroutine, and keeps their states.
type Checker struct {
	log      *slog.Logger
	onChange func(key string, healthy bool)

	mu      sync.Mutex
	targets map[string]*target
	closed  bool
	wg      sync.WaitGroup
}

type target struct {
	t      Target
	cancel context.CancelFunc
	state  State
}

// NewChecker returns a checker that calls onChange (from a probe goroutine,
// never with the checker's lock held) whenever a target's health changes.
func NewChecker(log *slog.Logger, onChange func(key string, healthy bool)) *Checker {
	return &Checker{log: log, onChange: onChange, targets: map[string]*target{}}
}

// Set makes targets the checked set: new ones start healthy (a distributor
// that starts does not hold back its TMs for rise × interval), removed ones
// stop, changed ones restart and keep their state.
func (c *Checker) Set(targets []Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := map[string]Target{}
	for _, t := range targets {
		want[t.Key] = t
	}
	for k, tg := range c.targets {
		if nt, ok := want[k]; !ok || nt != tg.t {
			tg.cancel()
			if !ok {
				delete(c.targets, k)
			}
		}
	}
	for k, nt := range want {
		tg, ok := c.targets[k]
		if ok && tg.t == nt {
			continue
		}
		if !ok {
			tg = &target{state: State{Healthy: true, Since: time.Now()}}
			c.targets[k] = tg
		}
		ctx, cancel := context.WithCancel(context.Background())
		tg.t, tg.cancel = nt, cancel
		c.wg.Add(1)
		go c.run(ctx, tg, nt)
	}
}

// State returns the state of the target named key.
func (c *Checker) State(key string) (State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tg, ok := c.targets[key]
	if !ok {
		return State{}, false
	}
	return tg.state, true
}

// Healthy reports whether the target named key is healthy; a target that
// is not checked is.
func (c *Checker) Healthy(key string) bool {
	s, ok := c.State(key)
	return !ok || s.Healthy
}

// Close stops every probe and waits for them.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	for _, tg := range c.targets {
		tg.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Checker) run(ctx context.Context, tg *target, t Target) {
	defer c.wg.Done()
	tick := time.NewTicker(t.Spec.Interval)
	defer tick.Stop()
	for {
		rtt, err := Probe(ctx, t.Addr, t.Spec)
		if ctx.Err() != nil {
			return // stopped mid-probe: the result says nothing of the TM
		}
		if changed, healthy := c.record(tg, t, rtt, err); changed {
			c.onChange(t.Key, healthy)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record adds one probe result to tg's state and reports whether its health
// changed.
func (c *Checker) record(tg *target, t Target, rtt time.Duration, err error) (changed, healthy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tg.t != t { // restarted with another spec meanwhile
		return false, tg.state.Healthy
	}
	s := &tg.state
	s.Checked = true
	if err == nil {
		s.Successes++
		s.Failures = 0
		s.LastError, s.LastRTT = "", rtt
		if s.AvgRTT == 0 {
			s.AvgRTT = rtt
		} else {
			s.AvgRTT += time.Duration(RTTWeight * float64(rtt-s.AvgRTT))
		}
		if !s.Healthy && s.Successes >= t.Spec.Rise {
			s.Healthy, changed = true, true
		}
	} else {
		s.Failures++
		s.Successes = 0
		s.LastError = err.Error()
		if s.Healthy && s.Failures >= t.Spec.Fall {
			s.Healthy, changed = false, true
		}
	}
	if changed {
		s.Changes++
		s.Since = time.Now()
		if s.Healthy {
			c.log.Info("health check passed: healthy", "target", t.Key, "addr", t.Addr, "successes", s.Successes)
		} else {
			c.log.Warn("health check failed: unhealthy", "target", t.Key, "addr", t.Addr, "failures", s.Failures, "error", s.LastError)
		}
	}
	return changed, s.Healthy
}
