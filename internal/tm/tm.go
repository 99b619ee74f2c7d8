// Package tm is Switchyard's reference traffic manager: a TCP, UDP, HTTP and
// FTP proxy that accepts on the VIPs (held on lo, LVS-DR style), connects to a
// pool of servers from the shared SNAT address, balances them (least active
// connections, round robin among equals) with TCP health checks, and tells
// the distributor what it cannot learn by itself through the public signal
// package: the FTP data connections it RELATEs (passive mode) or MEMORIZEs
// (active mode).
//
// In the l2 mode the distributor already holds every client flow it sent to
// this TM, and it learns the return path of every server-side connection from
// its SYN (the source is the shared SNAT address), so plain TCP, UDP and HTTP
// proxying needs no signal at all.
//
// Sockets are made through Config.Do, so a TM started by a test inside one
// network namespace keeps making its sockets there; the command runs in its
// own namespace and leaves Do nil.
package tm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/signal"
)

// Proxy modes.
const (
	ModeTCP  = "tcp"  // a TCP connection to one server per client connection
	ModeUDP  = "udp"  // a UDP session to one server per client address
	ModeHTTP = "http" // HTTP/1.1 reverse proxy, a server chosen per request
	ModeFTP  = "ftp"  // TCP, plus PASV/EPSV/PORT/EPRT rewriting and data connections
)

// Header is the response header the HTTP mode sets to the TM's id (replacing
// a server's header of that name), so that a client can tell which TM served
// it; the server's value moves to ServerHeader.
const (
	Header       = "X-Switchyard-TM"
	ServerHeader = "X-Switchyard-Server"
)

// Limits.
const (
	// MaxServers is the largest pool of one proxy.
	MaxServers = 256
	// MaxProxies is the largest number of proxies of one TM.
	MaxProxies = 64
)

// Proxy is one listener and its server pool.
type Proxy struct {
	// Mode is ModeTCP, ModeUDP, ModeHTTP or ModeFTP.
	Mode string
	// Listen is the address to accept on, usually a VIP.
	Listen netip.AddrPort
	// Servers is the pool, 1..MaxServers addresses.
	Servers []netip.AddrPort
}

// Signaler sends signal messages to the distributor: a *signal.FrameSender
// (on the distributor's segment) or a *signal.UDPSender.
type Signaler interface {
	Send(signal.Message) error
}

// Config configures a TM. Zero durations and limits take the defaults given.
type Config struct {
	// ID names the TM in logs, /stats and the HTTP mode's Header.
	ID      string
	Proxies []Proxy
	// Source4 and Source6 are the shared SNAT addresses server-side
	// connections are opened from (held on lo). Unset: the kernel chooses.
	Source4, Source6 netip.Addr
	// Admin, if valid, serves GET /healthz and GET /stats (loopback or a
	// management address: it has no authentication).
	Admin netip.AddrPort
	// Signal sends the FTP mode's RELATE and MEMORIZE; required by ModeFTP.
	Signal Signaler
	// Do runs fn in the network namespace the TM's sockets belong to; nil
	// runs it directly.
	Do func(fn func() error) error
	// HealthInterval between TCP health checks of every server (2 s);
	// HealthTimeout for one check (1 s). UDP pools are not checked.
	HealthInterval, HealthTimeout time.Duration
	// DialTimeout for server connections (3 s).
	DialTimeout time.Duration
	// IdleTimeout closes a TCP connection pair idle in both directions (5 min);
	// UDPIdleTimeout ends a UDP session idle both ways (30 s).
	IdleTimeout, UDPIdleTimeout time.Duration
	// MaxConns bounds the open client connections and UDP sessions of each
	// proxy (10,000); beyond it new ones are refused and counted.
	MaxConns int
	// FTPDataTimeout bounds the wait for an FTP data connection (30 s).
	FTPDataTimeout time.Duration
	// FTPActiveSourcePort is the port an FTP server opens active-mode data
	// connections from (20, vsftpd's connect_from_port_20): the TM memorizes
	// that exact flow before it sends the server the PORT command.
	FTPActiveSourcePort uint16
	// Log receives the TM's messages; nil: slog.Default().
	Log *slog.Logger
}

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.HealthInterval, 2*time.Second)
	set(&c.HealthTimeout, time.Second)
	set(&c.DialTimeout, 3*time.Second)
	set(&c.IdleTimeout, 5*time.Minute)
	set(&c.UDPIdleTimeout, 30*time.Second)
	set(&c.FTPDataTimeout, 30*time.Second)
	if c.MaxConns <= 0 {
		c.MaxConns = 10000
	}
	if c.FTPActiveSourcePort == 0 {
		c.FTPActiveSourcePort = 20
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Do == nil {
		c.Do = func(fn func() error) error { return fn() }
	}
}

