// Package top is `switchyard top`: a live view of one or more
// distributors, read from their admin APIs. It fetches frames (Watcher)
// and lays them out as text (Render); the command redraws them in place.
package top

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/switchyard/switchyard/internal/api"
)

// Source is one distributor to watch.
type Source struct {
	// Addr is the admin API address as given (unix:/path or host:port).
	Addr   string
	Client *api.Client
}

// BGP is what a distributor's GET /v1/bgp said. The endpoint's shape is
// the BGP speaker's to define; until top knows it, an answer is shown as a
// bounded one-line summary of its JSON.
type BGP struct {
	// Available is false when the endpoint does not exist (404): a
	// distributor without BGP.
	Available bool
	// Summary is the answer, compacted and cut to maxBGPSummary bytes.
	Summary string
	Err     error
}

// maxBGPSummary bounds the BGP line.
const maxBGPSummary = 200

// Dist is one distributor in a frame.
type Dist struct {
	Addr string
	// Err is set when the distributor did not answer: it is shown as down.
	Err   error
	Stats api.Stats
	BGP   BGP
	// SvcRate and TMRate are new flows per second since the previous frame,
	// by service and by TM id; nil on the first frame (or after a restart
	// of the counters): Render then shows shares of all new flows so far.
	SvcRate, TMRate map[string]float64
}

// Frame is one refresh of every source.
type Frame struct {
	At    time.Time
	Dists []Dist
}

// Watcher fetches frames and keeps the previous counters for the rates.
type Watcher struct {
	Sources []Source
	// Timeout bounds each distributor's answers in one frame; 0 means 2s.
	Timeout time.Duration

	mu   sync.Mutex
	prev map[string]counters
}

type counters struct {
	at      time.Time
	svc, tm map[string]uint64
}

// Fetch asks every source, concurrently, for its stats and BGP state. A
// source that does not answer within the timeout is in the frame with Err.
func (w *Watcher) Fetch(ctx context.Context) Frame {
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	f := Frame{At: time.Now(), Dists: make([]Dist, len(w.Sources))}
	var wg sync.WaitGroup
	for i, s := range w.Sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			f.Dists[i] = fetch(cctx, s)
		}()
	}
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.prev == nil {
		w.prev = map[string]counters{}
	}
	for i := range f.Dists {
		d := &f.Dists[i]
		if d.Err != nil {
			delete(w.prev, d.Addr)
			continue
		}
		cur := counters{at: f.At, svc: map[string]uint64{}, tm: map[string]uint64{}}
		for _, s := range d.Stats.Services {
			cur.svc[s.Name] = s.NewFlows
		}
		for _, t := range d.Stats.TrafficManagers {
			cur.tm[t.ID] = t.NewFlows
		}
		if p, ok := w.prev[d.Addr]; ok {
			d.SvcRate, d.TMRate = rates(p.svc, cur.svc, f.At.Sub(p.at)), rates(p.tm, cur.tm, f.At.Sub(p.at))
		}
		w.prev[d.Addr] = cur
	}
	return f
}

// rates are (cur - prev) / dt per key; nil if a counter went back (the
// distributor restarted) or dt is not positive.
func rates(prev, cur map[string]uint64, dt time.Duration) map[string]float64 {
	if dt <= 0 {
		return nil
	}
	r := map[string]float64{}
	for k, v := range cur {
		p := prev[k]
		if v < p {
			return nil
		}
		r[k] = float64(v-p) / dt.Seconds()
	}
	return r
}

func fetch(ctx context.Context, s Source) Dist {
	d := Dist{Addr: s.Addr}
	st, err := s.Client.Stats(ctx)
	if err != nil {
		d.Err = err
		return d
	}
	d.Stats = st
	var raw json.RawMessage
	switch err := s.Client.GetJSON(ctx, "/v1/bgp", &raw); {
	case errors.Is(err, api.ErrNotFound):
	case err != nil:
		d.BGP = BGP{Available: true, Err: err}
	default:
		d.BGP = BGP{Available: true, Summary: summarize(raw)}
	}
	return d
}

// summarize compacts a JSON answer onto one bounded line.
func summarize(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "(answer is not JSON)"
	}
	// JSON strings may hold invalid UTF-8; a terminal gets none.
	s := strings.ToValidUTF8(b.String(), "?")
	if len(s) > maxBGPSummary {
		s = strings.ToValidUTF8(s[:maxBGPSummary], "") + "…"
	}
	return s
}

