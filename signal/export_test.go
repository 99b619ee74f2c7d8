package signal

// WireStruct is the Go encoding's idea of one C wire struct, for the test
// that compares it with the BTF of the compiled XDP object.
type WireStruct struct {
	Size    int
	Members map[string][2]int // name → offset, size
}

// WireLayout lists every wire struct of bpf/switchyard.h as encoded here.
var WireLayout = map[string]WireStruct{
	"sy_sig_hdr": {hdrLen, map[string][2]int{
		"version": {hdrOffVer, 1}, "count": {hdrOffCnt, 1}, "length": {hdrOffLen, 2},
		"flags": {hdrOffFlg, 2}, "reserved": {hdrOffRsv, 2},
	}},
	"sy_tlv": {tlvHdrLen, map[string][2]int{"op": {tlvOffOp, 1}, "len": {tlvOffLen, 1}}},
	"sy_wire_key": {keyLen, map[string][2]int{
		"src": {keyOffSrc, 16}, "dst": {keyOffDst, 16}, "sport": {keyOffSport, 2},
		"dport": {keyOffDport, 2}, "vlan": {keyOffVLAN, 2}, "proto": {keyOffProto, 1},
		"family": {keyOffFamily, 1},
	}},
	"sy_op_memorize": {memorizeLen, map[string][2]int{
		"key": {memorizeOffKey, keyLen}, "tm": {memorizeOffTM, 2},
		"flags": {memorizeOffFlags, 2}, "timeout": {memorizeOffTimeout, 4},
	}},
	"sy_op_key": {keyOpLen, map[string][2]int{"key": {keyOpOffKey, keyLen}}},
	"sy_op_relate": {relateLen, map[string][2]int{
		"parent": {relateOffParent, keyLen}, "second": {relateOffSecond, keyLen},
		"mask": {relateOffMask, 1}, "pad": {relateOffPad, 1}, "tm": {relateOffTM, 2},
		"timeout": {relateOffTimeout, 4},
	}},
	"sy_op_age": {ageLen, map[string][2]int{"key": {ageOffKey, keyLen}, "timeout": {ageOffTimeout, 4}}},
}

// WireEnums lists the enum values of bpf/switchyard.h that the encoding uses.
var WireEnums = map[string]map[string]uint64{
	"sy_sig_consts": {
		"SY_SIG_VERSION": Version, "SY_SIG_MAX_OPS": MaxOps, "SY_SIG_HDR_LEN": hdrLen,
		"SY_SIG_TLV_HDR_LEN": tlvHdrLen, "SY_SIG_TM_SELF": uint64(Self), "SY_ETH_P_SIGNAL": EtherType,
	},
	"sy_sig_flags":      {"SY_SIG_F_SHIM": flagShim},
	"sy_memorize_flags": {"SY_MEMORIZE_F_MIRROR": memorizeFlagMirror},
	"sy_sig_op": {
		"SY_OP_MEMORIZE": opMemorize, "SY_OP_FORGET": opForget, "SY_OP_MIRROR": opMirror,
		"SY_OP_RELATE": opRelate, "SY_OP_AGE": opAge,
	},
	"sy_field": {
		"SY_FIELD_VLAN": uint64(FieldVLAN), "SY_FIELD_PROTO": uint64(FieldProto),
		"SY_FIELD_SRC": uint64(FieldSrc), "SY_FIELD_DST": uint64(FieldDst),
		"SY_FIELD_SPORT": uint64(FieldSrcPort), "SY_FIELD_DPORT": uint64(FieldDstPort),
		"SY_FIELD_ALL": uint64(FieldAll),
	},
	"sy_family": {"SY_AF_INET": famINET, "SY_AF_INET6": famINET6},
}
