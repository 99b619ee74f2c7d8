/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * counters.h: the global verdict and drop-reason counters (enum sy_counter)
 * and the per-service and per-TM traffic counters. A forwarded packet counts
 * twice: why (SY_C_FWD_*) and how it left (SY_C_TX, SY_C_REDIRECT).
 */
#ifndef SY_COUNTERS_H
#define SY_COUNTERS_H

#include "maps.h"

/* Counts the packet under c and returns verdict, so that a step can end with
 * `return sy_count(...)`. */
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

#endif
