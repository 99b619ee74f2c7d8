package netlab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Segment names: the bridges in the Switch namespace.
const (
	SegExt = "ext" // clients and the distributors' external interfaces
	SegInt = "int" // distributors' internal interfaces and the TMs
	SegSrv = "srv" // distributors' server-side interfaces and the servers
)

// DefaultMTU is the MTU of every veth and bridge unless Spec.MTU says
// otherwise. A jumbo MTU needs an XDP program that takes multi-buffer
// frames (xdp.frags): native XDP attach fails on a veth whose peer's MTU
// exceeds a page otherwise.
const DefaultMTU = 1500

// Spec says how many hosts of each role a topology has.
type Spec struct {
	// Clients on segment ext; 0 means 1.
	Clients int
	// Distributors, each on ext, int and srv; 0 means 1, at most 9 (they take
	// the .1–.9 addresses of every segment).
	Distributors int
	// TMs on segment int; 0 means 3.
	TMs int
	// Servers on segment srv; 0 means none.
	Servers int
	// MTU of every veth and bridge; 0 means DefaultMTU. 68..65535.
	MTU int
	// Queues is the number of TX and RX queues of every veth end (`ip link
	// add ... numtxqueues N numrxqueues N`): a veth's NAPI and XDP run per
	// RX queue, so more queues let more CPUs receive; 0 means the kernel's
	// default. At most 64.
	Queues int
	// Qdisc is the root qdisc put on every veth end: "" keeps the veth's
	// default (noqueue), or a qdisc that takes no options ("pfifo",
	// "pfifo_fast", "fq_codel", "fq"). A veth without a queue drops a
	// packet when its peer's 256-slot ring (NAPI, XDP) or the backlog is
	// full; with a qdisc, the kernel (6.16 and later) stops the queue when
	// the ring is full and holds the packet instead. With a qdisc, GRO is
	// also turned on at the host ends, so that every veth receives through
	// NAPI and its ring (the bridge ports always have it).
	Qdisc string
}

// Topology is a built lab network: one namespace per host plus a Switch
// namespace holding the segments' bridges. All namespace names start with
// Prefix + "-", so a crashed run can be cleaned up by prefix.
type Topology struct {
	// Prefix is random per topology ("sy" + 4 hex digits) so parallel tests
	// do not collide.
	Prefix string
	// Switch holds one Linux bridge per segment: "ext", "int", "srv".
	Switch       *NS
	Clients      []*Host
	Distributors []*Host
	TMs          []*Host
	Servers      []*Host
	// VIP4 and VIP6 are the service addresses, held on every TM's lo.
	VIP4, VIP6 netip.Addr
	// SNAT4 and SNAT6 are the source address the TMs share for server-side
	// connections, also on every TM's lo.
	SNAT4, SNAT6 netip.Addr

	mtu    int
	queues int
	qdisc  string

	tmMu    sync.Mutex
	mu      sync.Mutex
	all     []*NS // every namespace made, in creation order, for Close
	bridges map[string]int
	closed  bool
}

// Host is one namespace of the topology attached to one or more segments.
type Host struct {
	NS *NS
	// Name is the role and index: "c1", "d1", "tm1", "s1".
	Name string
	// Links are the host's veth ends by interface name inside the host.
	Links map[string]*Link
}

// Link is a host's end of a veth pair whose other end is a bridge port.
type Link struct {
	// Name is the interface name inside the host ("eth0", "ext0", …).
	Name string
	// Index is the ifindex inside the host's namespace.
	Index int
	// MAC is the interface's hardware address.
	MAC net.HardwareAddr
	// Addr4 and Addr6 are the interface's addresses with their prefix length.
	Addr4, Addr6 netip.Prefix
	// Segment is the bridge the link is attached to ("ext", "int", "srv").
	Segment string
	// Port is the name of the peer veth, a port of the bridge in the Switch
	// namespace (e.g. "tm1-eth0"); tests attach XDP or tc programs there.
	Port string
}

// Addresses used by every topology.
var (
	vip4  = netip.MustParseAddr("10.0.0.100")
	vip6  = netip.MustParseAddr("fd00:100::100")
	snat4 = netip.MustParseAddr("10.1.255.1")
	snat6 = netip.MustParseAddr("fd00:1ff::1")
)

