// Package vlantag tags and untags 802.1Q frames with tc (tcx) BPF programs, for
// tests on kernels without VLAN devices (the lab kernel has no 8021q module).
// Push tags a host's outgoing IP frames; Pop strips tags on a host's ingress so
// its kernel accepts them, and counts what it stripped; InBand makes tags
// visible to a native XDP program on a netlab link.
//
// # VLAN offload on veth, and what XDP sees
//
// Measured on the lab kernel (6.18) with TestVLANTaggedTraffic in
// internal/lab (client eth0 → bridge → distributor ext0 with native XDP →
// redirect out of int0 → bridge → TM eth0):
//
//   - bpf_skb_vlan_push only sets skb->vlan_tci, the "hw accel" tag. The
//     kernel writes it into the frame bytes only when a device without
//     tx-vlan offload transmits the skb (validate_xmit_vlan); veths have
//     tx-vlan offload on, so across a veth the tag travels as metadata.
//   - Every receive path moves an in-band tag back into metadata
//     (__netif_receive_skb_core calls skb_vlan_untag unconditionally, before
//     tc ingress and before a bridge sees the frame). So writing the tag into
//     the bytes at the sender does not help: with `ethtool -K eth0 txvlan off`
//     on the client the bridge untags it and re-transmits it to the
//     distributor as metadata again. Writing the tag in-band with
//     bpf_skb_adjust_room + bpf_skb_store_bytes puts the same bytes on the
//     same wire, so it was not tried separately.
//   - Native XDP on a veth runs on the packet bytes only, so a metadata tag is
//     invisible to it (the distributor keyed every flow with VLAN 0), and
//     XDP_REDIRECT loses it (an xdp_frame has no vlan_tci): the TMs received
//     the frames untagged, and nothing failed, which is why the test counts
//     pops instead of trusting that traffic flows.
//   - What works: tx-vlan offload off on the device that transmits into the
//     XDP veth, i.e. the bridge port that is its veth peer (InBand). Then XDP
//     sees 0x8100 in the bytes, keys flows with the VLAN and forwards the
//     tag in the bytes; the TM's stack moves it into metadata before tc
//     ingress, where Pop finds and strips it.
package vlantag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/switchyard/switchyard/internal/netlab"
)

// pushObjects and popObjects load one program each, so a Push does not also
// load vlan_pop (and vice versa).
type pushObjects struct {
	Prog   *ebpf.Program `ebpf:"vlan_push"`
	Frames *ebpf.Map     `ebpf:"vlan_frames"`
}

type popObjects struct {
	Prog   *ebpf.Program `ebpf:"vlan_pop"`
	Frames *ebpf.Map     `ebpf:"vlan_frames"`
}

// attach loads the objects with vlan_id set to vid and attaches prog at the
// given tcx hook of ifname, both inside ns: the ifindex of ifname only means
// something in its own namespace, and tcx binds the link to the ifindex of
// the calling thread's namespace.
func attach(ns *netlab.NS, ifname string, vid uint16, objs any, prog func() *ebpf.Program, typ ebpf.AttachType) (link.Link, error) {
	spec, err := loadVlan()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["vlan_id"].Set(vid); err != nil {
		return nil, fmt.Errorf("vlantag: set vlan_id: %w", err)
	}
	var l link.Link
	err = ns.Do(func() error {
		if err := spec.LoadAndAssign(objs, nil); err != nil {
			return fmt.Errorf("vlantag: load: %w", err)
		}
		nl, err := ns.Netlink().LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("vlantag: %s in %s: %w", ifname, ns.Name, err)
		}
		l, err = link.AttachTCX(link.TCXOptions{
			Interface: nl.Attrs().Index,
			Program:   prog(),
			Attach:    typ,
		})
		if err != nil {
			return fmt.Errorf("vlantag: attach to %s in %s: %w", ifname, ns.Name, err)
		}
		return nil
	})
	return l, err
}

// Pusher is vlan_push attached to an interface's egress.
type Pusher struct {
	objs pushObjects
	l    link.Link
	vid  uint16
}

