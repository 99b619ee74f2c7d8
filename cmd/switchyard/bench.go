package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/lab"
)

func newBenchCmd() *cobra.Command {
	o := lab.BenchOptions{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, connection and request rates, retransmissions and drops: direct, kernel ECMP and the distributor",
		Long: `Measure, in network namespaces on this host (needs root), the same traffic
from a client to the VIP over three paths, in the same run:

  direct      no XDP program; the distributor namespace's kernel routes the
              VIP to tm1 (route VIP/32 via its address)
  ecmp        no XDP program; the kernel spreads the VIP over every TM
              (multipath route, fib_multipath_hash_policy=1: an L4 hash;
              0 for iperf3, whose streams must reach one server)
  switchyard  the distributor runs there and its XDP program sends the
              client's packets to the TMs

  c1 ──ext bridge── d1 ──int bridge── tm1..tmN    (veth pairs)

The TMs' replies go back through d1's kernel on every path (direct server
return), so the client→TM direction is the one the distributor forwards.

Measurements, each for --duration on each path, --rounds times (the order of
the paths rotates per round):
  - TCP throughput client→TM with 1 and 8 streams: iperf3 client in c1,
    iperf3 servers bound to the VIP in the TMs, receiver's rate (--reverse
    adds TM→client, where only the ACKs cross XDP);
  - new TCP connections per second: --workers workers each doing one short
    HTTP request per new connection to the reference TMs, without pause;
  - keep-alive HTTP requests per second on --workers connections.
Each with the TCP retransmissions (client and TMs) and the packets dropped on
every link (tx_dropped of every interface of every namespace).

The report has every round's values, the medians, the ratios
switchyard/direct, switchyard/ecmp and ecmp/direct, and the targets: 8
streams through the distributor ≥ 0.95× direct with at most 2× its
retransmissions; new connections per second ≥ 0.95× ECMP. It needs iperf3
(apt-get install iperf3). Ctrl-C stops everything and removes the
namespaces.`,
		Example: `  switchyard bench                # as root
  switchyard bench --duration 10s --rounds 5
  switchyard bench --mtu 9000     # jumbo frames
  switchyard bench --qdisc noqueue --paths direct,switchyard
  switchyard bench --json > bench.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("bench needs root: it creates network namespaces and attaches XDP programs")
			}
			var err error
			if o.Bin, err = os.Executable(); err != nil {
				return fmt.Errorf("find own binary for the distributor: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				out = cmd.ErrOrStderr()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			res, err := lab.RunBench(ctx, o, out)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return errors.New("bench: interrupted; distributor and load stopped, namespaces removed")
				}
				return fmt.Errorf("bench: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measurement (iperf3: whole seconds)")
	f.IntVar(&o.Rounds, "rounds", 3, "rounds of every measurement on each path")
	f.IntVar(&o.Workers, "workers", 8, "concurrent workers of the connection-rate measurement")
	f.BoolVar(&o.Reverse, "reverse", false, "also measure throughput TM→client")
	f.IntVar(&o.TMs, "tms", 3, "TMs behind the distributor and kernel ECMP")
	f.IntVar(&o.MTU, "mtu", 1500, "MTU of every link (1280..9000; 9000: jumbo frames through XDP as multi-buffer frames)")
	f.IntVar(&o.Queues, "queues", 0, "RX/TX queues of every veth (0: the kernel's default)")
	f.StringVar(&o.Qdisc, "qdisc", "pfifo", `qdisc on every veth: pfifo, pfifo_fast, fq_codel, fq, or noqueue (the veth default: a full ring drops)`)
	f.StringSliceVar(&o.Paths, "paths", nil, "paths to measure: direct, ecmp, switchyard (default all three)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON on stdout (progress and table go to stderr)")
	return cmd
}
