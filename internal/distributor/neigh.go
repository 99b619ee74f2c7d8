package distributor

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
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
		mac, ifindex, metric := s.mac.String(), s.ifindex, s.metric
		d.res.resolve(s)
		if s.mac.String() != mac || s.ifindex != ifindex || s.metric != metric {
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
// from the config or the neighbour table, probing when an entry is missing
// or not fresh. A TM is a host: every address it has must route through the
// same interface and, where resolved, to the same MAC; it is ready as soon
// as one address gives both (an IPv6 address still in NDP does not hold up
// IPv4). A MAC once learned is kept until another replaces it: XDP
// forwarding bypasses the neighbour table, so its entries go stale by
// themselves.
func (d *netResolver) resolve(s *tmSlot) {
	addrs := s.cfg.AllAddresses()
	if len(addrs) == 0 {
		d.notReady(s, "no address configured")
		return
	}
	var ifc *iface
	var via netip.Addr
	for _, addr := range addrs {
		routes, err := netlink.RouteGet(addr.AsSlice())
		if err != nil || len(routes) == 0 {
			d.notReady(s, fmt.Sprintf("no route to %s: %v", addr, err))
			return
		}
		r := routes[0]
		if addr == addrs[0] {
			s.metric = routeMetric(addr)
		}
		if r.Gw != nil {
			d.notReady(s, fmt.Sprintf("%s is reached through gateway %s; forward mode l2 needs TMs on a directly connected segment", addr, r.Gw))
			return
		}
		i := slices.IndexFunc(d.ifaces, func(ifc iface) bool { return ifc.index == r.LinkIndex })
		if i < 0 {
			d.notReady(s, fmt.Sprintf("%s is reached through ifindex %d, which is not in distributor.interfaces", addr, r.LinkIndex))
			return
		}
		if ifc != nil && ifc.index != d.ifaces[i].index {
			d.notReady(s, fmt.Sprintf("%s is reached through %s but %s through %s: the addresses of one TM must be of one host on one segment", via, ifc.name, addr, d.ifaces[i].name))
			return
		}
		ifc, via = &d.ifaces[i], addr
	}
	s.ifindex = ifc.index
	s.srcMAC = ifc.mac
	if s.cfg.MAC != nil {
		s.mac = s.cfg.MAC
		s.reason = ""
		return
	}
	found := map[string]netip.Addr{} // usable neighbour MACs, by the address that has each
	for _, addr := range addrs {
		mac, fresh := d.neighbour(ifc, addr)
		if mac != nil {
			if _, ok := found[mac.String()]; !ok {
				found[mac.String()] = addr
			}
			if s.mac.String() != mac.String() && len(found) == 1 {
				if s.mac != nil {
					d.log.Info("traffic manager MAC changed", "tm", s.cfg.ID, "old", s.mac, "new", mac)
				}
				s.mac = mac
			}
		}
		if !fresh && time.Since(s.lastProbe) >= probeEvery {
			probe(addr.AsSlice())
		}
	}
	if time.Since(s.lastProbe) >= probeEvery {
		s.lastProbe = time.Now()
	}
	if len(found) > 1 {
		var pairs []string
		for mac, a := range found {
			pairs = append(pairs, fmt.Sprintf("%s has %s", a, mac))
		}
		slices.Sort(pairs)
		d.notReady(s, fmt.Sprintf("the addresses of one TM resolve to different MACs (%s): one TM is one host", strings.Join(pairs, ", ")))
		return
	}
	if s.mac == nil {
		s.reason = fmt.Sprintf("resolving the MAC of %s on %s", addrs[0], ifc.name)
	} else {
		s.reason = ""
	}
}

// neighbour returns addr's MAC in the neighbour table of ifc, if usable,
// and whether the entry is fresh.
func (d *netResolver) neighbour(ifc *iface, addr netip.Addr) (net.HardwareAddr, bool) {
	family := netlink.FAMILY_V4
	if addr.Is6() && !addr.Is4In6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(ifc.index, family)
	if err != nil {
		d.log.Warn("list neighbours", "interface", ifc.name, "error", err)
	}
	var mac net.HardwareAddr
	fresh := false
	for _, n := range neighs {
		if !n.IP.Equal(addr.AsSlice()) || n.State&usableNUD == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		mac = slices.Clone(n.HardwareAddr)
		fresh = n.State&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
	}
	return mac, fresh
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
