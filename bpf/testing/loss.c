// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only tc program that drops a fraction of the UDP datagrams an
 * interface sends: the lossy sync link of the mirroring tests. Random, not
 * every n-th: a protocol that recovers from a regular pattern may not
 * recover from bursts. Loaded by internal/netlab/lossy.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define LOSS_NEXT TC_ACT_UNSPEC

/* Drop this many per million UDP datagrams (set by the loader). */
volatile const __u32 loss_ppm = 0;

/* 0: UDP datagrams passed, 1: dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} loss_counts SEC(".maps");

static __always_inline void loss_count(__u32 i)
{
	__u64 *n = bpf_map_lookup_elem(&loss_counts, &i);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("tc")
int udp_loss(struct __sk_buff *skb)
{
	__u8 proto;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return LOSS_NEXT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) < 0 || proto != IPPROTO_UDP)
		return LOSS_NEXT;
	if (bpf_get_prandom_u32() % 1000000 < loss_ppm) {
		loss_count(1);
		return TC_ACT_SHOT;
	}
	loss_count(0);
	return LOSS_NEXT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
