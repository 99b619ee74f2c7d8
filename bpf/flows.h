/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flows.h: the steps that find a packet's TM in a table: the flow table
 * (sy_hit, with the per-flow TCP state) and, after an exact miss, the second
 * keys (sy_second).
 */
#ifndef SY_FLOWS_H
#define SY_FLOWS_H

#include "parse.h"
#include "keys.h"
#include "forward.h"
#include "tcp.h"

/*
 * Sends the packet to the TM of an existing flow. Goes on (SY_GO_ON) on a
 * miss, and with *reselect set when the flow's TM was forced out or a
 * selected flow's key is reused by a new TCP connection. seg is the packet
 * whose TCP header moves the flow's state (NULL: an ICMP error about it).
 */
static __always_inline int sy_hit(struct xdp_md *ctx, const struct sy_flow_key *key,
				  const struct sy_pkt *seg, __u64 len, __u32 verdict_counter,
				  int *reselect)
{
	struct sy_flow *f = bpf_map_lookup_elem(&flows, key);
	struct sy_tm *tm;
	__u32 idx, now = sy_now;

	if (!f)
		return SY_GO_ON;
	idx = f->tm;
	tm = bpf_map_lookup_elem(&tms, &idx);
	if (!tm || (tm->flags & SY_TM_DISABLED)) {
		*reselect = 1;
		return SY_GO_ON;
	}
	if (seg && key->proto == IPPROTO_TCP) {
		if ((seg->tcpflags & (SY_TCP_SYN | SY_TCP_ACK)) == SY_TCP_SYN &&
		    (f->tcp_state & SY_TCP_ENDED)) {
			/* A new connection on the key of a closed one: a
			 * selected flow is selected again (a drained TM must
			 * not get it); others keep their TM and start over. */
			if (f->flags & SY_FLOW_SELECTED) {
				*reselect = 1;
				return SY_GO_ON;
			}
			f->tcp_state = 0;
		}
		sy_tcp_track(f, seg, 0);
	}
	if (!(tm->flags & SY_TM_READY))
		return sy_count(SY_C_DROP_TM_NOT_READY, len, XDP_DROP);
	if (f->last_seen != now)
		f->last_seen = now;
	sy_traffic_add(&svc_stats, f->svc, len, 0);
	sy_traffic_add(&tm_stats, idx, len, 0);
	sy_count(verdict_counter, len, 0);
	return sy_forward(ctx, tm, len);
}

/* After an exact miss, for a VIP (second keys must not let a TM pull in
 * traffic for the host or anyone else): the configured second keys, most
 * specific first. A hit memorizes the exact key to the second key's TM. */
static __always_inline int sy_second(struct xdp_md *ctx, const struct sy_pkt *p)
{
	const struct sy_flow_key *key = &p->key;
	__u64 len = p->len;
	int i;

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
		if (key->proto == IPPROTO_TCP)
			sy_tcp_track(&entry, p, 0);
		bpf_map_update_elem(&flows, key, &entry, BPF_ANY);
		sy_traffic_add(&tm_stats, idx, len, 1);
		sy_count(SY_C_FWD_SECOND_KEY, len, 0);
		return sy_forward(ctx, tm, len);
	}
	return SY_GO_ON;
}

#endif
