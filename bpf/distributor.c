// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The distributor's XDP program: parse, key, flow table, second keys, service
 * lookup, Maglev selection, MAC rewrite and forward; signals from TMs and
 * learning from their egress. Everything that is not per-packet lives in Go
 * (internal/datapath, internal/distributor).
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

/* The daemon's clock in seconds, written by the control plane: a memory load
 * is far cheaper per packet than a time helper call. */
volatile __u32 sy_now;

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
	__uint(max_entries, 1024); /* resized by the loader */
	__type(key, struct sy_skey);
	__type(value, struct sy_second);
} second_keys SEC(".maps");

/* The configured masks, most specific first; a zero ends the list. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_MASKS);
	__type(key, __u32);
	__type(value, __u32);
} masks SEC(".maps");

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
	__uint(max_entries, SY_MAX_TMS);
	__type(key, struct sy_mac_key);
	__type(value, __u32); /* TM index */
} tm_by_mac SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sy_vip_key);
	__type(value, __u32); /* TM index or SY_TM_ANY */
} learn_srcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sy_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_IFINDEX);
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

#define SY_TCP_FIN 0x01
#define SY_TCP_SYN 0x02
#define SY_TCP_RST 0x04
#define SY_TCP_ACK 0x10

/* sy_signal's answer when a shim was stripped and the packet goes on. */
#define SY_SHIM_STRIPPED -1

struct sy_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* Room for big locals of the signal path and of persistence: the BPF stack
 * is shared by every frame of a call chain (512 bytes in all). */
struct sy_sig_scratch {
	union {
		struct sy_op_memorize m;
		struct sy_op_key k;
		struct sy_op_relate r;
		struct sy_op_age a;
	} v;
	struct sy_flow_key parent;
	struct sy_flow_key second;
	struct sy_skey sk;
	struct sy_second sv;
	struct sy_sig_hdr h;
	__u8 macs[12];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sy_sig_scratch);
} sig_scratch SEC(".maps");

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

static __always_inline int sy_mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

