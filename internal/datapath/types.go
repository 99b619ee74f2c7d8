package datapath

// Exported names for the types bpf2go generated from bpf/switchyard.h. They
// are aliases, not copies: the C header stays the one definition.
type (
	// FlowKey is a connection key (struct sy_flow_key).
	FlowKey = sySyFlowKey
	// Flow is a flow-table value (struct sy_flow).
	Flow = sySyFlow
	// ServiceKey identifies a service: VIP, port (0: all ports), protocol.
	ServiceKey = sySySvcKey
	// Service is a service's entry: its index into rings and counters.
	Service = sySySvc
	// VIPKey is a VIP address, the key of the VIP set.
	VIPKey = sySyVipKey
	// TM is a traffic manager's forwarding entry.
	TM = sySyTm
	// Iface is an interface's role.
	Iface = sySyIface
	// CounterValue is one global counter (summed over CPUs by the readers).
	CounterValue = sySyCounterVal
	// Traffic is a per-service or per-TM traffic counter.
	Traffic = sySyTraffic
	// QoS is a QoS service's class (struct sy_qos): the DSCPs (bit n:
	// DSCP n) whose new flows take their slot from QoS ring Ring.
	QoS = sySyQos
	// SecondKey is a second-key table key: a masked key and its mask.
	SecondKey = sySySkey
	// Second is a second-key table value.
	Second = sySySecond
	// MACKey is a TM's MAC, the key of the signal senders' table.
	MACKey = sySyMacKey
	// Settings are the data path's global settings.
	Settings = sySySettings
	// WireKey is a key in the signal wire format (big-endian fields).
	WireKey = sySyWireKey
	// SigHeader is a signal message header.
	SigHeader = sySySigHdr
	// OpMemorize is the value of a MEMORIZE TLV.
	OpMemorize = sySyOpMemorize
	// OpKey is the value of a FORGET or MIRROR TLV.
	OpKey = sySyOpKey
	// OpRelate is the value of a RELATE TLV.
	OpRelate = sySyOpRelate
	// OpAge is the value of an AGE TLV.
	OpAge = sySyOpAge
	// Event is a flow event of the data path (struct sy_event).
	Event = sySyEvent
)

