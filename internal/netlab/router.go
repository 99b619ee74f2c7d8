package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// SegRtr is the segment between the router and the clients behind it.
const SegRtr = "rtr"

// Router addresses: on segment ext (beside the distributors' ext0) and on
// its own client segment.
var (
	routerExt4 = netip.MustParsePrefix("10.0.1.254/24")
	routerExt6 = netip.MustParsePrefix("fd00:1::fe/64")
	routerRtr4 = netip.MustParsePrefix("10.9.0.1/24")
	routerRtr6 = netip.MustParsePrefix("fd00:9::1/64")
	// ClientNet4 and ClientNet6 are the networks of the clients behind the
	// router.
	ClientNet4 = netip.MustParsePrefix("10.9.0.0/24")
	ClientNet6 = netip.MustParsePrefix("fd00:9::/64")
)

// Router is a router namespace ("r1") between the distributors (segment
// ext: eth0 10.0.1.254/24, fd00:1::fe/64) and clients of its own (segment
// rtr: eth1 10.9.0.1/24, fd00:9::1/64), as an upstream router with ECMP
// towards the distributors. Routing is on with the L4 multipath hash
// (fib_multipath_hash_policy=1); the routes to the VIPs are whoever
// programs them (FRR over BGP: StartFRR).
type Router struct {
	Host *Host
	// Clients are behind the router: eth0 10.9.0.(10+i)/24,
	// fd00:9::(10+i)/64, default routes via the router.
	Clients []*Host
}

// Ext4 and Ext6 are the router's addresses on segment ext: the BGP
// neighbor address of the distributors.
func (r *Router) Ext4() netip.Addr { return r.Host.Links["eth0"].Addr4.Addr() }

// Ext6 is the router's IPv6 address on segment ext.
func (r *Router) Ext6() netip.Addr { return r.Host.Links["eth0"].Addr6.Addr() }

// AddRouter adds the router and n clients behind it (n ≥ 1), and gives
// every distributor of the topology routes to the clients' networks via
// the router (their return path: TMs answer through the first
// distributor's kernel).
func (t *Topology) AddRouter(ctx context.Context, n int) (*Router, error) {
	if n < 1 || n > 100 {
		return nil, fmt.Errorf("netlab: router clients %d: expected 1..100", n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sw := t.Switch
	if err := sw.Do(func() error { return addBridge(SegRtr, t.mtu) }); err != nil {
		return nil, fmt.Errorf("netlab: bridge %s: %w", SegRtr, err)
	}
	br, err := sw.nl.LinkByName(SegRtr)
	if err != nil {
		return nil, err
	}
	if err := sw.nl.LinkSetUp(br); err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.bridges[SegRtr] = br.Attrs().Index
	t.mu.Unlock()

	h, err := t.newHost("r1")
	if err != nil {
		return nil, err
	}
	if _, err := t.attach(h, "eth0", SegExt, routerExt4, routerExt6); err != nil {
		return nil, err
	}
	if _, err := t.attach(h, "eth1", SegRtr, routerRtr4, routerRtr6); err != nil {
		return nil, err
	}
	kv := [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		// ECMP spreads flows by their 5-tuple, not by addresses only.
		{"net.ipv4.fib_multipath_hash_policy", "1"},
		{"net.ipv6.fib_multipath_hash_policy", "1"},
	}
	for _, dev := range []string{"all", "default", "eth0", "eth1"} {
		kv = append(kv, [2]string{"net.ipv4.conf." + dev + ".rp_filter", "0"})
	}
	if err := h.NS.Sysctls(kv); err != nil {
		return nil, err
	}
	r := &Router{Host: h}
	for i := 1; i <= n; i++ {
		c, err := t.newHost(fmt.Sprintf("rc%d", i))
		if err != nil {
			return nil, err
		}
		a4, a6 := hostIn(ClientNet4, ClientNet6, 10+i)
		l, err := t.attach(c, "eth0", SegRtr, a4, a6)
		if err != nil {
			return nil, err
		}
		for _, gw := range []netip.Addr{routerRtr4.Addr(), routerRtr6.Addr()} {
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if gw.Is6() {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			if err := c.NS.nl.RouteAdd(&netlink.Route{LinkIndex: l.Index, Dst: ipNet(dst), Gw: net.IP(gw.AsSlice())}); err != nil {
				return nil, fmt.Errorf("netlab: default route via %s in %s: %w", gw, c.NS.Name, err)
			}
		}
		r.Clients = append(r.Clients, c)
	}
	for _, d := range t.Distributors {
		if err := r.RouteClients(d); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// RouteClients gives distributor d routes to the router's clients via the
// router's ext address.
func (r *Router) RouteClients(d *Host) error {
	l := d.Links["ext0"]
	if l == nil {
		return fmt.Errorf("netlab: %s has no ext0", d.Name)
	}
	for _, x := range []struct {
		dst netip.Prefix
		gw  netip.Addr
	}{{ClientNet4, r.Ext4()}, {ClientNet6, r.Ext6()}} {
		rt := &netlink.Route{LinkIndex: l.Index, Dst: ipNet(x.dst), Gw: net.IP(x.gw.AsSlice())}
		if err := d.NS.nl.RouteReplace(rt); err != nil {
			return fmt.Errorf("netlab: route to %s via %s in %s: %w", x.dst, x.gw, d.NS.Name, err)
		}
	}
	return nil
}

// hostIn returns host number n's addresses in two networks.
func hostIn(n4, n6 netip.Prefix, n int) (netip.Prefix, netip.Prefix) {
	a4 := n4.Addr().As4()
	a4[3] = byte(n)
	a6 := n6.Addr().As16()
	a6[15] = byte(n)
	return netip.PrefixFrom(netip.AddrFrom4(a4), n4.Bits()), netip.PrefixFrom(netip.AddrFrom16(a6), n6.Bits())
}
