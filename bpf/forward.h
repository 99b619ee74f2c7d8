/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * forward.h: how every forwarding step ends: the MACs rewritten for the TM,
 * then XDP_TX back out of the ingress or a redirect to the TM's interface.
 */
#ifndef SY_FORWARD_H
#define SY_FORWARD_H

#include <linux/if_ether.h>

#include "counters.h"

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

#endif
