// Package echo is a test fixture that stands in for a traffic manager (or a
// server): a small HTTP service and a UDP echo that both answer with its id,
// so that a client (and a test) can tell which host served each request or
// datagram. The real reference TM, a proxy, is package tm.
//
// Sockets are created in the network namespace of the calling thread: inside a
// netlab NS.Do they are made in that namespace and stay there, while serving
// happens on ordinary goroutines.
package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Header is the response header that carries the TM's id.
const Header = "X-Switchyard-TM"

// MaxBytes is the largest n accepted by GET /bytes?n=N (1 TiB).
const MaxBytes = 1 << 40

// Stats are a server's counters since New.
type Stats struct {
	// HTTPRequests is the number of HTTP requests handled (any path, any status).
	HTTPRequests uint64
	// UDPRequests is the number of datagrams answered.
	UDPRequests uint64
	// OpenConns is the number of TCP connections open right now.
	OpenConns int64
	// AcceptedConns is the number of TCP connections accepted.
	AcceptedConns uint64
	// BytesSent is the number of HTTP body bytes written by GET /bytes.
	BytesSent uint64
}

// Server serves, on the given addresses, an HTTP service that answers with the
// TM's id and a UDP echo that does the same.
//
// HTTP: GET / answers 200 with body "<id>\n" and header X-Switchyard-TM: <id>;
// GET /bytes?n=N answers 200 with N bytes (Content-Length set) for throughput
// tests. Keep-alive is on. UDP: every datagram gets a reply "<id> " + payload,
// sent from the address the socket is bound to.
type Server struct {
	// ID is the TM's id, as written in responses. Set it before listening.
	ID string

	httpSrv *http.Server

	mu        sync.Mutex
	closed    bool
	httpAddrs []netip.AddrPort
	udpConns  []*net.UDPConn
	wg        sync.WaitGroup

	httpReqs, udpReqs, accepted, bytesSent atomic.Uint64
	open                                   atomic.Int64
}

// New returns a server with the given id that listens nowhere yet.
func New(id string) *Server {
	s := &Server{ID: id}
	s.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ConnState:         s.connState,
	}
	return s
}

var errClosed = errors.New("echo: server closed")

// ListenHTTP creates a TCP listener on addr in the calling thread's network
// namespace and serves HTTP on it in the background until Close.
func (s *Server) ListenHTTP(addr netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	ln, err := net.Listen(network("tcp", addr), addr.String())
	if err != nil {
		return fmt.Errorf("echo %s: listen http %s: %w", s.ID, addr, err)
	}
	s.httpAddrs = append(s.httpAddrs, ln.Addr().(*net.TCPAddr).AddrPort())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Serve returns ErrServerClosed after Close; nothing else to report.
		_ = s.httpSrv.Serve(ln)
	}()
	return nil
}

// ListenUDP creates a UDP socket bound to addr in the calling thread's network
// namespace and answers datagrams on it in the background until Close.
func (s *Server) ListenUDP(addr netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	c, err := net.ListenUDP(network("udp", addr), net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return fmt.Errorf("echo %s: listen udp %s: %w", s.ID, addr, err)
	}
	s.udpConns = append(s.udpConns, c)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveUDP(c)
	}()
	return nil
}

// HTTPAddrs returns the addresses the HTTP listeners are bound to (with the
// actual port when 0 was asked for).
func (s *Server) HTTPAddrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.httpAddrs...)
}

// UDPAddrs returns the addresses the UDP sockets are bound to.
func (s *Server) UDPAddrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	var as []netip.AddrPort
	for _, c := range s.udpConns {
		as = append(as, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return as
}

// Close stops every listener and UDP socket, closes open connections and
// waits for the serving goroutines. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.httpSrv.Close()
	for _, c := range s.udpConns {
		err = errors.Join(err, c.Close())
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		HTTPRequests:  s.httpReqs.Load(),
		UDPRequests:   s.udpReqs.Load(),
		OpenConns:     s.open.Load(),
		AcceptedConns: s.accepted.Load(),
		BytesSent:     s.bytesSent.Load(),
	}
}

func (s *Server) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.accepted.Add(1)
		s.open.Add(1)
	case http.StateHijacked, http.StateClosed:
		s.open.Add(-1)
	}
}

// fill is what GET /bytes sends, 32 KiB at a time.
var fill = func() []byte {
	b := make([]byte, 32<<10)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.httpReqs.Add(1)
	h := w.Header()
	h.Set(Header, s.ID)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/":
		body := s.ID + "\n"
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write([]byte(body))
	case "/bytes":
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, "bad n: want 0.."+strconv.FormatInt(MaxBytes, 10), http.StatusBadRequest)
			return
		}
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(n, 10))
		if r.Method == http.MethodHead {
			return
		}
		for n > 0 {
			b := fill
			if int64(len(b)) > n {
				b = b[:n]
			}
			k, err := w.Write(b)
			s.bytesSent.Add(uint64(k))
			if err != nil {
				return
			}
			n -= int64(k)
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveUDP(c *net.UDPConn) {
	prefix := s.ID + " "
	buf := make([]byte, 64<<10)
	out := make([]byte, 0, len(prefix)+len(buf))
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient errors (e.g. ICMP-reported ECONNREFUSED) must not
			// end the echo.
			continue
		}
		out = append(append(out[:0], prefix...), buf[:n]...)
		if len(out) > 65507 {
			out = out[:65507]
		}
		// Counted before the answer leaves, so that a client that has its
		// answer never reads a count without it; taken back if it fails.
		s.udpReqs.Add(1)
		if _, err := c.WriteToUDPAddrPort(out, from); err != nil {
			s.udpReqs.Add(^uint64(0))
		}
	}
}

// network picks "tcp4"/"udp4" for IPv4 addresses so that a v4 bind never
// becomes a dual-stack v6 socket, and "tcp6"/"udp6" for IPv6.
func network(base string, a netip.AddrPort) string {
	if a.Addr().Unmap().Is4() {
		return base + "4"
	}
	return base + "6"
}

// Run starts a server with the given id on every HTTP and UDP address, in the
// calling thread's network namespace, and blocks until ctx is done; then it
// closes the server. It returns an error if any address cannot be bound, and
// nil after a clean shutdown.
func Run(ctx context.Context, id string, httpAddrs, udpAddrs []netip.AddrPort) error {
	if len(httpAddrs) == 0 && len(udpAddrs) == 0 {
		return errors.New("echo: no addresses to listen on")
	}
	s := New(id)
	for _, a := range httpAddrs {
		if err := s.ListenHTTP(a); err != nil {
			return errors.Join(err, s.Close())
		}
	}
	for _, a := range udpAddrs {
		if err := s.ListenUDP(a); err != nil {
			return errors.Join(err, s.Close())
		}
	}
	<-ctx.Done()
	return s.Close()
}
