package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/api"
)

func newPeersCmd() *cobra.Command {
	return newStatsViewCmd("peers",
		"Show the peer distributors flows are mirrored to: state, lag, counters",
		`  switchyard peers
  switchyard peers --config /etc/switchyard/d1.yaml --json`,
		func(st api.Stats) any {
			return struct {
				Peers  []api.PeerStats   `json:"peers"`
				Mirror map[string]uint64 `json:"mirror"`
			}{st.Peers, st.Mirror}
		}, printPeers)
}

func printPeers(w io.Writer, st api.Stats) {
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "no peers (peers.addresses is empty)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tID\tSTATE\tLAG\tSENT\tRECEIVED\tMISSING\tRESYNCS\tLAST HEARD")
	for _, p := range st.Peers {
		heard := p.LastHeard
		if heard == "" {
			heard = "never"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Addr, p.ID, p.State, p.Lag, p.Sent, p.Received, p.Missing, p.Resyncs, heard)
	}
	tw.Flush()
	names := make([]string, 0, len(st.Mirror))
	for k := range st.Mirror {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintln(w)
	for _, k := range names {
		if v := st.Mirror[k]; v != 0 {
			fmt.Fprintf(w, "%-22s %d\n", k, v)
		}
	}
}