// Validate reports every problem of the config at once.
func (c *Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("id: empty"))
	}
	if len(c.Proxies) == 0 || len(c.Proxies) > MaxProxies {
		errs = append(errs, fmt.Errorf("proxies: %d (expected 1..%d)", len(c.Proxies), MaxProxies))
	}
	for i, p := range c.Proxies {
		where := fmt.Sprintf("proxy %d (%s %s)", i+1, p.Mode, p.Listen)
		switch p.Mode {
		case ModeTCP, ModeUDP, ModeHTTP:
		case ModeFTP:
			if c.Signal == nil {
				errs = append(errs, fmt.Errorf("%s: the ftp mode needs a signal sender (RELATE/MEMORIZE of data connections)", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: mode %q (expected tcp, udp, http or ftp)", where, p.Mode))
		}
		if !p.Listen.IsValid() || p.Listen.Port() == 0 {
			errs = append(errs, fmt.Errorf("%s: listen address must be ADDR:PORT with a port", where))
		}
		if len(p.Servers) == 0 || len(p.Servers) > MaxServers {
			errs = append(errs, fmt.Errorf("%s: %d servers (expected 1..%d)", where, len(p.Servers), MaxServers))
		}
		for _, s := range p.Servers {
			if !s.IsValid() || s.Port() == 0 {
				errs = append(errs, fmt.Errorf("%s: server %s: want ADDR:PORT with a port", where, s))
			}
		}
	}
	if c.Source4.IsValid() && !c.Source4.Is4() {
		errs = append(errs, fmt.Errorf("source4 %s is not an IPv4 address", c.Source4))
	}
	if c.Source6.IsValid() && (!c.Source6.Is6() || c.Source6.Is4In6()) {
		errs = append(errs, fmt.Errorf("source6 %s is not an IPv6 address", c.Source6))
	}
	return errors.Join(errs...)
}

// Counters are a proxy's (or, summed, the TM's) counters since Start.
type Counters struct {
	Accepted    uint64 `json:"accepted"`     // client connections (TCP) or sessions (UDP) accepted
	Active      int64  `json:"active"`       // open right now
	Refused     uint64 `json:"refused"`      // over MaxConns, or while draining
	NoServer    uint64 `json:"no_server"`    // no healthy server in the pool
	DialFailed  uint64 `json:"dial_failed"`  // server connection failed
	BytesIn     uint64 `json:"bytes_in"`     // client → server
	BytesOut    uint64 `json:"bytes_out"`    // server → client
	Requests    uint64 `json:"requests"`     // HTTP requests, UDP datagrams from clients
	BadGateway  uint64 `json:"bad_gateway"`  // HTTP requests answered 502
	FTPPassive  uint64 `json:"ftp_passive"`  // passive data connections proxied
	FTPActive   uint64 `json:"ftp_active"`   // active data connections proxied
	FTPRefused  uint64 `json:"ftp_refused"`  // PORT/EPRT for another host, bad replies, data conns from elsewhere
	FTPTimeout  uint64 `json:"ftp_timeout"`  // data connections that never came
	Signals     uint64 `json:"signals"`      // signal messages sent
	SignalFails uint64 `json:"signal_fails"` // signal messages that could not be sent
}

type counters struct {
	accepted, refused, noServer, dialFailed, bytesIn, bytesOut, requests, badGateway,
	ftpPassive, ftpActive, ftpRefused, ftpTimeout, signals, signalFails atomic.Uint64
	active atomic.Int64
}

func (c *counters) snapshot() Counters {
	return Counters{
		Accepted: c.accepted.Load(), Active: c.active.Load(), Refused: c.refused.Load(),
		NoServer: c.noServer.Load(), DialFailed: c.dialFailed.Load(), BytesIn: c.bytesIn.Load(),
		BytesOut: c.bytesOut.Load(), Requests: c.requests.Load(), BadGateway: c.badGateway.Load(),
		FTPPassive: c.ftpPassive.Load(), FTPActive: c.ftpActive.Load(), FTPRefused: c.ftpRefused.Load(),
		FTPTimeout: c.ftpTimeout.Load(), Signals: c.signals.Load(), SignalFails: c.signalFails.Load(),
	}
}

func (c *Counters) add(o Counters) {
	c.Accepted += o.Accepted
	c.Active += o.Active
	c.Refused += o.Refused
	c.NoServer += o.NoServer
	c.DialFailed += o.DialFailed
	c.BytesIn += o.BytesIn
	c.BytesOut += o.BytesOut
	c.Requests += o.Requests
	c.BadGateway += o.BadGateway
	c.FTPPassive += o.FTPPassive
	c.FTPActive += o.FTPActive
	c.FTPRefused += o.FTPRefused
	c.FTPTimeout += o.FTPTimeout
	c.Signals += o.Signals
	c.SignalFails += o.SignalFails
}

// ServerStatus is one server's health as /stats shows it.
type ServerStatus struct {
	Addr   string `json:"addr"`
	Up     bool   `json:"up"`
	Active int64  `json:"active"`
	Picked uint64 `json:"picked"`
}

// ProxyStats is one proxy's state as /stats shows it.
type ProxyStats struct {
	Mode    string         `json:"mode"`
	Listen  string         `json:"listen"`
	Servers []ServerStatus `json:"servers"`
	Counters
}

// Stats is the TM's state as /stats shows it.
type Stats struct {
	ID       string       `json:"id"`
	Draining bool         `json:"draining"`
	Total    Counters     `json:"total"`
	Proxies  []ProxyStats `json:"proxies"`
}

// TM is a running reference traffic manager.
type TM struct {
	cfg     Config
	log     *slog.Logger
	proxies []*proxy

	ctx      context.Context // cancelled by Close: ends health checks and copies
	cancel   context.CancelFunc
	draining atomic.Bool
	wg       sync.WaitGroup // serving goroutines (accept loops, health checks, admin)
	connWG   sync.WaitGroup // client connections and sessions, for Drain
	admin    *http.Server

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open connections, closed by Close
	closed bool
}

// Start binds every listener (through cfg.Do) and serves in the background
// until Drain or Close. It fails, with nothing left open, if the config is
// invalid or an address cannot be bound.
func Start(cfg Config) (*TM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tm: config: %w", err)
	}
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	t := &TM{cfg: cfg, log: cfg.Log.With("tm", cfg.ID), ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	for _, pc := range cfg.Proxies {
		p := &proxy{tm: t, cfg: pc, pool: newPool(pc.Servers)}
		if err := p.listen(); err != nil {
			t.Close()
			return nil, fmt.Errorf("tm %s: %s %s: %w", cfg.ID, pc.Mode, pc.Listen, err)
		}
		t.proxies = append(t.proxies, p)
	}
	if cfg.Admin.IsValid() {
		if err := t.startAdmin(); err != nil {
			t.Close()
			return nil, fmt.Errorf("tm %s: admin %s: %w", cfg.ID, cfg.Admin, err)
		}
	}
	for _, p := range t.proxies {
		p.serve()
		if p.cfg.Mode != ModeUDP {
			t.wg.Add(1)
			go func() { defer t.wg.Done(); p.pool.healthLoop(t) }()
		}
	}
	return t, nil
}

// Stats returns the TM's counters and its servers' health.
func (t *TM) Stats() Stats {
	s := Stats{ID: t.cfg.ID, Draining: t.draining.Load()}
	for _, p := range t.proxies {
		ps := ProxyStats{Mode: p.cfg.Mode, Listen: p.cfg.Listen.String(), Servers: p.pool.status(), Counters: p.c.snapshot()}
		s.Total.add(ps.Counters)
		s.Proxies = append(s.Proxies, ps)
	}
	return s
}

// Healthy reports whether the TM should get new flows: not draining, and
// every proxy has a healthy server. The reason says what is wrong.
func (t *TM) Healthy() (bool, string) {
	if t.draining.Load() {
		return false, "draining"
	}
	for _, p := range t.proxies {
		if !p.pool.anyUp() {
			return false, fmt.Sprintf("%s %s: no healthy server", p.cfg.Mode, p.cfg.Listen)
		}
	}
	return true, "ok"
}

// Drain stops accepting (listeners closed, /healthz answers 503), lets open
// connections and sessions finish until ctx is done, then closes everything.
// Set the TM draining on the distributor first: a listener closed while the
// distributor still sends it new flows refuses them.
func (t *TM) Drain(ctx context.Context) error {
	t.draining.Store(true)
	for _, p := range t.proxies {
		p.stopAccepting()
	}
	done := make(chan struct{})
	go func() { t.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.log.Warn("drain deadline: closing open connections", "active", t.Stats().Total.Active)
	}
	return t.Close()
}

// Close closes every listener and connection and waits for the serving
// goroutines. It is safe to call more than once.
func (t *TM) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.draining.Store(true)
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.cancel()
	var err error
	for _, p := range t.proxies {
		err = errors.Join(err, p.close())
	}
	if t.admin != nil {
		err = errors.Join(err, t.admin.Close())
	}
	t.wg.Wait()
	t.connWG.Wait()
	return err
}

// track registers an open connection so Close can end it; it returns false
// (and closes c) when the TM is already closed.
func (t *TM) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *TM) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

