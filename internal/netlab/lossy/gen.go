package lossy

// The BPF object and its Go bindings are generated from bpf/testing/loss.c and
// committed, like internal/datapath's, so that `go build` needs no clang.
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package lossy loss ../../../bpf/testing/loss.c
