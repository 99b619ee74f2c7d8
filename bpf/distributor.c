// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The distributor's XDP program: parse the packet once into a description
 * (struct sy_pkt), then run the steps in order, each of which returns a
 * verdict or goes on (SY_GO_ON). Everything that is not per-packet lives in
 * Go (internal/datapath, internal/distributor).
 *
 *   switchyard.h  structs and enums shared with Go (bpf2go), the key hash
 *   maps.h        maps, globals, the per-CPU scratch
 *   counters.h    sy_count, sy_traffic_add
 *   parse.h       struct sy_pkt; sy_parse_eth, sy_parse, sy_parse_icmp
 *   keys.h        sy_is_vip, sy_tm_usable, sy_mask_key, sy_mac_eq
 *   forward.h     sy_forward: MAC rewrite, XDP_TX or redirect
 *   signal.h      step sy_signal and its ops
 *   learn.h       step sy_from_tm: learning from a TM's own packets
 *   icmp.h        step sy_icmp (and sy_other)
 *   tcp.h         sy_tcp_track: a flow's TCP state, FIN and RST validated
 *   flows.h       steps sy_hit (flow table), sy_half_open (half-open table) and
 *                 sy_second (second keys); sy_put_new, where a new entry goes
 *   select.h      step sy_select (Maglev) and sy_service
 *
 * The Go model in internal/flow has the same functions, Go-cased, in the
 * same order (model*.go); the differential test in internal/datapath keeps
 * them equal. Change both together.
 */
#include "parse.h"
#include "keys.h"
#include "forward.h"
#include "signal.h"
#include "learn.h"
#include "icmp.h"
#include "flows.h"
#include "select.h"

/* The benchmark object includes this file with SY_PROCESS_ATTR set to
 * __noinline so that a wrapper can call sy_process as a subprogram. */
#ifndef SY_PROCESS_ATTR
#define SY_PROCESS_ATTR static __always_inline
#endif

/* What the flow steps do not take: a fragment, or TCP/UDP without its
 * ports, is dropped when it is for a VIP and the kernel's otherwise;
 * protocols other than TCP, UDP and ICMP (of the packet's family) are the
 * kernel's. ICMP goes on to sy_icmp. */
static __always_inline int sy_screen(const struct sy_pkt *p)
{
	__u8 proto = p->key.proto;
	__u32 c;

	if (p->frag)
		return sy_is_vip(&p->key) ? sy_count(SY_C_DROP_FRAGMENT, p->len, XDP_DROP) :
					    sy_count(SY_C_PASS_NOT_VIP, p->len, XDP_PASS);
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (p->ports)
			return SY_GO_ON;
		c = p->tcp_hdr ? SY_C_DROP_BAD_L4 : SY_C_DROP_TRUNC_L4;
		return sy_is_vip(&p->key) ? sy_count(c, p->len, XDP_DROP) :
					    sy_count(SY_C_PASS_NOT_VIP, p->len, XDP_PASS);
	}
	if ((proto == IPPROTO_ICMP && p->key.family == SY_AF_INET) ||
	    (proto == IPPROTO_ICMPV6 && p->key.family == SY_AF_INET6))
		return SY_GO_ON;
	return sy_other(p);
}

SY_PROCESS_ATTR int sy_process(struct xdp_md *ctx)
{
	struct sy_pkt p = {};
	struct sy_iface *ifc = NULL;
	int v, reselect = 0;

	v = sy_parse_eth(ctx, &p, &ifc);
	if (v != SY_GO_ON)
		return v;
	if (p.is_signal) {
		v = sy_signal(ctx, ifc, &p);
		if (v != SY_GO_ON)
			return v;
	}
	v = sy_parse(ctx, &p);
	if (v != SY_GO_ON)
		return v;
	if (p.by_tm)
		return sy_from_tm(&p);
	v = sy_screen(&p);
	if (v != SY_GO_ON)
		return v;
	if (!p.ports) /* sy_screen lets only ICMP through without ports */
		return sy_icmp(ctx, &p);
	v = sy_hit(ctx, &p.key, &p, p.len, SY_C_FWD_HIT, &reselect);
	if (v != SY_GO_ON)
		return v;
	/* Second keys and selection are for VIPs only. */
	if (!sy_is_vip(&p.key))
		return sy_count(SY_C_PASS_NOT_VIP, p.len, XDP_PASS);
	v = sy_half_open(ctx, &p);
	if (v != SY_GO_ON)
		return v;
	v = sy_second(ctx, &p);
	if (v != SY_GO_ON)
		return v;
	return sy_select(ctx, &p, reselect ? SY_C_FWD_RESELECT : SY_C_FWD_NEW);
}

/* xdp.frags: the program takes multi-buffer frames (BPF_F_XDP_HAS_FRAGS),
 * so it attaches to interfaces with a jumbo MTU and sees a GRO aggregate as
 * one frame; parse.h reads headers from the first buffer only. */
SEC("xdp.frags")
int switchyard_xdp(struct xdp_md *ctx)
{
	return sy_process(ctx);
}

char __license[] SEC("license") = "Dual BSD/GPL";
