/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h: the packet description (struct sy_pkt) and the parsers that fill
 * it. Parsing reads headers; it ends a packet's way only when the packet is
 * malformed (a drop) or not IP (the kernel's). Every other decision is a
 * step's, on the description (distributor.c runs the steps).
 */
#ifndef SY_PARSE_H
#define SY_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "counters.h"

/* A step's answer when it has no verdict and the next step runs (verdicts
 * are XDP actions, all >= 0). */
#define SY_GO_ON -1

/* linux/icmp.h drags in libc's socket headers, which do not build for BPF. */
struct sy_icmphdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 rest;
};

#define SY_ICMP_DEST_UNREACH 3
#define SY_ICMP_FRAG_NEEDED 4

#define SY_TCP_FIN 0x01
#define SY_TCP_SYN 0x02
#define SY_TCP_RST 0x04
#define SY_TCP_ACK 0x10

struct sy_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What an ICMP packet is to us (sy_pkt.icmp_kind). */
enum sy_icmp_kind {
	SY_ICMP_OTHER = 0, /* not an error we route: the kernel's */
	SY_ICMP_NO_FLOW,   /* frag needed / too big, but no usable TCP/UDP packet inside */
	SY_ICMP_INNER,     /* frag needed / too big about the key in the scratch's inner */
};

/* The packet as the steps see it. */
struct sy_pkt {
	struct sy_flow_key key;
	__u64 len;                /* bytes, as counted */
	__u32 sender;             /* by_tm: the TM index of the source MAC */
	__u32 l4off;              /* offset of the L4 header */
	__u8 by_tm;               /* a TM's MAC on an internal interface, the TM's own */
	__u8 wrong_port;          /* a TM's MAC on an internal interface not the TM's */
	__u8 is_signal;           /* EtherType SY_ETH_P_SIGNAL */
	__u8 frag;                /* a fragment (v4 MF or offset, v6 fragment header) */
	__u8 ports;               /* a whole TCP/UDP header: the key has the ports */
	__u8 tcp_hdr;             /* 20 bytes of TCP header are there (even with a bad data offset) */
	__u8 tcpflags;            /* with ports, TCP: the flags byte */
	__u8 icmp_kind;           /* enum sy_icmp_kind */
	__u32 seq;                /* with ports, TCP: sequence number (host order) */
	__u32 ack;                /* with ports, TCP: acknowledgment number (host order) */
	__u32 seq_end;            /* with ports, TCP: seq + payload + SYN + FIN: the side's next */
};

/* Ethernet and the ingress side: the interface's role and, on an internal
 * interface, whether the source MAC is a TM's on its own interface. */
static __always_inline int sy_parse_eth(struct xdp_md *ctx, struct sy_pkt *p,
					struct sy_iface **ifcp)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct sy_iface *ifc;
	__u32 ifindex = ctx->ingress_ifindex;

	p->len = data_end - data;
	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, p->len, XDP_DROP);
	p->is_signal = eth->h_proto == bpf_htons(SY_ETH_P_SIGNAL);
	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	*ifcp = ifc;
	if (ifc && ifc->role == SY_ROLE_INTERNAL) {
		struct sy_mac_key mk = {};
		__u32 *sender;

		__builtin_memcpy(mk.mac, eth->h_source, ETH_ALEN);
		sender = bpf_map_lookup_elem(&tm_by_mac, &mk);
		if (sender) {
			/* A TM's MAC counts only on the TM's own interface:
			 * a host elsewhere cannot borrow it. */
			__u32 idx = *sender;
			struct sy_tm *stm = bpf_map_lookup_elem(&tms, &idx);

			if (stm && stm->ifindex == ifindex) {
				p->by_tm = 1;
				p->sender = idx;
			} else {
				p->wrong_port = 1;
			}
		}
	}
	return SY_GO_ON;
}

/*
 * The ICMP error about one of our flows: "fragmentation needed" (v4) and
 * "packet too big" (v6). The embedded header is the TM's packet towards the
 * client, so its reverse is the flow's key. That key goes to the scratch's
 * inner, not to sy_pkt: 40 more bytes in sy_process's frame would break the
 * stack limit of the benchmark's call chain. l4off is an argument, not read
 * back from p: the verifier keeps its bounds only in a register.
 */
