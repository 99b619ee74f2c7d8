/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * signal.h: the signal step (sy_signal): trust checks, the message checked
 * whole, then each op (sy_op_memorize, sy_op_own for FORGET/MIRROR/AGE,
 * sy_op_relate) applied or refused on its own. The wire format is in
 * switchyard.h, docs/signals.md specifies it.
 */
#ifndef SY_SIGNAL_H
#define SY_SIGNAL_H

#include "parse.h"
#include "keys.h"
#include "tcp.h"

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

static __always_inline __u32 sy_op_memorize(struct sy_sig_scratch *x, __u32 sender)
{
	const struct sy_op_memorize *m = &x->v.m;
	struct sy_flow_key k = {};
	struct sy_flow *e = &x->flow, *cur;
	__u16 tm = bpf_ntohs(m->tm);
	__u32 timeout = bpf_ntohl(m->timeout), old;

	if (sy_wire_key(&m->key, &k))
		return SY_C_SIG_REF_BAD_KEY;
	if (tm != SY_SIG_TM_SELF && tm != sender)
		return SY_C_SIG_REF_FOREIGN_TM;
	cur = bpf_map_lookup_elem(&flows, &k);
	if (cur && cur->tm != sender && sy_tm_usable(cur->tm))
		return SY_C_SIG_REF_FOREIGN_TM;
	/* The new entry in the scratch, not on the stack: sy_signal's frame
	 * is at the limit of the call chain. */
	__builtin_memset(e, 0, sizeof(*e));
	e->last_seen = sy_now;
	e->tm = sender;
	e->svc = SY_SVC_NONE;
	e->flags = SY_FLOW_MEMORIZED;
	if (bpf_ntohs(m->flags) & SY_MEMORIZE_F_MIRROR)
		e->flags |= SY_FLOW_MIRROR;
	e->timeout = timeout > 0xffff ? 0xffff : timeout;
	if (cur && cur->tm == sender) {
		/* The sender's own entry: rewrite it in place. A map update
		 * would take a fresh element and free the old (~250 ns). */
		cur->last_seen = e->last_seen;
		cur->svc = e->svc;
		cur->flags = e->flags;
		cur->tcp_state = e->tcp_state;
		cur->mask = e->mask;
		cur->timeout = e->timeout;
		return SY_C_SIG_MEMORIZE;
	}
	/* NOEXIST when there was no entry: a flow another CPU selected
	 * meanwhile is not overwritten. */
	old = cur ? cur->tm : SY_TM_NONE;
	if (bpf_map_update_elem(&flows, &k, e, cur ? BPF_ANY : BPF_NOEXIST))
		return SY_C_SIG_REF_FOREIGN_TM;
	if (old != SY_TM_NONE)
		sy_active_add(old, -1);
	sy_active_add(sender, 1);
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
		sy_event(&k, cur, SY_EV_FORGOTTEN);
		if (!bpf_map_delete_elem(&flows, &k))
			sy_active_add(sender, -1);
		return SY_C_SIG_FORGET;
	case SY_OP_MIRROR:
		cur->flags |= SY_FLOW_MIRROR;
		return SY_C_SIG_MIRROR;
	}
	if (!timeout) {
		if (!bpf_map_delete_elem(&flows, &k))
			sy_active_add(sender, -1);
	} else
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

/* A signal from a configured TM's MAC is refused while that TM is not ready
 * (the daemon has not resolved its interface, or lost it): the TM gets no
 * traffic, so flows pinned to it would be lost. A MAC no TM has counts as
 * ready here: the caller refuses it for what it is. */
static __always_inline int sy_sender_ready(const struct ethhdr *eth)
{
	struct sy_mac_key mk = {};
	struct sy_tm *tm;
	__u32 *idx;

	__builtin_memcpy(mk.mac, eth->h_source, ETH_ALEN);
	idx = bpf_map_lookup_elem(&tm_by_mac, &mk);
	if (!idx)
		return 1;
	tm = bpf_map_lookup_elem(&tms, idx);
	return tm && (tm->flags & SY_TM_READY);
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
 * The step for EtherType SY_ETH_P_SIGNAL: a signal frame or an in-band shim.
 * Accepted only on internal interfaces, from a configured TM's MAC on that
 * TM's own interface, sent to this interface's MAC or the signal multicast
 * MAC. The message is checked whole before any op is applied; then each op
 * is applied or refused on its own. A frame is consumed; a shim is stripped
 * and the packet goes on (SY_GO_ON) as if it had never carried one. A
 * subprogram, with its big locals in the scratch: the stack is shared with
 * the packet path's frame.
 */
static __noinline int sy_signal(struct xdp_md *ctx, const struct sy_iface *ifc,
				const struct sy_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct sy_sig_scratch *x;
	struct sy_settings *st;
	/* The whole frame, frags included: a shim may ride on a jumbo frame
	 * (bpf_xdp_load_bytes reads across fragments; the strip moves the head
	 * of the linear buffer and fails if the shim were not all in it). */
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__u32 zero = 0, off, end, mlen, who, count;
	int i, shim;

	if ((void *)(eth + 1) > data_end)
		return sy_count(SY_C_DROP_TRUNC_ETH, len, XDP_DROP);
	if ((p->wrong_port || p->by_tm) && !sy_sender_ready(eth))
		return sy_count(SY_C_SIG_REF_NOT_READY, len, XDP_DROP);
	if (p->wrong_port)
		return sy_count(SY_C_SIG_REF_WRONG_PORT, len, XDP_DROP);
	if (!ifc || ifc->role != SY_ROLE_INTERNAL)
		return sy_count(SY_C_SIG_REF_EXTERNAL, len, XDP_DROP);
	if (!p->by_tm)
		return sy_count(SY_C_SIG_REF_UNKNOWN_MAC, len, XDP_DROP);
	who = p->sender;
	st = bpf_map_lookup_elem(&settings, &zero);
	if (!sy_mac_eq(eth->h_dest, ifc->mac) && !(st && sy_mac_eq(eth->h_dest, st->signal_mcast)))
		return sy_count(SY_C_SIG_REF_NOT_FOR_US, len, XDP_DROP);
	x = bpf_map_lookup_elem(&sig_scratch, &zero);
	/* The lookup cannot fail (maps.h): the check is for the verifier, and
	 * the truncated counter never counts a packet for it. */
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
				c = sy_op_memorize(x, who);
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
	/* A shim sent to the signal multicast MAC: the packet behind it is
	 * for this host (the kernel forwards only frames addressed to it), so
	 * it goes on addressed to the interface's MAC. */
	__builtin_memcpy(x->macs, ifc->mac, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, 2 + SY_SIG_HDR_LEN + mlen))
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	if (bpf_xdp_store_bytes(ctx, 0, x->macs, sizeof(x->macs)))
		return sy_count(SY_C_SIG_REF_TRUNCATED, len, XDP_DROP);
	sy_count(SY_C_SIG_SHIM, len, 0);
	return SY_GO_ON;
}

#endif