static __always_inline int sy_tm_usable(__u32 idx)
{
	struct sy_tm *tm = bpf_map_lookup_elem(&tms, &idx);

	return tm && (tm->flags & SY_TM_READY) && !(tm->flags & SY_TM_DISABLED);
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

/* Keeps the fields of in named by mask (SY_FIELD_*); the family always. */
static __always_inline void sy_mask_key(struct sy_flow_key *out, const struct sy_flow_key *in,
					__u32 mask)
{
	if (mask & SY_FIELD_SRC)
		__builtin_memcpy(out->src, in->src, sizeof(out->src));
	if (mask & SY_FIELD_DST)
		__builtin_memcpy(out->dst, in->dst, sizeof(out->dst));
	if (mask & SY_FIELD_SPORT)
		out->sport = in->sport;
	if (mask & SY_FIELD_DPORT)
		out->dport = in->dport;
	if (mask & SY_FIELD_VLAN)
		out->vlan = in->vlan;
	if (mask & SY_FIELD_PROTO)
		out->proto = in->proto;
	out->family = in->family;
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

/* Picks a TM for a new flow by the service's Maglev ring and remembers it
 * (and, with persistence, remembers the TM under the service's mask). */
static __noinline int sy_select(struct xdp_md *ctx, const struct sy_flow_key *key,
				     __u64 len, __u32 verdict_counter)
{
	struct sy_flow entry = {};
	struct sy_svc *svc;
	struct sy_tm *tm;
	__u32 slot, *tmidx, idx;

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

	entry.last_seen = sy_now;
	entry.tm = idx;
	entry.svc = svc->index;
	entry.flags = SY_FLOW_SELECTED;
	bpf_map_update_elem(&flows, key, &entry, BPF_ANY);

	if (svc->persist_mask) {
		/* The scratch, not the stack: it is shared with the caller's
		 * frame. */
		__u32 zero = 0;
		struct sy_sig_scratch *x = bpf_map_lookup_elem(&sig_scratch, &zero);

		if (x) {
			__builtin_memset(&x->sk, 0, sizeof(x->sk));
			__builtin_memset(&x->sv, 0, sizeof(x->sv));
			sy_mask_key(&x->sk.key, key, svc->persist_mask);
			x->sk.mask = svc->persist_mask;
			x->sv.last_seen = sy_now;
			x->sv.timeout = svc->persist_timeout;
			x->sv.tm = idx;
			x->sv.svc = svc->index;
			bpf_map_update_elem(&second_keys, &x->sk, &x->sv, BPF_ANY);
		}
	}

	sy_traffic_add(&svc_stats, svc->index, len, 1);
	sy_traffic_add(&tm_stats, idx, len, 1);
	sy_count(verdict_counter, len, 0);
	return sy_forward(ctx, tm, len);
}

/* Sends the packet to the TM of an existing flow. Returns SY_HIT_NONE on a
 * miss, SY_HIT_RESELECT when the flow's TM was forced out or a selected
 * flow's key is reused by a new TCP connection, and SY_HIT_DONE with the
 * verdict in *out otherwise. */
#define SY_HIT_NONE 0
#define SY_HIT_DONE 1
#define SY_HIT_RESELECT 2

static __always_inline int sy_hit(struct xdp_md *ctx, const struct sy_flow_key *key, __u8 tcpflags,
				  __u64 len, __u32 verdict_counter, int *out)
{
	struct sy_flow *f = bpf_map_lookup_elem(&flows, key);
	struct sy_tm *tm;
	__u32 idx, now = sy_now;

	if (!f)
		return SY_HIT_NONE;
	idx = f->tm;
	tm = bpf_map_lookup_elem(&tms, &idx);
	if (!tm || (tm->flags & SY_TM_DISABLED))
		return SY_HIT_RESELECT;
	if (key->proto == IPPROTO_TCP) {
		if ((tcpflags & (SY_TCP_SYN | SY_TCP_ACK)) == SY_TCP_SYN &&
		    f->tcp_state == SY_TCP_CLOSING) {
			/* A new connection on the key of a closed one: a
			 * selected flow is selected again (a drained TM must
			 * not get it); others keep their TM. */
			if (f->flags & SY_FLOW_SELECTED)
				return SY_HIT_RESELECT;
			f->tcp_state = SY_TCP_OPEN;
		} else if ((tcpflags & (SY_TCP_FIN | SY_TCP_RST)) && f->tcp_state != SY_TCP_CLOSING) {
			f->tcp_state = SY_TCP_CLOSING;
		}
	}
	if (!(tm->flags & SY_TM_READY)) {
		*out = sy_count(SY_C_DROP_TM_NOT_READY, len, XDP_DROP);
		return SY_HIT_DONE;
	}
	if (f->last_seen != now)
		f->last_seen = now;
	sy_traffic_add(&svc_stats, f->svc, len, 0);
	sy_traffic_add(&tm_stats, idx, len, 0);
	sy_count(verdict_counter, len, 0);
	*out = sy_forward(ctx, tm, len);
	return SY_HIT_DONE;
}

/* After an exact miss: the configured second keys, most specific first. A
 * hit memorizes the exact key to the second key's TM. */
static __always_inline int sy_try_second(struct xdp_md *ctx, const struct sy_flow_key *key, __u64 len,
				     int *out)
{
	int i;

	/* Called for VIPs only: second keys must not let a TM pull in traffic
	 * for the host or anyone else. */
	for (i = 0; i < SY_MAX_MASKS; i++) {
		__u32 mi = i, idx;
		__u32 *mask = bpf_map_lookup_elem(&masks, &mi);
		struct sy_skey sk = {};
		struct sy_flow entry = {};
		struct sy_second *s;
		struct sy_tm *tm;

		if (!mask || !*mask)
			break;
		sy_mask_key(&sk.key, key, *mask);
		sk.mask = *mask;
		s = bpf_map_lookup_elem(&second_keys, &sk);
		if (!s)
			continue;
		idx = s->tm;
		tm = bpf_map_lookup_elem(&tms, &idx);
		if (!tm || !(tm->flags & SY_TM_READY) || (tm->flags & SY_TM_DISABLED))
			continue;
		if (s->svc != SY_SVC_NONE && (tm->flags & SY_TM_DRAINING))
			continue;
		if (s->last_seen != sy_now)
			s->last_seen = sy_now;
		entry.last_seen = sy_now;
		entry.tm = idx;
		entry.svc = SY_SVC_NONE;
		entry.flags = SY_FLOW_SECOND_KEY;
		entry.mask = *mask;
		bpf_map_update_elem(&flows, key, &entry, BPF_ANY);
		sy_traffic_add(&tm_stats, idx, len, 1);
		sy_count(SY_C_FWD_SECOND_KEY, len, 0);
		*out = sy_forward(ctx, tm, len);
		return 1;
	}
	return 0;
}

/*
 * ICMP "fragmentation needed" (v4) and "packet too big" (v6) about a flow go
 * to that flow's TM: the embedded header is the TM's packet towards the
 * client, so its reverse is the flow's key. Anything else is the kernel's.
 */
static __noinline int sy_icmp(struct xdp_md *ctx, struct sy_flow_key *key,
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
	if (sy_hit(ctx, &inner, 0, len, SY_C_FWD_ICMP, &out) == SY_HIT_DONE)
		return out;
	return sy_count(SY_C_PASS_ICMP_NO_FLOW, len, XDP_PASS);
other:
	return sy_count(sy_is_vip(key) ? SY_C_PASS_VIP_OTHER : SY_C_PASS_NOT_VIP, len, XDP_PASS);
}

/*
 * Path 2: a TM's own packet. A new flow the TM opens (a SYN, or a UDP packet
 * whose reverse is not the TM's yet) towards a non-VIP destination, from the
 * TM's own address or a shared SNAT address, memorizes the reverse key to the
 * TM before the packet leaves, so that the first reply already finds it. The
 * packet itself goes to the kernel.
 */
static __always_inline int sy_from_tm(const struct sy_flow_key *key, int has_ports, __u8 tcpflags,
				      __u32 sender, __u64 len)
{
	struct sy_vip_key src = {};
	struct sy_flow_key rev = {};
	struct sy_flow entry = {}, *cur;
	__u32 *owner;

	if (!has_ports)
		goto pass;
	if (key->proto == IPPROTO_TCP) {
		if ((tcpflags & (SY_TCP_SYN | SY_TCP_ACK)) != SY_TCP_SYN)
			goto pass;
	} else if (key->proto != IPPROTO_UDP) {
		goto pass;
	}
	__builtin_memcpy(src.addr, key->src, sizeof(src.addr));
	src.family = key->family;
	owner = bpf_map_lookup_elem(&learn_srcs, &src);
	if (!owner || (*owner != sender && *owner != SY_TM_ANY))
		goto pass;
	if (sy_is_vip(key))
		goto pass;
	__builtin_memcpy(rev.src, key->dst, sizeof(rev.src));
	__builtin_memcpy(rev.dst, key->src, sizeof(rev.dst));
	rev.sport = key->dport;
	rev.dport = key->sport;
	rev.vlan = key->vlan;
	rev.proto = key->proto;
	rev.family = key->family;
	cur = bpf_map_lookup_elem(&flows, &rev);
	if (cur && cur->tcp_state != SY_TCP_CLOSING) {
		/* Already the sender's (learned, or memorized by a shim on this
		 * very packet): keep it. Another TM's live flow: never taken. */
		if (cur->tm == sender)
			goto pass;
		if (sy_tm_usable(cur->tm)) {
			sy_count(SY_C_LEARN_CONFLICT, len, 0);
			goto pass;
		}
	}
	entry.last_seen = sy_now;
	entry.tm = sender;
	entry.svc = SY_SVC_NONE;
	entry.flags = SY_FLOW_LEARNED;
	bpf_map_update_elem(&flows, &rev, &entry, BPF_ANY);
	sy_count(SY_C_LEARNED, len, 0);
pass:
	return sy_count(SY_C_PASS_FROM_TM, len, XDP_PASS);
}

/* Signal ops: each returns the counter of its outcome. */

/* Converts a wire key, refusing families other than 4 and 6 and IPv4
 * addresses with bytes beyond the first four. */
static __always_inline int sy_wire_key(const struct sy_wire_key *w, struct sy_flow_key *k)
{
	const __u32 *s = (const __u32 *)w->src, *d = (const __u32 *)w->dst;

	if (w->family == SY_AF_INET) {
		if (s[1] | s[2] | s[3] | d[1] | d[2] | d[3])
			return -1;
	} else if (w->family != SY_AF_INET6) {
		return -1;
	}
	__builtin_memcpy(k->src, w->src, sizeof(k->src));
	__builtin_memcpy(k->dst, w->dst, sizeof(k->dst));
	k->sport = w->sport;
	k->dport = w->dport;
	k->vlan = bpf_ntohs(w->vlan) & 0x0fff;
	k->proto = w->proto;
	k->family = w->family;
	return 0;
}

static __always_inline __u32 sy_op_memorize(const struct sy_op_memorize *m, __u32 sender)
{
	struct sy_flow_key k = {};
	struct sy_flow e = {}, *cur;
	__u16 tm = bpf_ntohs(m->tm);
	__u32 timeout = bpf_ntohl(m->timeout);

	if (sy_wire_key(&m->key, &k))
		return SY_C_SIG_REF_BAD_KEY;
	if (tm != SY_SIG_TM_SELF && tm != sender)
		return SY_C_SIG_REF_FOREIGN_TM;
	cur = bpf_map_lookup_elem(&flows, &k);
	if (cur && cur->tm != sender && sy_tm_usable(cur->tm))
		return SY_C_SIG_REF_FOREIGN_TM;
	e.last_seen = sy_now;
	e.tm = sender;
	e.svc = SY_SVC_NONE;
	e.flags = SY_FLOW_MEMORIZED;
	if (bpf_ntohs(m->flags) & SY_MEMORIZE_F_MIRROR)
		e.flags |= SY_FLOW_MIRROR;
	e.timeout = timeout > 0xffff ? 0xffff : timeout;
	if (cur && cur->tm == sender) {
		/* The sender's own entry: rewrite it in place. An LRU update
		 * would take a fresh element and free the old (~250 ns). */
		cur->last_seen = e.last_seen;
		cur->svc = e.svc;
		cur->flags = e.flags;
		cur->tcp_state = e.tcp_state;
		cur->mask = e.mask;
		cur->timeout = e.timeout;
		return SY_C_SIG_MEMORIZE;
	}
	/* NOEXIST when there was no entry: a flow another CPU selected
	 * meanwhile is not overwritten. */
	if (bpf_map_update_elem(&flows, &k, &e, cur ? BPF_ANY : BPF_NOEXIST))
		return SY_C_SIG_REF_FOREIGN_TM;
	return SY_C_SIG_MEMORIZE;
}

/* FORGET, MIRROR and AGE act on an existing flow of the sender. */
static __always_inline __u32 sy_op_own(__u8 op, const struct sy_wire_key *w, __u32 timeout,
				       __u32 sender)
{
	struct sy_flow_key k = {};
	struct sy_flow *cur;

	if (sy_wire_key(w, &k))
		return SY_C_SIG_REF_BAD_KEY;
	cur = bpf_map_lookup_elem(&flows, &k);
	if (!cur)
		return op == SY_OP_FORGET ? SY_C_SIG_FORGET : SY_C_SIG_REF_NO_FLOW;
	if (cur->tm != sender)
		return SY_C_SIG_REF_FOREIGN_TM;
	switch (op) {
	case SY_OP_FORGET:
		bpf_map_delete_elem(&flows, &k);
		return SY_C_SIG_FORGET;
	case SY_OP_MIRROR:
		cur->flags |= SY_FLOW_MIRROR;
		return SY_C_SIG_MIRROR;
	}
	if (!timeout)
		bpf_map_delete_elem(&flows, &k);
	else
		cur->timeout = timeout > 0xffff ? 0xffff : timeout;
	return SY_C_SIG_AGE;
}

static __always_inline __u32 sy_op_relate(struct sy_sig_scratch *x, __u32 sender)
{
	const struct sy_op_relate *r = &x->v.r;
	struct sy_second *cur;
	struct sy_flow *pf;
	__u16 tm = bpf_ntohs(r->tm);
	__u32 mask = r->mask;
	int i, known = 0;

	__builtin_memset(&x->parent, 0, sizeof(x->parent));
	__builtin_memset(&x->second, 0, sizeof(x->second));
	__builtin_memset(&x->sk, 0, sizeof(x->sk));
	__builtin_memset(&x->sv, 0, sizeof(x->sv));
	if (sy_wire_key(&r->parent, &x->parent) || sy_wire_key(&r->second, &x->second))
		return SY_C_SIG_REF_BAD_KEY;
	if (tm != SY_SIG_TM_SELF && tm != sender)
		return SY_C_SIG_REF_FOREIGN_TM;
	for (i = 0; i < SY_MAX_MASKS; i++) {
		__u32 mi = i;
		__u32 *m = bpf_map_lookup_elem(&masks, &mi);

		if (!m || !*m)
			break;
		if (*m == mask)
			known = 1;
	}
	if (!known)
		return SY_C_SIG_REF_BAD_MASK;
	pf = bpf_map_lookup_elem(&flows, &x->parent);
	if (!pf)
		return SY_C_SIG_REF_NO_FLOW;
	if (pf->tm != sender)
		return SY_C_SIG_REF_FOREIGN_TM;
	sy_mask_key(&x->sk.key, &x->second, mask);
	x->sk.mask = mask;
	cur = bpf_map_lookup_elem(&second_keys, &x->sk);
	if (cur && cur->tm != sender && sy_tm_usable(cur->tm))
		return SY_C_SIG_REF_FOREIGN_TM;
	x->sv.last_seen = sy_now;
	x->sv.timeout = bpf_ntohl(r->timeout);
	x->sv.tm = sender;
	x->sv.svc = SY_SVC_NONE;
	x->sv.parent = x->parent;
	if (bpf_map_update_elem(&second_keys, &x->sk, &x->sv, BPF_ANY))
		return SY_C_SIG_REF_TABLE_FULL;
	return SY_C_SIG_RELATE;
}

static __always_inline __u32 sy_op_size(__u8 op)
{
	switch (op) {
	case SY_OP_MEMORIZE:
		return sizeof(struct sy_op_memorize);
	case SY_OP_FORGET:
	case SY_OP_MIRROR:
		return sizeof(struct sy_op_key);
	case SY_OP_RELATE:
		return sizeof(struct sy_op_relate);
	case SY_OP_AGE:
		return sizeof(struct sy_op_age);
	}
	return 0;
}

/*
 * A signal frame or an in-band shim (EtherType SY_ETH_P_SIGNAL). Accepted
 * only on internal interfaces, from a configured TM's MAC, sent to this
 * interface's MAC or the signal multicast MAC. The message is checked whole
 * before any op is applied; then each op is applied or refused on its own.
 * A frame is consumed; a shim is stripped and SY_SHIM_STRIPPED returned so
 * the packet goes on as if it had never carried one.
 */
static __noinline int sy_signal(struct xdp_md *ctx, const struct sy_iface *ifc, __u32 *sender,
				__u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct sy_sig_scratch *x;
	struct sy_settings *st;
	__u32 zero = 0, off, end, mlen, who, count;
	int i, shim;

	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, len, XDP_DROP);
	if (!ifc || ifc->role != SY_ROLE_INTERNAL)
		return sy_count(SY_C_SIG_REF_EXTERNAL, len, XDP_DROP);
	if (!sender)
		return sy_count(SY_C_SIG_REF_UNKNOWN_MAC, len, XDP_DROP);
	who = *sender;
	st = bpf_map_lookup_elem(&settings, &zero);
	if (!sy_mac_eq(eth->h_dest, ifc->mac) && !(st && sy_mac_eq(eth->h_dest, st->signal_mcast)))
		return sy_count(SY_C_SIG_REF_NOT_FOR_US, len, XDP_DROP);
	/* Big locals live in a per-CPU scratch: the BPF stack is shared with
	 * the packet path's frame. */
	x = bpf_map_lookup_elem(&sig_scratch, &zero);
	if (!x)
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	if (bpf_xdp_load_bytes(ctx, ETH_HLEN, &x->h, sizeof(x->h)))
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	if (x->h.version != SY_SIG_VERSION)
		return sy_count(SY_C_SIG_REF_VERSION, len, XDP_DROP);
	count = x->h.count;
	if (count == 0 || count > SY_SIG_MAX_OPS)
		return sy_count(SY_C_SIG_REF_COUNT, len, XDP_DROP);
	mlen = bpf_ntohs(x->h.length);
	shim = bpf_ntohs(x->h.flags) & SY_SIG_F_SHIM;
	end = ETH_HLEN + SY_SIG_HDR_LEN + mlen;
	if (end + (shim ? 2 : 0) > len)
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);

	off = ETH_HLEN + SY_SIG_HDR_LEN;
	for (i = 0; i < SY_SIG_MAX_OPS; i++) {
		struct sy_tlv t;
		__u32 size;

		if (i >= count)
			break;
		if (off + SY_SIG_TLV_HDR_LEN > end || bpf_xdp_load_bytes(ctx, off, &t, sizeof(t)))
			return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
		size = sy_op_size(t.op);
		if (!size)
			return sy_count(SY_C_SIG_REF_UNKNOWN_OP, len, XDP_DROP);
		if (t.len != size)
			return sy_count(SY_C_SIG_REF_BAD_LENGTH, len, XDP_DROP);
		off += SY_SIG_TLV_HDR_LEN + size;
		if (off > end)
			return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	}
	if (off != end)
		return sy_count(SY_C_SIG_REF_BAD_LENGTH, len, XDP_DROP);

	off = ETH_HLEN + SY_SIG_HDR_LEN;
	for (i = 0; i < SY_SIG_MAX_OPS; i++) {
		struct sy_tlv t;
		__u32 c = SY_C_SIG_REF_TRUNCATED;

		if (i >= count)
			break;
		if (bpf_xdp_load_bytes(ctx, off, &t, sizeof(t)))
			return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
		off += SY_SIG_TLV_HDR_LEN;
		switch (t.op) {
		case SY_OP_MEMORIZE:
			if (!bpf_xdp_load_bytes(ctx, off, &x->v.m, sizeof(x->v.m)))
				c = sy_op_memorize(&x->v.m, who);
			off += sizeof(x->v.m);
			break;
		case SY_OP_FORGET:
		case SY_OP_MIRROR:
			if (!bpf_xdp_load_bytes(ctx, off, &x->v.k, sizeof(x->v.k)))
				c = sy_op_own(t.op, &x->v.k.key, 0, who);
			off += sizeof(x->v.k);
			break;
		case SY_OP_AGE:
			if (!bpf_xdp_load_bytes(ctx, off, &x->v.a, sizeof(x->v.a)))
				c = sy_op_own(t.op, &x->v.a.key, bpf_ntohl(x->v.a.timeout), who);
			off += sizeof(x->v.a);
			break;
		case SY_OP_RELATE:
			if (!bpf_xdp_load_bytes(ctx, off, &x->v.r, sizeof(x->v.r)))
				c = sy_op_relate(x, who);
			off += sizeof(x->v.r);
			break;
		}
		sy_count(c, len, 0);
	}
	if (!shim)
		return sy_count(SY_C_SIG_FRAME, len, XDP_DROP);

	/* Strip [EtherType][header][TLVs]: move the MACs forward over them. */
	if (bpf_xdp_load_bytes(ctx, 0, x->macs, sizeof(x->macs)))
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	if (bpf_xdp_adjust_head(ctx, 2 + SY_SIG_HDR_LEN + mlen))
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	if (bpf_xdp_store_bytes(ctx, 0, x->macs, sizeof(x->macs)))
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	sy_count(SY_C_SIG_SHIM, len, 0);
	return SY_SHIM_STRIPPED;
}

