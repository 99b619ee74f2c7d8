package tm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/tm/echo"
)

// echoServers starts n echo fixtures on loopback, each serving HTTP and UDP
// on one port.
func echoServers(t *testing.T, n int) (httpAddrs, udpAddrs []netip.AddrPort) {
	t.Helper()
	for i := range n {
		s := echo.New(fmt.Sprintf("s%d", i+1))
		if err := s.ListenHTTP(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
			t.Fatal(err)
		}
		if err := s.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		httpAddrs = append(httpAddrs, s.HTTPAddrs()[0])
		udpAddrs = append(udpAddrs, s.UDPAddrs()[0])
	}
	return
}

func freePort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func startTM(t *testing.T, cfg Config) *TM {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "tmT"
	}
	tm, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tm.Close() })
	return tm
}

func httpGet(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
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

// TestTCPProxyBalances: short connections through the TCP mode reach every
// server, least-active first, and bytes are counted both ways.
func TestTCPProxyBalances(t *testing.T) {
	h, _ := echoServers(t, 3)
	ln := freePort(t, "tcp")
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeTCP, Listen: ln, Servers: h}}, Source4: netip.MustParseAddr("127.0.0.1")})
	seen := map[string]int{}
	for range 30 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, body := httpGet(t, c, "http://"+ln.String()+"/")
		if resp.StatusCode != 200 || strings.TrimSpace(body) != resp.Header.Get(echo.Header) {
			t.Fatalf("status %d body %q header %q", resp.StatusCode, body, resp.Header.Get(echo.Header))
		}
		seen[strings.TrimSpace(body)]++
	}
	if len(seen) != 3 {
		t.Fatalf("servers used: %v, want all 3", seen)
	}
	waitFor(t, "connections closed", func() bool { return tm.Stats().Total.Active == 0 })
	st := tm.Stats().Total
	if st.Accepted != 30 || st.BytesIn == 0 || st.BytesOut == 0 || st.DialFailed != 0 {
		t.Fatalf("counters %+v", st)
	}
}

// TestHTTPModePerRequest: one keep-alive client connection, every request
// its own server choice; the TM's header names the TM, the server's moves.
func TestHTTPModePerRequest(t *testing.T) {
	h, _ := echoServers(t, 3)
	ln := freePort(t, "tcp")
	tm := startTM(t, Config{ID: "tmH", Proxies: []Proxy{{Mode: ModeHTTP, Listen: ln, Servers: h}}})
	c := &http.Client{}
	servers := map[string]int{}
	for range 30 {
		resp, body := httpGet(t, c, "http://"+ln.String()+"/")
		if resp.StatusCode != 200 || resp.Header.Get(Header) != "tmH" || resp.Header.Get(ServerHeader) != strings.TrimSpace(body) {
			t.Fatalf("status %d, %s %q, %s %q, body %q", resp.StatusCode, Header, resp.Header.Get(Header),
				ServerHeader, resp.Header.Get(ServerHeader), body)
		}
		servers[strings.TrimSpace(body)]++
	}
	if len(servers) != 3 {
		t.Fatalf("one keep-alive connection reached %v, want all 3 servers", servers)
	}
	if st := tm.Stats().Total; st.Accepted != 1 || st.Requests != 30 {
		t.Fatalf("accepted %d connections and %d requests, want 1 and 30", st.Accepted, st.Requests)
	}
}

// TestUDPSessions: each client address sticks to one server; sessions
// end after the idle timeout.
func TestUDPSessions(t *testing.T) {
	_, u := echoServers(t, 2)
	ln := freePort(t, "udp")
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeUDP, Listen: ln, Servers: u}}, UDPIdleTimeout: 300 * time.Millisecond})
	used := map[string]bool{}
	for i := range 6 {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ln))
		if err != nil {
			t.Fatal(err)
		}
		var first string
		for j := range 5 {
			msg := fmt.Sprintf("c%d-%d", i, j)
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			id, rest, _ := strings.Cut(string(buf[:n]), " ")
			if rest != msg {
				t.Fatalf("reply %q to %q", buf[:n], msg)
			}
			if j == 0 {
				first = id
			} else if id != first {
				t.Fatalf("client %d moved from %s to %s", i, first, id)
			}
		}
		used[first] = true
		c.Close()
	}
	if len(used) != 2 {
		t.Fatalf("servers used %v, want both", used)
	}
	waitFor(t, "sessions to time out", func() bool { return tm.Stats().Total.Active == 0 })
}