// Render writes the frame as text: a head line, then per distributor its
// services, TMs, peers and BGP state (or why it is down).
func Render(w io.Writer, f Frame) {
	down := 0
	for _, d := range f.Dists {
		if d.Err != nil {
			down++
		}
	}
	fmt.Fprintf(w, "switchyard top  %s  %d distributor(s), %d down\n", f.At.UTC().Format("2006-01-02 15:04:05 UTC"), len(f.Dists), down)
	for _, d := range f.Dists {
		fmt.Fprintln(w)
		if d.Err != nil {
			fmt.Fprintf(w, "%s  DOWN: %v\n", d.Addr, d.Err)
			continue
		}
		renderDist(w, d)
	}
}

func renderDist(w io.Writer, d Dist) {
	st := d.Stats
	fill := "-"
	if st.FlowCapacity > 0 {
		fill = fmt.Sprintf("%.2f%%", 100*float64(st.FlowEntries)/float64(st.FlowCapacity))
	}
	fmt.Fprintf(w, "%s  %s  up  flows %d of %d (%s), %d from peers\n", orDash(st.ID), d.Addr, st.FlowEntries, st.FlowCapacity, fill, st.FlowsByOrigin["peer"])

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tVIP\tPOLICY\tELIGIBLE\tNEW FLOWS/S\tFLOWS\tNEW FLOWS")
	for _, s := range st.Services {
		vip := fmt.Sprintf("%s %s:%d", s.Protocol, s.VIP, s.Port)
		if strings.Contains(s.VIP, ":") {
			vip = fmt.Sprintf("%s [%s]:%d", s.Protocol, s.VIP, s.Port)
		}
		el := strings.Join(s.Eligible, ",")
		if s.Fallback {
			el += " (fallback)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\n", s.Name, vip, orDash(s.Policy), orDash(el), rate(d.SvcRate, s.Name), s.ActiveFlows, s.NewFlows)
	}
	tw.Flush()

	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TM\tSTATE\tHEALTH\tWEIGHT\tFLOWS\tNEW FLOWS/S\tSHARE")
	health := healthByTM(st.Services)
	var total float64
	for _, t := range st.TrafficManagers {
		total += share(d, t)
	}
	for _, t := range st.TrafficManagers {
		state := t.State
		if !t.Ready {
			state += " (not ready: " + orDash(t.Reason) + ")"
		}
		sh := "-"
		if total > 0 {
			sh = fmt.Sprintf("%.1f%%", 100*share(d, t)/total)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\t%s\n", t.ID, state, orDash(health[t.ID]), t.Weight, t.ActiveFlows, rate(d.TMRate, t.ID), sh)
	}
	tw.Flush()

	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "  peers: none")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PEER\tID\tSTATE\tLAG\tMISSING\tRESYNCS\tLAST HEARD")
		for _, p := range st.Peers {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%d\t%d\t%s\n", p.Addr, p.ID, p.State, p.Lag, p.Missing, p.Resyncs, orDash(p.LastHeard))
		}
		tw.Flush()
	}
	switch b := d.BGP; {
	case !b.Available:
		fmt.Fprintln(w, "  bgp: not available")
	case b.Err != nil:
		fmt.Fprintf(w, "  bgp: %v\n", b.Err)
	default:
		fmt.Fprintf(w, "  bgp: %s\n", b.Summary)
	}
}

// share is what a TM's share is computed from: its new flows per second,
// or its new flows so far when there is no rate yet.
func share(d Dist, t api.TMStats) float64 {
	if d.TMRate != nil {
		return d.TMRate[t.ID]
	}
	return float64(t.NewFlows)
}

// healthByTM sums up each TM's health over the services that check it:
// "ok", "DOWN (service: error)", "unchecked", or "-" when no service checks
// it.
func healthByTM(svcs []api.ServiceStats) map[string]string {
	type agg struct {
		checked, down bool
		why           []string
	}
	m := map[string]*agg{}
	for _, s := range svcs {
		for _, h := range s.Health {
			a := m[h.TM]
			if a == nil {
				a = &agg{}
				m[h.TM] = a
			}
			a.checked = a.checked || h.Checked
			if !h.Healthy {
				a.down = true
				a.why = append(a.why, s.Name+": "+orDash(h.LastError))
			}
		}
	}
	out := map[string]string{}
	for _, s := range svcs {
		for _, id := range s.Eligible {
			out[id] = "-"
		}
	}
	for id, a := range m {
		switch {
		case a.down:
			slices.Sort(a.why)
			out[id] = "DOWN (" + strings.Join(a.why, "; ") + ")"
		case a.checked:
			out[id] = "ok"
		default:
			out[id] = "unchecked"
		}
	}
	return out
}

func rate(m map[string]float64, k string) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", m[k])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
