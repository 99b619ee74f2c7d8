package lab

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// htmlResult is a judged result with a timeline of 10 samples: tm1..tm3,
// d1 killed at 6s and back at 8s.
func htmlResult() Result {
	r := judged(goodRun())
	tl := Timeline{TMs: []string{"tm1", "tm2", "tm3"}, Distributors: []string{"d1", "d2"},
		Events: []Event{{At: 3 * time.Second, Label: "tm4 added"}, {At: 6 * time.Second, Label: "d1 killed"}, {At: 8 * time.Second, Label: "d1 back"}}}
	for i := 1; i <= 10; i++ {
		up := i < 6 || i >= 8
		s := Sample{At: time.Duration(i) * time.Second, NewFlows: map[string]uint64{"tm1": 10, "tm2": 10, "tm3": 20},
			P50: time.Millisecond, P99: time.Duration(i) * time.Millisecond, Requests: 100,
			Dist: []DistSample{{Name: "d1", Up: up, FlowEntries: uint64(100 * i), FlowCapacity: 10000, NewPerSec: 20},
				{Name: "d2", Up: true, FlowEntries: uint64(100 * i), FlowCapacity: 10000, NewPerSec: 20}}}
		if !up {
			s.Dist[0] = DistSample{Name: "d1"}
		}
		tl.Samples = append(tl.Samples, s)
	}
	r.Timeline = tl
	return r
}

// svgPlot is what the test reads back from one <svg>.
type svgPlot struct {
	series map[string][][2]float64 // name → points
	events []string                // labels of the vertical lines
	lines  int                     // event lines
}

