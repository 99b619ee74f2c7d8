// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The distributor's XDP program: parse, key, flow table, service lookup,
 * Maglev selection, MAC rewrite and forward. Everything that is not
 * per-packet lives in Go (internal/datapath, internal/distributor).
 *
 * The Go model in internal/flow makes the same decisions; the differential
 * test in internal/datapath keeps them equal. Change both together.
 */
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

#include "switchyard.h"

/* The benchmark object includes this file with SY_PROCESS_ATTR set to
 * __noinline so that a wrapper can call sy_process as a subprogram. */
#ifndef SY_PROCESS_ATTR
#define SY_PROCESS_ATTR static __always_inline
#endif

/* Set by the loader before the program is loaded. */
volatile const __u32 sy_ring_size = 65537;
volatile const __u32 sy_hash_seed = 0;

/* Never read: keeps struct sy_consts (and so every enum) in BTF. */
volatile const struct sy_consts sy_consts_anchor;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 1024); /* resized by the loader */
	__type(key, struct sy_flow_key);
	__type(value, struct sy_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sy_svc_key);
	__type(value, struct sy_svc);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sy_vip_key);
	__type(value, __u32); /* number of services on that address */
} vips SEC(".maps");

/* Maglev rings, one after the other: service i owns slots
 * [i*sy_ring_size, (i+1)*sy_ring_size). Values are TM indexes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65537); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u32);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, __u32);
	__type(value, struct sy_tm);
} tms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* ifindex */
	__type(value, struct sy_iface);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* ifindex */
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SY_C_MAX);
	__type(key, enum sy_counter);
	__type(value, struct sy_counter_val);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64); /* resized by the loader to max services */
	__type(key, __u32);
	__type(value, struct sy_traffic);
} svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, __u32);
	__type(value, struct sy_traffic);
} tm_stats SEC(".maps");

/* linux/icmp.h drags in libc's socket headers, which do not build for BPF. */
struct sy_icmphdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 rest;
};

#define SY_ICMP_DEST_UNREACH 3
#define SY_ICMP_FRAG_NEEDED 4

struct sy_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int sy_count(__u32 c, __u64 bytes, int verdict)
{
	struct sy_counter_val *v = bpf_map_lookup_elem(&counters, &c);

	if (v) {
		v->packets++;
		v->bytes += bytes;
	}
	return verdict;
}

static __always_inline void sy_traffic_add(void *map, __u32 idx, __u64 bytes, int is_new)
{
	struct sy_traffic *t = bpf_map_lookup_elem(map, &idx);

	if (t) {
		t->packets++;
		t->bytes += bytes;
		t->new_flows += is_new;
	}
}

static __always_inline int sy_is_vip(const struct sy_flow_key *key)
{
	struct sy_vip_key vk = {};

	__builtin_memcpy(vk.addr, key->dst, sizeof(vk.addr));
	vk.family = key->family;
	return bpf_map_lookup_elem(&vips, &vk) != NULL;
}

/* Rewrites the MACs and sends the packet to the TM's interface. */
static __always_inline int sy_forward(struct xdp_md *ctx, const struct sy_tm *tm, __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	long ret;

	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, len, XDP_DROP);
	__builtin_memcpy(eth->h_dest, tm->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tm->src_mac, ETH_ALEN);
	if (tm->ifindex == ctx->ingress_ifindex)
		return sy_count(SY_C_TX, len, XDP_TX);
	ret = bpf_redirect_map(&tx_ports, tm->ifindex, 0);
	if (ret != XDP_REDIRECT)
		return sy_count(SY_C_DROP_NO_EGRESS, len, XDP_DROP);
	return sy_count(SY_C_REDIRECT, len, XDP_REDIRECT);
}

/* Looks a service up for key: exact port first, then the all-ports VIP. */
static __always_inline struct sy_svc *sy_service(const struct sy_flow_key *key)
{
	struct sy_svc_key sk = {};
	struct sy_svc *svc;

	__builtin_memcpy(sk.addr, key->dst, sizeof(sk.addr));
	sk.port = key->dport;
	sk.proto = key->proto;
	sk.family = key->family;
	svc = bpf_map_lookup_elem(&services, &sk);
	if (svc)
		return svc;
	sk.port = 0;
	return bpf_map_lookup_elem(&services, &sk);
}