// segment addressing: IPv4 /24 and IPv6 /64 base per segment.
var segNets = map[string][2]netip.Addr{
	SegExt: {netip.MustParseAddr("10.0.1.0"), netip.MustParseAddr("fd00:1::")},
	SegInt: {netip.MustParseAddr("10.1.0.0"), netip.MustParseAddr("fd00:10::")},
	SegSrv: {netip.MustParseAddr("10.2.0.0"), netip.MustParseAddr("fd00:20::")},
}

// hostAddrs returns host number n's addresses on a segment.
func hostAddrs(seg string, n int) (netip.Prefix, netip.Prefix) {
	b := segNets[seg]
	a4 := b[0].As4()
	a4[3] = byte(n)
	a6 := b[1].As16()
	a6[15] = byte(n)
	return netip.PrefixFrom(netip.AddrFrom4(a4), 24), netip.PrefixFrom(netip.AddrFrom16(a6), 64)
}

// Build creates the namespaces, bridges, veth pairs, addresses, routes and
// sysctls described by spec. On error it removes everything it made.
func Build(ctx context.Context, spec Spec) (*Topology, error) {
	if spec.Clients == 0 {
		spec.Clients = 1
	}
	if spec.Distributors == 0 {
		spec.Distributors = 1
	}
	if spec.TMs == 0 {
		spec.TMs = 3
	}
	switch {
	case spec.Clients < 0 || spec.Distributors < 0 || spec.TMs < 0 || spec.Servers < 0:
		return nil, fmt.Errorf("netlab: negative count in %+v", spec)
	case spec.Distributors > 9:
		return nil, fmt.Errorf("netlab: at most 9 distributors, got %d", spec.Distributors)
	case spec.Clients > 200 || spec.TMs > 200 || spec.Servers > 200:
		return nil, fmt.Errorf("netlab: at most 200 hosts per role: %+v", spec)
	case spec.MTU != 0 && (spec.MTU < 68 || spec.MTU > 65535):
		return nil, fmt.Errorf("netlab: MTU must be 68..65535, got %d", spec.MTU)
	case spec.Queues < 0 || spec.Queues > 64:
		return nil, fmt.Errorf("netlab: queues must be 0..64, got %d", spec.Queues)
	case !slices.Contains([]string{"", "pfifo", "pfifo_fast", "fq_codel", "fq"}, spec.Qdisc):
		return nil, fmt.Errorf("netlab: qdisc must be pfifo, pfifo_fast, fq_codel or fq, got %q", spec.Qdisc)
	}
	if spec.MTU == 0 {
		spec.MTU = DefaultMTU
	}
	t := &Topology{
		VIP4: vip4, VIP6: vip6,
		SNAT4: snat4, SNAT6: snat6,
		bridges: map[string]int{},
		mtu:     spec.MTU,
		queues:  spec.Queues,
		qdisc:   spec.Qdisc,
	}
	// The switch namespace claims the prefix: another process may pick the
	// same random prefix between our check and our create, and then creating
	// its /run/netns file fails with EEXIST and we draw again.
	var err error
	for range 10 {
		if t.Prefix, err = newPrefix(); err != nil {
			return nil, err
		}
		if t.Switch, err = t.newNS("sw"); !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := t.build(ctx, spec); err != nil {
		if cerr := t.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
		return nil, err
	}
	return t, nil
}

func newPrefix() (string, error) {
	for range 100 {
		p := fmt.Sprintf("sy%04x", rand.N(0x10000))
		ents, err := os.ReadDir(netnsDir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		taken := false
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), p+"-") {
				taken = true
				break
			}
		}
		if !taken {
			return p, nil
		}
	}
	return "", errors.New("netlab: no free namespace prefix")
}

func (t *Topology) newNS(name string) (*NS, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, errors.New("netlab: topology closed")
	}
	n, err := NewNS(t.Prefix + "-" + name)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.all = append(t.all, n)
	t.mu.Unlock()
	return n, nil
}

