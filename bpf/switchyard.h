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
	SY_MAX_IFINDEX = 16384, /* interfaces are an array by ifindex: a load, not a hash */
	SY_MAX_VLAN_TAGS = 2,  /* tags parsed; one more is dropped (SY_C_DROP_VLAN_DEPTH) */
	SY_MAX_IPV6_EXT = 4,   /* extension headers walked before giving up */
	SY_RING_SIZE_DEFAULT = 65537, /* Maglev slots per service unless configured (a prime) */
};

/* Markers stored in map values where an index would be. */
enum sy_markers {
	SY_TM_NONE = 0xffffffff, /* an empty Maglev slot */
	SY_SVC_NONE = 0xffff,    /* sy_flow.svc, sy_second.svc: flows made by signals, learning or second keys */
	SY_TM_ANY = 0xffff,      /* learning source shared by every TM (learn_srcs value) */
};

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
	SY_FLOW_SELECTED = 0x1,   /* chosen by the service's policy */
	SY_FLOW_MEMORIZED = 0x2,  /* a TM's MEMORIZE signal */
	SY_FLOW_LEARNED = 0x4,    /* reverse of a flow a TM opened */
	SY_FLOW_SECOND_KEY = 0x8, /* matched a second key (mask in sy_flow.mask) */
	SY_FLOW_MIRROR = 0x10,    /* a TM asked to mirror it to the peers */
	SY_FLOW_PEER = 0x20,      /* installed from a peer distributor (internal/mirror) */
};

/*
 * TCP state kept per flow: bits, from the packets of both directions. "Fwd"
 * is the key's own direction (the client's for a selected flow, the server's
 * for a learned one, seen by sy_hit); "rev" is the TM's packets of the same
 * connection (seen by sy_from_tm when the TM routes through the
 * distributor). A FIN or RST counts only when its sequence number lies in
 * the window of its side (sy_tcp_track); 0 is "nothing seen yet" (an entry a
 * signal made), aged like an established one.
 */
enum sy_tcp_state {
	SY_TCP_SYN_SEEN = 0x01,    /* a SYN: opening (half-open until an ACK) */
	SY_TCP_ESTABLISHED = 0x02, /* an ACK without SYN from either side */
	SY_TCP_FIN_FWD = 0x04,     /* a valid FIN in the key's direction */
	SY_TCP_FIN_REV = 0x08,     /* a valid FIN from the TM */
	SY_TCP_RESET = 0x10,       /* a valid RST from either side */
	SY_TCP_SEQ_FWD = 0x20,     /* seq_fwd is known */
	SY_TCP_SEQ_REV = 0x40,     /* seq_rev is known */
	SY_TCP_ENDED = 0x1c,       /* FIN or RST: a SYN on this key is a new connection */
	SY_TCP_SEQ_WINDOW = 262144, /* bytes either side of a side's next sequence number
				     * in which a FIN or RST is believed */
};

/*
 * Flow table value. 24 bytes: the table is sized in millions, and each
 * entry already costs 48 bytes of kernel header and a 40-byte key. The two
 * sequence numbers are what validating FIN and RST needs.
 */
struct sy_flow {
	__u32 last_seen; /* seconds of sy_now (the daemon's clock) */
	__u16 tm;        /* TM index */
	__u16 svc;       /* service index when the flow was created, or SY_SVC_NONE */
	__u16 flags;     /* SY_FLOW_* */
	__u8 tcp_state;  /* SY_TCP_* bits */
	__u8 mask;       /* SY_FLOW_SECOND_KEY: the fields of the second key */
	__u16 timeout;   /* idle timeout in seconds; 0: the state's default */
	__u16 pad;
	__u32 seq_fwd;   /* SY_TCP_SEQ_FWD: the next sequence number of the key's direction */
	__u32 seq_rev;   /* SY_TCP_SEQ_REV: the next sequence number of the TM's direction */
};

/* Service key: port 0 means all ports of the VIP for that protocol. */
struct sy_svc_key {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u8 proto;
	__u8 family;
};

