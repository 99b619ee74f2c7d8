package config

import (
	"strings"
	"testing"
)

// TestServiceTimeouts: a service's own timeouts override the global ones
// field by field; an out-of-range one is refused with its path.
func TestServiceTimeouts(t *testing.T) {
	c, err := Parse([]byte(minimal+"    timeouts: {tcp: 3600, tcp_syn: 5}\ntimeouts: {tcp_syn: 20, udp: 100}\n"), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Services[0].Timeouts.Apply(c.Timeouts)
	want := c.Timeouts
	want.TCP, want.TCPSyn = 3600, 5
	if got != want {
		t.Errorf("service timeouts %+v, want %+v", got, want)
	}
	var none *ServiceTimeouts
	if none.Apply(c.Timeouts) != c.Timeouts {
		t.Error("no service timeouts changed the global ones")
	}
	_, err = Parse([]byte(minimal+"    timeouts: {tcp_fin: 604801}\n"), "config.yaml")
	if err == nil || !strings.Contains(err.Error(), "services[0].timeouts.tcp_fin") || !strings.Contains(err.Error(), "604801") {
		t.Errorf("an out-of-range service timeout: %v", err)
	}
	_, err = Parse([]byte(minimal+"    timeouts: {second_key: 5}\n"), "config.yaml")
	if err == nil || !strings.Contains(err.Error(), "second_key") {
		t.Errorf("second_key in a service's timeouts: %v", err)
	}
}