// parseReport parses the page and returns its plots by id, and every
// attribute value that names a URL-like reference.
func parseReport(t *testing.T, page []byte) (map[string]*svgPlot, []string) {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	plots := map[string]*svgPlot{}
	var refs []string
	attr := func(n *html.Node, key string) string {
		for _, a := range n.Attr {
			if a.Key == key {
				return a.Val
			}
		}
		return ""
	}
	var cur *svgPlot
	var walk func(n *html.Node, group, event string)
	walk = func(n *html.Node, group, event string) {
		if n.Type == html.ElementNode {
			for _, a := range n.Attr {
				switch strings.ToLower(a.Key) {
				case "src", "href", "xlink:href", "action", "data", "poster", "xmlns", "srcset":
					refs = append(refs, a.Key+"="+a.Val)
				}
				if strings.Contains(strings.ToLower(a.Val), "url(") || strings.Contains(a.Val, "//") {
					refs = append(refs, a.Key+"="+a.Val)
				}
			}
			switch n.Data {
			case "script", "link", "iframe", "img", "object", "embed", "image", "use":
				refs = append(refs, "<"+n.Data+">")
			case "style":
				if n.FirstChild != nil && (strings.Contains(n.FirstChild.Data, "url(") || strings.Contains(n.FirstChild.Data, "@import")) {
					refs = append(refs, "style: "+n.FirstChild.Data)
				}
			case "svg":
				cur = &svgPlot{series: map[string][][2]float64{}}
				plots[attr(n, "id")] = cur
			case "g":
				switch attr(n, "class") {
				case "series":
					group = attr(n, "data-name")
				case "event":
					event = attr(n, "data-label")
				}
			case "polyline":
				var pts [][2]float64
				for _, f := range strings.Fields(attr(n, "points")) {
					x, y, ok := strings.Cut(f, ",")
					fx, err1 := strconv.ParseFloat(x, 64)
					fy, err2 := strconv.ParseFloat(y, 64)
					if !ok || err1 != nil || err2 != nil {
						t.Fatalf("bad point %q in series %s", f, group)
					}
					pts = append(pts, [2]float64{fx, fy})
				}
				cur.series[group] = pts
			case "line":
				if event != "" {
					cur.lines++
					cur.events = append(cur.events, event)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, group, event)
		}
	}
	walk(doc, "", "")
	return plots, refs
}

// TestHTMLReport: the page has the four plots, each with the series of the
// timeline (one point per sample that has the value) and a vertical line
// per event, the checks, and no reference to anything outside the page.
func TestHTMLReport(t *testing.T) {
	r := htmlResult()
	var b bytes.Buffer
	if err := r.WriteHTML(&b, LabOptions{}); err != nil {
		t.Fatal(err)
	}
	page := b.Bytes()
	plots, refs := parseReport(t, page)
	if len(refs) != 0 {
		t.Errorf("references outside the page: %q", refs)
	}
	wantSeries := map[string][]string{
		"share":   r.Timeline.TMs,
		"latency": {"p50", "p99"},
		"fill":    r.Timeline.Distributors,
		"load":    r.Timeline.Distributors,
	}
	var labels []string
	for _, e := range r.Timeline.Events {
		labels = append(labels, e.Label)
	}
	for id, names := range wantSeries {
		p := plots[id]
		if p == nil {
			t.Errorf("no plot %q; plots: %v", id, plots)
			continue
		}
		var got []string
		for n := range p.series {
			got = append(got, n)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(names))
		if !slices.Equal(got, want) {
			t.Errorf("plot %s: series %v, want %v", id, got, want)
		}
		for _, n := range names {
			if len(p.series[n]) != len(r.Timeline.Samples) {
				t.Errorf("plot %s series %s: %d points, want %d", id, n, len(p.series[n]), len(r.Timeline.Samples))
			}
		}
		if !slices.Equal(p.events, labels) || p.lines != len(labels) {
			t.Errorf("plot %s: event lines %v (%d), want %v", id, p.events, p.lines, labels)
		}
	}
	// The values are where they should be: tm3 has half the new flows, so
	// its share line sits at 50% (the middle of the plot area), tm1's at
	// 25%; d1's load is 0 while it was down.
	pl := newPlot("", "", "", time.Second, 1, nil, nil, nil)
	mid := pl.Y1 - (pl.Y1-pl.Y0)*0.5
	quarter := pl.Y1 - (pl.Y1-pl.Y0)*0.25
	for i, pt := range plots["share"].series["tm3"] {
		if abs(pt[1]-mid) > 0.1 {
			t.Errorf("tm3 share point %d at y %.1f, want %.1f (50%%)", i, pt[1], mid)
		}
	}
	for i, pt := range plots["share"].series["tm1"] {
		if abs(pt[1]-quarter) > 0.1 {
			t.Errorf("tm1 share point %d at y %.1f, want %.1f (25%%)", i, pt[1], quarter)
		}
	}
	for i, pt := range plots["load"].series["d1"] {
		down := i+1 >= 6 && i+1 < 8
		if (pt[1] == pl.Y1) != down {
			t.Errorf("d1 load point %d (second %d) at y %.1f: down=%v", i, i+1, pt[1], down)
		}
	}
	// The checks are on the page, with their verdicts.
	for _, c := range r.Checks {
		if !bytes.Contains(page, []byte(html.EscapeString(c.Name))) {
			t.Errorf("check %q not on the page", c.Name)
		}
	}
	if !bytes.Contains(page, []byte("<title>Switchyard lab report: PASS</title>")) {
		t.Error("title does not say PASS")
	}
}

// TestHTMLReportEscapes: a label with markup stays text.
func TestHTMLReportEscapes(t *testing.T) {
	r := htmlResult()
	r.Timeline.Events = append(r.Timeline.Events, Event{At: 9 * time.Second, Label: `<script src="http://x/">`})
	r.Timeline.TMs = append(r.Timeline.TMs, `"><img src=//x>`)
	var b bytes.Buffer
	if err := r.WriteHTML(&b, LabOptions{}); err != nil {
		t.Fatal(err)
	}
	plots, refs := parseReport(t, b.Bytes())
	// The labels are in attributes and text only (escaped), so the only
	// "references" are the data-label / data-name values holding them.
	for _, ref := range refs {
		if !strings.HasPrefix(ref, "data-") {
			t.Errorf("markup from a label became a reference: %q", ref)
		}
	}
	if got := plots["share"].events; len(got) != 4 || got[3] != `<script src="http://x/">` {
		t.Errorf("event labels %q", got)
	}
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func ExampleResult_WriteHTML() {
	r := htmlResult()
	var b bytes.Buffer
	_ = r.WriteHTML(&b, LabOptions{})
	fmt.Println(bytes.Count(b.Bytes(), []byte("<svg ")))
	// Output: 4
}
