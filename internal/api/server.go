package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Backend is what the API shows: the distributor daemon.
type Backend interface {
	Status() Status
	Stats() (Stats, error)
	WalkFlows(f FlowFilter, fn func(Flow) bool) error
	Reload() error
	// FollowFlows calls fn for each flow event until ctx is done or fn
	// fails.
	FollowFlows(ctx context.Context, fn func(FlowEvent) error) error
}

// Defaults of ServerOptions.
const (
	// DefaultMaxFlowStreams is how many /v1/flows streams may be open at
	// once; each holds a flow-table walk and a connection.
	DefaultMaxFlowStreams = 8
	// DefaultWriteTimeout is how long one write (a batch of flows, a JSON
	// answer) may take before the client counts as gone.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultReadHeaderTimeout and DefaultIdleTimeout close connections
	// that send nothing.
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	// MaxBodyBytes caps a request body: no endpoint takes one, so anything
	// beyond a small allowance is refused.
	MaxBodyBytes = 4 << 10
	// MaxTokenBytes caps the size of a token file.
	MaxTokenBytes = 4 << 10
	// flowBatch is how many flows are written between flushes; each batch
	// gets its own write deadline.
	flowBatch = 1024
)

// ServerOptions configure a Server; zero fields take the defaults above.
type ServerOptions struct {
	// Token is the bearer token every request on a TCP listener must carry.
	// Serve refuses a TCP listener without one: any local user can connect
	// to loopback. Unix sockets are owner-only and need no token.
	Token             string
	MaxFlowStreams    int
	WriteTimeout      time.Duration
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
}

// Server is the admin API: its handler, its limits and its open flow
// streams.
type Server struct {
	b       Backend
	log     *slog.Logger
	o       ServerOptions
	mux     *http.ServeMux
	streams atomic.Int64
	// tokenSum is the SHA-256 of the token, compared in constant time with
	// the sum of the presented one (so that the length leaks nothing either).
	tokenSum [sha256.Size]byte
}

// NewServer returns the API for b:
//
//	GET  /v1/status
//	GET  /v1/stats
//	GET  /v1/flows?service=NAME&tm=ID&addr=IP&limit=N   (NDJSON, streamed)
//	GET  /v1/flows/events                               (NDJSON, until the client goes)
//	POST /v1/reload
//	GET  /v1/bgp                                         (404 without bgp; api/bgp.go)
//	POST /v1/drain?deadline=60s
//	GET  /metrics                                        (Prometheus)
func NewServer(b Backend, log *slog.Logger, o ServerOptions) *Server {
	if o.MaxFlowStreams <= 0 {
		o.MaxFlowStreams = DefaultMaxFlowStreams
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	s := &Server{b: b, log: log, o: o, mux: http.NewServeMux(), tokenSum: sha256.Sum256([]byte(o.Token))}
	s.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusOK, b.Status())
	})
	s.mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Stats()
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, err)
			return
		}
		s.writeJSON(w, http.StatusOK, st)
	})
	s.mux.HandleFunc("GET /v1/flows", s.flows)
	s.mux.HandleFunc("GET /v1/flows/events", s.followFlows)
	s.mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Reload(); err != nil {
			s.writeError(w, http.StatusConflict, err)
			return
		}
		s.writeJSON(w, http.StatusOK, b.Status())
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{b: b, log: log})
	s.bgpRoutes(reg)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s
}

// FlowStreams is the number of /v1/flows streams open now.
func (s *Server) FlowStreams() int { return int(s.streams.Load()) }

// Handler is the API without authentication (as served on a unix socket),
// with the request-body cap.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.limitBody(w, r) {
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// authHandler is Handler behind the bearer token (as served on TCP).
func (s *Server) authHandler() http.Handler {
	h := s.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
			s.writeError(w, http.StatusUnauthorized, errors.New("admin API: missing or wrong bearer token (give --token-file or SWITCHYARD_API_TOKEN_FILE)"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// limitBody reads and discards a request body of at most MaxBodyBytes (no
// endpoint uses one) within the write timeout, and answers 413 to a larger
// one. It reports whether the request may go on.
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength > MaxBodyBytes {
		s.writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("admin API: request body of %d bytes; at most %d", r.ContentLength, MaxBodyBytes))
		return false
	}
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.o.WriteTimeout))
	_, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		s.writeError(w, code, fmt.Errorf("admin API: request body: %w", err))
		return false
	}
	return true
}

// takeStream takes one of the MaxFlowStreams stream slots, or answers 503
// and reports false; the caller gives a taken slot back with
// s.streams.Add(-1).
func (s *Server) takeStream(w http.ResponseWriter) bool {
	if n := s.streams.Add(1); n > int64(s.o.MaxFlowStreams) {
		s.streams.Add(-1)
		w.Header().Set("Retry-After", "1")
		s.writeError(w, http.StatusServiceUnavailable, fmt.Errorf("admin API: %d flow streams are open already (the limit); try again when one ends", s.o.MaxFlowStreams))
		return false
	}
	return true
}

