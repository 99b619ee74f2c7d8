package datapath

// Counter is a global verdict or drop-reason counter (enum sy_counter).
type Counter = sySyCounter

// Counters, in the order of enum sy_counter.
const (
	CounterPassNotIP        = sySyCounterSY_C_PASS_NOT_IP
	CounterPassNotVIP       = sySyCounterSY_C_PASS_NOT_VIP
	CounterPassVIPOther     = sySyCounterSY_C_PASS_VIP_OTHER
	CounterPassICMPNoFlow   = sySyCounterSY_C_PASS_ICMP_NO_FLOW
	CounterPassNoService    = sySyCounterSY_C_PASS_NO_SERVICE
	CounterFwdHit           = sySyCounterSY_C_FWD_HIT
	CounterFwdNew           = sySyCounterSY_C_FWD_NEW
	CounterFwdReselect      = sySyCounterSY_C_FWD_RESELECT
	CounterFwdICMP          = sySyCounterSY_C_FWD_ICMP
	CounterTX               = sySyCounterSY_C_TX
	CounterRedirect         = sySyCounterSY_C_REDIRECT
	CounterDropTruncEth     = sySyCounterSY_C_DROP_TRUNC_ETH
	CounterDropTruncVLAN    = sySyCounterSY_C_DROP_TRUNC_VLAN
	CounterDropVLANDepth    = sySyCounterSY_C_DROP_VLAN_DEPTH
	CounterDropTruncIP      = sySyCounterSY_C_DROP_TRUNC_IP
	CounterDropBadIP        = sySyCounterSY_C_DROP_BAD_IP
	CounterDropIPv6Ext      = sySyCounterSY_C_DROP_IPV6EXT
	CounterDropFragment     = sySyCounterSY_C_DROP_FRAGMENT
	CounterDropTruncL4      = sySyCounterSY_C_DROP_TRUNC_L4
	CounterDropBadL4        = sySyCounterSY_C_DROP_BAD_L4
	CounterDropNoTM         = sySyCounterSY_C_DROP_NO_TM
	CounterDropTMNotReady   = sySyCounterSY_C_DROP_TM_NOT_READY
	CounterDropNoEgress     = sySyCounterSY_C_DROP_NO_EGRESS
	CounterFwdSecondKey     = sySyCounterSY_C_FWD_SECOND_KEY
	CounterPassFromTM       = sySyCounterSY_C_PASS_FROM_TM
	CounterLearned          = sySyCounterSY_C_LEARNED
	CounterSigFrame         = sySyCounterSY_C_SIG_FRAME
	CounterSigShim          = sySyCounterSY_C_SIG_SHIM
	CounterSigMemorize      = sySyCounterSY_C_SIG_MEMORIZE
	CounterSigForget        = sySyCounterSY_C_SIG_FORGET
	CounterSigMirror        = sySyCounterSY_C_SIG_MIRROR
	CounterSigRelate        = sySyCounterSY_C_SIG_RELATE
	CounterSigAge           = sySyCounterSY_C_SIG_AGE
	CounterSigRefExternal   = sySyCounterSY_C_SIG_REF_EXTERNAL
	CounterSigRefUnknownMAC = sySyCounterSY_C_SIG_REF_UNKNOWN_MAC
	CounterSigRefNotForUs   = sySyCounterSY_C_SIG_REF_NOT_FOR_US
	CounterSigRefVersion    = sySyCounterSY_C_SIG_REF_VERSION
	CounterSigRefCount      = sySyCounterSY_C_SIG_REF_COUNT
	CounterSigRefTruncated  = sySyCounterSY_C_SIG_REF_TRUNCATED
	CounterSigRefUnknownOp  = sySyCounterSY_C_SIG_REF_UNKNOWN_OP
	CounterSigRefBadLength  = sySyCounterSY_C_SIG_REF_BAD_LENGTH
	CounterSigRefBadKey     = sySyCounterSY_C_SIG_REF_BAD_KEY
	CounterSigRefForeignTM  = sySyCounterSY_C_SIG_REF_FOREIGN_TM
	CounterSigRefNoFlow     = sySyCounterSY_C_SIG_REF_NO_FLOW
	CounterSigRefBadMask    = sySyCounterSY_C_SIG_REF_BAD_MASK
	CounterSigRefTableFull  = sySyCounterSY_C_SIG_REF_TABLE_FULL
	CounterLearnConflict    = sySyCounterSY_C_LEARN_CONFLICT
	CounterSigRefWrongPort  = sySyCounterSY_C_SIG_REF_WRONG_PORT
	CounterSigRefNotReady   = sySyCounterSY_C_SIG_REF_NOT_READY
	CounterTCPRefFin        = sySyCounterSY_C_TCP_REF_FIN
	CounterTCPRefRst        = sySyCounterSY_C_TCP_REF_RST
	CounterFlowRefused      = sySyCounterSY_C_FLOW_REFUSED
	CounterHalfOpenRefused  = sySyCounterSY_C_HALF_OPEN_REFUSED
	CounterHalfOpenPromoted = sySyCounterSY_C_HALF_OPEN_PROMOTED
	CounterFwdHalfOpen      = sySyCounterSY_C_FWD_HALF_OPEN
	CounterEventOverrun     = sySyCounterSY_C_EVENT_OVERRUN
	NumCounters             = int(sySyCounterSY_C_MAX)
)

