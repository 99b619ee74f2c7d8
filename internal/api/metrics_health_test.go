package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// healthBackend's stats carry a service's health checks.
type healthBackend struct{ tableBackend }

func (b *healthBackend) Stats() (Stats, error) {
	return Stats{ID: "t1", Services: []ServiceStats{
		{Name: "web", Eligible: []string{"tm2"}, Health: []HealthState{
			{TM: "tm1", Healthy: false, Checked: true, LastError: "refused", Changes: 3},
			{TM: "tm2", Healthy: true, Checked: true, RTTSeconds: 0.0015, Changes: 0},
		}},
		{Name: "dns", Fallback: true},
	}}, nil
}

func (b *healthBackend) FollowFlows(context.Context, func(FlowEvent) error) error { return nil }

// TestHealthMetrics: each checked TM's health, changes and probe time, and
// each service's fallback state, are exported.
func TestHealthMetrics(t *testing.T) {
	s := NewServer(&healthBackend{}, logger(), ServerOptions{})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`switchyard_tm_healthy{service="web",tm="tm1"} 0`,
		`switchyard_tm_healthy{service="web",tm="tm2"} 1`,
		`switchyard_tm_health_changes_total{service="web",tm="tm1"} 3`,
		`switchyard_tm_health_rtt_seconds{service="web",tm="tm2"} 0.0015`,
		`switchyard_service_fallback{service="dns"} 1`,
		`switchyard_service_fallback{service="web"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
