package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// SegEdge is the segment between the router and the clients behind it
// (AddEdgeRouter).
const SegEdge = "edge"

// Edge addressing: the router is .1, the clients behind it .11, .12, …
var edgeNets = [2]netip.Prefix{netip.MustParsePrefix("10.3.0.0/24"), netip.MustParsePrefix("fd00:30::/64")}

// routerHostNum is the router's host number on the ext and int segments
// (distributors take .1–.9, clients and TMs .11 and up).
const routerHostNum = 250

// EdgeRouter is a router namespace put between clients and the distributors:
// its ext0 is on segment ext with the distributors' external interfaces,
// its int0 on segment int with the TMs (their replies to the clients come
// back through it, as through a real network's default gateway), its edge0
// on segment edge with the clients behind it. It forwards; which
// distributors it sends the VIPs' traffic to is up to the caller
// (routes in Host.NS).
type EdgeRouter struct {
	Host *Host
	// Clients are the hosts behind the router on segment edge, each with
	// default routes via the router.
	Clients []*Host
	// Edge4 and Edge6 are the edge segment's prefixes.
	Edge4, Edge6 netip.Prefix
}

// AddEdgeRouter adds router host "r1" and clients "e1".."eN" behind it on a new
// segment edge (10.3.0.0/24, fd00:30::/64), and routes from every
// distributor and TM of the topology to that segment via the router. TMs
// added later need RouteEdge.
func (t *Topology) AddEdgeRouter(ctx context.Context, clients int) (*EdgeRouter, error) {
	if clients < 1 || clients > 200 {
		return nil, fmt.Errorf("netlab: router clients %d: want 1..200", clients)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := t.Switch.Do(func() error { return addBridge(SegEdge, t.mtu) }); err != nil {
		return nil, fmt.Errorf("netlab: bridge %s: %w", SegEdge, err)
	}
	br, err := t.Switch.nl.LinkByName(SegEdge)
	if err != nil {
		return nil, err
	}
	if err := t.Switch.nl.LinkSetUp(br); err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.bridges[SegEdge] = br.Attrs().Index
	t.mu.Unlock()

	h, err := t.newHost("r1")
	if err != nil {
		return nil, err
	}
	for _, x := range []struct{ ifname, seg string }{{"ext0", SegExt}, {"int0", SegInt}} {
		a4, a6 := hostAddrs(x.seg, routerHostNum)
		if _, err := t.attach(h, x.ifname, x.seg, a4, a6); err != nil {
			return nil, err
		}
	}
	e4, e6 := edgeAddrs(1)
	if _, err := t.attach(h, "edge0", SegEdge, e4, e6); err != nil {
		return nil, err
	}
	kv := [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		// Replies from the TMs come in on int0 for clients on edge0, and the
		// clients' packets leave on ext0: no redirects, no reverse-path drops.
		{"net.ipv4.conf.all.send_redirects", "0"},
		{"net.ipv4.conf.default.send_redirects", "0"},
	}
	for _, dev := range []string{"all", "default", "lo", "ext0", "int0", "edge0"} {
		kv = append(kv, [2]string{"net.ipv4.conf." + dev + ".rp_filter", "0"})
	}
	if err := h.NS.Sysctls(kv); err != nil {
		return nil, err
	}
	r := &EdgeRouter{Host: h, Edge4: edgeNets[0], Edge6: edgeNets[1]}
	for i := 1; i <= clients; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := t.newHost(fmt.Sprintf("e%d", i))
		if err != nil {
			return nil, err
		}
		a4, a6 := edgeAddrs(10 + i)
		l, err := t.attach(c, "eth0", SegEdge, a4, a6)
		if err != nil {
			return nil, err
		}
		for _, gw := range []netip.Prefix{e4, e6} {
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if gw.Addr().Is6() {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			rt := &netlink.Route{LinkIndex: l.Index, Dst: ipNet(dst), Gw: net.IP(gw.Addr().AsSlice())}
			if err := c.NS.nl.RouteAdd(rt); err != nil {
				return nil, fmt.Errorf("netlab: default route via %s in %s: %w", gw.Addr(), c.NS.Name, err)
			}
		}
		r.Clients = append(r.Clients, c)
	}
	t.mu.Lock()
	ds := append([]*Host(nil), t.Distributors...)
	tms := append([]*Host(nil), t.TMs...)
	t.mu.Unlock()
	for _, x := range ds {
		if err := r.RouteEdge(x, "ext0"); err != nil {
			return nil, err
		}
	}
	for _, x := range tms {
		if err := r.RouteEdge(x, "eth0"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// edgeAddrs are host number n's addresses on the edge segment.
func edgeAddrs(n int) (netip.Prefix, netip.Prefix) {
	a4 := edgeNets[0].Addr().As4()
	a4[3] = byte(n)
	a6 := edgeNets[1].Addr().As16()
	a6[15] = byte(n)
	return netip.PrefixFrom(netip.AddrFrom4(a4), 24), netip.PrefixFrom(netip.AddrFrom16(a6), 64)
}

// RouteEdge routes the edge segment from host h, through its interface
// ifname, via the router's address on that interface's segment.
func (r *EdgeRouter) RouteEdge(h *Host, ifname string) error {
	l := h.Links[ifname]
	if l == nil {
		return fmt.Errorf("netlab: %s has no %s", h.Name, ifname)
	}
	var rl *Link
	for _, x := range r.Host.Links {
		if x.Segment == l.Segment {
			rl = x
		}
	}
	if rl == nil {
		return fmt.Errorf("netlab: router is not on segment %s of %s/%s", l.Segment, h.Name, ifname)
	}
	var errs []error
	for _, p := range [][2]netip.Prefix{{r.Edge4, rl.Addr4}, {r.Edge6, rl.Addr6}} {
		rt := &netlink.Route{LinkIndex: l.Index, Dst: ipNet(p[0]), Gw: net.IP(p[1].Addr().AsSlice())}
		if err := h.NS.nl.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("netlab: route %s via %s in %s: %w", p[0], p[1].Addr(), h.NS.Name, err))
		}
	}
	return errors.Join(errs...)
}