struct sy_svc {
	__u32 index;           /* service index: its Maglev ring and its counters */
	__u32 persist_mask;    /* SY_FIELD_*: remember each new flow's TM under this second key; 0: none */
	__u32 persist_timeout; /* seconds */
	__u32 hash;            /* the new-flow hash: 0 the whole key; else SY_FIELD_* to hash, or SY_HASH_SYM_* */
	__u32 policy;          /* enum sy_policy: how the ring is read for a new flow */
};

/*
 * Second keys: a key with some fields wildcarded (zero), and the set of
 * fields it keeps (SY_FIELD_*). One hash table holds every mask; the
 * configured masks are tried most specific first after an exact miss.
 */
enum sy_field {
	SY_FIELD_VLAN = 0x1,
	SY_FIELD_PROTO = 0x2,
	SY_FIELD_SRC = 0x4,
	SY_FIELD_DST = 0x8,
	SY_FIELD_SPORT = 0x10,
	SY_FIELD_DPORT = 0x20,
	SY_FIELD_ALL = 0x3f,
};

enum sy_second_limits {
	SY_MAX_MASKS = 6,
};

struct sy_skey {
	struct sy_flow_key key; /* fields outside mask are zero; family is kept */
	__u32 mask;             /* SY_FIELD_* */
};

struct sy_second {
	__u32 last_seen; /* seconds of sy_now */
	__u32 timeout;   /* idle timeout in seconds; 0: the default */
	__u16 tm;
	__u16 svc;       /* persistence: the service that made it; RELATE: SY_SVC_NONE */
	__u32 pad;
	struct sy_flow_key parent; /* the flow that related it (zero: persistence) */
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
	SY_TM_DRAINING = 0x4, /* keeps its flows, gets no new ones (persistence included) */
};

struct sy_tm {
	__u8 mac[6];     /* the TM's MAC */
	__u8 src_mac[6]; /* MAC of the egress interface */
	__u32 ifindex;   /* egress interface */
	__u32 flags;     /* SY_TM_* */
};

/* Interface roles, indexed by ifindex (role 0: not ours). */
enum sy_role {
	SY_ROLE_EXTERNAL = 1,
	SY_ROLE_INTERNAL = 2,
};

struct sy_iface {
	__u32 role;
	__u8 mac[6]; /* the interface's MAC: signal frames must be sent to it */
	__u16 pad;
};

/* Source MAC → TM index: who may signal, and whose egress is learned. */
struct sy_mac_key {
	__u8 mac[6];
	__u16 pad;
};

struct sy_settings {
	__u8 signal_mcast[6]; /* signal frames to this MAC reach every distributor */
	__u16 pad;
};

/*
 * Signals: the wire format. All multi-byte fields are big-endian. A message
 * is a header followed by `count` TLVs (`length` bytes in all). In a signal
 * frame it follows the Ethernet header (EtherType SY_ETH_P_SIGNAL); in an
 * in-band shim (flag SY_SIG_F_SHIM) the original EtherType and payload follow
 * the TLVs. docs/signals.md specifies it for TM developers.
 */
enum sy_sig_consts {
	SY_ETH_P_SIGNAL = 0x88B5, /* EtherType of signal frames and shims */
	SY_SIG_VERSION = 1,
	SY_SIG_MAX_OPS = 8,
	SY_SIG_HDR_LEN = 8,
	SY_SIG_TLV_HDR_LEN = 2,
	SY_SIG_TM_SELF = 0xffff, /* the tm field: "the sender" */
};

enum sy_sig_flags {
	SY_SIG_F_SHIM = 0x1,
};

enum sy_sig_op {
	SY_OP_MEMORIZE = 1,
	SY_OP_FORGET = 2,
	SY_OP_MIRROR = 3,
	SY_OP_RELATE = 4,
	SY_OP_AGE = 5,
};

enum sy_memorize_flags {
	SY_MEMORIZE_F_MIRROR = 0x1, /* also mirror it to the peers */
};

struct sy_sig_hdr {
	__u8 version;
	__u8 count;     /* TLVs, 1..SY_SIG_MAX_OPS */
	__be16 length;  /* bytes of TLVs */
	__be16 flags;   /* SY_SIG_F_* */
	__be16 reserved;
};

struct sy_wire_key {
	__u8 src[16]; /* IPv4: first 4 bytes, rest zero */
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__be16 vlan;
	__u8 proto;
	__u8 family; /* 4 or 6 */
};

