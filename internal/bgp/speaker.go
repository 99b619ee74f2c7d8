// Package bgp is the distributor's BGP speaker: GoBGP (github.com/osrg/gobgp/v3)
// run as a library inside the daemon, announcing host routes (IPv4 /32,
// IPv6 /128) for the VIPs to the configured neighbors. The speaker only
// carries out a set of prefixes (Set); what to announce and when is the
// daemon's decision (internal/distributor/bgp.go). It learns no routes
// into the kernel: it accepts what the neighbors send and ignores it.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

// Neighbor is one router.
type Neighbor struct {
	Address  netip.Addr
	ASN      uint32
	Port     uint16 // 0: 179
	Password string // TCP MD5; "" for none
}

// Config is what the speaker needs; config.BGP turns into it.
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort > 0 accepts sessions on it; 0 only dials the neighbors.
	ListenPort uint16
	// NextHop4 is the next hop of IPv4 prefixes; invalid: 0.0.0.0, which
	// eBGP rewrites to the session's local address.
	NextHop4 netip.Addr
	// NextHop6 is the next hop of IPv6 prefixes; IPv6 prefixes cannot be
	// announced without it.
	NextHop6 netip.Addr
	// HoldTime and Keepalive are in seconds.
	HoldTime, Keepalive uint32
	// Communities are standard communities (ASN<<16 | value).
	Communities []uint32
	Neighbors   []Neighbor
	// BFDInterval, if set, runs BFD with every neighbor (bfd.go) at this
	// transmit and receive interval; BFDMultiplier is its detect
	// multiplier (default 3).
	BFDInterval   time.Duration
	BFDMultiplier uint8
}