// source returns the shared SNAT address for connections to dst's family.
func (t *TM) source(dst netip.Addr) netip.Addr {
	if dst.Unmap().Is4() {
		return t.cfg.Source4
	}
	return t.cfg.Source6
}

// dialServer opens a TCP connection to a server from the shared SNAT
// address, in the TM's namespace.
func (t *TM) dialServer(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	if src := t.source(dst.Addr()); src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	var c net.Conn
	err := t.cfg.Do(func() (err error) {
		c, err = d.DialContext(ctx, network("tcp", dst.Addr()), dst.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to server %s: %w", dst, err)
	}
	return c, nil
}

// send sends a signal message and counts it.
func (t *TM) send(c *counters, m signal.Message) error {
	if err := t.cfg.Signal.Send(m); err != nil {
		c.signalFails.Add(1)
		return fmt.Errorf("send signal: %w", err)
	}
	c.signals.Add(1)
	return nil
}

func (t *TM) startAdmin() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := t.Healthy()
		if !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, why)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(t.Stats())
	})
	var ln net.Listener
	err := t.cfg.Do(func() (err error) {
		ln, err = net.Listen(network("tcp", t.cfg.Admin.Addr()), t.cfg.Admin.String())
		return err
	})
	if err != nil {
		return err
	}
	t.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	t.wg.Add(1)
	go func() { defer t.wg.Done(); _ = t.admin.Serve(ln) }()
	return nil
}

// network picks "tcp4"/"udp4" for IPv4 addresses so that a v4 bind never
// becomes a dual-stack v6 socket.
func network(base string, a netip.Addr) string {
	if a.Unmap().Is4() {
		return base + "4"
	}
	return base + "6"
}
