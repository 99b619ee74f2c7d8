package lab

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"strings"
	"time"
)

// The HTML report is one self-contained page: the text report's tables and
// checks, and plots drawn here as inline SVG (no script, no style sheet or
// font from elsewhere, no network).

// plot is one SVG chart: series of points over the run's time, with the
// scenario's events as vertical lines.
type plot struct {
	ID, Title, YLabel string
	W, H              int
	// Plot area inside the SVG.
	X0, Y0, X1, Y1 float64
	Series         []plotSeries
	Events         []plotEvent
	XTicks, YTicks []plotTick
}

type plotSeries struct {
	Name, Color string
	// Points is the polyline's points attribute ("x,y x,y …").
	Points string
	// LegendY is the legend entry's position.
	LegendY float64
}

type plotEvent struct {
	Label string
	X     float64
	// LabelY staggers the labels so that close events stay readable.
	LabelY float64
}

type plotTick struct {
	Label string
	Pos   float64
}

// palette colours the series in order.
var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// point is one value at a time of the run.
type point struct {
	at time.Duration
	v  float64
}

// newPlot lays out series (by name, in order) over [0, span] and yMax
// (0: from the data).
func newPlot(id, title, ylabel string, span time.Duration, yMax float64, names []string, data map[string][]point, events []Event) plot {
	p := plot{ID: id, Title: title, YLabel: ylabel, W: 760, H: 310, X0: 60, Y0: 30, X1: 600, Y1: 270}
	if span <= 0 {
		span = time.Second
	}
	if yMax <= 0 {
		for _, pts := range data {
			for _, pt := range pts {
				yMax = math.Max(yMax, pt.v)
			}
		}
		yMax = niceCeil(yMax)
	}
	x := func(at time.Duration) float64 {
		return p.X0 + (p.X1-p.X0)*math.Min(1, math.Max(0, at.Seconds()/span.Seconds()))
	}
	y := func(v float64) float64 { return p.Y1 - (p.Y1-p.Y0)*math.Min(1, math.Max(0, v/yMax)) }
	for i, name := range names {
		var b strings.Builder
		for j, pt := range data[name] {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(pt.at), y(pt.v))
		}
		p.Series = append(p.Series, plotSeries{Name: name, Color: palette[i%len(palette)], Points: b.String(), LegendY: p.Y0 + 10 + 18*float64(i)})
	}
	for i, e := range events {
		p.Events = append(p.Events, plotEvent{Label: e.Label, X: x(e.At), LabelY: p.Y0 + 10 + 12*float64(i%4)})
	}
	for k := 0; k <= 5; k++ {
		at := time.Duration(float64(span) * float64(k) / 5)
		p.XTicks = append(p.XTicks, plotTick{Label: fmt.Sprintf("%.0fs", at.Seconds()), Pos: x(at)})
		v := yMax * float64(k) / 4
		if k <= 4 {
			p.YTicks = append(p.YTicks, plotTick{Label: trimFloat(v), Pos: y(v)})
		}
	}
	return p
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// plots builds the report's four charts from the timeline.
func (r *Result) plots() []plot {
	tl := r.Timeline
	var span time.Duration
	if n := len(tl.Samples); n > 0 {
		span = tl.Samples[n-1].At
	}
	if r.Load.Elapsed > span {
		span = r.Load.Elapsed
	}
	share := map[string][]point{}
	lat := map[string][]point{}
	fillPct := map[string][]point{}
	load := map[string][]point{}
	for _, s := range tl.Samples {
		if s.NewFlows != nil {
			var sum uint64
			for _, n := range s.NewFlows {
				sum += n
			}
			if sum > 0 {
				for _, id := range tl.TMs {
					share[id] = append(share[id], point{s.At, 100 * float64(s.NewFlows[id]) / float64(sum)})
				}
			}
		}
		if s.Requests > 0 {
			lat["p50"] = append(lat["p50"], point{s.At, float64(s.P50) / float64(time.Millisecond)})
			lat["p99"] = append(lat["p99"], point{s.At, float64(s.P99) / float64(time.Millisecond)})
		}
		for _, d := range s.Dist {
			var f, l float64
			if d.Up && d.FlowCapacity > 0 {
				f = 100 * float64(d.FlowEntries) / float64(d.FlowCapacity)
			}
			if d.Up {
				l = d.NewPerSec
			}
			fillPct[d.Name] = append(fillPct[d.Name], point{s.At, f})
			load[d.Name] = append(load[d.Name], point{s.At, l})
		}
	}
	return []plot{
		newPlot("share", "Share of new flows per TM (%, each second)", "% of new flows", span, 100, tl.TMs, share, tl.Events),
		newPlot("latency", "HTTP latency percentiles (ms, each second)", "ms", span, 0, []string{"p50", "p99"}, lat, tl.Events),
		newPlot("fill", "Flow-table fill per distributor (% of capacity)", "% full", span, 0, tl.Distributors, fillPct, tl.Events),
		newPlot("load", "Load per distributor (new flows/s)", "new flows/s", span, 0, tl.Distributors, load, tl.Events),
	}
}

