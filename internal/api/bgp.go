package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BGPBackend is what a Backend with a BGP speaker adds (the distributor
// daemon). A Backend without it answers 404 on /v1/bgp and /v1/drain.
type BGPBackend interface {
	// BGP returns the speaker's state; ErrBGPOff if BGP is not configured.
	BGP(ctx context.Context) (BGPStatus, error)
	// Drain withdraws every VIP and stops the daemon once the flows that
	// still arrive have ended, or after deadline (0: bgp.drain_deadline).
	Drain(deadline time.Duration) (BGPStatus, error)
}

// ErrBGPOff is BGPBackend's error when the config has no bgp neighbors.
var ErrBGPOff = errors.New("bgp is not configured (no bgp.neighbors)")

// MaxDrainDeadline bounds the deadline of a drain request.
const MaxDrainDeadline = 24 * time.Hour

// BGPStatus is GET /v1/bgp (docs/bgp.md, "Admin API").
type BGPStatus struct {
	ASN      uint32 `json:"asn"`
	RouterID string `json:"router_id"`
	// State is one of: waiting (not announcing yet; Waiting says for
	// what), announcing, draining, drained, datapath_down, stopped.
	State string `json:"state"`
	// Waiting lists what announcing still waits for: "peers_resync",
	// "announce_delay", "attach".
	Waiting []string `json:"waiting,omitempty"`
	// Started is when the speaker started; FirstAnnounce when it first
	// announced a VIP (RFC 3339, "" if not yet); AnnounceAfterSeconds the
	// difference.
	Started              string  `json:"started"`
	FirstAnnounce        string  `json:"first_announce,omitempty"`
	AnnounceAfterSeconds float64 `json:"announce_after_seconds,omitempty"`
	// HoldTime and Keepalive are the configured timers in seconds.
	HoldTime  uint32 `json:"hold_time"`
	Keepalive uint32 `json:"keepalive"`
	// Sessions are the neighbors' sessions, in config order.
	Sessions []BGPSession `json:"sessions"`
	// VIPs are every configured VIP, announced or not, and why not.
	VIPs []BGPVIP `json:"vips"`
	// Drain is the drain in progress or done; absent if none.
	Drain *BGPDrain `json:"drain,omitempty"`
	// Announcements and Withdrawals count the speaker's changes.
	Announcements uint64 `json:"announcements"`
	Withdrawals   uint64 `json:"withdrawals"`
}

// BGPSession is one neighbor's session.
type BGPSession struct {
	Neighbor string `json:"neighbor"`
	ASN      uint32 `json:"asn"`
	// State: idle, connect, active, opensent, openconfirm, established.
	State string `json:"state"`
	// Since is when it was established ("" if it is not).
	Since         string  `json:"since,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// HoldTime is the negotiated hold time in seconds.
	HoldTime   uint64 `json:"hold_time"`
	Advertised uint64 `json:"advertised"`
	Received   uint64 `json:"received"`
	Flaps      uint64 `json:"flaps"`
	// BFD is the BFD session's state (admin_down, down, init, up); absent
	// without bgp.bfd_interval_ms. BFDDowns counts the times it left up.
	BFD      string `json:"bfd,omitempty"`
	BFDDowns uint64 `json:"bfd_downs,omitempty"`
}

// BGPVIP is one VIP's announcement.
type BGPVIP struct {
	// Prefix is the host route: a.b.c.d/32 or x::y/128.
	Prefix    string `json:"prefix"`
	Announced bool   `json:"announced"`
	// Reason says why it is not announced: "waiting: peers_resync",
	// "draining", "no eligible traffic manager", "data path down: …",
	// "no IPv6 next hop (bgp.next_hop6)"; "" when announced.
	Reason string `json:"reason,omitempty"`
	// Services are the services on the VIP; Eligible those with at least
	// one TM that takes new flows.
	Services []string `json:"services"`
	Eligible []string `json:"eligible"`
}

// BGPDrain is a graceful drain.
type BGPDrain struct {
	Started  string `json:"started"`
	Deadline string `json:"deadline"`
	// Packets counts the packets of the VIPs' services forwarded here
	// since the drain began: the flows that still arrive.
	Packets uint64 `json:"packets"`
	// IdleSeconds is how long no packet of the VIPs has arrived; the
	// drain ends when it reaches 2 s (DrainIdle).
	IdleSeconds float64 `json:"idle_seconds"`
	// Done is set when the drain has ended; EndedBy says how: "idle" (no
	// flow arrived for the idle window) or "deadline".
	Done    bool   `json:"done"`
	EndedBy string `json:"ended_by,omitempty"`
}

// bgpRoutes adds /v1/bgp, /v1/drain and the BGP metrics when b has a
// speaker.
func (s *Server) bgpRoutes(reg *prometheus.Registry) {
	bb, ok := s.b.(BGPBackend)
	answer := func(w http.ResponseWriter, st BGPStatus, err error) {
		switch {
		case errors.Is(err, ErrBGPOff):
			s.writeError(w, http.StatusNotFound, err)
		case err != nil:
			s.writeError(w, http.StatusInternalServerError, err)
		default:
			s.writeJSON(w, http.StatusOK, st)
		}
	}
	s.mux.HandleFunc("GET /v1/bgp", func(w http.ResponseWriter, r *http.Request) {
		if !ok {
			answer(w, BGPStatus{}, ErrBGPOff)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := bb.BGP(ctx)
		answer(w, st, err)
	})
	s.mux.HandleFunc("POST /v1/drain", func(w http.ResponseWriter, r *http.Request) {
		if !ok {
			answer(w, BGPStatus{}, ErrBGPOff)
			return
		}
		var dl time.Duration
		if v := r.URL.Query().Get("deadline"); v != "" {
			var err error
			dl, err = time.ParseDuration(v)
			if err != nil || dl <= 0 || dl > MaxDrainDeadline {
				s.writeError(w, http.StatusBadRequest, fmt.Errorf("drain: deadline %q: expected a duration in (0, %v], e.g. 60s", v, MaxDrainDeadline))
				return
			}
		}
		st, err := bb.Drain(dl)
		answer(w, st, err)
	})
	if ok {
		reg.MustRegister(&bgpCollector{b: bb, s: s})
	}
}

var (
	descBGPSession  = prometheus.NewDesc("switchyard_bgp_session_established", "1 when the BGP session to the neighbor is established.", []string{"neighbor", "state"}, nil)
	descBGPUptime   = prometheus.NewDesc("switchyard_bgp_session_uptime_seconds", "How long the session has been established.", []string{"neighbor"}, nil)
	descBGPFlaps    = prometheus.NewDesc("switchyard_bgp_session_flaps_total", "Times the session left established.", []string{"neighbor"}, nil)
	descBGPAdv      = prometheus.NewDesc("switchyard_bgp_advertised_prefixes", "Prefixes advertised to the neighbor.", []string{"neighbor"}, nil)
	descBGPBFD      = prometheus.NewDesc("switchyard_bgp_bfd_up", "1 when the BFD session with the neighbor is up.", []string{"neighbor"}, nil)
	descBGPAnnounce = prometheus.NewDesc("switchyard_bgp_vip_announced", "1 when the VIP is announced.", []string{"prefix"}, nil)
	descBGPChanges  = prometheus.NewDesc("switchyard_bgp_route_changes_total", "Announcements and withdrawals the speaker made.", []string{"change"}, nil)
	descBGPDraining = prometheus.NewDesc("switchyard_bgp_draining", "1 while a graceful drain is in progress.", nil, nil)
)

type bgpCollector struct {
	b BGPBackend
	s *Server
}

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBGPSession, descBGPUptime, descBGPFlaps, descBGPAdv, descBGPBFD, descBGPAnnounce, descBGPChanges, descBGPDraining} {
		ch <- d
	}
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.b.BGP(ctx)
	if err != nil {
		if !errors.Is(err, ErrBGPOff) {
			c.s.log.Warn("metrics: bgp", "error", err)
		}
		return
	}
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, ss := range st.Sessions {
		g(descBGPSession, b(ss.State == "established"), ss.Neighbor, ss.State)
		g(descBGPUptime, ss.UptimeSeconds, ss.Neighbor)
		ch <- prometheus.MustNewConstMetric(descBGPFlaps, prometheus.CounterValue, float64(ss.Flaps), ss.Neighbor)
		g(descBGPAdv, float64(ss.Advertised), ss.Neighbor)
		if ss.BFD != "" {
			g(descBGPBFD, b(ss.BFD == "up"), ss.Neighbor)
		}
	}
	for _, v := range st.VIPs {
		g(descBGPAnnounce, b(v.Announced), v.Prefix)
	}
	ch <- prometheus.MustNewConstMetric(descBGPChanges, prometheus.CounterValue, float64(st.Announcements), "announce")
	ch <- prometheus.MustNewConstMetric(descBGPChanges, prometheus.CounterValue, float64(st.Withdrawals), "withdraw")
	g(descBGPDraining, b(st.State == "draining"))
}

// BGP returns the distributor's BGP state (GET /v1/bgp).
func (c *Client) BGP(ctx context.Context) (BGPStatus, error) {
	var s BGPStatus
	return s, c.getJSON(ctx, "/v1/bgp", &s)
}

// Drain starts a graceful drain (POST /v1/drain); deadline 0 takes the
// configured bgp.drain_deadline.
func (c *Client) Drain(ctx context.Context, deadline time.Duration) (BGPStatus, error) {
	path := "/v1/drain"
	if deadline > 0 {
		path += "?deadline=" + url.QueryEscape(deadline.String())
	}
	resp, err := c.do(ctx, http.MethodPost, path)
	if err != nil {
		return BGPStatus{}, err
	}
	defer resp.Body.Close()
	var s BGPStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONAnswer)).Decode(&s); err != nil {
		return s, fmt.Errorf("admin API /v1/drain: decode: %w", err)
	}
	return s, nil
}