// flows streams the flow table as NDJSON in batches, each written under its
// own deadline, so that a client that stops reading is dropped after
// WriteTimeout instead of holding the walk, its buffers and its descriptor.
func (s *Server) flows(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err)
		return
	}
	if !s.takeStream(w) {
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	deadline := func() bool { return rc.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout)) == nil }
	if !deadline() {
		s.writeError(w, http.StatusInternalServerError, errors.New("admin API: connection takes no write deadline"))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	n := 0
	err = s.b.WalkFlows(f, func(fl Flow) bool {
		if enc.Encode(fl) != nil {
			return false // client went away or stopped reading
		}
		n++
		if n%flowBatch == 0 {
			if rc.Flush() != nil || !deadline() {
				return false
			}
		}
		return f.Limit == 0 || n < f.Limit
	})
	if err != nil {
		// Headers are gone; end the stream with an error line.
		_ = enc.Encode(map[string]string{"error": err.Error()})
	}
}

// followFlows streams flow events as NDJSON, each written and flushed under
// its own deadline; it counts against the flow streams' limit.
func (s *Server) followFlows(w http.ResponseWriter, r *http.Request) {
	if !s.takeStream(w) {
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	if rc.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout)) != nil {
		s.writeError(w, http.StatusInternalServerError, errors.New("admin API: connection takes no write deadline"))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	enc := json.NewEncoder(w)
	err := s.b.FollowFlows(r.Context(), func(ev FlowEvent) error {
		if err := rc.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout)); err != nil {
			return err
		}
		if err := enc.Encode(ev); err != nil {
			return err // client went away or stopped reading
		}
		return rc.Flush()
	})
	if err != nil {
		s.log.Debug("flow events stream ended", "error", err)
	}
}

func parseFilter(r *http.Request) (FlowFilter, error) {
	q := r.URL.Query()
	f := FlowFilter{Service: q.Get("service"), TM: q.Get("tm")}
	if a := q.Get("addr"); a != "" {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return f, fmt.Errorf("addr: %q is not an IP address", a)
		}
		f.Addr = addr.Unmap()
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return f, fmt.Errorf("limit: %q is not a count", l)
		}
		f.Limit = n
	}
	return f, nil
}

// writeJSON answers v under a write deadline (a client that does not read
// cannot hold the handler).
func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) writeError(w http.ResponseWriter, code int, err error) {
	s.writeJSON(w, code, map[string]string{"error": err.Error()})
}

// Listen opens the API's listener: "unix:/path" makes a socket only its
// owner can use (replacing a stale one); "127.0.0.1:PORT" or "[::1]:PORT"
// listens on loopback only.
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("admin API socket directory: %w", err)
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin API socket %s is in use by another process", path)
		}
		_ = os.Remove(path)
		old := syscallUmask(0o177)
		l, err := net.Listen("unix", path)
		syscallUmask(old)
		if err != nil {
			return nil, fmt.Errorf("admin API: %w", err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, fmt.Errorf("admin API socket permissions: %w", err)
		}
		return l, nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin API address %q: want unix:/path or a loopback address:port", addr)
	}
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("admin API address %s is not loopback: the API is local-only", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return l, nil
}

// Serve serves the API on l until ctx is done. On a TCP listener every
// request needs the bearer token, and a server without one refuses to serve
// there.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if err := s.o.CheckListener(l); err != nil {
		return err
	}
	h := s.Handler()
	if l.Addr().Network() != "unix" {
		h = s.authHandler()
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.o.ReadHeaderTimeout,
		IdleTimeout:       s.o.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close() // streams still open after 2s
		}
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admin API on %s: %w", l.Addr(), err)
}

// CheckListener refuses a TCP listener without a token: every local user can
// connect to loopback.
func (o ServerOptions) CheckListener(l net.Listener) error {
	if l.Addr().Network() != "unix" && o.Token == "" {
		return fmt.Errorf("admin API on %s %s: a TCP address needs a token (distributor.api_token_file): every local user can reach it", l.Addr().Network(), l.Addr())
	}
	return nil
}

// ReadTokenFile reads a bearer token from path: a regular file that only its
// owner can read or write, of at most MaxTokenBytes, not blank. Surrounding
// white space (a trailing newline) is not part of the token.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("admin API token: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("admin API token: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("admin API token %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("admin API token %s: mode %04o gives its group or others access; chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("admin API token %s: %w", path, err)
	}
	if len(b) > MaxTokenBytes {
		return "", fmt.Errorf("admin API token %s: longer than %d bytes", path, MaxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin API token %s: empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("admin API token %s: white space inside the token", path)
	}
	return tok, nil
}
