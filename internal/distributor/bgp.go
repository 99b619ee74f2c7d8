package distributor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/bgp"
	"github.com/switchyard/switchyard/internal/config"
)

// BGP (docs/bgp.md): the daemon decides what the speaker (internal/bgp)
// announces. A VIP is announced when all of these hold:
//
//   - the data path is attached (StartBGP is called after Attach) and is
//     still there: every interface exists, is up and has the program;
//   - the start gate is passed: the peers' initial resync is done
//     (PeersSynced), or its timeout passed; then bgp.announce_delay_ms;
//   - no drain is in progress;
//   - at least one service on the VIP has an eligible TM: its pool in the
//     state the daemon last wrote (the same desired State, so a VIP is
//     withdrawn in the same apply that empties its last ring);
//   - for an IPv6 VIP, bgp.next_hop6 is set.
//
// It is reconciled after every apply (a kick), every second, and on drain.

// DrainIdle is how long no packet of the VIPs must have arrived for a
// drain to end before its deadline.
const DrainIdle = 2 * time.Second

type bgpCtl struct {
	sp      *bgp.Speaker
	cfg     config.BGP
	started time.Time
	kick    chan struct{}
	drained chan struct{}

	mu            sync.Mutex
	attached      bool
	ready         bool
	waiting       []string
	firstAnnounce time.Time
	dpDown        string // why the data path is gone; "" if it is there
	drain         *api.BGPDrain
	drainStart    time.Time
	drainEnd      time.Time
	drainSeen     time.Time // when the VIPs' packet count last changed
	drainPkts     uint64    // the VIPs' packet count then
	drainPkts0    uint64    // and when the drain began
	vips          []api.BGPVIP
	announces     uint64
	withdraws     uint64
	stopped       bool
}

// speakerConfig turns the bgp section into the speaker's config.
func speakerConfig(b config.BGP) bgp.Config {
	c := bgp.Config{ASN: b.ASN, RouterID: b.RouterID, ListenPort: b.ListenPort,
		NextHop4: b.NextHop, NextHop6: b.NextHop6, HoldTime: b.HoldTime, Keepalive: b.Keepalive,
		BFDInterval: time.Duration(b.BFDIntervalMS) * time.Millisecond, BFDMultiplier: uint8(b.BFDMultiplier)}
	for _, s := range b.Communities {
		if v, err := config.ParseCommunity(s); err == nil {
			c.Communities = append(c.Communities, v)
		}
	}
	for _, n := range b.Neighbors {
		c.Neighbors = append(c.Neighbors, bgp.Neighbor{Address: n.Address, ASN: n.ASN, Port: n.Port, Password: n.Password})
	}
	return c
}

// StartBGP starts the BGP speaker when bgp.neighbors is set. Call it after
// Attach: it announces once the peers are synced (or gateDeadline passed:
// the start gate's own deadline, so that a peer that is down delays the
// start once, not twice)
// and bgp.announce_delay_ms later, and keeps the announcements in step
// with the daemon's state until ctx is done. Drained is closed when a
// drain ends.
func (d *Daemon) StartBGP(ctx context.Context, gateDeadline time.Time) error {
	d.mu.Lock()
	cfg := d.cfg.BGP
	d.mu.Unlock()
	if !cfg.Enabled() {
		return nil
	}
	sp, err := bgp.Start(d.log.With("part", "bgp"), speakerConfig(cfg))
	if err != nil {
		return err
	}
	b := &bgpCtl{sp: sp, cfg: cfg, started: time.Now(), kick: make(chan struct{}, 1), drained: make(chan struct{}),
		attached: true, waiting: []string{"peers_resync"}}
	d.bgp.Store(b)
	d.log.Info("bgp speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID, "neighbors", len(cfg.Neighbors),
		"hold_time", cfg.HoldTime, "keepalive", cfg.Keepalive, "bfd_interval_ms", cfg.BFDIntervalMS)
	go d.runBGP(ctx, b, gateDeadline)
	return nil
}

func (d *Daemon) runBGP(ctx context.Context, b *bgpCtl, gateDeadline time.Time) {
	d.reconcileBGP(b)
	t := time.NewTimer(max(0, time.Until(gateDeadline)))
	select {
	case <-d.PeersSynced():
	case <-t.C:
		d.log.Warn("bgp: announcing before the peers' resync is done (the start gate's timeout)")
	case <-ctx.Done():
		t.Stop()
		return
	}
	t.Stop()
	d.mu.Lock()
	delay := time.Duration(d.cfg.BGP.AnnounceDelayMS) * time.Millisecond
	d.mu.Unlock()
	if delay > 0 {
		b.mu.Lock()
		b.waiting = []string{"announce_delay"}
		b.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
	}
	b.mu.Lock()
	b.ready, b.waiting = true, nil
	b.mu.Unlock()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		d.reconcileBGP(b)
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		case <-tick.C:
		}
	}
}

