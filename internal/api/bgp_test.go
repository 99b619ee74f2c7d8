package api

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// bgpBackend is a tableBackend with a BGP speaker's state.
type bgpBackend struct {
	tableBackend
	drained time.Duration
}

func (b *bgpBackend) BGP(context.Context) (BGPStatus, error) {
	return BGPStatus{ASN: 65001, RouterID: "10.0.1.1", State: "announcing", HoldTime: 3, Keepalive: 1,
		Sessions: []BGPSession{{Neighbor: "10.0.1.254", ASN: 65000, State: "established", HoldTime: 3, Advertised: 2}},
		VIPs: []BGPVIP{{Prefix: "10.0.0.100/32", Announced: true, Services: []string{"web"}, Eligible: []string{"web"}},
			{Prefix: "fd00::1/128", Reason: "no eligible traffic manager", Services: []string{"web6"}, Eligible: []string{}}}}, nil
}

func (b *bgpBackend) Drain(d time.Duration) (BGPStatus, error) {
	b.drained = d
	st, _ := b.BGP(context.Background())
	st.State = "draining"
	st.Drain = &BGPDrain{Started: "now", Deadline: "later"}
	return st, nil
}

// TestBGPEndpoint: /v1/bgp and /v1/drain answer 404 for a backend without
// BGP; with one, the status round-trips, a drain takes its deadline (a
// bad one is refused), and the metrics have the sessions and VIPs.
func TestBGPEndpoint(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	off := NewClient("unix:" + serveUnix(t, NewServer(&tableBackend{}, log, ServerOptions{})))
	if _, err := off.BGP(ctx); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("BGP without a speaker: %v", err)
	}
	if _, err := off.Drain(ctx, 0); err == nil {
		t.Fatal("drain without a speaker succeeded")
	}

	b := &bgpBackend{}
	path := serveUnix(t, NewServer(b, log, ServerOptions{}))
	c := NewClient("unix:" + path)
	st, err := c.BGP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "announcing" || len(st.Sessions) != 1 || st.Sessions[0].State != "established" || len(st.VIPs) != 2 || st.VIPs[1].Reason == "" {
		t.Fatalf("status %+v", st)
	}
	if st, err = c.Drain(ctx, 30*time.Second); err != nil || st.State != "draining" || b.drained != 30*time.Second {
		t.Fatalf("drain: %+v %v (deadline %v)", st, err, b.drained)
	}
	hc := unixHTTP(path)
	for _, q := range []string{"deadline=x", "deadline=-1s", "deadline=25h"} {
		resp, err := hc.Post("http://switchyard/v1/drain?"+q, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s", q, resp.Status)
		}
	}
	resp, err := hc.Get("http://switchyard/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`switchyard_bgp_session_established{neighbor="10.0.1.254",state="established"} 1`,
		`switchyard_bgp_vip_announced{prefix="10.0.0.100/32"} 1`,
		`switchyard_bgp_vip_announced{prefix="fd00::1/128"} 0`,
		`switchyard_bgp_advertised_prefixes{neighbor="10.0.1.254"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// unixHTTP is an HTTP client over the unix socket at path.
func unixHTTP(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
}
