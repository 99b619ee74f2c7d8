/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Switchyard: the one definition of every struct shared between the XDP
 * program and the Go control plane. bpf2go turns these into Go types; there is
 * no hand-written Go twin.
 */
#ifndef SWITCHYARD_H
#define SWITCHYARD_H

#include <linux/types.h>

/*
 * Constants the Go side needs are enums, not #defines, so that they reach
 * Go through BTF and bpf2go (see struct sy_consts at the end).
 */
enum sy_limits {
	SY_MAX_TMS = 256,      /* TM indexes are 0..SY_MAX_TMS-1 */
	SY_MAX_VLAN_TAGS = 2,
	SY_MAX_IPV6_EXT = 4,   /* extension headers walked before giving up */
};

#define SY_TM_NONE 0xffffffff /* an empty Maglev slot (Go: selector.Empty) */

/* Address families as stored in keys. */
enum sy_family {
	SY_AF_INET = 4,
	SY_AF_INET6 = 6,
};

/*
 * Connection key. IPv4 addresses occupy the first 4 bytes of src/dst, the
 * rest is zero. Ports are in network byte order, the VLAN id in host order
 * (0: untagged; with two tags, the inner one).
 */
struct sy_flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u16 vlan;
	__u8 proto;
	__u8 family;
};

/* Flow entry flags: where an entry came from. */
enum sy_flow_flags {
	SY_FLOW_SELECTED = 0x1, /* chosen by the service's policy */
};

/* Flow table value. 16 bytes: the table is sized in millions. */
struct sy_flow {
	__u64 last_seen; /* bpf_ktime_get_coarse_ns, updated at most every SY_TOUCH_NS */
	__u16 tm;        /* TM index */
	__u16 svc;       /* service index when the flow was created */
	__u16 flags;     /* SY_FLOW_* */
	__u8 tcp_state;  /* reserved for aging */
	__u8 pad;
};

#define SY_TOUCH_NS 1000000000ULL

/* Service key: port 0 means all ports of the VIP for that protocol. */
struct sy_svc_key {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u8 proto;
	__u8 family;
};

struct sy_svc {
	__u32 index; /* service index: its Maglev ring and its counters */
	__u32 flags; /* reserved */
};

/* Key of the VIP address set: is this destination a VIP at all? */
struct sy_vip_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

/* TM flags. */
enum sy_tm_flags {
	SY_TM_READY = 0x1,    /* MAC and egress known: can forward */
	SY_TM_DISABLED = 0x2, /* forced out: its flows are re-selected */
};

struct sy_tm {
	__u8 mac[6];     /* the TM's MAC */
	__u8 src_mac[6]; /* MAC of the egress interface */
	__u32 ifindex;   /* egress interface */
	__u32 flags;     /* SY_TM_* */
};

/* Interface roles, keyed by ifindex. */
enum sy_role {
	SY_ROLE_EXTERNAL = 1,
	SY_ROLE_INTERNAL = 2,
};

struct sy_iface {
	__u32 role;
};

/*
 * Global counters: one per verdict and per drop reason. Keep the order and
 * the names in sync with the Go side's table (internal/datapath/counters.go),
 * which is checked against SY_C_MAX.
 */
enum sy_counter {
	SY_C_PASS_NOT_IP = 0,   /* not IPv4/IPv6 (ARP, LLDP...) */
	SY_C_PASS_NOT_VIP,      /* IP, not for a VIP */
	SY_C_PASS_VIP_OTHER,    /* for a VIP, not TCP/UDP, not an ICMP error we route */
	SY_C_PASS_ICMP_NO_FLOW, /* ICMP error about a flow we do not know */
	SY_C_PASS_NO_SERVICE,   /* VIP address, but no service on that port/proto */
	SY_C_FWD_HIT,           /* forwarded on a flow-table hit */
	SY_C_FWD_NEW,           /* forwarded after selecting a TM for a new flow */
	SY_C_FWD_RESELECT,      /* forwarded after re-selecting (TM disabled) */
	SY_C_FWD_ICMP,          /* ICMP error forwarded to its flow's TM */
	SY_C_TX,                /* left by XDP_TX */
	SY_C_REDIRECT,          /* left by redirect */
	SY_C_DROP_TRUNC_ETH,    /* shorter than an Ethernet header */
	SY_C_DROP_TRUNC_VLAN,   /* VLAN tag cut short */
	SY_C_DROP_VLAN_DEPTH,   /* more than two VLAN tags */
	SY_C_DROP_TRUNC_IP,     /* IP header cut short */
	SY_C_DROP_BAD_IP,       /* bad version, IHL or total length */
	SY_C_DROP_IPV6_EXT,     /* extension headers cut short or too many */
	SY_C_DROP_FRAGMENT,     /* fragment for a VIP */
	SY_C_DROP_TRUNC_L4,     /* TCP/UDP header cut short (for a VIP) */
	SY_C_DROP_BAD_L4,       /* TCP data offset < 5 (for a VIP) */
	SY_C_DROP_NO_TM,        /* the service has no eligible TM */
	SY_C_DROP_TM_NOT_READY, /* the chosen TM's MAC is not resolved yet */
	SY_C_DROP_NO_EGRESS,    /* redirect to the TM's interface failed */
	SY_C_MAX,
};

struct sy_counter_val {
	__u64 packets;
	__u64 bytes;
};

/* Per service and per TM traffic counters (per CPU). */
struct sy_traffic {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

/*
 * The Maglev hash of a key: murmur3's 32-bit mixing over the key's ten 32-bit
 * words (little-endian loads). The Go model implements the same function; a
 * differential test keeps them equal.
 */
static __always_inline __u32 sy_rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 sy_hash_key(const struct sy_flow_key *k, __u32 seed)
{
	const __u32 *w = (const __u32 *)k;
	__u32 h = seed;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*k) / 4); i++) {
		__u32 c = w[i] * 0xcc9e2d51;
		c = sy_rotl32(c, 15);
		c *= 0x1b873593;
		h ^= c;
		h = sy_rotl32(h, 13);
		h = h * 5 + 0xe6546b64;
	}
	h ^= sizeof(*k);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Anchors the enums above in BTF so that bpf2go emits them for Go. */
struct sy_consts {
	enum sy_limits limits;
	enum sy_family family;
	enum sy_flow_flags flow_flags;
	enum sy_tm_flags tm_flags;
	enum sy_role role;
	enum sy_counter counter;
};

#endif
