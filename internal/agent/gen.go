package agent

// The tc egress program (bpf/agent.c) and its Go bindings are generated and
// committed, like internal/datapath's, so that `go build` needs no clang.
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package agent -type sy_agent_pending -type sy_agent_addr -type sy_agent_counter -type sy_agent_consts -type sy_wire_key shim ../../bpf/agent.c -- -I../../bpf
