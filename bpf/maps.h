/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * maps.h: every map of the XDP program, the globals the loader and the
 * control plane set, and the per-CPU scratch for big temporaries. The value
 * and key types are in switchyard.h; Go reaches these maps through bpf2go.
 */
#ifndef SY_MAPS_H
#define SY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "switchyard.h"

/* Set by the loader before the program is loaded. */
volatile const __u32 sy_ring_size = SY_RING_SIZE_DEFAULT;
volatile const __u32 sy_hash_seed = 0;

/* The daemon's clock in seconds, written by the control plane: a memory load
 * is far cheaper per packet than a time helper call. */
volatile __u32 sy_now;

/* Never read: keeps struct sy_consts (and so every enum) in BTF. */
volatile const struct sy_consts sy_consts_anchor;

/*
 * The flow table. A plain hash, not an LRU: when full it refuses a new entry
 * (counted, the packet is forwarded anyway) instead of evicting one, so that
 * no new flow ever pushes out an established, memorized, learned or related
 * one. The sweeper is what empties it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* resized by the loader: max_flows - max_half_open */
	__type(key, struct sy_flow_key);
	__type(value, struct sy_flow);
} flows SEC(".maps");

/*
 * Half-open TCP flows: a client's bare SYN makes its entry here, not in
 * flows; the first ACK in the client's window moves it to flows (sy_half_open).
 * A spoofed SYN flood fills this small table only; when it is full a SYN is
 * forwarded by the ring without an entry (counted), and its ACK then makes
 * the flow like any mid-stream packet.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* resized by the loader */
	__type(key, struct sy_flow_key);
	__type(value, struct sy_flow);
} half_open SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* resized by the loader */
	__type(key, struct sy_skey);
	__type(value, struct sy_second);
} second_keys SEC(".maps");

/* The configured masks, most specific first; a zero ends the list. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_MASKS);
	__type(key, __u32);
	__type(value, __u32);
} masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sy_svc_key);
	__type(value, struct sy_svc);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sy_vip_key);
	__type(value, __u32); /* number of services on that address */
} vips SEC(".maps");

/* Maglev rings, one after the other: service i owns slots
 * [i*sy_ring_size, (i+1)*sy_ring_size). Values are TM indexes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_RING_SIZE_DEFAULT); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u32);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, __u32);
	__type(value, struct sy_tm);
} tms SEC(".maps");

/* Source MAC → TM index: who may signal, and whose egress is learned. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, struct sy_mac_key);
	__type(value, __u32); /* TM index */
} tm_by_mac SEC(".maps");

/* Learning sources: a TM's own address maps to its index, a shared SNAT
 * address to SY_TM_ANY. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sy_vip_key);
	__type(value, __u32); /* TM index or SY_TM_ANY */
} learn_srcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sy_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_IFINDEX);
	__type(key, __u32); /* ifindex */
	__type(value, struct sy_iface);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* ifindex */
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SY_C_MAX);
	__type(key, enum sy_counter);
	__type(value, struct sy_counter_val);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64); /* resized by the loader to max services */
	__type(key, __u32);
	__type(value, struct sy_traffic);
} svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, __u32);
	__type(value, struct sy_traffic);
} tm_stats SEC(".maps");

/* Flow events (struct sy_event) for the daemon; a full ring loses the
 * event and counts SY_C_EVENT_OVERRUN. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SY_EVENT_RING_BYTES);
} events SEC(".maps");

/* Room for big locals of the signal path, of persistence and of ICMP: the
 * BPF stack is shared by every frame of a call chain (512 bytes in all). */
struct sy_sig_scratch {
	union {
		struct sy_op_memorize m;
		struct sy_op_key k;
		struct sy_op_relate r;
		struct sy_op_age a;
	} v;
	struct sy_flow_key parent;
	struct sy_flow_key second;
	struct sy_skey sk;
	struct sy_second sv;
	struct sy_sig_hdr h;
	__u8 macs[12];
	struct sy_flow_key inner; /* sy_parse_icmp → sy_icmp: the key of the flow an ICMP error is about */
	struct sy_flow flow;      /* sy_from_tm, sy_op_memorize: a new entry being made */
};

/* One entry, key 0: a lookup of it cannot fail, the NULL checks after it
 * are for the verifier. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sy_sig_scratch);
} sig_scratch SEC(".maps");

/* Round-robin position of each service (SY_POLICY_RR), per CPU: no
 * contention between CPUs; each walks the whole ring. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SY_POLICY_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} policy_rr SEC(".maps");

/*
 * Active flows per TM index (least-connections policies): the entries of
 * flows and half_open whose TM it is. +1 where an entry is made (select,
 * second key, learn, memorize, the daemon's inserts), -1 where one is
 * deleted (here and by the daemon through the seam). Overwrites and races
 * make it drift; the daemon rewrites it from a walk of both tables
 * periodically, so drift cannot grow. Shared by every CPU: atomic adds.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, __u32);
	__type(value, __s64);
} policy_active SEC(".maps");

/* TM index -> its weight for weighted-least-connections (0 counts as 1). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_MAX_TMS);
	__type(key, __u32);
	__type(value, __u32);
} policy_weight SEC(".maps");

/* QoS classes by service index (struct sy_qos). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_POLICY_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct sy_qos);
} policy_qos SEC(".maps");

/* The QoS classes' rings, one after the other like rings: QoS ring i owns
 * slots [i*sy_ring_size, (i+1)*sy_ring_size). Values are TM indexes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SY_POLICY_QOS_RINGS * SY_RING_SIZE_DEFAULT); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u32);
} policy_qos_rings SEC(".maps");

/* Adds d to TM tm's active flows (policy_active). */
static __always_inline void sy_active_add(__u32 tm, __s64 d)
{
	__s64 *n = bpf_map_lookup_elem(&policy_active, &tm);

	if (n)
		__sync_fetch_and_add(n, d);
}

#endif
