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
 * Writes the entry of a new flow: a bare SYN's to the half-open table, any
 * other packet's to the flow table. A full table refuses it (counted) and
 * the packet is forwarded all the same: without an entry it follows the
 * ring, which is what it would get again.
 */
static __always_inline void sy_put_new(const struct sy_pkt *p, struct sy_flow *e)
{
	if (p->key.proto == IPPROTO_TCP) {
		sy_tcp_track(e, p, 0);
		if ((p->tcpflags & (SY_TCP_SYN | SY_TCP_ACK)) == SY_TCP_SYN) {
			if (bpf_map_update_elem(&half_open, &p->key, e, BPF_ANY))
				sy_count(SY_C_HALF_OPEN_REFUSED, p->len, 0);
			else
				sy_active_add(e->tm, 1);
			return;
		}
	}
	if (bpf_map_update_elem(&flows, &p->key, e, BPF_ANY)) {
		sy_count(SY_C_FLOW_REFUSED, p->len, 0);
		sy_event(&p->key, e, SY_EV_REFUSED);
	} else {
		sy_event(&p->key, e, SY_EV_NEW);
		sy_active_add(e->tm, 1);
	}
}

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
				/* Its next entry is half-open: this one must
				 * not catch the ACK. */
				if (!bpf_map_delete_elem(&flows, key))
					sy_active_add(idx, -1);
				*reselect = 1;
				return SY_GO_ON;
			}
			f->tcp_state = 0;
		}
		if (sy_tcp_track(f, seg, 0))
			sy_event(key, f, SY_EV_STATE);
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

/*
 * After an exact miss (or a flow to re-select), a TCP packet of a half-open
 * flow: a retransmitted SYN goes to its TM; a packet in the client's window
 * that establishes it (an ACK) moves the entry to the flow table; a valid
 * RST ends it. Its TM forced out: the entry goes and the packet is selected
 * again.
 */
static __noinline int sy_half_open(struct xdp_md *ctx, const struct sy_pkt *p)
{
	struct sy_flow *h;
	struct sy_tm *tm;
	__u32 idx;
	__u16 svc;

	if (p->key.proto != IPPROTO_TCP)
		return SY_GO_ON;
	h = bpf_map_lookup_elem(&half_open, &p->key);
	if (!h)
		return SY_GO_ON;
	idx = h->tm;
	tm = bpf_map_lookup_elem(&tms, &idx);
	if (!tm || (tm->flags & SY_TM_DISABLED)) {
		if (!bpf_map_delete_elem(&half_open, &p->key))
			sy_active_add(idx, -1);
		return SY_GO_ON;
	}
	/* In place, and inserted from the map value itself: a copy would
	 * not fit the stack of the benchmark's call chain. */
	sy_tcp_track(h, p, 0);
	h->last_seen = sy_now;
	svc = h->svc;
	if (h->tcp_state & SY_TCP_RESET) {
		if (!bpf_map_delete_elem(&half_open, &p->key))
			sy_active_add(idx, -1);
	} else if (h->tcp_state & SY_TCP_ESTABLISHED) {
		if (bpf_map_update_elem(&flows, &p->key, h, BPF_ANY)) {
			sy_count(SY_C_FLOW_REFUSED, p->len, 0);
			sy_event(&p->key, h, SY_EV_REFUSED);
		} else {
			sy_event(&p->key, h, SY_EV_NEW);
			bpf_map_delete_elem(&half_open, &p->key);
			sy_count(SY_C_HALF_OPEN_PROMOTED, p->len, 0);
		}
	}
	if (!(tm->flags & SY_TM_READY))
		return sy_count(SY_C_DROP_TM_NOT_READY, p->len, XDP_DROP);
	sy_traffic_add(&svc_stats, svc, p->len, 0);
	sy_traffic_add(&tm_stats, idx, p->len, 0);
	sy_count(SY_C_FWD_HALF_OPEN, p->len, 0);
	return sy_forward(ctx, tm, p->len);
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
		sy_put_new(p, &entry);
		sy_traffic_add(&tm_stats, idx, len, 1);
		sy_count(SY_C_FWD_SECOND_KEY, len, 0);
		return sy_forward(ctx, tm, len);
	}
	return SY_GO_ON;
}

#endif
