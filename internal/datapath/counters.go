package datapath

// Counter is a global verdict or drop-reason counter (enum sy_counter).
type Counter = sySyCounter

// Counters, in the order of enum sy_counter.
const (
	CounterPassNotIP      = sySyCounterSY_C_PASS_NOT_IP
	CounterPassNotVIP     = sySyCounterSY_C_PASS_NOT_VIP
	CounterPassVIPOther   = sySyCounterSY_C_PASS_VIP_OTHER
	CounterPassICMPNoFlow = sySyCounterSY_C_PASS_ICMP_NO_FLOW
	CounterPassNoService  = sySyCounterSY_C_PASS_NO_SERVICE
	CounterFwdHit         = sySyCounterSY_C_FWD_HIT
	CounterFwdNew         = sySyCounterSY_C_FWD_NEW
	CounterFwdReselect    = sySyCounterSY_C_FWD_RESELECT
	CounterFwdICMP        = sySyCounterSY_C_FWD_ICMP
	CounterTX             = sySyCounterSY_C_TX
	CounterRedirect       = sySyCounterSY_C_REDIRECT
	CounterDropTruncEth   = sySyCounterSY_C_DROP_TRUNC_ETH
	CounterDropTruncVLAN  = sySyCounterSY_C_DROP_TRUNC_VLAN
	CounterDropVLANDepth  = sySyCounterSY_C_DROP_VLAN_DEPTH
	CounterDropTruncIP    = sySyCounterSY_C_DROP_TRUNC_IP
	CounterDropBadIP      = sySyCounterSY_C_DROP_BAD_IP
	CounterDropIPv6Ext    = sySyCounterSY_C_DROP_IPV6EXT
	CounterDropFragment   = sySyCounterSY_C_DROP_FRAGMENT
	CounterDropTruncL4    = sySyCounterSY_C_DROP_TRUNC_L4
	CounterDropBadL4      = sySyCounterSY_C_DROP_BAD_L4
	CounterDropNoTM       = sySyCounterSY_C_DROP_NO_TM
	CounterDropTMNotReady = sySyCounterSY_C_DROP_TM_NOT_READY
	CounterDropNoEgress   = sySyCounterSY_C_DROP_NO_EGRESS
	NumCounters           = int(sySyCounterSY_C_MAX)
)

// counterNames are the names operators see in `switchyard stats` and in
// metrics labels. TestCounterNames checks that every counter has one.
var counterNames = [...]string{
	CounterPassNotIP:      "pass_not_ip",
	CounterPassNotVIP:     "pass_not_vip",
	CounterPassVIPOther:   "pass_vip_other_proto",
	CounterPassICMPNoFlow: "pass_icmp_no_flow",
	CounterPassNoService:  "pass_no_service",
	CounterFwdHit:         "fwd_hit",
	CounterFwdNew:         "fwd_new",
	CounterFwdReselect:    "fwd_reselect",
	CounterFwdICMP:        "fwd_icmp",
	CounterTX:             "xdp_tx",
	CounterRedirect:       "xdp_redirect",
	CounterDropTruncEth:   "drop_truncated_ethernet",
	CounterDropTruncVLAN:  "drop_truncated_vlan",
	CounterDropVLANDepth:  "drop_vlan_depth",
	CounterDropTruncIP:    "drop_truncated_ip",
	CounterDropBadIP:      "drop_bad_ip_header",
	CounterDropIPv6Ext:    "drop_ipv6_ext_headers",
	CounterDropFragment:   "drop_fragment",
	CounterDropTruncL4:    "drop_truncated_l4",
	CounterDropBadL4:      "drop_bad_l4_header",
	CounterDropNoTM:       "drop_no_tm",
	CounterDropTMNotReady: "drop_tm_not_ready",
	CounterDropNoEgress:   "drop_no_egress",
}

// CounterName returns the operator-facing name of c.
func CounterName(c Counter) string {
	if int(c) < len(counterNames) && counterNames[c] != "" {
		return counterNames[c]
	}
	return "unknown"
}

// IsDrop reports whether c counts dropped packets.
func IsDrop(c Counter) bool { return c >= CounterDropTruncEth && int(c) < NumCounters }
