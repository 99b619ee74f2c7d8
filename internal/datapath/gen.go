package datapath

// The BPF objects and their Go bindings are generated from bpf/ and committed,
// so that `go build` needs no clang. `.ci/run` regenerates them and fails when
// they differ. The benchmark object (bpf/bench.c) is generated into _test
// files: only the tests embed it.
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -no-strip=false -go-package datapath -type sy_flow_key -type sy_flow -type sy_svc_key -type sy_svc -type sy_vip_key -type sy_tm -type sy_iface -type sy_counter -type sy_counter_val -type sy_traffic -type sy_limits -type sy_markers -type sy_family -type sy_flow_flags -type sy_tm_flags -type sy_role -type sy_skey -type sy_second -type sy_mac_key -type sy_settings -type sy_field -type sy_second_limits -type sy_sig_consts -type sy_sig_flags -type sy_sig_op -type sy_memorize_flags -type sy_tcp_state -type sy_sig_hdr -type sy_wire_key -type sy_tlv -type sy_op_memorize -type sy_op_key -type sy_op_relate -type sy_op_age -type sy_event_type -type sy_event_consts -type sy_event -type sy_hash_flags -type sy_policy -type sy_qos sy ../../bpf/distributor.c -- -I../../bpf
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package datapath -output-suffix _test bench ../../bpf/bench.c -- -I../../bpf
