package distributor

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// probeEvery bounds how often a TM whose neighbour entry is not fresh is
// probed: often enough to notice a MAC change within seconds.
const probeEvery = 3 * time.Second

// usable neighbour states: the kernel has (or recently had) a MAC.
const usableNUD = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// resolveAll refreshes every configured TM's MAC and egress interface and
// reports whether any changed. Called with d.mu held.
func (d *Daemon) resolveAll() bool {
	changed := false
	for _, s := range d.tms {
		if !s.present {
			continue
		}
		mac, ifindex := s.mac.String(), s.ifindex
		d.res.resolve(s)
		if s.mac.String() != mac || s.ifindex != ifindex {
			changed = true
		}
	}
	return changed
}

// netResolver resolves TMs through the kernel: the routing table for the
// egress interface, the neighbour table (probed when not fresh) for the MAC.
type netResolver struct {
	log    *slog.Logger
	ifaces []iface
}

// resolve finds the TM's egress interface from the routing table and its MAC
// from the config or the neighbour table, probing when the entry is missing
// or not fresh. A MAC once learned is kept until another replaces it: XDP
// forwarding bypasses the neighbour table, so its entries go stale by
// themselves.
func (d *netResolver) resolve(s *tmSlot) {
	addr := s.cfg.Address
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil || len(routes) == 0 {
		d.notReady(s, fmt.Sprintf("no route to %s: %v", addr, err))
		return
	}
	r := routes[0]
	if r.Gw != nil {
		d.notReady(s, fmt.Sprintf("%s is reached through gateway %s; forward mode l2 needs TMs on a directly connected segment", addr, r.Gw))
		return
	}
	i := slices.IndexFunc(d.ifaces, func(ifc iface) bool { return ifc.index == r.LinkIndex })
	if i < 0 {
		d.notReady(s, fmt.Sprintf("%s is reached through ifindex %d, which is not in distributor.interfaces", addr, r.LinkIndex))
		return
	}
	s.ifindex = d.ifaces[i].index
	s.srcMAC = d.ifaces[i].mac
	if s.cfg.MAC != nil {
		s.mac = s.cfg.MAC
		s.reason = ""
		return
	}
	family := netlink.FAMILY_V4
	if addr.Is6() && !addr.Is4In6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(s.ifindex, family)
	if err != nil {
		d.log.Warn("list neighbours", "interface", d.ifaces[i].name, "error", err)
	}
	fresh := false
	for _, n := range neighs {
		if !n.IP.Equal(addr.AsSlice()) || n.State&usableNUD == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		if s.mac.String() != n.HardwareAddr.String() {
			if s.mac != nil {
				d.log.Info("traffic manager MAC changed", "tm", s.cfg.ID, "old", s.mac, "new", n.HardwareAddr)
			}
			s.mac = slices.Clone(n.HardwareAddr)
		}
		fresh = n.State&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
	}
	if s.mac == nil {
		s.reason = fmt.Sprintf("resolving the MAC of %s on %s", addr, d.ifaces[i].name)
	} else {
		s.reason = ""
	}
	if !fresh && time.Since(s.lastProbe) >= probeEvery {
		s.lastProbe = time.Now()
		probe(s.cfg.Address.AsSlice())
	}
}

func (d *netResolver) notReady(s *tmSlot, reason string) {
	if s.reason != reason {
		d.log.Warn("traffic manager not ready", "tm", s.cfg.ID, "reason", reason)
	}
	s.reason = reason
	s.ifindex = 0
}

// probe makes the kernel resolve ip's MAC by sending it one empty UDP
// datagram to the discard port.
func probe(ip net.IP) {
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: ip, Port: 9})
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write(nil)
}

// monotonicSeconds is the data path's clock: whole seconds of
// CLOCK_MONOTONIC. The daemon writes it into the program every second
// (sy_now); entries carry it as their last-seen time.
func monotonicSeconds() uint32 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint32(ts.Sec)
}
