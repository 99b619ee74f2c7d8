package echo

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func start(t *testing.T, id string) *Server {
	t.Helper()
	s := New(id)
	if err := s.ListenHTTP(loopback); err != nil {
		t.Fatal(err)
	}
	if err := s.ListenUDP(loopback); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestHTTP(t *testing.T) {
	s := start(t, "tm7")
	base := "http://" + s.HTTPAddrs()[0].String()
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	resp, body := get("/")
	if resp.StatusCode != 200 || body != "tm7\n" || resp.Header.Get(Header) != "tm7" || resp.ContentLength != 4 {
		t.Fatalf("GET /: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get("/bytes?n=100000")
	if resp.StatusCode != 200 || len(body) != 100000 || resp.ContentLength != 100000 {
		t.Fatalf("GET /bytes: %d, %d bytes", resp.StatusCode, len(body))
	}
	for _, p := range []string{"/bytes", "/bytes?n=-1", "/bytes?n=x"} {
		if resp, _ := get(p); resp.StatusCode != 400 {
			t.Fatalf("GET %s: %d, want 400", p, resp.StatusCode)
		}
	}
	if resp, _ := get("/nope"); resp.StatusCode != 404 || resp.Header.Get(Header) != "tm7" {
		t.Fatalf("GET /nope: %d", resp.StatusCode)
	}
	st := s.Stats()
	if st.HTTPRequests != 6 || st.AcceptedConns != 1 || st.OpenConns != 1 || st.BytesSent != 100000 {
		t.Fatalf("stats %+v: want 6 requests on 1 kept-alive connection", st)
	}
	c.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().OpenConns != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("open connections after close: %+v", s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUDP(t *testing.T) {
	s := start(t, "tm3")
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(s.UDPAddrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for _, msg := range []string{"hello", ""} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != "tm3 "+msg {
			t.Fatalf("reply %q", got)
		}
	}
	// The server counts a reply after sending it: the client can read it
	// first, so poll.
	for deadline := time.Now().Add(5 * time.Second); s.Stats().UDPRequests != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", s.Stats())
		}
	}
}

func TestCloseEndsConnections(t *testing.T) {
	s := start(t, "tm1")
	conn, err := net.Dial("tcp", s.HTTPAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	if n, err := conn.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "\r\n\r\ntm1\n") {
		t.Fatalf("response %q, %v", buf[:n], err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("connection still open after Close")
	}
	if err := s.ListenHTTP(loopback); err == nil {
		t.Fatal("ListenHTTP after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	// Find a free port, then let Run bind it.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, "tmr", []netip.AddrPort{addr}, []netip.AddrPort{addr}) }()
	var resp *http.Response
	for range 100 {
		if resp, err = http.Get("http://" + addr.String() + "/"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get(Header) != "tmr" {
		t.Fatalf("header %v", resp.Header)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// A bad address is an error at once.
	if err := Run(context.Background(), "x", []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1")}, nil); err == nil {
		t.Fatal("Run on an address not held succeeded")
	}
}
