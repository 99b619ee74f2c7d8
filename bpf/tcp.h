/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp.h: the TCP state of a flow entry (sy_tcp_track), from the packets of
 * both directions, with FIN and RST believed only inside their side's
 * window. sy_hit and sy_second/sy_select track the key's direction ("fwd"),
 * sy_from_tm the TM's ("rev").
 */
#ifndef SY_TCP_H
#define SY_TCP_H

#include "parse.h"

/* Reports a flow event (switchyard.h, enum sy_event_type). Reserved in the
 * ring itself: no copy on the stack. */
static __always_inline void sy_event(const struct sy_flow_key *k, const struct sy_flow *f, __u8 type)
{
	struct sy_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev) {
		sy_count(SY_C_EVENT_OVERRUN, 0, 0);
		return;
	}
	__builtin_memcpy(&ev->key, k, sizeof(ev->key));
	ev->time = sy_now;
	ev->tm = f->tm;
	ev->flags = f->flags;
	ev->type = type;
	ev->tcp_state = f->tcp_state;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
}

/* The state bits whose change is an event. */
#define SY_TCP_EVENT_BITS (SY_TCP_ESTABLISHED | SY_TCP_ENDED)

/* Is x within SY_TCP_SEQ_WINDOW of next, either side (mod 2^32)? */
static __always_inline int sy_in_window(__u32 x, __u32 next)
{
	return x - next + SY_TCP_SEQ_WINDOW <= 2 * SY_TCP_SEQ_WINDOW;
}

/*
 * Updates f's TCP state for packet p of one side (rev: the TM's). The first
 * packet of a side records its next sequence number; later ones count only
 * inside the window and move it forward. A FIN or RST is believed if its
 * sequence number is in its side's window or, its side unknown yet (a RST
 * answering a SYN), if it acknowledges the other side's next; otherwise it
 * is counted and ignored (the packet itself still goes to the TM, whose
 * stack judges it again). Writes only what changed: the hit path stays a
 * read for a packet that changes nothing. Returns whether an event bit
 * (established, FIN, RST) was newly set.
 */
static __always_inline int sy_tcp_track(struct sy_flow *f, const struct sy_pkt *p, int rev)
{
	__u8 fl = p->tcpflags, st = f->tcp_state;
	__u8 seen = rev ? SY_TCP_SEQ_REV : SY_TCP_SEQ_FWD;
	__u8 oseen = rev ? SY_TCP_SEQ_FWD : SY_TCP_SEQ_REV;
	__u32 next = rev ? f->seq_rev : f->seq_fwd;
	__u32 onext = rev ? f->seq_fwd : f->seq_rev;
	int ok;

	if (st & seen)
		ok = sy_in_window(p->seq, next);
	else if (fl & (SY_TCP_FIN | SY_TCP_RST))
		ok = (fl & SY_TCP_ACK) && (st & oseen) && sy_in_window(p->ack, onext);
	else
		ok = 1;
	if (!ok) {
		if (fl & SY_TCP_RST)
			sy_count(SY_C_TCP_REF_RST, p->len, 0);
		else if (fl & SY_TCP_FIN)
			sy_count(SY_C_TCP_REF_FIN, p->len, 0);
		return 0;
	}
	if (!(st & seen) || (__s32)(p->seq_end - next) > 0) {
		st |= seen;
		if (rev)
			f->seq_rev = p->seq_end;
		else
			f->seq_fwd = p->seq_end;
	}
	if (fl & SY_TCP_SYN)
		st |= SY_TCP_SYN_SEEN;
	else if ((fl & (SY_TCP_ACK | SY_TCP_RST)) == SY_TCP_ACK)
		st |= SY_TCP_ESTABLISHED;
	if (fl & SY_TCP_RST)
		st |= SY_TCP_RESET;
	if (fl & SY_TCP_FIN)
		st |= rev ? SY_TCP_FIN_REV : SY_TCP_FIN_FWD;
	if (st == f->tcp_state)
		return 0;
	ok = (st & ~f->tcp_state & SY_TCP_EVENT_BITS) != 0;
	f->tcp_state = st;
	return ok;
}

#endif
