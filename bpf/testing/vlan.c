// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only tc programs that tag and untag 802.1Q frames. The lab kernel has
 * no VLAN devices (no 8021q module), so tests that need tagged traffic put a
 * tag on a host's egress with vlan_push and take it off on the receiving
 * host's ingress with vlan_pop. Loaded by internal/netlab/vlantag.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/*
 * TCX_NEXT is -1, like TC_ACT_UNSPEC; the uapi headers of this distribution
 * (6.1) predate tcx, so spell it through the old name. Under tcx it means
 * "run the next program, then carry on as normal"; it never drops.
 */
#define VT_NEXT TC_ACT_UNSPEC

#define VT_VID_MASK 0x0fff
#define VT_NEXTHDR_OFF (ETH_HLEN + 6) /* ipv6hdr.nexthdr */

/* VLAN id: for vlan_push the tag to add (set by the loader, 1–4094); for
 * vlan_pop 0 pops every tag, anything else only tags with that id. */
volatile const __u16 vlan_id = 0;

/* Frames handled, by VLAN id: tagged by vlan_push or untagged by vlan_pop.
 * Per VID so that a test can assert that the very tag it pushed arrived. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} vlan_frames SEC(".maps");

static __always_inline void vt_count(__u32 vid)
{
	__u64 *n = bpf_map_lookup_elem(&vlan_frames, &vid);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/*
 * vlan_push (tc egress) tags IPv4 and IPv6 frames with vlan_id. ARP and
 * ICMPv6 (neighbour discovery) stay untagged: the peers have no VLAN devices
 * either, so a tagged ARP request or neighbour solicitation would be dropped
 * by their kernels and the sender could never resolve its next hop.
 *
 * bpf_skb_vlan_push only sets skb->vlan_tci (the "hw accel" tag). The tag is
 * written into the frame bytes later, by validate_xmit_vlan, only if the
 * device that finally transmits the skb lacks tx-vlan offload; veths have it
 * on by default and hand the skb across with the tag still in metadata. See
 * internal/netlab/vlantag for what that means for XDP on the far side.
 */
SEC("tc")
int vlan_push(struct __sk_buff *skb)
{
	__u8 nexthdr;

	if (skb->vlan_present)
		return VT_NEXT; /* already tagged: do not stack a second tag */
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, VT_NEXTHDR_OFF, &nexthdr, 1) < 0)
			return VT_NEXT;
		if (nexthdr == IPPROTO_ICMPV6)
			return VT_NEXT;
	} else if (skb->protocol != bpf_htons(ETH_P_IP)) {
		return VT_NEXT;
	}
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), vlan_id & VT_VID_MASK) == 0)
		vt_count(vlan_id & VT_VID_MASK);
	return VT_NEXT;
}

/*
 * vlan_pop (tc ingress) removes the outer tag so that the host's kernel,
 * which has no VLAN device to hand a tagged frame to, accepts the packet
 * (otherwise it marks it PACKET_OTHERHOST and IP drops it).
 *
 * The receive path untags in-band 802.1Q headers into skb->vlan_tci before
 * tc ingress runs, so the tag is normally in metadata here; the in-band case
 * is handled too, for paths that deliver it unparsed.
 */
SEC("tc")
int vlan_pop(struct __sk_buff *skb)
{
	__u16 vid;
	__be16 tci;

	if (skb->vlan_present) {
		vid = skb->vlan_tci & VT_VID_MASK;
	} else if (skb->protocol == bpf_htons(ETH_P_8021Q) ||
		   skb->protocol == bpf_htons(ETH_P_8021AD)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &tci, sizeof(tci)) < 0)
			return VT_NEXT;
		vid = bpf_ntohs(tci) & VT_VID_MASK;
	} else {
		return VT_NEXT;
	}
	if (vlan_id != 0 && vid != vlan_id)
		return VT_NEXT;
	if (bpf_skb_vlan_pop(skb) == 0)
		vt_count(vid);
	return VT_NEXT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
