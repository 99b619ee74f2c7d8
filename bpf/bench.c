// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark object, loaded only by `go test -bench` and `switchyard bench`.
 *
 * BPF_PROG_TEST_RUN with repeat=N does not restore the packet between runs,
 * so every program here is a wrapper that saves the first SY_BENCH_LEN bytes,
 * calls the code under test as a subprogram, undoes any head adjustment (an
 * in-band shim is stripped with bpf_xdp_adjust_head) and restores the bytes.
 * The code under test writes only the 12 MAC bytes at the (possibly moved)
 * head, and a shim of one op moves it by 60 bytes, so the first SY_BENCH_LEN
 * bytes hold everything it changes; the benchmark checks that the packet
 * comes out of one run unchanged. The "vary" wrappers also write a counter
 * into the packet (at the offset in bench_cfg) before the call, so that each
 * run is a new flow. bench_noop* measure the wrappers alone, to be
 * subtracted.
 *
 * The floor is the least a distributor can do: parse Ethernet/IP/ports, one
 * LRU lookup (or a miss and an insert), MAC rewrite, XDP_TX.
 */
#define SY_PROCESS_ATTR __noinline
#include "distributor.c"

#define SY_BENCH_LEN 128

struct sy_bench_buf {
	__u8 b[SY_BENCH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sy_bench_buf);
} bench_scratch SEC(".maps");

/* [0]: offset of the 4 bytes the vary wrappers overwrite; [1]: the counter
 * (not per CPU: test runs happen on one CPU at a time). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} bench_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 1024); /* resized by the benchmark */
	__type(key, struct sy_flow_key);
	__type(value, struct sy_tm);
} floor_flows SEC(".maps");

static __always_inline int floor_key(struct xdp_md *ctx, struct sy_flow_key *key)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l4off;
	__u16 *ports;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return -1;
		__builtin_memcpy(key->src, &ip->saddr, 4);
		__builtin_memcpy(key->dst, &ip->daddr, 4);
		key->proto = ip->protocol;
		key->family = SY_AF_INET;
		l4off = sizeof(*eth) + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(key->src, &ip6->saddr, 16);
		__builtin_memcpy(key->dst, &ip6->daddr, 16);
		key->proto = ip6->nexthdr;
		key->family = SY_AF_INET6;
		l4off = sizeof(*eth) + sizeof(*ip6);
	} else {
		return -1;
	}
	ports = data + l4off;
	if ((void *)(ports + 2) > data_end)
		return -1;
	key->sport = ports[0];
	key->dport = ports[1];
	return 0;
}

static __always_inline int floor_rewrite(struct xdp_md *ctx, const struct sy_tm *tm)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, tm->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tm->src_mac, ETH_ALEN);
	return XDP_TX;
}

/* Floor: parse + one LRU lookup + MAC rewrite. */
static __noinline int floor_process(struct xdp_md *ctx)
{
	struct sy_flow_key key = {};
	struct sy_tm *tm;

	if (floor_key(ctx, &key))
		return XDP_PASS;
	tm = bpf_map_lookup_elem(&floor_flows, &key);
	if (!tm)
		return XDP_PASS;
	return floor_rewrite(ctx, tm);
}

/* Floor for new flows: parse + a missed LRU lookup + insert + MAC rewrite. */
static __noinline int floor_insert_process(struct xdp_md *ctx)
{
	struct sy_flow_key key = {};
	struct sy_tm tm = {}, *hit;

	if (floor_key(ctx, &key))
		return XDP_PASS;
	hit = bpf_map_lookup_elem(&floor_flows, &key);
	if (hit)
		return floor_rewrite(ctx, hit);
	tm.mac[5] = 1;
	bpf_map_update_elem(&floor_flows, &key, &tm, BPF_ANY);
	return floor_rewrite(ctx, &tm);
}

static __noinline int noop_process(struct xdp_md *ctx)
{
	asm volatile("" ::: "memory");
	return ctx->ingress_ifindex ? XDP_TX : XDP_PASS;
}

#define SY_FN_MAIN 0
#define SY_FN_FLOOR 1
#define SY_FN_FLOOR_INSERT 2
#define SY_FN_NOOP 3

static __always_inline int bench_wrap(struct xdp_md *ctx, int fn, int vary)
{
	__u32 zero = 0, one = 1;
	struct sy_bench_buf *buf = bpf_map_lookup_elem(&bench_scratch, &zero);
	long before = (long)ctx->data_end - (long)ctx->data, moved;
	int ret;

	if (!buf)
		return XDP_ABORTED;
	if (bpf_xdp_load_bytes(ctx, 0, buf->b, SY_BENCH_LEN))
		return XDP_ABORTED;
	if (vary) {
		__u32 *off = bpf_map_lookup_elem(&bench_cfg, &zero);
		__u32 *ctr = bpf_map_lookup_elem(&bench_cfg, &one);

		if (!off || !ctr || *off > SY_BENCH_LEN - 4)
			return XDP_ABORTED;
		*ctr += 1;
		bpf_xdp_store_bytes(ctx, *off, ctr, 4);
	}
	switch (fn) {
	case SY_FN_MAIN:
		ret = sy_process(ctx);
		break;
	case SY_FN_FLOOR:
		ret = floor_process(ctx);
		break;
	case SY_FN_FLOOR_INSERT:
		ret = floor_insert_process(ctx);
		break;
	default:
		ret = noop_process(ctx);
	}
	/* adjust_head moves data, not data_end: the length lost is how far
	 * the head moved. */
	moved = before - ((long)ctx->data_end - (long)ctx->data);
	if (moved && bpf_xdp_adjust_head(ctx, -(int)moved))
		return XDP_ABORTED;
	bpf_xdp_store_bytes(ctx, 0, buf->b, SY_BENCH_LEN);
	return ret;
}

SEC("xdp")
int bench_main(struct xdp_md *ctx)
{
	return bench_wrap(ctx, SY_FN_MAIN, 0);
}

SEC("xdp")
int bench_main_vary(struct xdp_md *ctx)
{
	return bench_wrap(ctx, SY_FN_MAIN, 1);
}

SEC("xdp")
int bench_floor(struct xdp_md *ctx)
{
	return bench_wrap(ctx, SY_FN_FLOOR, 0);
}

SEC("xdp")
int bench_floor_insert_vary(struct xdp_md *ctx)
{
	return bench_wrap(ctx, SY_FN_FLOOR_INSERT, 1);
}

SEC("xdp")
int bench_noop(struct xdp_md *ctx)
{
	return bench_wrap(ctx, SY_FN_NOOP, 0);
}

SEC("xdp")
int bench_noop_vary(struct xdp_md *ctx)
{
	return bench_wrap(ctx, SY_FN_NOOP, 1);
}