/* Picks a TM for a new flow by the service's Maglev ring and remembers it. */
static __always_inline int sy_select(struct xdp_md *ctx, const struct sy_flow_key *key,
				     __u64 len, __u32 verdict_counter)
{
	struct sy_flow entry = {};
	struct sy_svc *svc;
	struct sy_tm *tm;
	__u32 slot, *tmidx, idx;

	if (!sy_is_vip(key))
		return sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
	svc = sy_service(key);
	if (!svc)
		return sy_count(SY_C_PASS_NO_SERVICE, len, XDP_PASS);

	slot = svc->index * sy_ring_size + sy_hash_key(key, sy_hash_seed) % sy_ring_size;
	tmidx = bpf_map_lookup_elem(&rings, &slot);
	if (!tmidx || *tmidx == SY_TM_NONE)
		return sy_count(SY_C_DROP_NO_TM, len, XDP_DROP);
	idx = *tmidx;
	tm = bpf_map_lookup_elem(&tms, &idx);
	if (!tm || !(tm->flags & SY_TM_READY) || (tm->flags & SY_TM_DISABLED))
		return sy_count(SY_C_DROP_TM_NOT_READY, len, XDP_DROP);

	entry.last_seen = bpf_ktime_get_coarse_ns();
	entry.tm = idx;
	entry.svc = svc->index;
	entry.flags = SY_FLOW_SELECTED;
	bpf_map_update_elem(&flows, key, &entry, BPF_ANY);

	sy_traffic_add(&svc_stats, svc->index, len, 1);
	sy_traffic_add(&tm_stats, idx, len, 1);
	sy_count(verdict_counter, len, 0);
	return sy_forward(ctx, tm, len);
}

/* Sends the packet to the TM of an existing flow. Returns SY_HIT_NONE on a
 * miss, SY_HIT_DISABLED when the flow's TM was forced out (re-select), and
 * SY_HIT_DONE with the verdict in *out otherwise. */
#define SY_HIT_NONE 0
#define SY_HIT_DONE 1
#define SY_HIT_DISABLED 2

static __always_inline int sy_hit(struct xdp_md *ctx, const struct sy_flow_key *key,
				  __u64 len, __u32 verdict_counter, int *out)
{
	struct sy_flow *f = bpf_map_lookup_elem(&flows, key);
	struct sy_tm *tm;
	__u32 idx;
	__u64 now;

	if (!f)
		return SY_HIT_NONE;
	idx = f->tm;
	tm = bpf_map_lookup_elem(&tms, &idx);
	if (!tm || (tm->flags & SY_TM_DISABLED))
		return SY_HIT_DISABLED;
	if (!(tm->flags & SY_TM_READY)) {
		*out = sy_count(SY_C_DROP_TM_NOT_READY, len, XDP_DROP);
		return SY_HIT_DONE;
	}
	now = bpf_ktime_get_coarse_ns();
	if (now - f->last_seen > SY_TOUCH_NS)
		f->last_seen = now;
	sy_traffic_add(&svc_stats, f->svc, len, 0);
	sy_traffic_add(&tm_stats, idx, len, 0);
	sy_count(verdict_counter, len, 0);
	*out = sy_forward(ctx, tm, len);
	return SY_HIT_DONE;
}

/*
 * ICMP "fragmentation needed" (v4) and "packet too big" (v6) about a flow go
 * to that flow's TM: the embedded header is the TM's packet towards the
 * client, so its reverse is the flow's key. Anything else is the kernel's.
 */
static __always_inline int sy_icmp(struct xdp_md *ctx, struct sy_flow_key *key,
				   __u32 l4off, __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sy_flow_key inner = {};
	__u16 *ports;
	__u32 off;
	int out = XDP_PASS;

	inner.vlan = key->vlan;
	if (key->family == SY_AF_INET) {
		struct sy_icmphdr *ic = data + l4off;
		struct iphdr *ip;

		if ((void *)(ic + 1) > data_end)
			goto other;
		if (ic->type != SY_ICMP_DEST_UNREACH || ic->code != SY_ICMP_FRAG_NEEDED)
			goto other;
		ip = (void *)(ic + 1);
		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
		off = l4off + sizeof(*ic) + ip->ihl * 4;
		__builtin_memcpy(inner.src, &ip->daddr, 4);
		__builtin_memcpy(inner.dst, &ip->saddr, 4);
		inner.proto = ip->protocol;
		inner.family = SY_AF_INET;
	} else {
		struct icmp6hdr *ic = data + l4off;
		struct ipv6hdr *ip;

		if ((void *)(ic + 1) > data_end)
			goto other;
		if (ic->icmp6_type != ICMPV6_PKT_TOOBIG)
			goto other;
		ip = (void *)(ic + 1);
		if ((void *)(ip + 1) > data_end || ip->version != 6)
			return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
		off = l4off + sizeof(*ic) + sizeof(*ip);
		__builtin_memcpy(inner.src, &ip->daddr, 16);
		__builtin_memcpy(inner.dst, &ip->saddr, 16);
		inner.proto = ip->nexthdr;
		inner.family = SY_AF_INET6;
	}
	if (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP)
		return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
	if (off > 0xffff)
		return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
	ports = data + off;
	if ((void *)(ports + 2) > data_end)
		return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
	inner.sport = ports[1];
	inner.dport = ports[0];
	if (sy_hit(ctx, &inner, len, SY_C_FWD_ICMP, &out) == SY_HIT_DONE)
		return out;
	return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
other:
	return sy_count(sy_is_vip(key) ? SY_C_PASS_VIP_OTHER : SY_C_PASS_NOT_VIP, len, XDP_PASS);
}

