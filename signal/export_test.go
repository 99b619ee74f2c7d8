package signal

// WireStructs maps every wire struct of bpf/switchyard.h to the Go struct
// this package encodes and decodes it through, for the test that compares
// them with the BTF of the compiled XDP object.
var WireStructs = map[string]any{
	"sy_sig_hdr":     wireHdr{},
	"sy_tlv":         wireTLV{},
	"sy_wire_key":    wireKey{},
	"sy_op_memorize": wireMemorize{},
	"sy_op_key":      wireKeyOp{},
	"sy_op_relate":   wireRelate{},
	"sy_op_age":      wireAge{},
}

// OpSize is the value size this package expects for an op code; -1 for an
// op it does not know.
func OpSize(code uint8) int { return opSize(code) }

// WireEnums lists the enum values of bpf/switchyard.h that the encoding
// uses: all of each enum, so a value added in C and not here fails the test.
var WireEnums = map[string]map[string]uint64{
	"sy_sig_consts": {
		"SY_SIG_VERSION": Version, "SY_SIG_MAX_OPS": MaxOps, "SY_SIG_HDR_LEN": uint64(hdrLen),
		"SY_SIG_TLV_HDR_LEN": uint64(tlvHdrLen), "SY_SIG_TM_SELF": uint64(Self),
		"SY_ETH_P_SIGNAL": EtherType,
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