// kickBGP asks for a reconcile of the announcements (after an apply).
func (d *Daemon) kickBGP() {
	if b := d.bgp.Load(); b != nil {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// bgpVIPs computes each VIP's eligibility from the config and the state
// last written (d.mu held).
func (d *Daemon) bgpVIPs() []api.BGPVIP {
	byVIP := map[netip.Addr]*api.BGPVIP{}
	var order []netip.Addr
	for _, sc := range d.cfg.Services {
		vip := sc.VIP.Unmap()
		v := byVIP[vip]
		if v == nil {
			v = &api.BGPVIP{Prefix: netip.PrefixFrom(vip, vip.BitLen()).String(), Services: []string{}, Eligible: []string{}}
			byVIP[vip] = v
			order = append(order, vip)
		}
		v.Services = append(v.Services, sc.Name)
		if s := d.svcs[idOf(sc)]; s != nil && len(d.written.Pools[s.index]) > 0 {
			v.Eligible = append(v.Eligible, sc.Name)
		}
	}
	slices.SortFunc(order, func(a, b netip.Addr) int { return a.Compare(b) })
	out := make([]api.BGPVIP, 0, len(order))
	for _, a := range order {
		out = append(out, *byVIP[a])
	}
	return out
}

// dataPathDown says why the data path is not forwarding on this host ("":
// it is): an interface is gone, down, or has no XDP program. Only for a
// loaded BPF data path.
func (d *Daemon) dataPathDown() string {
	if d.prog == nil {
		return ""
	}
	d.mu.Lock()
	ifs := slices.Clone(d.ifaces)
	d.mu.Unlock()
	for _, ifc := range ifs {
		l, err := netlink.LinkByIndex(ifc.index)
		switch {
		case err != nil:
			return fmt.Sprintf("interface %s: %v", ifc.name, err)
		case l.Attrs().Flags&1 == 0: // net.FlagUp
			return fmt.Sprintf("interface %s is down", ifc.name)
		case l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached:
			return fmt.Sprintf("interface %s has no XDP program", ifc.name)
		}
	}
	return ""
}

// reconcileBGP makes the announced prefixes match the daemon's state.
func (d *Daemon) reconcileBGP(b *bgpCtl) {
	down := d.dataPathDown()
	d.mu.Lock()
	vips := d.bgpVIPs()
	drainDeadline := d.cfg.BGP.DrainDeadline // a reload may change it
	d.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.DrainDeadline = drainDeadline
	if b.stopped {
		return
	}
	if down != b.dpDown {
		if down != "" {
			d.log.Warn("bgp: data path gone; withdrawing every VIP", "why", down)
		} else {
			d.log.Info("bgp: data path back")
		}
		b.dpDown = down
	}
	if b.drain != nil && !b.drain.Done {
		d.checkDrain(b)
	}
	var want []netip.Prefix
	for i := range vips {
		v := &vips[i]
		p := netip.MustParsePrefix(v.Prefix)
		switch {
		case !b.ready:
			v.Reason = "waiting: " + joinWaiting(b.waiting)
		case b.drain != nil:
			v.Reason = "draining"
		case b.dpDown != "":
			v.Reason = "data path down: " + b.dpDown
		case len(v.Eligible) == 0:
			v.Reason = "no eligible traffic manager"
		case p.Addr().Is6() && !b.cfg.NextHop6.IsValid():
			v.Reason = "no IPv6 next hop (bgp.next_hop6)"
		default:
			want = append(want, p)
		}
	}
	before := b.sp.Announced()
	err := b.sp.Set(want)
	after := b.sp.Announced()
	for _, p := range after {
		if !slices.Contains(before, p) {
			b.announces++
		}
	}
	for _, p := range before {
		if !slices.Contains(after, p) {
			b.withdraws++
		}
	}
	if len(after) > 0 && b.firstAnnounce.IsZero() {
		b.firstAnnounce = time.Now()
		d.log.Info("bgp: first announcement", "after", b.firstAnnounce.Sub(b.started))
	}
	for i := range vips {
		v := &vips[i]
		if slices.Contains(after, netip.MustParsePrefix(v.Prefix)) {
			v.Announced, v.Reason = true, ""
		} else if v.Reason == "" {
			v.Reason = "announce failed"
			if err != nil {
				v.Reason += ": " + err.Error()
			}
		}
	}
	if err != nil {
		d.log.Error("bgp: announce", "error", err)
	}
	b.vips = vips
}

func joinWaiting(w []string) string {
	if len(w) == 0 {
		return "start"
	}
	s := w[0]
	for _, x := range w[1:] {
		s += ", " + x
	}
	return s
}

// checkDrain ends the drain when no packet of the VIPs' services has
// been forwarded for DrainIdle (the router has moved every flow, and the
// flows that had nowhere else to go have ended), or at the deadline
// (b.mu held).
func (d *Daemon) checkDrain(b *bgpCtl) {
	now := time.Now()
	pkts, err := d.vipPackets()
	if err != nil {
		d.log.Error("bgp drain: read the services' counters", "error", err)
	} else if pkts != b.drainPkts {
		b.drainPkts, b.drainSeen = pkts, now
	}
	b.drain.Packets = b.drainPkts - b.drainPkts0
	b.drain.IdleSeconds = now.Sub(b.drainSeen).Seconds()
	switch {
	case now.After(b.drainEnd):
		b.drain.Done, b.drain.EndedBy = true, "deadline"
	case err == nil && now.Sub(b.drainSeen) >= DrainIdle:
		b.drain.Done, b.drain.EndedBy = true, "idle"
	}
	if b.drain.Done {
		d.log.Info("bgp drain done", "ended_by", b.drain.EndedBy, "packets_since_withdraw", b.drain.Packets, "after", now.Sub(b.drainStart))
		close(b.drained)
	}
}

// vipPackets sums the packets forwarded for every service.
func (d *Daemon) vipPackets() (uint64, error) {
	d.mu.Lock()
	var idx []uint32
	for _, s := range d.svcs {
		idx = append(idx, s.index)
	}
	d.mu.Unlock()
	var n uint64
	for _, i := range idx {
		t, err := d.dp.ServiceTraffic(i)
		if err != nil {
			return 0, fmt.Errorf("service index %d: %w", i, err)
		}
		n += t.Packets
	}
	return n, nil
}

// Drain withdraws every VIP and ends the daemon (Drained) once no packet
// of the VIPs has arrived for DrainIdle, or after deadline (0:
// bgp.drain_deadline). A second call returns the drain in progress.
func (d *Daemon) Drain(deadline time.Duration) (api.BGPStatus, error) {
	b := d.bgp.Load()
	if b == nil {
		return api.BGPStatus{}, api.ErrBGPOff
	}
	b.mu.Lock()
	if b.drain == nil {
		if deadline <= 0 {
			deadline = time.Duration(b.cfg.DrainDeadline) * time.Second
		}
		b.drainStart = time.Now()
		b.drainEnd = b.drainStart.Add(deadline)
		b.drainSeen = b.drainStart
		if n, err := d.vipPackets(); err == nil {
			b.drainPkts, b.drainPkts0 = n, n
		}
		b.drain = &api.BGPDrain{Started: b.drainStart.UTC().Format(time.RFC3339Nano), Deadline: b.drainEnd.UTC().Format(time.RFC3339Nano)}
		d.log.Info("bgp drain: withdrawing every VIP", "deadline", deadline)
	}
	b.mu.Unlock()
	d.reconcileBGP(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.BGP(ctx)
}

// Drained is closed when a drain has ended (never without BGP).
func (d *Daemon) Drained() <-chan struct{} {
	if b := d.bgp.Load(); b != nil {
		return b.drained
	}
	return nil
}

// StopBGP withdraws every VIP and closes the sessions (shutdown).
func (d *Daemon) StopBGP() {
	b := d.bgp.Load()
	if b == nil {
		return
	}
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.sp.Stop()
	d.log.Info("bgp: withdrawn and stopped")
}

// BGP returns the speaker's state for the admin API.
func (d *Daemon) BGP(ctx context.Context) (api.BGPStatus, error) {
	b := d.bgp.Load()
	if b == nil {
		return api.BGPStatus{}, api.ErrBGPOff
	}
	sessions, err := b.sp.Sessions(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return api.BGPStatus{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := api.BGPStatus{ASN: b.cfg.ASN, RouterID: b.cfg.RouterID.String(), HoldTime: b.cfg.HoldTime, Keepalive: b.cfg.Keepalive,
		Started: b.started.UTC().Format(time.RFC3339Nano), Sessions: []api.BGPSession{}, VIPs: slices.Clone(b.vips),
		Announcements: b.announces, Withdrawals: b.withdraws, Waiting: slices.Clone(b.waiting)}
	if st.VIPs == nil {
		st.VIPs = []api.BGPVIP{}
	}
	if !b.firstAnnounce.IsZero() {
		st.FirstAnnounce = b.firstAnnounce.UTC().Format(time.RFC3339Nano)
		st.AnnounceAfterSeconds = b.firstAnnounce.Sub(b.started).Seconds()
	}
	for _, s := range sessions {
		st.Sessions = append(st.Sessions, api.BGPSession{Neighbor: s.Neighbor, ASN: s.ASN, State: s.State, Since: s.Since,
			UptimeSeconds: s.UptimeSeconds, HoldTime: s.HoldTime, Advertised: s.Advertised, Received: s.Received, Flaps: s.Flaps,
			BFD: s.BFD, BFDDowns: s.BFDDowns})
	}
	switch {
	case b.stopped:
		st.State = "stopped"
	case b.drain != nil && b.drain.Done:
		st.State = "drained"
	case b.drain != nil:
		st.State = "draining"
	case !b.ready:
		st.State = "waiting"
	case b.dpDown != "":
		st.State = "datapath_down"
	default:
		st.State = "announcing"
	}
	if b.drain != nil {
		dr := *b.drain
		st.Drain = &dr
	}
	return st, nil
}
