package top

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/switchyard/switchyard/internal/api"
)

// fixedFrame has an up distributor seen twice (rates), with a TM down by
// health, a draining and a not-ready one, a peer, and BGP available; a
// distributor that is down; one without BGP on its first frame.
func fixedFrame() Frame {
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	st := api.Stats{
		ID: "d1", FlowEntries: 2500, FlowCapacity: 1000000, FlowsByOrigin: map[string]uint64{"selected": 1300, "peer": 1200},
		Services: []api.ServiceStats{
			{Name: "web", VIP: "10.0.0.100", Port: 80, Protocol: "tcp", Policy: "maglev", Eligible: []string{"tm1", "tm3"},
				NewFlows: 900, ActiveFlows: 2000,
				Health: []api.HealthState{{TM: "tm1", Healthy: true, Checked: true}, {TM: "tm3", Healthy: false, Checked: true, LastError: "connection refused"}}},
			{Name: "web6", VIP: "fd00:100::100", Port: 80, Protocol: "tcp", Policy: "round-robin", Eligible: []string{"tm1"}, Fallback: true, NewFlows: 100, ActiveFlows: 500},
		},
		TrafficManagers: []api.TMStats{
			{ID: "tm1", State: "active", Weight: 1, Ready: true, NewFlows: 600, ActiveFlows: 1500},
			{ID: "tm2", State: "draining", Weight: 1, Ready: true, NewFlows: 100, ActiveFlows: 300},
			{ID: "tm3", State: "active", Weight: 2, Ready: false, Reason: "no MAC", NewFlows: 300, ActiveFlows: 700},
		},
		Peers: []api.PeerStats{{Addr: "10.1.0.2:7947", ID: 2, State: "synced", Lag: 3, LastHeard: "2026-12-01T07:59:59Z"}},
	}
	return Frame{At: at, Dists: []Dist{
		{Addr: "unix:/run/switchyard/d1.sock", Stats: st, BGP: BGP{Available: true, Summary: `{"sessions":[]}`},
			SvcRate: map[string]float64{"web": 120.4, "web6": 9.6}, TMRate: map[string]float64{"tm1": 90, "tm2": 0, "tm3": 30}},
		{Addr: "10.9.9.9:9900", Err: errors.New("connection refused")},
		{Addr: "unix:/run/switchyard/d3.sock", Stats: api.Stats{ID: "d3", TrafficManagers: []api.TMStats{{ID: "tm1", State: "active", Weight: 1, Ready: true, NewFlows: 10}}}},
	}}
}

const fixedWant = `switchyard top  2026-12-01 08:00:00 UTC  3 distributor(s), 1 down

d1  unix:/run/switchyard/d1.sock  up  flows 2500 of 1000000 (0.25%), 1200 from peers
  SERVICE  VIP                     POLICY       ELIGIBLE        NEW FLOWS/S  FLOWS  NEW FLOWS
  web      tcp 10.0.0.100:80       maglev       tm1,tm3         120          2000   900
  web6     tcp [fd00:100::100]:80  round-robin  tm1 (fallback)  10           500    100
  TM   STATE                       HEALTH                          WEIGHT  FLOWS  NEW FLOWS/S  SHARE
  tm1  active                      ok                              1       1500   90           75.0%
  tm2  draining                    -                               1       300    0            0.0%
  tm3  active (not ready: no MAC)  DOWN (web: connection refused)  2       700    30           25.0%
  PEER           ID  STATE   LAG  MISSING  RESYNCS  LAST HEARD
  10.1.0.2:7947  2   synced  3    0        0        2026-12-01T07:59:59Z
  bgp: {"sessions":[]}

10.9.9.9:9900  DOWN: connection refused

d3  unix:/run/switchyard/d3.sock  up  flows 0 of 0 (-), 0 from peers
  SERVICE  VIP  POLICY  ELIGIBLE  NEW FLOWS/S  FLOWS  NEW FLOWS
  TM   STATE   HEALTH  WEIGHT  FLOWS  NEW FLOWS/S  SHARE
  tm1  active  -       1       0      -            100.0%
  peers: none
  bgp: not available
`

// TestRender: the frame's layout from fixed input, line by line.
func TestRender(t *testing.T) {
	var b bytes.Buffer
	Render(&b, fixedFrame())
	got, want := strings.Split(b.String(), "\n"), strings.Split(fixedWant, "\n")
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("line %d:\n got %q\nwant %q", i+1, g, w)
		}
	}
}

// TestRates: rates between two frames; a counter that went back (a
// restart) gives no rates.
func TestRates(t *testing.T) {
	r := rates(map[string]uint64{"a": 10, "b": 5}, map[string]uint64{"a": 30, "b": 5, "c": 4}, 2*time.Second)
	if r["a"] != 10 || r["b"] != 0 || r["c"] != 2 {
		t.Errorf("rates %v", r)
	}
	if r := rates(map[string]uint64{"a": 10}, map[string]uint64{"a": 3}, time.Second); r != nil {
		t.Errorf("rates after a restart: %v, want none", r)
	}
	if r := rates(nil, map[string]uint64{"a": 3}, 0); r != nil {
		t.Errorf("rates over no time: %v", r)
	}
}

// TestFetchUnreachable: a distributor that is not there is in the frame
// as down, with the error, and the fetch does not wait for it beyond the
// timeout.
func TestFetchUnreachable(t *testing.T) {
	sock := "unix:" + filepath.Join(t.TempDir(), "none.sock")
	w := &Watcher{Sources: []Source{{Addr: sock, Client: api.NewClient(sock)}}, Timeout: time.Second}
	f := w.Fetch(context.Background())
	if len(f.Dists) != 1 || f.Dists[0].Err == nil || f.Dists[0].Addr != sock {
		t.Fatalf("frame %+v", f)
	}
	var b bytes.Buffer
	Render(&b, f)
	if !strings.Contains(b.String(), sock+"  DOWN: ") || !strings.Contains(b.String(), "1 distributor(s), 1 down") {
		t.Errorf("frame:\n%s", b.String())
	}
}

// FuzzSummarize: whatever the BGP endpoint answers, its line is bounded
// and valid UTF-8.
func FuzzSummarize(f *testing.F) {
	f.Add([]byte(`{"sessions":[{"peer":"10.0.1.250","state":"established"}]}`))
	f.Add([]byte(`[1, 2, 3]`))
	f.Add([]byte(`"` + strings.Repeat("é", 300) + `"`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := summarize(raw)
		if len(s) > maxBGPSummary+len("…") {
			t.Fatalf("summary of %d bytes", len(s))
		}
		if !utf8.ValidString(s) {
			t.Fatalf("summary not UTF-8: %q", s)
		}
	})
}