func (t *Topology) build(ctx context.Context, spec Spec) error {
	sw := t.Switch
	// The switch is pure L2: no IPv6 on bridges or ports, so they send no
	// router solicitations or MLD reports into the segments that tests watch.
	if err := sw.Sysctls([][2]string{
		{"net.ipv6.conf.all.disable_ipv6", "1"},
		{"net.ipv6.conf.default.disable_ipv6", "1"},
	}); err != nil {
		return err
	}
	for _, seg := range []string{SegExt, SegInt, SegSrv} {
		if err := sw.Do(func() error { return addBridge(seg, t.mtu) }); err != nil {
			return fmt.Errorf("netlab: bridge %s: %w", seg, err)
		}
		br, err := sw.nl.LinkByName(seg)
		if err != nil {
			return err
		}
		if err := sw.nl.LinkSetUp(br); err != nil {
			return err
		}
		t.bridges[seg] = br.Attrs().Index
	}

	for k := 1; k <= spec.Distributors; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := t.addDistributor(k)
		if err != nil {
			return err
		}
		t.Distributors = append(t.Distributors, h)
	}
	for i := 1; i <= spec.Clients; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := t.addEndHost("c", i, SegExt)
		if err != nil {
			return err
		}
		t.Clients = append(t.Clients, h)
	}
	for i := 1; i <= spec.TMs; i++ {
		if _, err := t.AddTM(ctx); err != nil {
			return err
		}
	}
	for i := 1; i <= spec.Servers; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := t.addEndHost("s", i, SegSrv)
		if err != nil {
			return err
		}
		t.Servers = append(t.Servers, h)
	}
	return nil
}

// addBridge creates a bridge in the calling thread's namespace with STP off and
// forward delay 0, so ports forward as soon as they are up; multicast snooping
// is off so neighbour discovery is flooded without needing an MLD querier.
// netlink.Bridge has no forward-delay or STP fields, hence the raw request.
func addBridge(name string, mtu int) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(mtu))))
	li := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	li.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	d := li.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	d.AddRtAttr(nl.IFLA_BR_FORWARD_DELAY, nl.Uint32Attr(0))
	d.AddRtAttr(nl.IFLA_BR_STP_STATE, nl.Uint32Attr(0))
	d.AddRtAttr(nl.IFLA_BR_MCAST_SNOOPING, []byte{0})
	req.AddData(li)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// newHost makes the host's namespace and turns off IPv6 DAD in it before any
// interface exists, so link-local addresses are usable at once too.
func (t *Topology) newHost(name string) (*Host, error) {
	n, err := t.newNS(name)
	if err != nil {
		return nil, err
	}
	h := &Host{NS: n, Name: name, Links: map[string]*Link{}}
	if err := n.Sysctls([][2]string{
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
	}); err != nil {
		return nil, err
	}
	return h, nil
}