// Push attaches a tc egress program to ifname in ns that tags every outgoing
// IPv4 and IPv6 frame with VLAN vid (ARP and ICMPv6 stay untagged, so that the
// untagged neighbours still resolve each other). The returned io.Closer is a
// *Pusher. vid must be 1–4094.
func Push(ns *netlab.NS, ifname string, vid uint16) (io.Closer, error) {
	if vid == 0 || vid >= 4095 {
		return nil, fmt.Errorf("vlantag: VLAN id %d out of range 1–4094", vid)
	}
	p := &Pusher{vid: vid}
	l, err := attach(ns, ifname, vid, &p.objs, func() *ebpf.Program { return p.objs.Prog }, ebpf.AttachTCXEgress)
	if err != nil {
		closeObjs(p.objs.Prog, p.objs.Frames)
		return nil, err
	}
	p.l = l
	return p, nil
}

// Pushed returns how many frames the program has tagged.
func (p *Pusher) Pushed() (uint64, error) { return lookup(p.objs.Frames, p.vid) }

// Close detaches the program and frees it.
func (p *Pusher) Close() error {
	return errors.Join(p.l.Close(), closeObjs(p.objs.Prog, p.objs.Frames))
}

// Popper is vlan_pop attached to an interface's ingress.
type Popper struct {
	objs popObjects
	l    link.Link
}

// Pop attaches a tc ingress program to ifname in ns that removes the outer
// 802.1Q/802.1ad tag of every incoming frame and counts it by VLAN id. The
// host has no VLAN devices, so without this its kernel drops tagged frames.
func Pop(ns *netlab.NS, ifname string) (*Popper, error) {
	p := &Popper{}
	l, err := attach(ns, ifname, 0, &p.objs, func() *ebpf.Program { return p.objs.Prog }, ebpf.AttachTCXIngress)
	if err != nil {
		closeObjs(p.objs.Prog, p.objs.Frames)
		return nil, err
	}
	p.l = l
	return p, nil
}

// Popped returns how many frames the program has untagged, whatever their
// VLAN id.
func (p *Popper) Popped() (uint64, error) {
	by, err := p.PoppedByVID()
	var n uint64
	for _, c := range by {
		n += c
	}
	return n, err
}

// PoppedByVID returns how many frames the program has untagged, by VLAN id
// (ids with none are left out). The counts come from one walk of the map, so
// they are consistent with each other while traffic is still arriving.
func (p *Popper) PoppedByVID() (map[uint16]uint64, error) {
	var (
		vid uint32
		n   uint64
	)
	by := map[uint16]uint64{}
	it := p.objs.Frames.Iterate()
	for it.Next(&vid, &n) {
		if n != 0 {
			by[uint16(vid)] = n
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("vlantag: frame counts: %w", err)
	}
	return by, nil
}

// Close detaches the program and frees it.
func (p *Popper) Close() error {
	return errors.Join(p.l.Close(), closeObjs(p.objs.Prog, p.objs.Frames))
}

func lookup(m *ebpf.Map, vid uint16) (uint64, error) {
	var n uint64
	if err := m.Lookup(uint32(vid)&0xfff, &n); err != nil {
		return 0, fmt.Errorf("vlantag: frame count: %w", err)
	}
	return n, nil
}

func closeObjs(p *ebpf.Program, m *ebpf.Map) error {
	var errs []error
	if p != nil {
		errs = append(errs, p.Close())
	}
	if m != nil {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// SetTxOffload turns tx-vlan offload on ifname in ns on or off (`ethtool -K
// IF txvlan on|off`). With it off, the kernel writes a metadata tag into the
// frame bytes when ifname transmits, which is what a native XDP program on
// ifname's veth peer needs in order to see the tag (see the package comment).
// Setting features needs ETHTOOL_SFEATURES with a string-set lookup, so this
// runs the ethtool program instead of an ioctl.
func SetTxOffload(ctx context.Context, ns *netlab.NS, ifname string, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	out, err := ns.Command(ctx, "ethtool", "-K", ifname, "txvlan", v).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || len(out) > 0 {
			return fmt.Errorf("vlantag: ethtool -K %s txvlan %s in %s: %w: %s", ifname, v, ns.Name, err, strings.TrimSpace(string(out)))
		}
		return fmt.Errorf("vlantag: ethtool in %s: %w", ns.Name, err)
	}
	return nil
}

// InBand makes the tags of frames that arrive on the netlab link l be in the
// frame bytes, where a native XDP program on l sees them: it turns tx-vlan
// offload off on l's bridge port (l.Port in topo.Switch), the device that
// transmits into l. Turning it off on the sending host instead does not work,
// because the bridge puts the tag back into metadata (see the package comment).
func InBand(ctx context.Context, topo *netlab.Topology, l *netlab.Link) error {
	return SetTxOffload(ctx, topo.Switch, l.Port, false)
}