static __noinline int sy_parse_icmp(struct xdp_md *ctx, const struct sy_pkt *p, __u32 l4off)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sy_flow_key *inner;
	struct sy_sig_scratch *x;
	__u32 off, zero = 0;
	__u16 *ports;

	x = bpf_map_lookup_elem(&sig_scratch, &zero);
	if (!x) /* cannot happen (maps.h); the verifier needs the check */
		return SY_ICMP_NO_FLOW;
	inner = &x->inner;
	__builtin_memset(inner, 0, sizeof(*inner));
	inner->vlan = p->key.vlan;
	if (p->key.family == SY_AF_INET) {
		struct sy_icmphdr *ic = data + l4off;
		struct iphdr *ip;

		if ((void *)(ic + 1) > data_end)
			return SY_ICMP_OTHER;
		if (ic->type != SY_ICMP_DEST_UNREACH || ic->code != SY_ICMP_FRAG_NEEDED)
			return SY_ICMP_OTHER;
		ip = (void *)(ic + 1);
		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return SY_ICMP_NO_FLOW;
		off = l4off + sizeof(*ic) + ip->ihl * 4;
		__builtin_memcpy(inner->src, &ip->daddr, 4);
		__builtin_memcpy(inner->dst, &ip->saddr, 4);
		inner->proto = ip->protocol;
		inner->family = SY_AF_INET;
	} else {
		struct icmp6hdr *ic = data + l4off;
		struct ipv6hdr *ip;

		if ((void *)(ic + 1) > data_end)
			return SY_ICMP_OTHER;
		if (ic->icmp6_type != ICMPV6_PKT_TOOBIG)
			return SY_ICMP_OTHER;
		ip = (void *)(ic + 1);
		if ((void *)(ip + 1) > data_end || ip->version != 6)
			return SY_ICMP_NO_FLOW;
		off = l4off + sizeof(*ic) + sizeof(*ip);
		__builtin_memcpy(inner->src, &ip->daddr, 16);
		__builtin_memcpy(inner->dst, &ip->saddr, 16);
		inner->proto = ip->nexthdr;
		inner->family = SY_AF_INET6;
	}
	if (inner->proto != IPPROTO_TCP && inner->proto != IPPROTO_UDP)
		return SY_ICMP_NO_FLOW;
	if (off > 0xffff)
		return SY_ICMP_NO_FLOW;
	ports = data + off;
	if ((void *)(ports + 2) > data_end)
		return SY_ICMP_NO_FLOW;
	inner->sport = ports[1];
	inner->dport = ports[0];
	return SY_ICMP_INNER;
}

/*
 * Multi-buffer frames (SEC("xdp.frags")): a jumbo frame, or a GRO/GSO
 * aggregate the driver hands over whole, has its first bytes in the linear
 * buffer (data .. data_end) and the rest in fragments. Every header is read
 * from the linear buffer only (a header past it counts as truncated, as for
 * a short frame); nothing beyond the headers is read. p->len starts as the
 * linear length; when the IP packet ends past data_end, the frame's whole
 * length is asked for (bpf_xdp_get_buff_len: one helper call, paid only by
 * frames longer than their first buffer, never on the common path) and
 * p->len becomes it. Returns nonzero when the IP packet is longer than the
 * whole frame: truncated.
 */
static __always_inline int sy_past_first(struct xdp_md *ctx, struct sy_pkt *p, __u32 ip_end)
{
	p->len = bpf_xdp_get_buff_len(ctx);
	return ip_end > p->len;
}

/* VLAN tags, IPv4/IPv6 (and v6 extension headers), the ports and TCP flags,
 * and what an ICMP packet is about. */
