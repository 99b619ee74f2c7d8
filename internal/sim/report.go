package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	if err := e.Encode(r); err != nil {
		return fmt.Errorf("write simulation result: %w", err)
	}
	return nil
}

func pct(s Share) string {
	return fmt.Sprintf("%.4f%% ±%.4f", 100*s.P, 100*s.CI95)
}

// si formats a rate or size with a metric prefix.
func si(v float64, unit string) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f G%s", v/1e9, unit)
	case v >= 1e6:
		return fmt.Sprintf("%.2f M%s", v/1e6, unit)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k%s", v/1e3, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

// WriteTable writes r as text tables.
func (r *Result) WriteTable(w io.Writer) error {
	p := r.Params
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	sample := int64(p.Sample)
	if sample == 0 {
		sample = p.Flows
	}
	fmt.Fprintf(tw, "distributors %d, TMs %d, flows %d (sampled %d), ring %d slots, ECMP %s, k %d, pinned %.3f, seed %d\n",
		p.Distributors, p.TMs, p.Flows, sample, p.RingSize, p.ECMP, p.Replicas, p.Pinned, p.Seed)
	fmt.Fprintf(tw, "ring: %d..%d slots per TM, %d bytes per service; lost TM %s, lost distributor d%d\n\n",
		r.Ring.SlotsPerTMMin, r.Ring.SlotsPerTMMax, r.Ring.Bytes, tmName(r.LostTM), r.LostDistributor)

	fmt.Fprintf(tw, "FLOW TABLE PER DISTRIBUTOR\tentries\tmemory (%.1f B/flow)\n", p.BytesPerFlow)
	for _, t := range r.Tables {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\n", t.Scheme, t.Entries, si(t.Bytes, "B"))
	}
	fmt.Fprintf(tw, "busiest distributor: %.3f× the mean of its own flows; %.3f× after d%d is lost\n", r.Busiest, r.BusiestAfterLoss, r.LostDistributor)
	fmt.Fprintln(tw)

	fmt.Fprintf(tw, "EVENT (share of established flows, 95%% CI)\tmoved by ECMP\tring choice changed\tbroken: no mirroring\tfull mesh\tk-replica (k=%d)\n", p.Replicas)
	for _, e := range r.Events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, pct(e.Moved), pct(e.Changed), pct(e.BrokenNone), pct(e.BrokenFull), pct(e.BrokenK))
	}
	fmt.Fprintln(tw)

	fmt.Fprintf(tw, "MIRRORING PER DISTRIBUTOR (%.0f new flows/s, %.0f updates/flow, refresh %.0f s of %.0f%% of flows, %.0f ns CPU/entry/peer)\tpeers\tupdates/s\tentries/s sent\tdatagrams/s\tbytes/s\tCPU cores\ttable\n",
		p.NewFlowRate, p.UpdatesPerFlow, p.RefreshSeconds, 100*p.ActiveShare, p.HopCPUNanos)
	for _, m := range r.Mirroring {
		fmt.Fprintf(tw, "N=%d %s\t%d\t%s\t%s\t%s\t%s\t%.2f\t%s\n", m.N, m.Scheme, m.Peers, si(m.Updates, ""), si(m.Entries, ""), si(m.Datagrams, ""), si(m.Bytes, "B"), m.CPU, si(m.TableBytes, "B"))
	}
	fmt.Fprintf(tw, "divergent flows (ring choice changed by one TM added, or pinned): %s; a ring change makes each distributor send its newly divergent entries once: %s entries to each peer\n",
		pct(r.Divergent), si(r.Divergent.P*float64(p.Flows)/float64(p.Distributors), ""))
	for _, s := range r.Warnings {
		fmt.Fprintf(tw, "\nwarning: %s\n", s)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write simulation table: %w", err)
	}
	return nil
}