SY_PROCESS_ATTR int sy_process(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct sy_flow_key key = {};
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth), l4off;
	__u8 l4proto;
	int frag = 0, out = XDP_PASS, i;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, len, XDP_DROP);
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < SY_MAX_VLAN_TAGS; i++) {
		struct sy_vlan_hdr *vh = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_VLAN, len, XDP_DROP);
		key.vlan = bpf_ntohs(vh->tci) & 0x0fff;
		proto = vh->proto;
		off += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return sy_count(SY_C_DROP_VLAN_DEPTH, len, XDP_DROP);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_IP, len, XDP_DROP);
		if (ip->version != 4 || ip->ihl < 5)
			return sy_count(SY_C_DROP_BAD_IP, len, XDP_DROP);
		ihl = ip->ihl * 4;
		if (bpf_ntohs(ip->tot_len) < ihl)
			return sy_count(SY_C_DROP_BAD_IP, len, XDP_DROP);
		if (data + off + bpf_ntohs(ip->tot_len) > data_end)
			return sy_count(SY_C_DROP_TRUNC_IP, len, XDP_DROP);
		__builtin_memcpy(key.src, &ip->saddr, 4);
		__builtin_memcpy(key.dst, &ip->daddr, 4);
		key.family = SY_AF_INET;
		l4proto = ip->protocol;
		frag = (ip->frag_off & bpf_htons(0x3fff)) != 0;
		l4off = off + ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_IP, len, XDP_DROP);
		if (ip6->version != 6)
			return sy_count(SY_C_DROP_BAD_IP, len, XDP_DROP);
		if (data + off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > data_end)
			return sy_count(SY_C_DROP_TRUNC_IP, len, XDP_DROP);
		__builtin_memcpy(key.src, &ip6->saddr, 16);
		__builtin_memcpy(key.dst, &ip6->daddr, 16);
		key.family = SY_AF_INET6;
		l4proto = ip6->nexthdr;
		l4off = off + sizeof(*ip6);
#pragma unroll
		for (i = 0; i < SY_MAX_IPV6_EXT; i++) {
			__u8 *eh = data + l4off;

			if (l4proto == IPPROTO_FRAGMENT) {
				frag = 1;
				break;
			}
			if (l4proto != IPPROTO_HOPOPTS && l4proto != IPPROTO_ROUTING &&
			    l4proto != IPPROTO_DSTOPTS)
				break;
			if ((void *)(eh + 2) > data_end)
				return sy_count(SY_C_DROP_IPV6_EXT, len, XDP_DROP);
			l4proto = eh[0];
			l4off += (eh[1] + 1) * 8;
		}
		if (!frag && (l4proto == IPPROTO_HOPOPTS || l4proto == IPPROTO_ROUTING ||
			      l4proto == IPPROTO_DSTOPTS))
			return sy_count(SY_C_DROP_IPV6_EXT, len, XDP_DROP);
	} else {
		return sy_count(SY_C_PASS_NOT_IP, len, XDP_PASS);
	}

	key.proto = l4proto;
	if (frag)
		return sy_is_vip(&key) ? sy_count(SY_C_DROP_FRAGMENT, len, XDP_DROP) :
					 sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
	if (l4off > 0xffff)
		return sy_count(SY_C_DROP_IPV6_EXT, len, XDP_DROP);

	if (l4proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4off;

		if ((void *)(th + 1) > data_end)
			goto trunc_l4;
		if (th->doff < 5)
			return sy_is_vip(&key) ? sy_count(SY_C_DROP_BAD_L4, len, XDP_DROP) :
						 sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
		key.sport = th->source;
		key.dport = th->dest;
	} else if (l4proto == IPPROTO_UDP) {
		struct udphdr *uh = data + l4off;

		if ((void *)(uh + 1) > data_end)
			goto trunc_l4;
		key.sport = uh->source;
		key.dport = uh->dest;
	} else if ((l4proto == IPPROTO_ICMP && key.family == SY_AF_INET) ||
		   (l4proto == IPPROTO_ICMPV6 && key.family == SY_AF_INET6)) {
		return sy_icmp(ctx, &key, l4off, len);
	} else {
		return sy_count(sy_is_vip(&key) ? SY_C_PASS_VIP_OTHER : SY_C_PASS_NOT_VIP, len,
				XDP_PASS);
	}

	switch (sy_hit(ctx, &key, len, SY_C_FWD_HIT, &out)) {
	case SY_HIT_DONE:
		return out;
	case SY_HIT_DISABLED:
		return sy_select(ctx, &key, len, SY_C_FWD_RESELECT);
	}
	return sy_select(ctx, &key, len, SY_C_FWD_NEW);

trunc_l4:
	return sy_is_vip(&key) ? sy_count(SY_C_DROP_TRUNC_L4, len, XDP_DROP) :
				 sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
}

SEC("xdp")
int switchyard_xdp(struct xdp_md *ctx)
{
	return sy_process(ctx);
}

char __license[] SEC("license") = "Dual BSD/GPL";