// Session is the state of one neighbor's session.
type Session struct {
	// Neighbor is the router's address, ASN its AS number.
	Neighbor string `json:"neighbor"`
	ASN      uint32 `json:"asn"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm, established.
	State string `json:"state"`
	// Since is when the session was established (RFC 3339), "" if it is
	// not.
	Since string `json:"since,omitempty"`
	// UptimeSeconds is how long it has been established.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// HoldTime is the negotiated hold time in seconds (0: not established).
	HoldTime uint64 `json:"hold_time"`
	// Advertised and Received count prefixes over all families.
	Advertised uint64 `json:"advertised"`
	Received   uint64 `json:"received"`
	// Flaps counts the times the session left established.
	Flaps uint64 `json:"flaps"`
	// BFD is the BFD session's state (admin_down, down, init, up), ""
	// without BFD; BFDDowns counts the times it left up.
	BFD      string `json:"bfd,omitempty"`
	BFDDowns uint64 `json:"bfd_downs,omitempty"`
}

// Speaker is a running BGP speaker.
type Speaker struct {
	log *slog.Logger
	cfg Config
	srv *server.BgpServer
	bfd *bfdEnd // nil without BFD

	mu        sync.Mutex
	announced map[netip.Prefix][]byte // prefix → UUID of its path
	flaps     map[string]uint64
	up        map[string]bool
	stop      context.CancelFunc
	closed    bool
}

// MaxPrefixes bounds the prefixes a speaker announces.
const MaxPrefixes = 4096

var (
	famV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	famV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// Start starts the speaker and its sessions; it announces nothing until Set.
func Start(log *slog.Logger, cfg Config) (*Speaker, error) {
	if !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("bgp: router id %s is not an IPv4 address", cfg.RouterID)
	}
	srv := server.NewBgpServer(server.LoggerOption(&logger{log: log}))
	go srv.Serve()
	listen := int32(-1)
	if cfg.ListenPort > 0 {
		listen = int32(cfg.ListenPort)
	}
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: listen,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start the speaker (asn %d, router id %s): %w", cfg.ASN, cfg.RouterID, err)
	}
	s := &Speaker{log: log, cfg: cfg, srv: srv, announced: map[netip.Prefix][]byte{},
		flaps: map[string]uint64{}, up: map[string]bool{}}
	wctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	// Session changes: logged and counted (flaps).
	if err := srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		p := r.GetPeer()
		if p == nil || p.GetPeer() == nil || p.GetPeer().GetState() == nil {
			return
		}
		st := p.GetPeer().GetState()
		addr := st.GetNeighborAddress()
		est := st.GetSessionState() == api.PeerState_ESTABLISHED
		s.mu.Lock()
		was := s.up[addr]
		s.up[addr] = est
		if was && !est {
			s.flaps[addr]++
		}
		s.mu.Unlock()
		if was != est {
			s.log.Info("bgp session", "neighbor", addr, "state", stateName(st.GetSessionState()))
		}
	}); err != nil {
		cancel()
		srv.Stop()
		return nil, fmt.Errorf("bgp: watch sessions: %w", err)
	}
	for _, n := range cfg.Neighbors {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerOf(cfg, n)}); err != nil {
			cancel()
			srv.Stop()
			return nil, fmt.Errorf("bgp: neighbor %s (asn %d): %w", n.Address, n.ASN, err)
		}
	}
	if cfg.BFDInterval > 0 {
		mult := cfg.BFDMultiplier
		if mult == 0 {
			mult = 3
		}
		var addrs []netip.Addr
		for _, n := range cfg.Neighbors {
			addrs = append(addrs, n.Address)
		}
		b, err := startBFD(log, netip.Addr{}, addrs, cfg.BFDInterval, mult)
		if err != nil {
			cancel()
			srv.Stop()
			return nil, err
		}
		s.bfd = b
	}
	return s, nil
}

func peerOf(cfg Config, n Neighbor) *api.Peer {
	port := uint32(n.Port)
	if port == 0 {
		port = 179
	}
	fams := []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: famV4, Enabled: true}}}
	if cfg.NextHop6.IsValid() {
		fams = append(fams, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: famV6, Enabled: true}})
	}
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: uint64(cfg.HoldTime), KeepaliveInterval: uint64(cfg.Keepalive),
			// Retry a lost or refused session every second, not the
			// default 120 s: a router that restarts gets the VIPs back at once.
			ConnectRetry: 1, IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{RemotePort: port},
		AfiSafis:  fams,
	}
}

// Set makes the announced prefixes exactly want: it announces the new ones
// and withdraws the others. IPv6 prefixes need NextHop6.
func (s *Speaker) Set(want []netip.Prefix) error {
	if len(want) > MaxPrefixes {
		return fmt.Errorf("bgp: %d prefixes, at most %d", len(want), MaxPrefixes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp: speaker stopped")
	}
	ctx := context.Background()
	set := map[netip.Prefix]bool{}
	var errs []error
	for _, p := range want {
		p = p.Masked()
		set[p] = true
		if _, ok := s.announced[p]; ok {
			continue
		}
		path, err := s.path(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", p, err))
			continue
		}
		s.announced[p] = r.GetUuid()
		s.log.Info("bgp announce", "prefix", p)
	}
	for p, id := range s.announced {
		if set[p] {
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			continue
		}
		delete(s.announced, p)
		s.log.Info("bgp withdraw", "prefix", p)
	}
	return errors.Join(errs...)
}

// path builds the path of host prefix p.
func (s *Speaker) path(p netip.Prefix) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	attrs := []*anypb.Any{origin}
	fam := famV4
	if p.Addr().Is4() {
		nh := "0.0.0.0"
		if s.cfg.NextHop4.IsValid() {
			nh = s.cfg.NextHop4.Unmap().String()
		}
		a, err := anypb.New(&api.NextHopAttribute{NextHop: nh})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		if !s.cfg.NextHop6.IsValid() {
			return nil, fmt.Errorf("bgp: announce %s: no IPv6 next hop (bgp.next_hop6)", p)
		}
		fam = famV6
		a, err := anypb.New(&api.MpReachNLRIAttribute{Family: famV6, NextHops: []string{s.cfg.NextHop6.String()}, Nlris: []*anypb.Any{nlri}})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	if len(s.cfg.Communities) > 0 {
		a, err := anypb.New(&api.CommunitiesAttribute{Communities: s.cfg.Communities})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: attrs}, nil
}

// Received returns the prefixes the neighbors sent, sorted (the speaker
// installs none of them anywhere).
func (s *Speaker) Received(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, fam := range []*api.Family{famV4, famV6} {
		err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
			if p, err := netip.ParsePrefix(d.GetPrefix()); err == nil && len(out) < MaxPrefixes {
				for _, path := range d.GetPaths() {
					if !path.GetIsWithdraw() && path.GetNeighborIp() != "" && path.GetNeighborIp() != "<nil>" {
						out = append(out, p)
						break
					}
				}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("bgp: list received paths: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out, nil
}

// Announced returns the prefixes announced, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.announced))
	for p := range s.announced {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// Sessions returns the state of every neighbor's session, in config order.
func (s *Speaker) Sessions(ctx context.Context) ([]Session, error) {
	byAddr := map[string]*api.Peer{}
	if err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.GetConf() != nil {
			byAddr[p.GetConf().GetNeighborAddress()] = p
		}
	}); err != nil {
		return nil, fmt.Errorf("bgp: list sessions: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Session
	for _, n := range s.cfg.Neighbors {
		addr := n.Address.String()
		ss := Session{Neighbor: addr, ASN: n.ASN, State: "unknown", Flaps: s.flaps[addr]}
		if s.bfd != nil {
			ss.BFD, ss.BFDDowns = s.bfd.state(n.Address)
		}
		if p := byAddr[addr]; p != nil {
			ss.State = stateName(p.GetState().GetSessionState())
			if ss.State == "established" {
				if up := p.GetTimers().GetState().GetUptime(); up != nil {
					t := up.AsTime()
					ss.Since = t.UTC().Format(time.RFC3339Nano)
					ss.UptimeSeconds = time.Since(t).Seconds()
				}
				ss.HoldTime = p.GetTimers().GetState().GetNegotiatedHoldTime()
			}
			for _, a := range p.GetAfiSafis() {
				ss.Advertised += a.GetState().GetAdvertised()
				ss.Received += a.GetState().GetReceived()
			}
		}
		out = append(out, ss)
	}
	return out, nil
}

// Stop withdraws every prefix, closes the sessions (a NOTIFICATION to each
// neighbor, so that they withdraw at once rather than after the hold
// time) and stops the speaker.
func (s *Speaker) Stop() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	ctx := context.Background()
	for p, id := range s.announced {
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			s.log.Warn("bgp withdraw at stop", "prefix", p, "error", err)
		}
		delete(s.announced, p)
	}
	s.mu.Unlock()
	s.stop()
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		s.log.Warn("bgp stop", "error", err)
	}
	s.srv.Stop()
	if s.bfd != nil {
		s.bfd.close()
	}
}

func stateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// logger puts GoBGP's log on the daemon's slog logger; its info is debug
// here (it logs every FSM step).
type logger struct {
	log   *slog.Logger
	level gobgplog.LogLevel
}

func attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (l *logger) Panic(msg string, f gobgplog.Fields) { l.log.Error("gobgp: "+msg, attrs(f)...) }
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.log.Error("gobgp: "+msg, attrs(f)...) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.log.Error("gobgp: "+msg, attrs(f)...) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.log.Warn("gobgp: "+msg, attrs(f)...) }
func (l *logger) Info(msg string, f gobgplog.Fields)  { l.log.Debug("gobgp: "+msg, attrs(f)...) }
func (l *logger) Debug(msg string, f gobgplog.Fields) { l.log.Debug("gobgp: "+msg, attrs(f)...) }
func (l *logger) SetLevel(level gobgplog.LogLevel)    { l.level = level }
func (l *logger) GetLevel() gobgplog.LogLevel         { return l.level }
