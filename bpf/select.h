/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * select.h: the last step for a new flow: its service (sy_service), a TM by
 * the service's Maglev ring, the new flow entry and, with persistence, the
 * service's second key (sy_select).
 */
#ifndef SY_SELECT_H
#define SY_SELECT_H

#include "keys.h"
#include "forward.h"
#include "tcp.h"
#include "flows.h"

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

/* The hash that indexes a service's ring for a new flow (sy_svc.hash): the
 * whole key (0, the default), its SY_FIELD_* fields, or a symmetric form
 * (SY_HASH_SYM_*). The key to hash is built in the caller's frame, k. */
static __always_inline __u32 sy_policy_hash(const struct sy_flow_key *key, __u32 hash,
					    struct sy_flow_key *k)
{
	__u16 sp, dp;
	int i;

	if (!hash)
		return sy_hash_key(key, sy_hash_seed);
	__builtin_memset(k, 0, sizeof(*k));
	if (!(hash & (SY_HASH_SYM_PORT | SY_HASH_SYM_ADDR))) {
		sy_mask_key(k, key, hash);
		return sy_hash_key(k, sy_hash_seed);
	}
	k->family = key->family;
	k->proto = key->proto;
	sp = bpf_ntohs(key->sport);
	dp = bpf_ntohs(key->dport);
	k->sport = sp >= dp ? key->sport : key->dport;
	if (hash & SY_HASH_SYM_ADDR) {
		if (sp > dp)
			__builtin_memcpy(k->src, key->src, sizeof(k->src));
		else if (dp > sp)
			__builtin_memcpy(k->src, key->dst, sizeof(k->src));
		else
#pragma unroll
			for (i = 0; i < (int)sizeof(k->src); i++)
				k->src[i] = key->src[i] ^ key->dst[i];
	}
	return sy_hash_key(k, sy_hash_seed);
}

/* The second of the two choices of the least-connections policies: the
 * flow's hash mixed again (murmur3's finalizer, a bijection), so that the
 * two slots are independent. */
static __always_inline __u32 sy_policy_mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* A TM's active flows (policy_active), negative drift read as 0. */
static __always_inline __u64 sy_policy_active(__u32 tm)
{
	__s64 *n = bpf_map_lookup_elem(&policy_active, &tm);

	return n && *n > 0 ? (__u64)*n : 0;
}

/* A TM's weight for weighted-least-connections (policy_weight; 0: 1). */
static __always_inline __u64 sy_policy_weight(__u32 tm)
{
	__u32 *w = bpf_map_lookup_elem(&policy_weight, &tm);

	return w && *w ? *w : 1;
}

/*
 * Least-connections (two random choices): the slots a and b of the flow's
 * hash and of its mix; the one whose TM has fewer active flows, per unit
 * of weight for WLC (a × wb against b × wa), a on a tie. The ring holds
 * the TMs by weight (WLC) or equally (LC), so the two candidates are drawn
 * in proportion to what each should carry.
 */
static __always_inline __u32 sy_policy_least(const struct sy_svc *svc, __u32 h)
{
	__u32 a = h % sy_ring_size, b = sy_policy_mix(h) % sy_ring_size;
	__u32 sa = svc->index * sy_ring_size + a, sb = svc->index * sy_ring_size + b;
	__u32 *ta = bpf_map_lookup_elem(&rings, &sa), *tb = bpf_map_lookup_elem(&rings, &sb);
	__u64 na, nb;

	if (!ta || !tb || *ta == SY_TM_NONE || *tb == SY_TM_NONE || *ta == *tb)
		return a;
	na = sy_policy_active(*ta);
	nb = sy_policy_active(*tb);
	if (svc->policy == SY_POLICY_WLC) {
		na *= sy_policy_weight(*tb);
		nb *= sy_policy_weight(*ta);
	}
	return nb < na ? b : a;
}

