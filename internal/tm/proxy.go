package tm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is one listener, its pool and its counters.
type proxy struct {
	tm   *TM
	cfg  Proxy
	pool *pool
	c    counters

	ln   net.Listener // tcp, http, ftp
	udp  *net.UDPConn // udp
	http *http.Server

	sessMu   sync.Mutex
	sessions map[netip.AddrPort]*udpSession
}

func (p *proxy) listen() error {
	return p.tm.cfg.Do(func() (err error) {
		a := p.cfg.Listen
		if p.cfg.Mode == ModeUDP {
			p.udp, err = net.ListenUDP(network("udp", a.Addr()), net.UDPAddrFromAddrPort(a))
			return err
		}
		p.ln, err = net.Listen(network("tcp", a.Addr()), a.String())
		return err
	})
}

func (p *proxy) serve() {
	t := p.tm
	t.wg.Add(1)
	switch p.cfg.Mode {
	case ModeUDP:
		p.sessions = map[netip.AddrPort]*udpSession{}
		go func() { defer t.wg.Done(); p.serveUDP() }()
	case ModeHTTP:
		p.http = p.httpServer()
		go func() { defer t.wg.Done(); _ = p.http.Serve(limitListener{p.ln, p}) }()
	default:
		go func() { defer t.wg.Done(); p.acceptLoop() }()
	}
}

// stopAccepting closes the listener; open connections go on. A UDP proxy
// keeps its socket for the open sessions and refuses new ones.
func (p *proxy) stopAccepting() {
	if p.http != nil {
		// Shutdown closes the listener and idle keep-alive connections and
		// lets requests in progress finish; Drain waits for the rest.
		go func() { _ = p.http.Shutdown(p.tm.ctx) }()
		return
	}
	if p.ln != nil {
		p.ln.Close()
	}
}

func (p *proxy) close() error {
	var err error
	if p.http != nil {
		err = p.http.Close()
	} else if p.ln != nil {
		if e := p.ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	if p.udp != nil {
		err = errors.Join(err, p.udp.Close())
		p.sessMu.Lock()
		for _, s := range p.sessions {
			s.conn.Close()
		}
		p.sessMu.Unlock()
	}
	return err
}

// admit counts a new client connection or session, or refuses it (false)
// when the proxy is at MaxConns or the TM drains.
func (p *proxy) admit() bool {
	if p.tm.draining.Load() || p.c.active.Load() >= int64(p.tm.cfg.MaxConns) {
		p.c.refused.Add(1)
		return false
	}
	p.c.accepted.Add(1)
	p.c.active.Add(1)
	p.tm.connWG.Add(1)
	return true
}

func (p *proxy) release() {
	p.c.active.Add(-1)
	p.tm.connWG.Done()
}

func (p *proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off instead of spinning.
			p.tm.log.Warn("accept", "listen", p.cfg.Listen, "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !p.admit() {
			c.Close()
			continue
		}
		go func() {
			defer p.release()
			if !p.tm.track(c) {
				return
			}
			defer p.tm.untrack(c)
			if p.cfg.Mode == ModeFTP {
				p.serveFTP(c)
			} else {
				p.serveTCP(c)
			}
		}()
	}
}

// connectPicked picks a server and connects to it; on failure it counts why.
func (p *proxy) connectPicked() (net.Conn, *backend) {
	b := p.pool.pick()
	if b == nil {
		p.c.noServer.Add(1)
		return nil, nil
	}
	s, err := p.tm.dialServer(p.tm.ctx, b.addr)
	if err != nil {
		b.done()
		p.c.dialFailed.Add(1)
		p.tm.log.Warn("server connection failed", "listen", p.cfg.Listen, "error", err)
		return nil, nil
	}
	return s, b
}

func (p *proxy) serveTCP(c net.Conn) {
	s, b := p.connectPicked()
	if s == nil {
		return
	}
	defer b.done()
	if !p.tm.track(s) {
		return
	}
	defer p.tm.untrack(s)
	p.splice(c, s)
}

// splice copies both ways until both directions end (half-closes are passed
// on) or the pair is idle for IdleTimeout.
func (p *proxy) splice(client, server net.Conn) {
	idle := newIdle(p.tm.cfg.IdleTimeout, client, server)
	defer idle.stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(server, idle.reader(client))
		p.c.bytesIn.Add(uint64(n))
		closeWrite(server)
	}()
	go func() {
		defer wg.Done()
		n, _ := io.Copy(client, idle.reader(server))
		p.c.bytesOut.Add(uint64(n))
		closeWrite(client)
	}()
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	c.Close()
}

// idle closes a connection pair when neither side has read anything for d.
// One timer per pair, pushed back on every read: cheaper than a deadline per
// read on both sockets, and a pair where one side streams while the other
// is silent (a download) is not idle.
type idle struct {
	d     time.Duration
	timer *time.Timer
	conns []net.Conn
}

