package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
}

// Handler returns the API's HTTP handler:
//
//	GET  /v1/status
//	GET  /v1/stats
//	GET  /v1/flows?service=NAME&tm=ID&addr=IP&limit=N   (NDJSON, streamed)
//	POST /v1/reload
//	GET  /metrics                                        (Prometheus)
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		s, err := b.Stats()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	})
	mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		n := 0
		err = b.WalkFlows(f, func(fl Flow) bool {
			if enc.Encode(fl) != nil {
				return false // client went away
			}
			n++
			if n%1024 == 0 && flusher != nil {
				flusher.Flush()
			}
			return f.Limit == 0 || n < f.Limit
		})
		if err != nil {
			// Headers are gone; end the stream with an error line.
			_ = enc.Encode(map[string]string{"error": err.Error()})
		}
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Reload(); err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, b.Status())
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{b: b, log: log})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
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

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
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

// Serve serves the API on l until ctx is done.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
