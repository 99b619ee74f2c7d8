/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * learn.h: the step for a TM's own packets (sy_from_tm): learning the
 * reverse key of a flow the TM opens, then the kernel.
 */
#ifndef SY_LEARN_H
#define SY_LEARN_H

#include "parse.h"
#include "keys.h"
#include "tcp.h"

/* rev is key the other way round. */
static __always_inline void sy_reverse(struct sy_flow_key *rev, const struct sy_flow_key *key)
{
	__builtin_memcpy(rev->src, key->dst, sizeof(rev->src));
	__builtin_memcpy(rev->dst, key->src, sizeof(rev->dst));
	rev->sport = key->dport;
	rev->dport = key->sport;
	rev->vlan = key->vlan;
	rev->proto = key->proto;
	rev->family = key->family;
}

/* A TM's TCP packet of a flow it owns (a client's reply through the
 * distributor, or a learned connection's next packets): the TM's side of
 * the flow's state. Another TM's flow is not touched. rev is the caller's
 * (one key on the stack for both uses). */
static __always_inline void sy_tm_side(const struct sy_pkt *p, struct sy_flow_key *rev)
{
	struct sy_flow *cur;

	sy_reverse(rev, &p->key);
	cur = bpf_map_lookup_elem(&flows, rev);
	if (cur && cur->tm == p->sender && sy_tcp_track(cur, p, 1))
		sy_event(rev, cur, SY_EV_STATE);
}

/*
 * A new flow the TM opens (a SYN, or a UDP packet whose reverse is not the
 * TM's yet) towards a non-VIP destination, from the TM's own address or a
 * shared SNAT address, memorizes the reverse key to the TM before the packet
 * leaves, so that the first reply already finds it. The packet itself goes
 * to the kernel.
 */
static __always_inline int sy_from_tm(const struct sy_pkt *p)
{
	const struct sy_flow_key *key = &p->key;
	struct sy_vip_key src = {};
	struct sy_flow_key rev = {};
	struct sy_sig_scratch *x;
	struct sy_flow *cur;
	__u32 *owner, sender = p->sender, zero = 0;

	if (!p->ports)
		goto pass;
	if (key->proto == IPPROTO_TCP) {
		if ((p->tcpflags & (SY_TCP_SYN | SY_TCP_ACK)) != SY_TCP_SYN) {
			sy_tm_side(p, &rev);
			goto pass;
		}
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
	sy_reverse(&rev, key);
	cur = bpf_map_lookup_elem(&flows, &rev);
	if (cur && !(cur->tcp_state & SY_TCP_ENDED)) {
		/* Already the sender's (learned, or memorized by a shim on this
		 * very packet): keep it. Another TM's live flow: never taken. */
		if (cur->tm == sender)
			goto pass;
		if (sy_tm_usable(cur->tm)) {
			sy_count(SY_C_LEARN_CONFLICT, p->len, 0);
			goto pass;
		}
	}
	/* The new entry in the scratch, not on the stack: sy_process's frame
	 * is at the limit of the benchmark's call chain. Its lookup cannot
	 * fail (maps.h). */
	x = bpf_map_lookup_elem(&sig_scratch, &zero);
	if (!x)
		goto pass;
	__builtin_memset(&x->flow, 0, sizeof(x->flow));
	x->flow.last_seen = sy_now;
	x->flow.tm = sender;
	x->flow.svc = SY_SVC_NONE;
	x->flow.flags = SY_FLOW_LEARNED;
	if (key->proto == IPPROTO_TCP)
		sy_tcp_track(&x->flow, p, 1);
	if (bpf_map_update_elem(&flows, &rev, &x->flow, BPF_ANY)) {
		sy_count(SY_C_FLOW_REFUSED, p->len, 0);
		sy_event(&rev, &x->flow, SY_EV_REFUSED);
	} else {
		sy_count(SY_C_LEARNED, p->len, 0);
		sy_event(&rev, &x->flow, SY_EV_NEW);
		sy_active_add(sender, 1);
	}
pass:
	return sy_count(SY_C_PASS_FROM_TM, p->len, XDP_PASS);
}

#endif
