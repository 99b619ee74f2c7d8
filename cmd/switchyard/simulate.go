package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/sim"
)

func newSimulateCmd() *cobra.Command {
	p := sim.Default()
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Simulate N distributors behind ECMP: table sizes, mirroring cost, flows broken by changes",
		Long: `Simulate a scaled-out fleet without namespaces or root: --distributors
behind a router's ECMP (--ecmp: hash-threshold as Linux does, modulo, or a
resilient next-hop group), each choosing among --tms TMs with the real
weighted Maglev ring (--ring-size slots) indexed by the data path's hash.

It samples --sample of --flows established flows and reports:
  - the flow table and its memory per distributor (--bytes-per-flow, measured
    by BenchmarkFlowTableMemory), without mirroring, with a full mesh, and
    with k-replica mirroring (--replicas copies chosen by rendezvous hashing);
  - the share of established flows (with a 95% confidence interval) that the
    router moves, whose ring choice changes, and that break, when a TM or a
    distributor is added or lost, and after both;
  - mirroring traffic and CPU per distributor at each --mirror-n, from the
    new-flow rate and the measured CPU per mirrored entry (--hop-cpu-ns).

See docs/performance.md, "Scale-out simulation".`,
		Example: `  switchyard simulate
  switchyard simulate --distributors 4 --tms 16 --flows 100000 --sample 0
  switchyard simulate --ecmp resilient --replicas 3 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			r, err := sim.Run(p)
			if err != nil {
				return err
			}
			if asJSON {
				return r.WriteJSON(cmd.OutOrStdout())
			}
			if err := r.WriteTable(cmd.OutOrStdout()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nsimulated in %.1f s\n", time.Since(start).Seconds())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.Distributors, "distributors", p.Distributors, "distributors behind ECMP")
	f.IntVar(&p.TMs, "tms", p.TMs, "TMs in the service's pool")
	f.Int64Var(&p.Flows, "flows", p.Flows, "established flows across the cluster")
	f.IntVar(&p.Sample, "sample", p.Sample, "flows simulated (0: all)")
	f.Uint32Var(&p.RingSize, "ring-size", p.RingSize, "Maglev ring slots (a prime)")
	f.IntVar(&p.Replicas, "replicas", p.Replicas, "copies of each flow besides its owner's, for k-replica mirroring")
	f.Uint64Var(&p.Seed, "seed", p.Seed, "seed of the flows, the lost TM and distributor, and the router's hash")
	f.StringVar(&p.ECMP, "ecmp", p.ECMP, "router's ECMP: hash-threshold, modulo or resilient")
	f.Float64Var(&p.Pinned, "pinned", p.Pinned, "share of flows no hash recomputes (memorized, learned, round-robin)")
	f.Float64Var(&p.BytesPerFlow, "bytes-per-flow", p.BytesPerFlow, "flow-table memory per entry (measured)")
	f.Float64Var(&p.NewFlowRate, "new-flows", p.NewFlowRate, "new flows per second across the cluster")
	f.Float64Var(&p.UpdatesPerFlow, "updates-per-flow", p.UpdatesPerFlow, "mirror updates per flow's life")
	f.Float64Var(&p.RefreshSeconds, "refresh", p.RefreshSeconds, "mirror refresh walk period, seconds")
	f.Float64Var(&p.ActiveShare, "active", p.ActiveShare, "share of flows used within each refresh period")
	f.Float64Var(&p.HopCPUNanos, "hop-cpu-ns", p.HopCPUNanos, "CPU ns per entry per peer (measured, both sides)")
	f.IntSliceVar(&p.MirrorN, "mirror-n", p.MirrorN, "cluster sizes of the mirroring table")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
