/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * icmp.h: the step for ICMP: "fragmentation needed" (v4) and "packet too
 * big" (v6) about a known flow go to that flow's TM (sy_parse_icmp found
 * the flow's key); anything else is the kernel's.
 */
#ifndef SY_ICMP_H
#define SY_ICMP_H

#include "flows.h"

/* Not a TCP/UDP packet we forward: for a VIP or not, the kernel's. */
static __always_inline int sy_other(const struct sy_pkt *p)
{
	return sy_count(sy_is_vip(&p->key) ? SY_C_PASS_VIP_OTHER : SY_C_PASS_NOT_VIP, p->len,
			XDP_PASS);
}

/* A subprogram: it holds a second copy of sy_hit. */
static __noinline int sy_icmp(struct xdp_md *ctx, const struct sy_pkt *p)
{
	struct sy_sig_scratch *x;
	int v, reselect = 0;
	__u32 zero = 0;

	if (p->icmp_kind == SY_ICMP_OTHER)
		return sy_other(p);
	if (p->icmp_kind == SY_ICMP_INNER) {
		/* sy_parse_icmp left the key there; the lookup cannot fail. */
		x = bpf_map_lookup_elem(&sig_scratch, &zero);
		if (x) {
			v = sy_hit(ctx, &x->inner, NULL, p->len, SY_C_FWD_ICMP, &reselect);
			if (v != SY_GO_ON)
				return v;
		}
	}
	return sy_count(SY_C_PASS_ICMP_NO_FLOW, p->len, XDP_PASS);
}

#endif
