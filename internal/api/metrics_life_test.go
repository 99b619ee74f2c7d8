package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// lifeBackend's stats carry the flow-lifecycle figures.
type lifeBackend struct{ tableBackend }

func (b *lifeBackend) Stats() (Stats, error) {
	return Stats{ID: "t1", FlowEntries: 10, FlowCapacity: 65536, HalfOpenEntries: 4096, HalfOpenCapacity: 4096,
		FlowsByState:  map[string]uint64{"established": 7, "fin": 2, "udp": 1},
		FlowsByOrigin: map[string]uint64{"selected": 9, "learned": 1},
		Aged:          map[string]uint64{"reset": 3, "related": 1},
		LastSweep:     &SweepStats{Seconds: 0.25, Walked: 1000, Removed: 4},
		Counters:      []Counter{{Name: "half_open_refused_table_full", Packets: 99}}}, nil
}

func (b *lifeBackend) FollowFlows(context.Context, func(FlowEvent) error) error { return nil }

// TestLifecycleMetrics: the flow-lifecycle figures are exported.
func TestLifecycleMetrics(t *testing.T) {
	s := NewServer(&lifeBackend{}, logger(), ServerOptions{})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"switchyard_flow_table_capacity 65536",
		"switchyard_half_open_entries 4096",
		"switchyard_half_open_capacity 4096",
		`switchyard_flows_by_state{state="established"} 7`,
		`switchyard_flows_by_state{state="fin"} 2`,
		`switchyard_flows_by_origin{origin="learned"} 1`,
		`switchyard_flows_aged_total{reason="reset"} 3`,
		`switchyard_flows_aged_total{reason="related"} 1`,
		"switchyard_sweep_seconds 0.25",
		"switchyard_sweep_walked_entries 1000",
		`switchyard_packets_total{counter="half_open_refused_table_full"} 99`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