// TestHealthChecks: a server that stops listening is taken out and no
// client is sent to it; /healthz says so when none is left.
func TestHealthChecks(t *testing.T) {
	h, _ := echoServers(t, 1)
	dead := freePort(t, "tcp") // nothing listens there
	ln := freePort(t, "tcp")
	admin := freePort(t, "tcp")
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeTCP, Listen: ln, Servers: []netip.AddrPort{h[0], dead}}},
		Admin: admin, HealthInterval: 50 * time.Millisecond, HealthTimeout: 200 * time.Millisecond})
	waitFor(t, "the dead server down", func() bool { return !tm.Stats().Proxies[0].Servers[1].Up })
	for range 10 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, _ := httpGet(t, c, "http://"+ln.String()+"/"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if st := tm.Stats().Total; st.DialFailed != 0 {
		t.Fatalf("%d connections went to the dead server", st.DialFailed)
	}
	resp, body := httpGet(t, http.DefaultClient, "http://"+admin.String()+"/healthz")
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d %q with one server up", resp.StatusCode, body)
	}
	resp, body = httpGet(t, http.DefaultClient, "http://"+admin.String()+"/stats")
	var st Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 || st.ID != "tmT" || len(st.Proxies[0].Servers) != 2 {
		t.Fatalf("stats %d %v %+v", resp.StatusCode, err, st)
	}
}

// TestDrain: a drain refuses new connections, lets an open one finish, and
// /healthz answers 503 meanwhile.
func TestDrain(t *testing.T) {
	h, _ := echoServers(t, 1)
	ln := freePort(t, "tcp")
	admin := freePort(t, "tcp")
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeTCP, Listen: ln, Servers: h}}, Admin: admin})
	c, err := net.Dial("tcp4", ln.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the connection accepted", func() bool { return tm.Stats().Total.Active == 1 })
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drained <- tm.Drain(ctx)
	}()
	waitFor(t, "draining", func() bool { return tm.Stats().Draining })
	if ok, why := tm.Healthy(); ok || why != "draining" {
		t.Fatalf("healthy %v %q while draining", ok, why)
	}
	waitFor(t, "the listener closed", func() bool {
		c2, err := net.DialTimeout("tcp4", ln.String(), time.Second)
		if err == nil {
			c2.Close()
		}
		return err != nil
	})
	// The open connection still works.
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("open connection during drain: %q %v", line, err)
	}
	c.Close() // the last connection ends: the drain ends with it
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("drain did not end after the last connection closed")
	}
}

func TestValidate(t *testing.T) {
	good := Proxy{Mode: ModeTCP, Listen: netip.MustParseAddrPort("127.0.0.1:1"), Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:2")}}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no id", Config{Proxies: []Proxy{good}}, "id: empty"},
		{"no proxies", Config{ID: "a"}, "proxies: 0"},
		{"bad mode", Config{ID: "a", Proxies: []Proxy{{Mode: "sctp", Listen: good.Listen, Servers: good.Servers}}}, `mode "sctp"`},
		{"ftp without signals", Config{ID: "a", Proxies: []Proxy{{Mode: ModeFTP, Listen: good.Listen, Servers: good.Servers}}}, "needs a signal sender"},
		{"no servers", Config{ID: "a", Proxies: []Proxy{{Mode: ModeTCP, Listen: good.Listen}}}, "0 servers"},
		{"source6 is v4", Config{ID: "a", Proxies: []Proxy{good}, Source6: netip.MustParseAddr("10.0.0.1")}, "not an IPv6"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUDPOneWayStaysOneSession: a client that only sends (the server never
// answers) keeps its session, and so its server, while it sends; the
// session ends once it stops.
func TestUDPOneWayStaysOneSession(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	got := make(chan int, 1)
	go func() {
		n := 0
		buf := make([]byte, 100)
		for {
			_ = sink.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := sink.Read(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	ln := freePort(t, "udp")
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeUDP, Listen: ln, Servers: []netip.AddrPort{sink.LocalAddr().(*net.UDPAddr).AddrPort()}}},
		UDPIdleTimeout: 200 * time.Millisecond})
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ln))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 15 { // 1.5 s: several idle timeouts long
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := tm.Stats().Total; st.Accepted != 1 {
		t.Fatalf("a one-way stream made %d sessions, want 1", st.Accepted)
	}
	waitFor(t, "the session to end after the client stopped", func() bool { return tm.Stats().Total.Active == 0 })
	if n := <-got; n != 15 {
		t.Errorf("the server got %d of 15 datagrams", n)
	}
}
