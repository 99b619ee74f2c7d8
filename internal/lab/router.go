package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/netlab"
)

// router is what the lab needs from the router between the clients and the
// distributors: it spreads the clients' flows for the VIPs over the
// distributors that are in its route. The lab has one implementation,
// staticRouter (a kernel multipath route); a BGP one (FRR peering with the
// distributors) is meant to replace it here and only here: its join waits
// for the distributor's announcement, its lost for the withdraw or hold
// timer, instead of writing the route.
type router interface {
	// kind names the implementation for people ("static multipath").
	kind() string
	// join puts distributor d into the route once it may take traffic.
	join(ctx context.Context, d *netlab.Host) error
	// lost takes distributor d, which died, out of the route.
	lost(ctx context.Context, d *netlab.Host) error
	// via are the distributors in the route, in order.
	via() []string
	// host is the router's namespace.
	host() *netlab.Host
}

// staticRouter is the router with a static kernel multipath route to each
// VIP over the distributors' external addresses, and the L4 hash
// (fib_multipath_hash_policy=1): each flow's 5-tuple picks its distributor.
type staticRouter struct {
	r    *netlab.EdgeRouter
	vips []netip.Addr

	mu sync.Mutex
	ds []*netlab.Host
}

func newStaticRouter(r *netlab.EdgeRouter, vips ...netip.Addr) (*staticRouter, error) {
	if err := r.Host.NS.Sysctls([][2]string{
		{"net.ipv4.fib_multipath_hash_policy", "1"},
		{"net.ipv6.fib_multipath_hash_policy", "1"},
	}); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return &staticRouter{r: r, vips: vips}, nil
}

func (s *staticRouter) kind() string       { return "static multipath route, L4 hash" }
func (s *staticRouter) host() *netlab.Host { return s.r.Host }
func (s *staticRouter) join(_ context.Context, d *netlab.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.ds, d) {
		return nil
	}
	ds := append(slices.Clone(s.ds), d)
	slices.SortFunc(ds, func(a, b *netlab.Host) int { return compareNames(a.Name, b.Name) })
	if err := s.write(ds); err != nil {
		return err
	}
	s.ds = ds
	return nil
}

func (s *staticRouter) lost(_ context.Context, d *netlab.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds := slices.DeleteFunc(slices.Clone(s.ds), func(x *netlab.Host) bool { return x == d })
	if err := s.write(ds); err != nil {
		return err
	}
	s.ds = ds
	return nil
}

func (s *staticRouter) via() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for _, d := range s.ds {
		names = append(names, d.Name)
	}
	return names
}

// write replaces each VIP's route with one over ds (deletes it when ds is
// empty).
func (s *staticRouter) write(ds []*netlab.Host) error {
	nl := s.r.Host.NS.Netlink()
	ext := s.r.Host.Links["ext0"]
	var errs []error
	for _, vip := range s.vips {
		dst := &net.IPNet{IP: net.IP(vip.AsSlice()), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}
		rt := &netlink.Route{Dst: dst}
		gw := func(d *netlab.Host) net.IP {
			l := d.Links["ext0"]
			if vip.Is6() {
				return net.IP(l.Addr6.Addr().AsSlice())
			}
			return net.IP(l.Addr4.Addr().AsSlice())
		}
		var err error
		switch len(ds) {
		case 0:
			if err = nl.RouteDel(&netlink.Route{Dst: dst, LinkIndex: ext.Index}); err != nil && errors.Is(err, syscall.ESRCH) {
				err = nil
			}
		case 1:
			rt.LinkIndex, rt.Gw = ext.Index, gw(ds[0])
			err = nl.RouteReplace(rt)
		default:
			for _, d := range ds {
				rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{LinkIndex: ext.Index, Gw: gw(d)})
			}
			err = nl.RouteReplace(rt)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("router: route %s over %d distributors: %w", vip, len(ds), err))
		}
	}
	return errors.Join(errs...)
}

// compareNames orders "d2" before "d10".
func compareNames(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}
