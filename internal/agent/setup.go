package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetupOptions say how to prepare a TM host for the distributor's l2 mode.
type SetupOptions struct {
	// Iface is the interface towards the distributor.
	Iface string
	// Addrs are the VIPs and shared SNAT addresses the TM must hold on lo.
	Addrs []netip.Addr
	// Gateways, if set, are the distributor's addresses on Iface (one per
	// family) to route through: a default route via each is added when
	// the host has none of that family.
	Gateways []netip.Addr
}

// Setup prepares the calling thread's network namespace: Addrs on lo, ARP
// answers and announcements for them off on the other interfaces
// (arp_ignore=1, arp_announce=2; IPv6 needs nothing: Linux answers
// neighbour solicitations only for addresses of the receiving interface),
// and default routes via Gateways. It is idempotent: what is already as
// wanted is kept, and the returned undo removes only what Setup changed.
// It refuses, before changing anything, an address already held by another
// interface, a gateway that is one of Addrs or not on Iface's subnet (a
// route that would loop), and a default route of the same family through
// another gateway.
func Setup(o SetupOptions) (undo func() error, err error) {
	ifl, err := netlink.LinkByName(o.Iface)
	if err != nil {
		return nil, fmt.Errorf("setup: interface %s: %w", o.Iface, err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("setup: lo: %w", err)
	}
	// Check everything first.
	var addAddrs []netip.Addr
	want := map[netip.Addr]bool{}
	for _, a := range o.Addrs {
		a = a.Unmap()
		want[a] = true
		holder, err := addrHolder(a)
		if err != nil {
			return nil, err
		}
		switch holder {
		case "":
			addAddrs = append(addAddrs, a)
		case "lo":
		default:
			return nil, fmt.Errorf("setup: %v is already on %s: a VIP or SNAT address must be on lo only (the distributor owns it on the segment)", a, holder)
		}
	}
	var addRoutes []*netlink.Route
	for _, gw := range o.Gateways {
		gw = gw.Unmap()
		if want[gw] {
			return nil, fmt.Errorf("setup: gateway %v is one of the TM's own VIP/SNAT addresses: the route would loop", gw)
		}
		if !onLink(ifl, gw) {
			return nil, fmt.Errorf("setup: gateway %v is not on a subnet of %s: the distributor must be on the TM's segment", gw, o.Iface)
		}
		fam := unix.AF_INET
		if gw.Is6() {
			fam = unix.AF_INET6
		}
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
		if err != nil {
			return nil, fmt.Errorf("setup: list routes: %w", err)
		}
		have := false
		for _, r := range routes {
			if r.Dst != nil && !isDefault(r.Dst) {
				continue
			}
			if r.Gw != nil && r.Gw.Equal(net.IP(gw.AsSlice())) {
				have = true
				continue
			}
			return nil, fmt.Errorf("setup: the host already has a default route (%v): it would bypass or conflict with the distributor at %v", r, gw)
		}
		if !have {
			addRoutes = append(addRoutes, &netlink.Route{LinkIndex: ifl.Attrs().Index, Gw: net.IP(gw.AsSlice())})
		}
	}
	// Paths under /proc/sys (an interface name may hold dots).
	sysctls := [][2]string{
		{"net/ipv4/conf/all/arp_ignore", "1"},
		{"net/ipv4/conf/" + o.Iface + "/arp_ignore", "1"},
		{"net/ipv4/conf/all/arp_announce", "2"},
		{"net/ipv4/conf/" + o.Iface + "/arp_announce", "2"},
	}

	// Then change, remembering how to undo.
	var undos []func() error
	undo = func() error {
		var errs []error
		for i := len(undos) - 1; i >= 0; i-- {
			errs = append(errs, undos[i]())
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (func() error, error) {
		return nil, errors.Join(err, undo())
	}
	for _, kv := range sysctls {
		old, err := readSysctl(kv[0])
		if err != nil {
			return fail(err)
		}
		if old == kv[1] {
			continue
		}
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return fail(err)
		}
		undos = append(undos, func() error { return writeSysctl(kv[0], old) })
	}
	for _, a := range addAddrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(lo, addr); err != nil {
			return fail(fmt.Errorf("setup: add %v to lo: %w", a, err))
		}
		undos = append(undos, func() error {
			if err := netlink.AddrDel(lo, addr); err != nil {
				return fmt.Errorf("setup: remove %v from lo: %w", a, err)
			}
			return nil
		})
	}
	for _, r := range addRoutes {
		if err := netlink.RouteAdd(r); err != nil {
			return fail(fmt.Errorf("setup: default route via %v: %w", r.Gw, err))
		}
		undos = append(undos, func() error {
			if err := netlink.RouteDel(r); err != nil {
				return fmt.Errorf("setup: remove default route via %v: %w", r.Gw, err)
			}
			return nil
		})
	}
	return undo, nil
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// addrHolder returns the interface holding a, or "".
func addrHolder(a netip.Addr) (string, error) {
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	addrs, err := netlink.AddrList(nil, fam)
	if err != nil {
		return "", fmt.Errorf("setup: list addresses: %w", err)
	}
	for _, x := range addrs {
		if x.IP.Equal(net.IP(a.AsSlice())) {
			l, err := netlink.LinkByIndex(x.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("setup: link %d: %w", x.LinkIndex, err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", nil
}

// onLink reports whether gw is in a subnet of one of l's addresses.
func onLink(l netlink.Link, gw netip.Addr) bool {
	addrs, err := netlink.AddrList(l, unix.AF_UNSPEC)
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if x.IPNet != nil && x.IPNet.Contains(net.IP(gw.AsSlice())) {
			return true
		}
	}
	return false
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return "", fmt.Errorf("setup: read %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, v string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(v), 0o644); err != nil {
		return fmt.Errorf("setup: write %s=%s: %w", key, v, err)
	}
	return nil
}