func newIdle(d time.Duration, conns ...net.Conn) *idle {
	i := &idle{d: d, conns: conns}
	i.timer = time.AfterFunc(d, func() {
		for _, c := range i.conns {
			c.Close()
		}
	})
	return i
}

func (i *idle) stop() { i.timer.Stop() }

func (i *idle) reader(r io.Reader) io.Reader { return idleReader{r, i} }

type idleReader struct {
	r io.Reader
	i *idle
}

func (r idleReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.i.timer.Reset(r.i.d)
	}
	return n, err
}

// limitListener applies admit/release to the HTTP server's connections.
type limitListener struct {
	net.Listener
	p *proxy
}

func (l limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.p.admit() {
			c.Close()
			continue
		}
		return &releaseConn{Conn: c, p: l.p}, nil
	}
}

type releaseConn struct {
	net.Conn
	p    *proxy
	once sync.Once
}

func (c *releaseConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.p.release)
	return err
}

type backendKey struct{}

// httpServer is the HTTP mode: a reverse proxy that picks a server for every
// request, over keep-alive connections to the servers opened from the SNAT
// address.
func (p *proxy) httpServer() *http.Server {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return p.tm.dialServer(ctx, ap)
		},
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			b := r.In.Context().Value(backendKey{}).(*backend)
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = b.addr.String()
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			if v := resp.Header.Get(Header); v != "" {
				resp.Header.Set(ServerHeader, v)
			}
			resp.Header.Set(Header, p.tm.cfg.ID)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away: nobody to answer, nothing wrong
			}
			p.c.badGateway.Add(1)
			p.tm.log.Warn("http: server error", "listen", p.cfg.Listen, "error", err)
			w.Header().Set(Header, p.tm.cfg.ID)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.c.requests.Add(1)
		b := p.pool.pick()
		if b == nil {
			p.c.noServer.Add(1)
			w.Header().Set(Header, p.tm.cfg.ID)
			http.Error(w, "no healthy server", http.StatusServiceUnavailable)
			return
		}
		defer b.done()
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), backendKey{}, b)))
	})
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       p.tm.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}

// udpSession is one client address's flow to one server.
type udpSession struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the server, from the SNAT address
	b      *backend
	lastIn atomic.Int64 // unix nanoseconds of the client's last datagram
}

const maxDatagram = 65535

// serveUDP reads client datagrams on the VIP socket and relays each to the
// session of its client address, opening one (a socket connected to a picked
// server) for a new client. Replies go back from the VIP socket.
func (p *proxy) serveUDP() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := p.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP-reported errors must not end the proxy
		}
		p.c.requests.Add(1)
		s := p.session(from)
		if s == nil {
			continue
		}
		s.lastIn.Store(time.Now().UnixNano())
		if k, err := s.conn.Write(buf[:n]); err == nil {
			p.c.bytesIn.Add(uint64(k))
		}
	}
}

func (p *proxy) session(from netip.AddrPort) *udpSession {
	p.sessMu.Lock()
	defer p.sessMu.Unlock()
	if s := p.sessions[from]; s != nil {
		return s
	}
	if !p.admit() {
		return nil
	}
	b := p.pool.pick()
	if b == nil {
		p.c.noServer.Add(1)
		p.release()
		return nil
	}
	var conn *net.UDPConn
	err := p.tm.cfg.Do(func() (err error) {
		var la *net.UDPAddr
		if src := p.tm.source(b.addr.Addr()); src.IsValid() {
			la = &net.UDPAddr{IP: src.AsSlice()}
		}
		conn, err = net.DialUDP(network("udp", b.addr.Addr()), la, net.UDPAddrFromAddrPort(b.addr))
		return err
	})
	if err != nil {
		b.done()
		p.c.dialFailed.Add(1)
		p.release()
		p.tm.log.Warn("udp: server socket", "server", b.addr, "error", err)
		return nil
	}
	s := &udpSession{client: from, conn: conn, b: b}
	s.lastIn.Store(time.Now().UnixNano())
	p.sessions[from] = s
	go p.relayReplies(s)
	return s
}

// relayReplies sends the server's datagrams back to the client until the
// session is idle in both directions for UDPIdleTimeout.
func (p *proxy) relayReplies(s *udpSession) {
	defer func() {
		p.sessMu.Lock()
		delete(p.sessions, s.client)
		p.sessMu.Unlock()
		s.conn.Close()
		s.b.done()
		p.release()
	}()
	buf := make([]byte, maxDatagram)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(p.tm.cfg.UDPIdleTimeout))
		n, err := s.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(time.Unix(0, s.lastIn.Load())) < p.tm.cfg.UDPIdleTimeout && p.tm.ctx.Err() == nil {
					continue // the client still sends: not idle
				}
				return
			}
			if errors.Is(err, net.ErrClosed) || p.tm.ctx.Err() != nil {
				return
			}
			continue // ECONNREFUSED from an ICMP error: the server may come back
		}
		if k, err := p.udp.WriteToUDPAddrPort(buf[:n], s.client); err == nil {
			p.c.bytesOut.Add(uint64(k))
		}
	}
}