// counterNames are the names operators see in `switchyard stats` and in
// metrics labels. TestCounterNames checks that every counter has one.
var counterNames = [...]string{
	CounterPassNotIP:        "pass_not_ip",
	CounterPassNotVIP:       "pass_not_vip",
	CounterPassVIPOther:     "pass_vip_other_proto",
	CounterPassICMPNoFlow:   "pass_icmp_no_flow",
	CounterPassNoService:    "pass_no_service",
	CounterFwdHit:           "fwd_hit",
	CounterFwdNew:           "fwd_new",
	CounterFwdReselect:      "fwd_reselect",
	CounterFwdICMP:          "fwd_icmp",
	CounterTX:               "xdp_tx",
	CounterRedirect:         "xdp_redirect",
	CounterDropTruncEth:     "drop_truncated_ethernet",
	CounterDropTruncVLAN:    "drop_truncated_vlan",
	CounterDropVLANDepth:    "drop_vlan_depth",
	CounterDropTruncIP:      "drop_truncated_ip",
	CounterDropBadIP:        "drop_bad_ip_header",
	CounterDropIPv6Ext:      "drop_ipv6_ext_headers",
	CounterDropFragment:     "drop_fragment",
	CounterDropTruncL4:      "drop_truncated_l4",
	CounterDropBadL4:        "drop_bad_l4_header",
	CounterDropNoTM:         "drop_no_tm",
	CounterDropTMNotReady:   "drop_tm_not_ready",
	CounterDropNoEgress:     "drop_no_egress",
	CounterFwdSecondKey:     "fwd_second_key",
	CounterPassFromTM:       "pass_from_tm",
	CounterLearned:          "learned",
	CounterSigFrame:         "sig_frame",
	CounterSigShim:          "sig_shim",
	CounterSigMemorize:      "sig_memorize",
	CounterSigForget:        "sig_forget",
	CounterSigMirror:        "sig_mirror",
	CounterSigRelate:        "sig_relate",
	CounterSigAge:           "sig_age",
	CounterSigRefExternal:   "sig_refused_external",
	CounterSigRefUnknownMAC: "sig_refused_unknown_mac",
	CounterSigRefNotForUs:   "sig_refused_not_for_us",
	CounterSigRefVersion:    "sig_refused_version",
	CounterSigRefCount:      "sig_refused_count",
	CounterSigRefTruncated:  "sig_refused_truncated",
	CounterSigRefUnknownOp:  "sig_refused_unknown_op",
	CounterSigRefBadLength:  "sig_refused_bad_length",
	CounterSigRefBadKey:     "sig_refused_bad_key",
	CounterSigRefForeignTM:  "sig_refused_foreign_tm",
	CounterSigRefNoFlow:     "sig_refused_no_flow",
	CounterSigRefBadMask:    "sig_refused_bad_mask",
	CounterSigRefTableFull:  "sig_refused_table_full",
	CounterLearnConflict:    "learn_conflict",
	CounterSigRefWrongPort:  "sig_refused_wrong_port",
	CounterSigRefNotReady:   "sig_refused_not_ready",
	CounterTCPRefFin:        "tcp_refused_fin",
	CounterTCPRefRst:        "tcp_refused_rst",
	CounterFlowRefused:      "flow_refused_table_full",
	CounterHalfOpenRefused:  "half_open_refused_table_full",
	CounterHalfOpenPromoted: "half_open_promoted",
	CounterFwdHalfOpen:      "fwd_half_open",
	CounterEventOverrun:     "event_overrun",
}

// CounterName returns the operator-facing name of c.
func CounterName(c Counter) string {
	if int(c) < len(counterNames) && counterNames[c] != "" {
		return counterNames[c]
	}
	return "unknown"
}

// IsDrop reports whether c counts dropped packets: the drop reasons, and the
// signal refusals of a whole frame or shim (the packet is dropped, no op
// applied). Not the per-op refusals (bad_key, foreign_tm, no_flow, bad_mask,
// table_full): they count ops, and a shim goes on after them. Not sig_frame
// either: a frame is consumed once applied, not lost. TestIsDrop checks this
// against what the program does.
func IsDrop(c Counter) bool {
	switch c {
	case CounterSigRefExternal, CounterSigRefUnknownMAC, CounterSigRefNotForUs, CounterSigRefWrongPort, CounterSigRefNotReady,
		CounterSigRefVersion, CounterSigRefCount, CounterSigRefTruncated, CounterSigRefUnknownOp,
		CounterSigRefBadLength:
		return true
	}
	return c >= CounterDropTruncEth && c <= CounterDropNoEgress
}