// attach connects the host to a segment with a veth pair made inside the host
// namespace with its peer created directly in the switch namespace: no end
// ever exists in the root namespace, so a crash cannot leave one there and
// names cannot clash with the host's interfaces.
func (t *Topology) attach(h *Host, ifname, seg string, a4, a6 netip.Prefix) (*Link, error) {
	sw := t.Switch
	port := h.Name + "-" + ifname
	if len(port) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("netlab: port name %q too long", port)
	}
	veth := &netlink.Veth{
		LinkAttrs:       netlink.LinkAttrs{Name: ifname, MTU: t.mtu, NumTxQueues: t.queues, NumRxQueues: t.queues},
		PeerName:        port,
		PeerMTU:         uint32(t.mtu),
		PeerNumTxQueues: uint32(t.queues),
		PeerNumRxQueues: uint32(t.queues),
		PeerNamespace:   netlink.NsFd(int(sw.h)),
	}
	if err := h.NS.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netlab: veth %s/%s: %w", h.NS.Name, ifname, err)
	}

	pl, err := sw.nl.LinkByName(port)
	if err != nil {
		return nil, fmt.Errorf("netlab: port %s: %w", port, err)
	}
	if err := sw.nl.LinkSetMasterByIndex(pl, t.bridges[seg]); err != nil {
		return nil, fmt.Errorf("netlab: enslave %s to %s: %w", port, seg, err)
	}
	// tx checksum off: native XDP on veth breaks partial checksums. GRO on:
	// it gives the veth NAPI, so frames an XDP program redirects into the
	// port are received by the host end.
	if err := sw.Do(func() error {
		if err := setTxChecksum(port, false); err != nil {
			return err
		}
		return setGRO(port, true)
	}); err != nil {
		return nil, err
	}
	if err := setQdisc(sw.nl, pl, t.qdisc); err != nil {
		return nil, fmt.Errorf("netlab: qdisc on %s: %w", port, err)
	}
	if err := sw.nl.LinkSetUp(pl); err != nil {
		return nil, err
	}

	hn := h.NS.nl
	l, err := hn.LinkByName(ifname)
	if err != nil {
		return nil, err
	}
	if err := h.NS.Do(func() error {
		if err := setTxChecksum(ifname, false); err != nil {
			return err
		}
		// With a qdisc, the host end receives through NAPI too (GRO on):
		// a veth without NAPI hands packets to the per-CPU backlog, which
		// drops when full (net.core.netdev_max_backlog) instead of
		// stopping the sender's queue.
		if t.qdisc != "" {
			return setGRO(ifname, true)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := setQdisc(hn, l, t.qdisc); err != nil {
		return nil, fmt.Errorf("netlab: qdisc on %s/%s: %w", h.NS.Name, ifname, err)
	}
	if err := hn.LinkSetUp(l); err != nil {
		return nil, err
	}
	for _, p := range []netip.Prefix{a4, a6} {
		if err := hn.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
			return nil, fmt.Errorf("netlab: address %s on %s/%s: %w", p, h.NS.Name, ifname, err)
		}
	}
	lk := &Link{
		Name:    ifname,
		Index:   l.Attrs().Index,
		MAC:     l.Attrs().HardwareAddr,
		Addr4:   a4,
		Addr6:   a6,
		Segment: seg,
		Port:    port,
	}
	h.Links[ifname] = lk
	return lk, nil
}

func (t *Topology) addDistributor(k int) (*Host, error) {
	h, err := t.newHost(fmt.Sprintf("d%d", k))
	if err != nil {
		return nil, err
	}
	for _, x := range []struct{ ifname, seg string }{{"ext0", SegExt}, {"int0", SegInt}, {"srv0", SegSrv}} {
		a4, a6 := hostAddrs(x.seg, k)
		if _, err := t.attach(h, x.ifname, x.seg, a4, a6); err != nil {
			return nil, err
		}
	}
	// A distributor routes whatever its XDP program passes to the kernel;
	// rp_filter would drop asymmetric paths (clients via ECMP, TM replies).
	kv := [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
	}
	for _, dev := range []string{"all", "default", "lo", "ext0", "int0", "srv0"} {
		kv = append(kv, [2]string{"net.ipv4.conf." + dev + ".rp_filter", "0"})
	}
	if err := h.NS.Sysctls(kv); err != nil {
		return nil, err
	}
	return h, nil
}

// addEndHost adds client or server number i ("c", "s") with eth0 on seg and
// default routes via the first distributor's address on that segment.
func (t *Topology) addEndHost(role string, i int, seg string) (*Host, error) {
	h, err := t.newHost(fmt.Sprintf("%s%d", role, i))
	if err != nil {
		return nil, err
	}
	a4, a6 := hostAddrs(seg, 10+i)
	l, err := t.attach(h, "eth0", seg, a4, a6)
	if err != nil {
		return nil, err
	}
	if err := t.defaultRoutes(h, l, seg); err != nil {
		return nil, err
	}
	return h, nil
}

func (t *Topology) defaultRoutes(h *Host, l *Link, seg string) error {
	g4, g6 := hostAddrs(seg, 1)
	for _, r := range []struct {
		dst netip.Prefix
		gw  netip.Addr
	}{
		{netip.MustParsePrefix("0.0.0.0/0"), g4.Addr()},
		{netip.MustParsePrefix("::/0"), g6.Addr()},
	} {
		rt := &netlink.Route{LinkIndex: l.Index, Dst: ipNet(r.dst), Gw: net.IP(r.gw.AsSlice())}
		if err := h.NS.nl.RouteAdd(rt); err != nil {
			return fmt.Errorf("netlab: default route via %s in %s: %w", r.gw, h.NS.Name, err)
		}
	}
	return nil
}

// AddTM adds the next traffic manager (tm<len(TMs)+1>) on segment int: eth0
// 10.1.0.(10+i)/24 and fd00:10::(10+i)/64, VIPs and SNAT addresses on lo,
// LVS-DR ARP sysctls, default routes via the first distributor.
// Concurrent AddTM calls are safe with each other; reading t.TMs while one
// runs is not (use Hosts, which locks).
func (t *Topology) AddTM(ctx context.Context) (*Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// tmMu keeps concurrent AddTM calls from picking the same index; t.mu is
	// not held while building because newNS needs it.
	t.tmMu.Lock()
	defer t.tmMu.Unlock()
	t.mu.Lock()
	i := len(t.TMs) + 1
	t.mu.Unlock()
	if i > 200 {
		return nil, errors.New("netlab: at most 200 TMs")
	}
	h, err := t.addTM(i)
	if err != nil {
		// Remove the half-built TM so that a retry can reuse its name.
		if derr := t.dropNS(t.Prefix + fmt.Sprintf("-tm%d", i)); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	t.mu.Lock()
	t.TMs = append(t.TMs, h)
	t.mu.Unlock()
	return h, nil
}

// dropNS closes and forgets the topology's namespace with this name, if any.
func (t *Topology) dropNS(name string) error {
	t.mu.Lock()
	var n *NS
	for i, x := range t.all {
		if x.Name == name {
			n = x
			t.all = append(t.all[:i], t.all[i+1:]...)
			break
		}
	}
	t.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Close()
}

func (t *Topology) addTM(i int) (*Host, error) {
	h, err := t.newHost(fmt.Sprintf("tm%d", i))
	if err != nil {
		return nil, err
	}
	a4, a6 := hostAddrs(SegInt, 10+i)
	l, err := t.attach(h, "eth0", SegInt, a4, a6)
	if err != nil {
		return nil, err
	}
	lo, err := h.NS.nl.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	for _, a := range []netip.Addr{t.VIP4, t.VIP6, t.SNAT4, t.SNAT6} {
		p := netip.PrefixFrom(a, a.BitLen())
		if err := h.NS.nl.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
			return nil, fmt.Errorf("netlab: %s on lo in %s: %w", p, h.NS.Name, err)
		}
	}
	// LVS-DR: every TM holds the VIPs and the SNAT address, so it must neither
	// answer ARP for them on eth0 nor use them as ARP source addresses.
	kv := [][2]string{
		{"net.ipv4.conf.all.arp_ignore", "1"},
		{"net.ipv4.conf.eth0.arp_ignore", "1"},
		{"net.ipv4.conf.all.arp_announce", "2"},
		{"net.ipv4.conf.eth0.arp_announce", "2"},
	}
	for _, dev := range []string{"all", "default", "lo", "eth0"} {
		kv = append(kv, [2]string{"net.ipv4.conf." + dev + ".rp_filter", "0"})
	}
	if err := h.NS.Sysctls(kv); err != nil {
		return nil, err
	}
	if err := t.defaultRoutes(h, l, SegInt); err != nil {
		return nil, err
	}
	return h, nil
}

// Close removes every namespace of the topology (and with them every veth and
// bridge), then any leftover namespace with the topology's prefix. It is safe
// to call more than once.
func (t *Topology) Close() error {
	t.mu.Lock()
	t.closed = true
	all := t.all
	t.all = nil
	t.mu.Unlock()
	var errs []error
	for i := len(all) - 1; i >= 0; i-- {
		errs = append(errs, all[i].Close())
	}
	if t.Prefix != "" {
		errs = append(errs, CleanupStale(t.Prefix+"-"))
	}
	return errors.Join(errs...)
}

// Hosts returns every host: clients, distributors, TMs, servers.
func (t *Topology) Hosts() []*Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	var hs []*Host
	for _, l := range [][]*Host{t.Clients, t.Distributors, t.TMs, t.Servers} {
		hs = append(hs, l...)
	}
	return hs
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// MTU is the MTU of every veth and bridge of the topology.
func (t *Topology) MTU() int { return t.mtu }

// setQdisc puts qdisc (Spec.Qdisc; "" leaves the default) at the root of l.
func setQdisc(h *netlink.Handle, l netlink.Link, qdisc string) error {
	if qdisc == "" {
		return nil
	}
	return h.QdiscReplace(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		QdiscType:  qdisc,
	})
}
