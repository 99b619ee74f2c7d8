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
)

// Constants of the C header.
const (
	MaxTMs = int(sySyLimitsSY_MAX_TMS)

	FamilyIPv4 = uint8(sySyFamilySY_AF_INET)
	FamilyIPv6 = uint8(sySyFamilySY_AF_INET6)

	FlowSelected = uint16(sySyFlowFlagsSY_FLOW_SELECTED)

	TMReady    = uint32(sySyTmFlagsSY_TM_READY)
	TMDisabled = uint32(sySyTmFlagsSY_TM_DISABLED)

	RoleExternal = uint32(sySyRoleSY_ROLE_EXTERNAL)
	RoleInternal = uint32(sySyRoleSY_ROLE_INTERNAL)

	// NoTM marks an empty ring slot (SY_TM_NONE).
	NoTM = ^uint32(0)
)