// Constants of the C header.
const (
	MaxTMs     = int(sySyLimitsSY_MAX_TMS)
	MaxIfindex = int(sySyLimitsSY_MAX_IFINDEX)
	// MaxVLANTags is how many VLAN tags the parser takes; one more is a drop.
	MaxVLANTags = int(sySyLimitsSY_MAX_VLAN_TAGS)
	// MaxIPv6Ext is how many IPv6 extension headers the parser walks.
	MaxIPv6Ext = int(sySyLimitsSY_MAX_IPV6EXT)

	FamilyIPv4 = uint8(sySyFamilySY_AF_INET)
	FamilyIPv6 = uint8(sySyFamilySY_AF_INET6)

	FlowSelected  = uint16(sySyFlowFlagsSY_FLOW_SELECTED)
	FlowMemorized = uint16(sySyFlowFlagsSY_FLOW_MEMORIZED)
	FlowLearned   = uint16(sySyFlowFlagsSY_FLOW_LEARNED)
	FlowSecondKey = uint16(sySyFlowFlagsSY_FLOW_SECOND_KEY)
	FlowMirror    = uint16(sySyFlowFlagsSY_FLOW_MIRROR)
	FlowPeer      = uint16(sySyFlowFlagsSY_FLOW_PEER)

	// Flow event types (enum sy_event_type).
	EventNew     = uint8(sySyEventTypeSY_EV_NEW)
	EventState   = uint8(sySyEventTypeSY_EV_STATE)
	EventRefused = uint8(sySyEventTypeSY_EV_REFUSED)
	EventExpired = uint8(sySyEventTypeSY_EV_EXPIRED)
	EventForgot  = uint8(sySyEventTypeSY_EV_FORGOTTEN)
	// EventRingBytes is the events ring buffer's size.
	EventRingBytes = int(sySyEventConstsSY_EVENT_RING_BYTES)

	// TCP state bits of a flow entry (enum sy_tcp_state, bpf/tcp.h).
	TCPSynSeen     = uint8(sySyTcpStateSY_TCP_SYN_SEEN)
	TCPEstablished = uint8(sySyTcpStateSY_TCP_ESTABLISHED)
	TCPFinFwd      = uint8(sySyTcpStateSY_TCP_FIN_FWD)
	TCPFinRev      = uint8(sySyTcpStateSY_TCP_FIN_REV)
	TCPReset       = uint8(sySyTcpStateSY_TCP_RESET)
	TCPSeqFwd      = uint8(sySyTcpStateSY_TCP_SEQ_FWD)
	TCPSeqRev      = uint8(sySyTcpStateSY_TCP_SEQ_REV)
	// TCPEnded is FIN or RST from either side: a SYN then is a new connection.
	TCPEnded = uint8(sySyTcpStateSY_TCP_ENDED)
	// TCPSeqWindow is how far from a side's next sequence number a FIN or
	// RST is believed, either way.
	TCPSeqWindow = uint32(sySyTcpStateSY_TCP_SEQ_WINDOW)

	// SvcNone is the service index of flows no service created.
	SvcNone = uint16(sySyMarkersSY_SVC_NONE)
	// TMAny marks a learning source shared by every TM (SY_TM_ANY).
	TMAny = uint32(sySyMarkersSY_TM_ANY)

	FieldVLAN    = uint32(sySyFieldSY_FIELD_VLAN)
	FieldProto   = uint32(sySyFieldSY_FIELD_PROTO)
	FieldSrc     = uint32(sySyFieldSY_FIELD_SRC)
	FieldDst     = uint32(sySyFieldSY_FIELD_DST)
	FieldSrcPort = uint32(sySyFieldSY_FIELD_SPORT)
	FieldDstPort = uint32(sySyFieldSY_FIELD_DPORT)
	FieldAll     = uint32(sySyFieldSY_FIELD_ALL)
	MaxMasks     = int(sySySecondLimitsSY_MAX_MASKS)

	EtherTypeSignal = uint16(sySySigConstsSY_ETH_P_SIGNAL)
	SigVersion      = uint8(sySySigConstsSY_SIG_VERSION)
	SigMaxOps       = int(sySySigConstsSY_SIG_MAX_OPS)
	SigHeaderLen    = int(sySySigConstsSY_SIG_HDR_LEN)
	SigTLVHeaderLen = int(sySySigConstsSY_SIG_TLV_HDR_LEN)
	SigTMSelf       = uint16(sySySigConstsSY_SIG_TM_SELF)
	SigFlagShim     = uint16(sySySigFlagsSY_SIG_F_SHIM)
	MemorizeMirror  = uint16(sySyMemorizeFlagsSY_MEMORIZE_F_MIRROR)

	OpMemorizeCode = uint8(sySySigOpSY_OP_MEMORIZE)
	OpForgetCode   = uint8(sySySigOpSY_OP_FORGET)
	OpMirrorCode   = uint8(sySySigOpSY_OP_MIRROR)
	OpRelateCode   = uint8(sySySigOpSY_OP_RELATE)
	OpAgeCode      = uint8(sySySigOpSY_OP_AGE)

	TMReady    = uint32(sySyTmFlagsSY_TM_READY)
	TMDisabled = uint32(sySyTmFlagsSY_TM_DISABLED)
	TMDraining = uint32(sySyTmFlagsSY_TM_DRAINING)

	RoleExternal = uint32(sySyRoleSY_ROLE_EXTERNAL)
	RoleInternal = uint32(sySyRoleSY_ROLE_INTERNAL)

	// NoTM marks an empty ring slot (SY_TM_NONE).
	NoTM = uint32(sySyMarkersSY_TM_NONE)
)

// A service's new-flow hash (Service.Hash), beside the Field* bits: the
// symmetric hashes of bpf/switchyard.h's enum sy_hash_flags.
const (
	// HashSymPort hashes the protocol and the larger port.
	HashSymPort = uint32(sySyHashFlagsSY_HASH_SYM_PORT)
	// HashSymAddr also hashes the address that has the larger port (on
	// equal ports, the XOR of both addresses).
	HashSymAddr = uint32(sySyHashFlagsSY_HASH_SYM_ADDR)
)

// How a service's ring is read for a new flow (Service.Policy): enum
// sy_policy of bpf/switchyard.h.
const (
	// PolicyHash: the slot of the flow's hash (Service.Hash).
	PolicyHash = uint32(sySyPolicySY_POLICY_HASH)
	// PolicyRR: the next slot of the service's per-CPU round-robin position.
	PolicyRR = uint32(sySyPolicySY_POLICY_RR)
	// PolicyLC: least-connections, the slot of the flow's hash or of its
	// mix, whichever TM has fewer active flows (ActiveFlows).
	PolicyLC = uint32(sySyPolicySY_POLICY_LC)
	// PolicyWLC: weighted-least-connections, PolicyLC with the active
	// flows divided by each TM's policy weight (SetPolicyWeight).
	PolicyWLC = uint32(sySyPolicySY_POLICY_WLC)
	// PolicyQoSRings is the number of QoS class rings (policy_qos_rings).
	PolicyQoSRings = uint32(sySyPolicySY_POLICY_QOS_RINGS)
	// PolicyMaxServices is the number of round-robin positions (service
	// indexes 0..PolicyMaxServices-1).
	PolicyMaxServices = uint32(sySyPolicySY_POLICY_MAX_SERVICES)
)
