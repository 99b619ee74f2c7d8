package distributor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/mirror"
)

// StartPeers starts the peer protocol (internal/mirror) when peers: has
// addresses: flow events go to the peers, and their entries come in
// through the seam. Its replay floors are in distributor.state_dir
// (<id>.mirror).
func (d *Daemon) StartPeers(ctx context.Context) error {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	p := cfg.Peers
	if len(p.Addresses) == 0 {
		return nil
	}
	listen, err := netip.ParseAddrPort(p.Listen)
	if err != nil {
		return fmt.Errorf("peers.listen: %w", err)
	}
	var peers []netip.AddrPort
	for _, a := range p.Addresses {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return fmt.Errorf("peers.addresses: %w", err)
		}
		peers = append(peers, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return fmt.Errorf("peers: listen on %s: %w", listen, err)
	}
	policy := mirror.MirrorAll
	switch p.Mirror {
	case "signalled":
		policy = mirror.MirrorSignalled
	case "older":
		policy = mirror.MirrorOlder
	}
	m, err := mirror.New(mirror.Config{
		ID: p.ID, Key: p.Key, Conn: conn, Peers: peers, Tables: d.dp, Policy: policy,
		MinAge: time.Duration(p.MinAge) * time.Second, TMDigest: d.tmDigest, PersistMasks: d.persistMasks,
		StateFile: filepath.Join(cfg.Distributor.StateDir, cfg.Distributor.ID+".mirror"),
		Logger:    d.log.With("part", "mirror"),
	})
	if err != nil {
		conn.Close()
		return err
	}
	d.peers.Store(m)
	// Failover: a starting distributor takes traffic only once its peers'
	// tables are in (or WaitReady's timeout passes), so that it never
	// black-holes the flows it does not know yet.
	release := d.HoldTraffic("peers")
	go func() {
		select {
		case <-m.Synced():
			c := m.Counters()
			d.log.Info("peers synced", "flows_inserted", c.Inserted, "flows_replaced", c.Replaced,
				"second_keys_inserted", c.SecondInserted)
		case <-ctx.Done():
		}
		release()
	}()
	go func() {
		defer conn.Close()
		if err := m.Run(ctx); err != nil {
			d.log.Error("peer protocol stopped", "error", err)
		}
	}()
	d.log.Info("mirroring to peers", "listen", listen, "peers", len(peers), "mirror", p.Mirror)
	return nil
}

// tmDigest is the digest of the TMs in service by their data-path index
// (mirror.TMDigest): peers whose digests differ mean different TMs by one
// index, and refuse each other's entries.
func (d *Daemon) tmDigest() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var list []mirror.TMIndex
	for id, s := range d.tms {
		if s.present {
			list = append(list, mirror.TMIndex{Index: s.index, ID: id})
		}
	}
	return mirror.TMDigest(list)
}

// persistMasks is the persistence mask of each service index that has
// one, as written to the data path: the mirror sends a flow such a service
// selected with its persistence second key.
func (d *Daemon) persistMasks() map[uint16]uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[uint16]uint32{}
	for _, v := range d.written.Services {
		if v.PersistMask != 0 {
			out[uint16(v.Index)] = v.PersistMask
		}
	}
	return out
}

// PeersSynced is closed once every peer has sent its whole table (or at
// once without peers): the start gate waits for it, with a timeout, before
// taking traffic for the VIPs.
func (d *Daemon) PeersSynced() <-chan struct{} {
	if m := d.peers.Load(); m != nil {
		return m.Synced()
	}
	c := make(chan struct{})
	close(c)
	return c
}

// offerPeers hands a flow event to the peer protocol, if it runs.
func (d *Daemon) offerPeers(ev datapath.Event) {
	if m := d.peers.Load(); m != nil {
		m.Offer(ev)
	}
}

// peerStats adds the peers and the protocol's counters to st.
func (d *Daemon) peerStats(st *api.Stats) {
	m := d.peers.Load()
	if m == nil {
		return
	}
	st.Mirror = m.Counters().CounterMap()
	for _, p := range m.Peers() {
		ps := api.PeerStats{Addr: p.Addr.String(), ID: p.ID, State: p.State, Lag: p.Lag,
			Sent: p.Sent, Received: p.Received, Missing: p.Missing, Resyncs: p.Resyncs}
		if !p.LastHeard.IsZero() {
			ps.LastHeard = p.LastHeard.UTC().Format(time.RFC3339Nano)
		}
		st.Peers = append(st.Peers, ps)
	}
}