SY_PROCESS_ATTR int sy_process(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct sy_flow_key key = {};
	struct ethhdr *eth = data;
	struct sy_iface *ifc;
	__u32 off = sizeof(*eth), l4off, ifindex = ctx->ingress_ifindex, *sender = NULL;
	__u8 l4proto, tcpflags = 0;
	int frag = 0, out = XDP_PASS, i, has_ports = 0, hit;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, len, XDP_DROP);
	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (ifc && ifc->role == SY_ROLE_INTERNAL) {
		struct sy_mac_key mk = {};

		__builtin_memcpy(mk.mac, eth->h_source, ETH_ALEN);
		sender = bpf_map_lookup_elem(&tm_by_mac, &mk);
		if (sender) {
			/* A TM's MAC counts only on the TM's own interface:
			 * a host elsewhere cannot borrow it. */
			__u32 idx = *sender;
			struct sy_tm *stm = bpf_map_lookup_elem(&tms, &idx);

			if (!stm || stm->ifindex != ifindex) {
				if (eth->h_proto == bpf_htons(SY_ETH_P_SIGNAL))
					return sy_count(SY_C_SIG_REF_WRONG_PORT, len, XDP_DROP);
				sender = NULL;
			}
		}
	}
	if (eth->h_proto == bpf_htons(SY_ETH_P_SIGNAL)) {
		int r = sy_signal(ctx, ifc, sender, len);

		if (r != SY_SHIM_STRIPPED)
			return r;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		eth = data;
		len = data_end - data;
		if ((void *)(eth + 1) > data_end)
			return sy_count(SY_C_DROP_TRUNC_ETH, len, XDP_DROP);
	}
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
	if (l4off > 0xffff)
		return sy_count(SY_C_DROP_IPV6_EXT, len, XDP_DROP);
	if (!frag) {
		if (l4proto == IPPROTO_TCP) {
			struct tcphdr *th = data + l4off;

			if ((void *)(th + 1) <= data_end && th->doff >= 5) {
				key.sport = th->source;
				key.dport = th->dest;
				tcpflags = ((__u8 *)th)[13];
				has_ports = 1;
			}
		} else if (l4proto == IPPROTO_UDP) {
			struct udphdr *uh = data + l4off;

			if ((void *)(uh + 1) <= data_end) {
				key.sport = uh->source;
				key.dport = uh->dest;
				has_ports = 1;
			}
		}
	}
	if (sender)
		return sy_from_tm(&key, has_ports, tcpflags, *sender, len);

	if (frag)
		return sy_is_vip(&key) ? sy_count(SY_C_DROP_FRAGMENT, len, XDP_DROP) :
					 sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
	if (l4proto == IPPROTO_TCP || l4proto == IPPROTO_UDP) {
		if (!has_ports) {
			__u32 c = SY_C_DROP_TRUNC_L4;

			if (l4proto == IPPROTO_TCP && (void *)((struct tcphdr *)(data + l4off) + 1) <= data_end)
				c = SY_C_DROP_BAD_L4;
			return sy_is_vip(&key) ? sy_count(c, len, XDP_DROP) :
						 sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
		}
	} else if ((l4proto == IPPROTO_ICMP && key.family == SY_AF_INET) ||
		   (l4proto == IPPROTO_ICMPV6 && key.family == SY_AF_INET6)) {
		return sy_icmp(ctx, &key, l4off, len);
	} else {
		return sy_count(sy_is_vip(&key) ? SY_C_PASS_VIP_OTHER : SY_C_PASS_NOT_VIP, len,
				XDP_PASS);
	}

	hit = sy_hit(ctx, &key, tcpflags, len, SY_C_FWD_HIT, &out);
	if (hit == SY_HIT_DONE)
		return out;
	/* Second keys and selection are for VIPs only. */
	if (!sy_is_vip(&key))
		return sy_count(SY_C_PASS_NOT_VIP, len, XDP_PASS);
	if (sy_try_second(ctx, &key, len, &out))
		return out;
	return sy_select(ctx, &key, len, hit == SY_HIT_RESELECT ? SY_C_FWD_RESELECT : SY_C_FWD_NEW);
}

SEC("xdp")
int switchyard_xdp(struct xdp_md *ctx)
{
	return sy_process(ctx);
}

char __license[] SEC("license") = "Dual BSD/GPL";
