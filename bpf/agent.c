// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The agent's in-band signals: a tc (tcx) egress program on a TM host's
 * interface towards the distributor. It puts signals on the packets the TM
 * sends anyway, as the shim docs/signals.md describes:
 *
 *   [dst MAC][src MAC][0x88B5][message, flag SHIM][original EtherType][payload]
 *
 * - agent_pending holds, per flow (the key as the distributor sees the
 *   flow, i.e. the reverse of the packets leaving here), a message the agent
 *   wants delivered; the flow's next packet to the distributor carries it
 *   and the entry is deleted. The agent sends a signal frame instead when
 *   no packet took it within its deadline.
 * - A TCP SYN from one of the addresses in agent_srcs (the shared SNAT
 *   addresses) carries a MEMORIZE of its own reverse key built here: the
 *   signal reaches the distributor with the SYN, before the server's answer.
 *
 * Packets that cannot take a shim go unchanged and are counted: GSO
 * packets (the shim would sit inside every segment's MAC header), packets
 * the shim would push over the MTU, VLAN-tagged packets, IPv6 packets with
 * extension headers, fragments.
 *
 * Wire structs come from switchyard.h (the one definition); the agent's
 * own map types and counters are here, as only the agent uses them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "switchyard.h"

/* TCX_NEXT (-1): carry on as normal; spelled through the old name (see
 * bpf/testing/vlan.c). The program never drops. */
#define SA_NEXT TC_ACT_UNSPEC

enum sy_agent_consts {
	SY_AGENT_MAX_MSG = 128,        /* bytes of a pending message */
	SY_AGENT_MAX_PENDING = 65536,  /* flows with a pending message */
	SY_AGENT_MAX_SRCS = 64,        /* addresses whose SYNs memorize themselves */
};

/* A message waiting for its flow's next packet: header and TLVs, with the
 * SHIM flag set, len bytes of msg. */
struct sy_agent_pending {
	__u16 len;
	__u8 pad[6];
	__u8 msg[SY_AGENT_MAX_MSG];
};

/* An address: IPv4 in the first 4 bytes, the rest zero. */
struct sy_agent_addr {
	__u8 addr[16];
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
};

enum sy_agent_counter {
	SY_AC_SHIM_PENDING = 0, /* a pending message carried by its flow */
	SY_AC_SHIM_SYN,         /* a SYN carried its own MEMORIZE */
	SY_AC_SKIP_GSO,         /* pending, but the packet is GSO */
	SY_AC_SKIP_MTU,         /* pending, but the shim would exceed the MTU */
	SY_AC_SKIP_BAD_LEN,     /* pending message of an impossible length */
	SY_AC_ERR_ADJUST,       /* bpf_skb_adjust_room or a store failed */
	SY_AC_MAX,
};

struct sy_agent_syn_msg {
	struct sy_sig_hdr hdr;
	struct sy_tlv tlv;
	struct sy_op_memorize op;
} __attribute__((packed));

/* Set by the loader. */
volatile const __u8 sa_dist_mac[ETH_ALEN];  /* shim only frames to it */
volatile const __u32 sa_mtu = 1500;         /* of the interface */
volatile const __u32 sa_timeout = 0;        /* MEMORIZE timeout, seconds */
volatile const __u16 sa_memorize_flags = 0; /* SY_MEMORIZE_F_* */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SY_AGENT_MAX_PENDING);
	__type(key, struct sy_wire_key);
	__type(value, struct sy_agent_pending);
} agent_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SY_AGENT_MAX_SRCS);
	__type(key, struct sy_agent_addr);
	__type(value, __u8);
} agent_srcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SY_AC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} agent_counters SEC(".maps");

/* Anchors the enums and structs for bpf2go. */
struct sy_agent_types {
	enum sy_agent_consts c;
	enum sy_agent_counter n;
	struct sy_agent_pending p;
	struct sy_agent_addr a;
} sy_agent_types_anchor;

static __always_inline void sa_count(__u32 c)
{
	__u64 *n = bpf_map_lookup_elem(&agent_counters, &c);

	if (n)
		*n += 1;
}

