package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tableBackend is a Backend over a generated flow table of n entries (the
// distributor's real table needs root and XDP; the API's limits do not).
type tableBackend struct {
	n       int
	reloads atomic.Int64
}

func (b *tableBackend) Status() Status        { return Status{ID: "t1"} }
func (b *tableBackend) Stats() (Stats, error) { return Stats{ID: "t1", FlowEntries: uint64(b.n)}, nil }
func (b *tableBackend) Reload() error         { b.reloads.Add(1); return nil }

func (b *tableBackend) WalkFlows(_ FlowFilter, fn func(Flow) bool) error {
	for i := range b.n {
		fl := Flow{Proto: "tcp", Src: fmt.Sprintf("10.0.%d.%d:%d", i>>16&255, i>>8&255, 1024+i&0xffff),
			Dst: "10.0.0.100:80", TM: "tm1", Origin: []string{"selected"}, TCPState: "established"}
		if !fn(fl) {
			return nil
		}
	}
	return nil
}

// FollowFlows sends b.n events, then waits for the stream's end.
func (b *tableBackend) FollowFlows(ctx context.Context, fn func(FlowEvent) error) error {
	for i := range b.n {
		if err := fn(FlowEvent{Type: "new", Proto: "tcp", Src: fmt.Sprintf("10.0.0.1:%d", 1024+i), Dst: "10.0.0.100:80"}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// serveUnix serves s on a new unix socket and returns its path.
func serveUnix(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s, l)
	return path
}

func serve(t *testing.T, s *Server, l net.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// stuckFlowsClient requests the flow table on the unix socket at path and
// never reads the answer.
func stuckFlowsClient(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /v1/flows HTTP/1.1\r\nHost: switchyard\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitStreams waits up to d for the server's open flow streams to be want.
func waitStreams(t *testing.T, s *Server, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.FlowStreams() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d flow streams open after %v, want %d", s.FlowStreams(), d, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestFlowStreamStuckClientDropped: a client that asks for a large flow
// table and never reads is dropped after the write timeout; its stream ends
// and the server closes its connection.
func TestFlowStreamStuckClientDropped(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := NewServer(&tableBackend{n: 10_000_000}, logger(), ServerOptions{WriteTimeout: timeout})
	path := serveUnix(t, s)
	c := stuckFlowsClient(t, path)
	waitStreams(t, s, 1, 2*time.Second)
	start := time.Now()
	waitStreams(t, s, 0, 10*timeout+2*time.Second)
	t.Logf("stream ended %v after it started blocking", time.Since(start).Round(time.Millisecond))

	// The server closed the connection: what it had written, then EOF (not
	// our read deadline).
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after the stream ended (read %d bytes)", n)
	}
	if n >= 10_000_000*50 {
		t.Errorf("read %d bytes: the whole table was sent, the client was not dropped", n)
	}
	t.Logf("client got %d bytes before the server closed the connection", n)
}

// TestFlowStreamLimit: with MaxFlowStreams streams held by clients that do
// not read, one more gets 503 with a message; once they go, streams are
// served again.
func TestFlowStreamLimit(t *testing.T) {
	const max = 3
	s := NewServer(&tableBackend{n: 10_000_000}, logger(), ServerOptions{MaxFlowStreams: max, WriteTimeout: time.Minute})
	path := serveUnix(t, s)
	var held []net.Conn
	for range max {
		held = append(held, stuckFlowsClient(t, path))
	}
	waitStreams(t, s, max, 5*time.Second)

	c := NewClient("unix:" + path)
	err := c.Flows(context.Background(), FlowFilter{Limit: 1}, func(Flow) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "flow streams are open already") {
		t.Fatalf("stream %d: %v, want the limit's error", max+1, err)
	}
	code := rawStatus(t, path, "GET /v1/flows HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if code != http.StatusServiceUnavailable {
		t.Errorf("stream %d: status %d, want 503", max+1, code)
	}

	// Other endpoints still answer.
	if _, err := c.Stats(context.Background()); err != nil {
		t.Errorf("stats while the streams are full: %v", err)
	}
	for _, h := range held {
		h.Close()
	}
	waitStreams(t, s, 0, 5*time.Second)
	n := 0
	if err := c.Flows(context.Background(), FlowFilter{Limit: 5}, func(Flow) error { n++; return nil }); err != nil || n != 5 {
		t.Errorf("after the streams ended: %d flows, %v; want 5", n, err)
	}
}

// rawStatus sends a raw request on the unix socket at path and returns the
// answer's status code.
func rawStatus(t *testing.T, path, req string) int {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// Write while reading: the server may answer (and close) before it has
	// read a large body.
	go func() { _, _ = io.WriteString(c, req) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRequestBodyCapped: a POST with a body over MaxBodyBytes is refused
// with 413 and the backend never sees it; a small one goes through.
func TestRequestBodyCapped(t *testing.T) {
	b := &tableBackend{}
	s := NewServer(b, logger(), ServerOptions{})
	path := serveUnix(t, s)
	big := strings.Repeat("x", 1<<20)
	code := rawStatus(t, path, fmt.Sprintf("POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("1 MiB body: status %d, want 413", code)
	}
	// Chunked, so that no Content-Length announces it.
	code = rawStatus(t, path, fmt.Sprintf("POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("1 MiB chunked body: status %d, want 413", code)
	}
	if n := b.reloads.Load(); n != 0 {
		t.Errorf("%d reloads from refused requests", n)
	}
	code = rawStatus(t, path, "POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	if code != http.StatusOK || b.reloads.Load() != 1 {
		t.Errorf("small body: status %d, %d reloads; want 200 and 1", code, b.reloads.Load())
	}
}

// TestIdleConnectionClosed: a connection that never sends a request is
// closed after the read-header timeout.
func TestIdleConnectionClosed(t *testing.T) {
	s := NewServer(&tableBackend{}, logger(), ServerOptions{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})
	path := serveUnix(t, s)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("silent connection still open after 5s")
	}
}

func writeToken(t *testing.T, tok string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTokenOnTCP: on loopback TCP every request needs the bearer token: none
// and a wrong one get 401 (and no reload happens), the right one works.
func TestTokenOnTCP(t *testing.T) {
	tok, err := ReadTokenFile(writeToken(t, "s3cret-token\n", 0o600))
	if err != nil {
		t.Fatal(err)
	}
	b := &tableBackend{n: 10}
	s := NewServer(b, logger(), ServerOptions{Token: tok})
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s, l)
	addr := l.Addr().String()
	ctx := context.Background()
	for _, c := range []struct {
		name, token string
	}{{"no token", ""}, {"wrong token", "s3cret-tokem"}, {"longer token", "s3cret-token-and-more"}} {
		cl := NewClient(addr).WithToken(c.token)
		if _, err := cl.Stats(ctx); err == nil || !strings.Contains(err.Error(), "bearer token") {
			t.Errorf("%s: stats: %v, want refused", c.name, err)
		}
		if err := cl.Reload(ctx); err == nil {
			t.Errorf("%s: reload accepted", c.name)
		}
		if err := cl.Flows(ctx, FlowFilter{}, func(Flow) error { return nil }); err == nil {
			t.Errorf("%s: flows accepted", c.name)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: /metrics status %d, want 401", c.name, resp.StatusCode)
		}
	}
	if n := b.reloads.Load(); n != 0 {
		t.Fatalf("%d reloads without the token", n)
	}
	cl := NewClient(addr).WithToken(tok)
	if st, err := cl.Stats(ctx); err != nil || st.FlowEntries != 10 {
		t.Errorf("right token: stats %+v, %v", st, err)
	}
	n := 0
	if err := cl.Flows(ctx, FlowFilter{}, func(Flow) error { n++; return nil }); err != nil || n != 10 {
		t.Errorf("right token: %d flows, %v; want 10", n, err)
	}
	if err := cl.Reload(ctx); err != nil || b.reloads.Load() != 1 {
		t.Errorf("right token: reload %v, %d reloads", err, b.reloads.Load())
	}
}

// TestTCPWithoutTokenRefused: a server without a token does not serve on
// TCP; on its owner-only unix socket it needs none.
func TestTCPWithoutTokenRefused(t *testing.T) {
	s := NewServer(&tableBackend{}, logger(), ServerOptions{})
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := s.Serve(context.Background(), l); err == nil || !strings.Contains(err.Error(), "api_token_file") {
		t.Fatalf("Serve on TCP without a token: %v", err)
	}
	path := serveUnix(t, s)
	if _, err := NewClient("unix:" + path).Stats(context.Background()); err != nil {
		t.Errorf("unix socket without a token: %v", err)
	}
}

func TestReadTokenFile(t *testing.T) {
	if tok, err := ReadTokenFile(writeToken(t, "  abc123\n", 0o600)); err != nil || tok != "abc123" {
		t.Errorf("good file: %q, %v", tok, err)
	}
	for name, c := range map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"group-readable": {"abc", 0o640, "chmod 600"},
		"world-readable": {"abc", 0o604, "chmod 600"},
		"empty":          {"\n", 0o600, "empty"},
		"too long":       {strings.Repeat("a", MaxTokenBytes+1), 0o600, "longer than"},
		"two words":      {"abc def", 0o600, "white space"},
	} {
		if _, err := ReadTokenFile(writeToken(t, c.content, c.mode)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	if _, err := ReadTokenFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
}
