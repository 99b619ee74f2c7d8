package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/api"
)

func newBGPCmd() *cobra.Command {
	var af apiFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bgp",
		Short: "Show the BGP sessions and which VIPs are announced (and why not)",
		Long: `Show the distributor's BGP speaker: each neighbor's session (state, uptime,
negotiated hold time, prefixes advertised), each VIP (announced or why not),
and a drain in progress. The JSON shape is documented in docs/bgp.md.`,
		Example: `  switchyard bgp
  switchyard bgp --config /etc/switchyard/d1.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			st, err := c.BGP(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printBGP(cmd.OutOrStdout(), st)
			return nil
		},
	}
	af.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printBGP(w io.Writer, st api.BGPStatus) {
	fmt.Fprintf(w, "bgp: asn %d, router id %s, state %s", st.ASN, st.RouterID, st.State)
	if len(st.Waiting) > 0 {
		fmt.Fprintf(w, " (waiting for %s)", strings.Join(st.Waiting, ", "))
	}
	fmt.Fprintf(w, "; hold %ds, keepalive %ds\n", st.HoldTime, st.Keepalive)
	if st.FirstAnnounce != "" {
		fmt.Fprintf(w, "first announcement %.3fs after the speaker started\n", st.AnnounceAfterSeconds)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NEIGHBOR\tASN\tSTATE\tUPTIME\tHOLD\tADVERTISED\tRECEIVED\tFLAPS\tBFD")
	for _, s := range st.Sessions {
		up := "-"
		if s.State == "established" {
			up = (time.Duration(s.UptimeSeconds) * time.Second).String()
		}
		bfd := s.BFD
		if bfd == "" {
			bfd = "off"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.Neighbor, s.ASN, s.State, up, s.HoldTime, s.Advertised, s.Received, s.Flaps, bfd)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VIP\tANNOUNCED\tSERVICES\tELIGIBLE\tWHY NOT")
	for _, v := range st.VIPs {
		yes := "no"
		if v.Announced {
			yes = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Prefix, yes, strings.Join(v.Services, ","), strings.Join(v.Eligible, ","), v.Reason)
	}
	tw.Flush()
	if d := st.Drain; d != nil {
		fmt.Fprintf(w, "\ndrain: started %s, deadline %s, %d packets since, none for %.1fs", d.Started, d.Deadline, d.Packets, d.IdleSeconds)
		if d.Done {
			fmt.Fprintf(w, ", done (%s)", d.EndedBy)
		}
		fmt.Fprintln(w)
	}
}

func newDrainCmd() *cobra.Command {
	var af apiFlags
	var deadline time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Gracefully drain a distributor: withdraw its VIPs, stop when its flows have ended",
		Long: `Drain the distributor (it needs bgp: in its config). It withdraws every VIP
from its BGP neighbors at once, keeps forwarding the flows that still arrive
(a router that has not converged yet, connections with nowhere else to go),
and stops once no packet of its VIPs has arrived for 2 s, or at the deadline
(default: bgp.drain_deadline). The daemon then exits as on SIGTERM (with
--keep it leaves its data path pinned). See docs/bgp.md.`,
		Example: `  switchyard drain
  switchyard drain --config /etc/switchyard/d1.yaml --deadline 30s --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if deadline < 0 || deadline > api.MaxDrainDeadline {
				return fmt.Errorf("--deadline %v: expected 0 (the config's) up to %v", deadline, api.MaxDrainDeadline)
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			st, err := c.Drain(cmd.Context(), deadline)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "draining: VIPs withdrawn; deadline %s\n", st.Drain.Deadline)
			if !wait {
				return nil
			}
			// The daemon exits when the drain is done: its API going away
			// after "drained" is the end.
			for {
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(500 * time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
				st, err = c.BGP(ctx)
				cancel()
				if err != nil {
					fmt.Fprintln(out, "distributor stopped")
					return nil
				}
				if st.Drain != nil {
					fmt.Fprintf(out, "%d packets since the withdrawal, none for %.1fs\n", st.Drain.Packets, st.Drain.IdleSeconds)
					if st.Drain.Done {
						fmt.Fprintf(out, "drained (%s)\n", st.Drain.EndedBy)
						return nil
					}
				}
			}
		},
	}
	af.register(cmd)
	cmd.Flags().DurationVar(&deadline, "deadline", 0, "stop after this long even if flows still arrive (default: bgp.drain_deadline)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the drain is done")
	return cmd
}