struct sy_tlv {
	__u8 op;  /* SY_OP_* */
	__u8 len; /* bytes of value: must be the op's size */
};

struct sy_op_memorize {
	struct sy_wire_key key;
	__be16 tm;      /* SY_SIG_TM_SELF or the sender's own index */
	__be16 flags;   /* SY_MEMORIZE_F_* */
	__be32 timeout; /* idle timeout in seconds; 0: default (at most 65535) */
};

struct sy_op_key { /* FORGET, MIRROR */
	struct sy_wire_key key;
};

struct sy_op_relate {
	struct sy_wire_key parent; /* an existing flow of the sender */
	struct sy_wire_key second; /* wildcarded fields are ignored */
	__u8 mask;                 /* SY_FIELD_*: the fields second keeps */
	__u8 pad;
	__be16 tm;                 /* SY_SIG_TM_SELF or the sender's own index */
	__be32 timeout;            /* idle timeout in seconds; 0: default */
};

struct sy_op_age {
	struct sy_wire_key key;
	__be32 timeout; /* new idle timeout in seconds; 0: expire now */
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
	SY_C_FWD_SECOND_KEY,    /* forwarded on a second-key hit */
	SY_C_PASS_FROM_TM,      /* a TM's own traffic, to the kernel */
	SY_C_LEARNED,           /* reverse keys learned from TM egress */
	SY_C_SIG_FRAME,         /* signal frames applied and consumed */
	SY_C_SIG_SHIM,          /* in-band shims applied and stripped */
	SY_C_SIG_MEMORIZE,      /* ops applied, by op */
	SY_C_SIG_FORGET,
	SY_C_SIG_MIRROR,
	SY_C_SIG_RELATE,
	SY_C_SIG_AGE,
	SY_C_SIG_REF_EXTERNAL,  /* refused: signal on an external interface */
	SY_C_SIG_REF_UNKNOWN_MAC, /* refused: sender is not a configured TM */
	SY_C_SIG_REF_NOT_FOR_US,  /* refused: sent to another MAC */
	SY_C_SIG_REF_VERSION,   /* refused: unknown version */
	SY_C_SIG_REF_COUNT,     /* refused: 0 or more than SY_SIG_MAX_OPS TLVs */
	SY_C_SIG_REF_TRUNCATED, /* refused: message cut short */
	SY_C_SIG_REF_UNKNOWN_OP, /* refused: unknown op */
	SY_C_SIG_REF_BAD_LENGTH, /* refused: TLV or message length wrong */
	SY_C_SIG_REF_BAD_KEY,   /* op refused: key family not 4 or 6 */
	SY_C_SIG_REF_FOREIGN_TM, /* op refused: about another TM's flow */
	SY_C_SIG_REF_NO_FLOW,   /* op refused: the flow does not exist */
	SY_C_SIG_REF_BAD_MASK,  /* op refused: mask not configured */
	SY_C_SIG_REF_TABLE_FULL, /* op refused: second-key table full */
	SY_C_LEARN_CONFLICT,    /* not learned: the reverse key is another TM's live flow */
	SY_C_SIG_REF_WRONG_PORT, /* refused: a TM's MAC on another interface than its own */
	SY_C_SIG_REF_NOT_READY, /* refused: the sending TM is not ready (no interface or MAC yet) */
	SY_C_TCP_REF_FIN,       /* FIN ignored: sequence number out of its side's window */
	SY_C_TCP_REF_RST,       /* RST ignored: sequence number out of its side's window */
	SY_C_FLOW_REFUSED,      /* new flow entry refused: flow table full (forwarded without one) */
	SY_C_HALF_OPEN_REFUSED, /* SYN entry refused: half-open table full (forwarded without one) */
	SY_C_HALF_OPEN_PROMOTED, /* half-open entry moved to the flow table by a valid ACK */
	SY_C_FWD_HALF_OPEN,     /* forwarded on a half-open hit (SYN retransmit, the ACK) */
	SY_C_EVENT_OVERRUN,     /* flow events lost: the ring buffer was full */
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

/*
 * Flow events, from the data path to the daemon through a ring buffer
 * (maps.h, events): a flow entered the flow table (new, or a half-open one
 * promoted), its TCP state moved (established, FIN, RST), its entry was
 * refused (table full), or a FORGET removed it. Half-open entries are not reported: a SYN flood
 * must not drown the stream. The daemon adds the sweeper's expirations.
 */
enum sy_event_type {
	SY_EV_NEW = 1,
	SY_EV_STATE = 2,
	SY_EV_REFUSED = 3,
	SY_EV_EXPIRED = 4, /* the sweeper's, not the data path's */
	SY_EV_FORGOTTEN = 5, /* a FORGET signal removed it */
};

enum sy_event_consts {
	SY_EVENT_RING_BYTES = 262144, /* 4096 events of 64 bytes (52 + the ring's 8-byte header, rounded) */
};

struct sy_event {
	struct sy_flow_key key;
	__u32 time;     /* sy_now */
	__u16 tm;
	__u16 flags;    /* SY_FLOW_* */
	__u8 type;      /* SY_EV_* */
	__u8 tcp_state; /* SY_TCP_* bits after the change */
	__u16 pad;
};

/*
 * A service's new-flow hash (sy_svc.hash), beside the SY_FIELD_* bits: the
 * symmetric hashes, the same for both directions of a flow and across a
 * NAT that keeps the larger port. SYM_PORT hashes the protocol and the
 * larger port; SYM_ADDR also the address that has it (on equal ports, the
 * XOR of both addresses).
 */
enum sy_hash_flags {
	SY_HASH_SYM_PORT = 0x100,
	SY_HASH_SYM_ADDR = 0x200,
};

/*
 * How a service's ring is read for a new flow (sy_svc.policy). HASH: the
 * slot of the flow's hash (sy_svc.hash). RR: the next slot of a per-CPU
 * counter (policy_rr), so that consecutive new flows walk the ring; the
 * ring's slots are shared by weight (round-robin: equal weights). LC, WLC:
 * two slots of the ring by the flow's hash (two random choices), the one
 * whose TM has fewer active flows (policy_active; WLC: per unit of
 * policy_weight).
 */
enum sy_policy {
	SY_POLICY_HASH = 0,
	SY_POLICY_RR = 1,
	SY_POLICY_LC = 2,  /* least-connections: two ring slots by the flow's hash, the TM with fewer active flows */
	SY_POLICY_WLC = 3, /* weighted-least-connections: the same, active flows divided by policy_weight */
	SY_POLICY_MAX_SERVICES = 1024, /* policy_rr entries: config's largest max_services */
	SY_POLICY_QOS_RINGS = 16,      /* policy_qos_rings: rings of the QoS classes' preferred TMs */
};

/*
 * A QoS service's class (policy_qos, by service index): a new flow whose
 * packet's DSCP is in dscp (bit n: DSCP n) takes its slot from QoS ring
 * ring of policy_qos_rings (the preferred TMs) instead of the service's
 * own; dscp 0: no class.
 */
struct sy_qos {
	__u64 dscp;
	__u32 ring; /* < SY_POLICY_QOS_RINGS */
	__u32 pad;
};

/* Anchors the enums above in BTF so that bpf2go emits them for Go. */
struct sy_consts {
	enum sy_limits limits;
	enum sy_markers markers;
	enum sy_family family;
	enum sy_flow_flags flow_flags;
	enum sy_tm_flags tm_flags;
	enum sy_role role;
	enum sy_counter counter;
	enum sy_field field;
	enum sy_second_limits second_limits;
	enum sy_sig_consts sig_consts;
	enum sy_sig_flags sig_flags;
	enum sy_sig_op sig_op;
	enum sy_memorize_flags memorize_flags;
	enum sy_tcp_state tcp_state;
	struct sy_sig_hdr sig_hdr;
	struct sy_tlv tlv;
	struct sy_op_memorize op_memorize;
	struct sy_op_key op_key;
	struct sy_op_relate op_relate;
	struct sy_op_age op_age;
	enum sy_event_type event_type;
	enum sy_event_consts event_consts;
	struct sy_event event;
	enum sy_hash_flags hash_flags;
	enum sy_policy policy;
};

#endif