static __always_inline int sy_parse(struct xdp_md *ctx, struct sy_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth), l4off;
	__u8 l4proto;
	__be16 proto;
	__u32 ip_end; /* offset of the end of the IP packet (padding excluded) */
	int i;

	/* Again after a shim was stripped: the head moved. */
	p->len = data_end - data;
	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, p->len, XDP_DROP);
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < SY_MAX_VLAN_TAGS; i++) {
		struct sy_vlan_hdr *vh = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_VLAN, p->len, XDP_DROP);
		p->key.vlan = bpf_ntohs(vh->tci) & 0x0fff;
		proto = vh->proto;
		off += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return sy_count(SY_C_DROP_VLAN_DEPTH, p->len, XDP_DROP);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_IP, p->len, XDP_DROP);
		if (ip->version != 4 || ip->ihl < 5)
			return sy_count(SY_C_DROP_BAD_IP, p->len, XDP_DROP);
		ihl = ip->ihl * 4;
		if (bpf_ntohs(ip->tot_len) < ihl)
			return sy_count(SY_C_DROP_BAD_IP, p->len, XDP_DROP);
		if (data + off + bpf_ntohs(ip->tot_len) > data_end &&
		    sy_past_first(ctx, p, off + bpf_ntohs(ip->tot_len)))
			return sy_count(SY_C_DROP_TRUNC_IP, p->len, XDP_DROP);
		__builtin_memcpy(p->key.src, &ip->saddr, 4);
		__builtin_memcpy(p->key.dst, &ip->daddr, 4);
		p->key.family = SY_AF_INET;
		l4proto = ip->protocol;
		p->frag = (ip->frag_off & bpf_htons(0x3fff)) != 0;
		l4off = off + ihl;
		ip_end = off + bpf_ntohs(ip->tot_len);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_IP, p->len, XDP_DROP);
		if (ip6->version != 6)
			return sy_count(SY_C_DROP_BAD_IP, p->len, XDP_DROP);
		if (data + off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > data_end &&
		    sy_past_first(ctx, p, off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len)))
			return sy_count(SY_C_DROP_TRUNC_IP, p->len, XDP_DROP);
		__builtin_memcpy(p->key.src, &ip6->saddr, 16);
		__builtin_memcpy(p->key.dst, &ip6->daddr, 16);
		p->key.family = SY_AF_INET6;
		l4proto = ip6->nexthdr;
		l4off = off + sizeof(*ip6);
		ip_end = l4off + bpf_ntohs(ip6->payload_len);
#pragma unroll
		for (i = 0; i < SY_MAX_IPV6_EXT; i++) {
			__u8 *eh = data + l4off;

			if (l4proto == IPPROTO_FRAGMENT) {
				p->frag = 1;
				break;
			}
			if (l4proto != IPPROTO_HOPOPTS && l4proto != IPPROTO_ROUTING &&
			    l4proto != IPPROTO_DSTOPTS)
				break;
			if ((void *)(eh + 2) > data_end)
				return sy_count(SY_C_DROP_IPV6_EXT, p->len, XDP_DROP);
			l4proto = eh[0];
			l4off += (eh[1] + 1) * 8;
		}
		if (!p->frag && (l4proto == IPPROTO_HOPOPTS || l4proto == IPPROTO_ROUTING ||
				 l4proto == IPPROTO_DSTOPTS))
			return sy_count(SY_C_DROP_IPV6_EXT, p->len, XDP_DROP);
	} else {
		return sy_count(SY_C_PASS_NOT_IP, p->len, XDP_PASS);
	}

	p->key.proto = l4proto;
	if (l4off > 0xffff)
		return sy_count(SY_C_DROP_IPV6_EXT, p->len, XDP_DROP);
	p->l4off = l4off;
	if (p->frag)
		return SY_GO_ON;
	if (l4proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4off;

		if ((void *)(th + 1) <= data_end) {
			p->tcp_hdr = 1;
			if (th->doff >= 5) {
				p->key.sport = th->source;
				p->key.dport = th->dest;
				p->tcpflags = ((__u8 *)th)[13];
				p->ports = 1;
				p->seq = bpf_ntohl(th->seq);
				p->ack = bpf_ntohl(th->ack_seq);
				/* A header longer than the packet counts as no payload. */
				p->seq_end = p->seq + (p->tcpflags & SY_TCP_SYN ? 1 : 0) +
					     (p->tcpflags & SY_TCP_FIN ? 1 : 0);
				if (ip_end > l4off + th->doff * 4)
					p->seq_end += ip_end - l4off - th->doff * 4;
			}
		}
	} else if (l4proto == IPPROTO_UDP) {
		struct udphdr *uh = data + l4off;

		if ((void *)(uh + 1) <= data_end) {
			p->key.sport = uh->source;
			p->key.dport = uh->dest;
			p->ports = 1;
		}
	} else if ((l4proto == IPPROTO_ICMP && p->key.family == SY_AF_INET) ||
		   (l4proto == IPPROTO_ICMPV6 && p->key.family == SY_AF_INET6)) {
		p->icmp_kind = sy_parse_icmp(ctx, p, l4off);
	}
	return SY_GO_ON;
}

#endif