/* The ring offset a service's policy gives a new flow: its hash, the
 * next slot of the service's per-CPU round-robin counter, or the less
 * loaded of two slots. */
static __always_inline __u32 sy_policy_slot(const struct sy_flow_key *key, const struct sy_svc *svc,
					    struct sy_flow_key *k)
{
	__u32 idx = svc->index, *next, n;

	if (svc->policy == SY_POLICY_LC || svc->policy == SY_POLICY_WLC)
		return sy_policy_least(svc, sy_policy_hash(key, svc->hash, k));
	if (svc->policy != SY_POLICY_RR)
		return sy_policy_hash(key, svc->hash, k) % sy_ring_size;
	next = bpf_map_lookup_elem(&policy_rr, &idx);
	if (!next)
		return 0;
	n = *next;
	*next = n + 1 >= sy_ring_size ? 0 : n + 1;
	return n % sy_ring_size;
}

/* The DSCP of a new flow's packet, read again from its IP header (after 0-2
 * VLAN tags; sy_parse checked them): only QoS services pay for it. */
static __always_inline __u32 sy_policy_dscp(struct xdp_md *ctx, const struct sy_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 off = 12;
	__u16 *et;
	__u8 *b;
	int i;

#pragma unroll
	for (i = 0; i < SY_MAX_VLAN_TAGS; i++) {
		et = data + off;
		if ((void *)(et + 1) > data_end)
			return 0;
		if (*et != bpf_htons(ETH_P_8021Q) && *et != bpf_htons(ETH_P_8021AD))
			break;
		off += 4;
	}
	b = data + off + 2;
	if ((void *)(b + 2) > data_end)
		return 0;
	if (p->key.family == SY_AF_INET)
		return b[1] >> 2;
	return ((b[0] & 0x0f) << 2) | (b[1] >> 6);
}

/* The slot of a QoS service's class ring for a new flow at ring offset off
 * (policy_qos, policy_qos_rings), or NULL: not a QoS service, or the
 * packet's DSCP is in no class. */
static __always_inline __u32 *sy_policy_qos(struct xdp_md *ctx, const struct sy_pkt *p,
					    const struct sy_svc *svc, __u32 off)
{
	__u32 idx = svc->index, slot;
	struct sy_qos *q = bpf_map_lookup_elem(&policy_qos, &idx);

	if (!q || !q->dscp || q->ring >= SY_POLICY_QOS_RINGS)
		return NULL;
	if (!((q->dscp >> sy_policy_dscp(ctx, p)) & 1))
		return NULL;
	slot = q->ring * sy_ring_size + off;
	return bpf_map_lookup_elem(&policy_qos_rings, &slot);
}

/* Picks a TM for a new flow by the service's Maglev ring and remembers it
 * (and, with persistence, remembers the TM under the service's mask). A
 * subprogram: its frame is not on top of the caller's for the stack limit. */
static __noinline int sy_select(struct xdp_md *ctx, const struct sy_pkt *p, __u32 verdict_counter)
{
	const struct sy_flow_key *key = &p->key;
	__u64 len = p->len;
	struct sy_flow entry = {};
	struct sy_svc *svc;
	struct sy_tm *tm;
	__u32 slot, off, *tmidx, idx;
	struct sy_flow_key hk;

	svc = sy_service(key);
	if (!svc)
		return sy_count(SY_C_PASS_NO_SERVICE, len, XDP_PASS);

	off = sy_policy_slot(key, svc, &hk);
	tmidx = sy_policy_qos(ctx, p, svc, off);
	if (!tmidx) {
		slot = svc->index * sy_ring_size + off;
		tmidx = bpf_map_lookup_elem(&rings, &slot);
	}
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
	sy_put_new(p, &entry);

	if (svc->persist_mask) {
		/* The scratch, not the stack: it is shared with the caller's
		 * frame. Its lookup cannot fail (maps.h). */
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

#endif
