/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * keys.h: small lookups and key operations the steps share: is an address
 * a VIP, is a TM usable, a key with some fields wildcarded, MAC equality.
 * (The Maglev hash of a key is in switchyard.h: Go implements it too.)
 */
#ifndef SY_KEYS_H
#define SY_KEYS_H

#include "maps.h"

static __always_inline int sy_is_vip(const struct sy_flow_key *key)
{
	struct sy_vip_key vk = {};

	__builtin_memcpy(vk.addr, key->dst, sizeof(vk.addr));
	vk.family = key->family;
	return bpf_map_lookup_elem(&vips, &vk) != NULL;
}

static __always_inline int sy_mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

/* Ready (MAC and egress known) and not forced out. */
static __always_inline int sy_tm_usable(__u32 idx)
{
	struct sy_tm *tm = bpf_map_lookup_elem(&tms, &idx);

	return tm && (tm->flags & SY_TM_READY) && !(tm->flags & SY_TM_DISABLED);
}

/* Keeps the fields of in named by mask (SY_FIELD_*); the family always. */
static __always_inline void sy_mask_key(struct sy_flow_key *out, const struct sy_flow_key *in,
					__u32 mask)
{
	if (mask & SY_FIELD_SRC)
		__builtin_memcpy(out->src, in->src, sizeof(out->src));
	if (mask & SY_FIELD_DST)
		__builtin_memcpy(out->dst, in->dst, sizeof(out->dst));
	if (mask & SY_FIELD_SPORT)
		out->sport = in->sport;
	if (mask & SY_FIELD_DPORT)
		out->dport = in->dport;
	if (mask & SY_FIELD_VLAN)
		out->vlan = in->vlan;
	if (mask & SY_FIELD_PROTO)
		out->proto = in->proto;
	out->family = in->family;
}

#endif