/* sa_insert puts len bytes of msg as a shim after the MAC addresses. */
static __always_inline int sa_insert(struct __sk_buff *skb, const void *msg, __u32 len)
{
	__be16 sig = bpf_htons(SY_ETH_P_SIGNAL);
	__be16 proto;

	if (skb->gso_segs > 1) {
		sa_count(SY_AC_SKIP_GSO);
		return -1;
	}
	if (skb->len + len + 2 > sa_mtu + ETH_HLEN) {
		sa_count(SY_AC_SKIP_MTU);
		return -1;
	}
	if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0)
		goto fail;
	/* Room after the Ethernet header: [MACs][proto][room][payload]. */
	if (bpf_skb_adjust_room(skb, len + 2, BPF_ADJ_ROOM_MAC, 0) < 0)
		goto fail;
	if (bpf_skb_store_bytes(skb, 12, &sig, 2, 0) < 0)
		goto fail;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, msg, len, 0) < 0)
		goto fail;
	if (bpf_skb_store_bytes(skb, ETH_HLEN + len, &proto, 2, 0) < 0)
		goto fail;
	return 0;
fail:
	sa_count(SY_AC_ERR_ADJUST);
	return -1;
}

static __always_inline int sa_mac_is_dist(const __u8 *m)
{
	for (int i = 0; i < ETH_ALEN; i++)
		if (m[i] != sa_dist_mac[i])
			return 0;
	return 1;
}

SEC("tc")
int sy_agent_egress(struct __sk_buff *skb)
{
	struct sy_wire_key k = {};
	struct sy_agent_addr src = {};
	struct sy_agent_pending *p;
	struct ethhdr eth;
	__u32 l4, len;
	__u8 flags = 0;
	__be16 ports[2];

	if (skb->vlan_present)
		return SA_NEXT;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return SA_NEXT;
	if (!sa_mac_is_dist(eth.h_dest))
		return SA_NEXT;
	if (eth.h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return SA_NEXT;
		if (ip.ihl < 5 || (ip.frag_off & bpf_htons(0x3fff)))
			return SA_NEXT;
		l4 = ETH_HLEN + ip.ihl * 4;
		k.proto = ip.protocol;
		k.family = 4;
		/* The distributor's key is the reverse of this packet. */
		__builtin_memcpy(k.src, &ip.daddr, 4);
		__builtin_memcpy(k.dst, &ip.saddr, 4);
		__builtin_memcpy(src.addr, &ip.saddr, 4);
		src.family = 4;
	} else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return SA_NEXT;
		l4 = ETH_HLEN + sizeof(ip6);
		k.proto = ip6.nexthdr;
		k.family = 6;
		__builtin_memcpy(k.src, &ip6.daddr, 16);
		__builtin_memcpy(k.dst, &ip6.saddr, 16);
		__builtin_memcpy(src.addr, &ip6.saddr, 16);
		src.family = 6;
	} else {
		return SA_NEXT;
	}
	if (k.proto != IPPROTO_TCP && k.proto != IPPROTO_UDP)
		return SA_NEXT;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
		return SA_NEXT;
	k.sport = ports[1];
	k.dport = ports[0];
	if (k.proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, l4 + 13, &flags, 1) < 0)
		return SA_NEXT;

	p = bpf_map_lookup_elem(&agent_pending, &k);
	if (p) {
		len = p->len;
		if (len < SY_SIG_HDR_LEN || len > SY_AGENT_MAX_MSG) {
			sa_count(SY_AC_SKIP_BAD_LEN);
			bpf_map_delete_elem(&agent_pending, &k);
			return SA_NEXT;
		}
		if (sa_insert(skb, p->msg, len) == 0) {
			sa_count(SY_AC_SHIM_PENDING);
			bpf_map_delete_elem(&agent_pending, &k);
		}
		return SA_NEXT;
	}
	/* A SYN (no ACK) from a shared source address memorizes itself. */
	if (k.proto == IPPROTO_TCP && (flags & 0x12) == 0x02 &&
	    bpf_map_lookup_elem(&agent_srcs, &src)) {
		struct sy_agent_syn_msg m = {};

		m.hdr.version = SY_SIG_VERSION;
		m.hdr.count = 1;
		m.hdr.length = bpf_htons(sizeof(m.tlv) + sizeof(m.op));
		m.hdr.flags = bpf_htons(SY_SIG_F_SHIM);
		m.tlv.op = SY_OP_MEMORIZE;
		m.tlv.len = sizeof(m.op);
		m.op.key = k;
		m.op.tm = bpf_htons(SY_SIG_TM_SELF);
		m.op.flags = bpf_htons(sa_memorize_flags);
		m.op.timeout = bpf_htonl(sa_timeout);
		if (sa_insert(skb, &m, sizeof(m)) == 0)
			sa_count(SY_AC_SHIM_SYN);
	}
	return SA_NEXT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