var htmlReport = template.Must(template.New("report").Funcs(template.FuncMap{
	"sub": func(a, b float64) float64 { return a - b },
	"add": func(a, b float64) float64 { return a + b },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchyard lab report: {{if .Pass}}PASS{{else}}FAIL{{end}}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.pass { color: #2a7d2a; } .fail { color: #c0392b; }
svg { background: #fff; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
svg text { font-size: 11px; font-family: sans-serif; }
td, th { padding: 0.2em 0.8em; text-align: left; }
</style>
</head>
<body>
<h1>Switchyard lab: <span class="{{if .Pass}}pass{{else}}fail{{end}}">{{if .Pass}}PASS{{else}}FAIL{{end}}</span></h1>
<h2>Checks</h2>
<table>
{{range .Checks}}<tr><td class="{{if .OK}}pass{{else}}fail{{end}}">{{if .OK}}PASS{{else}}FAIL{{end}}</td><td>{{.Name}}</td><td>{{.Detail}}</td></tr>
{{end}}</table>
<h2>Plots</h2>
{{range .Plots}}<h3>{{.Title}}</h3>
<svg id="{{.ID}}" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}">
<g class="axes" stroke="#888" fill="none">
<line x1="{{.X0}}" y1="{{.Y1}}" x2="{{.X1}}" y2="{{.Y1}}"/>
<line x1="{{.X0}}" y1="{{.Y0}}" x2="{{.X0}}" y2="{{.Y1}}"/>
</g>
{{$p := .}}{{range .XTicks}}<text class="xtick" x="{{.Pos}}" y="{{add $p.Y1 14}}" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .YTicks}}<text class="ytick" x="{{sub $p.X0 4}}" y="{{.Pos}}" text-anchor="end">{{.Label}}</text>
<line x1="{{$p.X0}}" y1="{{.Pos}}" x2="{{$p.X1}}" y2="{{.Pos}}" stroke="#eee"/>
{{end}}<text x="{{.X0}}" y="{{sub .Y0 14}}" class="ylabel">{{.YLabel}}</text>
{{range .Events}}<g class="event" data-label="{{.Label}}"><line x1="{{.X}}" y1="{{$p.Y0}}" x2="{{.X}}" y2="{{$p.Y1}}" stroke="#999" stroke-dasharray="4 3"/><text x="{{add .X 3}}" y="{{.LabelY}}">{{.Label}}</text></g>
{{end}}{{range .Series}}<g class="series" data-name="{{.Name}}"><polyline fill="none" stroke="{{.Color}}" stroke-width="1.5" points="{{.Points}}"/><rect x="{{add $p.X1 20}}" y="{{sub .LegendY 9}}" width="12" height="10" fill="{{.Color}}"/><text x="{{add $p.X1 36}}" y="{{.LegendY}}">{{.Name}}</text></g>
{{end}}</svg>
{{end}}
<h2>Report</h2>
<pre>{{.Text}}</pre>
</body>
</html>
`))

// WriteHTML writes the report as one self-contained HTML page.
func (r *Result) WriteHTML(w io.Writer, o LabOptions) error {
	var text bytes.Buffer
	r.print(&text, o)
	return htmlReport.Execute(w, struct {
		Pass   bool
		Checks []Check
		Plots  []plot
		Text   string
	}{r.Pass, r.Checks, r.plots(), text.String()})
}

// WriteHTMLFile writes the HTML report to path.
func (r *Result) WriteHTMLFile(path string, o LabOptions) error {
	var b bytes.Buffer
	if err := r.WriteHTML(&b, o); err != nil {
		return fmt.Errorf("HTML report: %w", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("HTML report: %w", err)
	}
	return nil
}
