package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/api"
)

// statsBackend answers the stats command; its table is empty.
type statsBackend struct{ reloads int }

func (b *statsBackend) Status() api.Status { return api.Status{ID: "d9"} }
func (b *statsBackend) Stats() (api.Stats, error) {
	return api.Stats{ID: "d9", FlowEntries: 7, FlowCapacity: 100}, nil
}
func (b *statsBackend) WalkFlows(api.FlowFilter, func(api.Flow) bool) error { return nil }

// FollowFlows sends one event of each kind.
func (b *statsBackend) FollowFlows(_ context.Context, fn func(api.FlowEvent) error) error {
	for _, ev := range []api.FlowEvent{
		{Type: "new", Proto: "tcp", Src: "10.0.1.11:40000", Dst: "10.0.0.100:80", TM: "tm1", Origin: []string{"selected"}, TCPState: "established"},
		{Type: "expired", Proto: "udp", Src: "10.0.1.11:5353", Dst: "10.0.0.100:53", TM: "tm2", Origin: []string{"selected"}, Reason: "udp"},
		{Type: "lost", Lost: 3},
	} {
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}
func (b *statsBackend) Reload() error { b.reloads++; return nil }

// runCmd runs a root command line and returns its output and error.
func runCmd(args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestClientsTokenFile: stats and reload against a loopback TCP API need the
// token, from --token-file or SWITCHYARD_API_TOKEN_FILE.
func TestClientsTokenFile(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "api.token")
	if err := os.WriteFile(tokFile, []byte("t0ken-for-cli\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &statsBackend{}
	s := api.NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)), api.ServerOptions{Token: "t0ken-for-cli"})
	l, err := api.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	addr := l.Addr().String()

	t.Setenv(tokenEnv, "")
	if _, err := runCmd("stats", "--api", addr); err == nil || !strings.Contains(err.Error(), "bearer token") {
		t.Errorf("stats without a token: %v", err)
	}
	if _, err := runCmd("reload", "--api", addr); err == nil || b.reloads != 0 {
		t.Errorf("reload without a token: %v, %d reloads", err, b.reloads)
	}
	out, err := runCmd("stats", "--api", addr, "--token-file", tokFile)
	if err != nil || !strings.Contains(out, "distributor d9: 7 flow entries") {
		t.Errorf("stats --token-file: %v\n%s", err, out)
	}
	// flows --follow prints each event on a line (the fake stream ends
	// after three).
	out, err = runCmd("flows", "--follow", "--api", addr, "--token-file", tokFile)
	if err != nil || !strings.Contains(out, "new      tcp 10.0.1.11:40000 -> 10.0.0.100:80 vlan 0 tm tm1 origin selected tcp established") ||
		!strings.Contains(out, "expired  udp") || !strings.Contains(out, "lost 3 events") {
		t.Errorf("flows --follow: %v\n%s", err, out)
	}
	t.Setenv(tokenEnv, tokFile)
	if out, err := runCmd("reload", "--api", addr); err != nil || b.reloads != 1 || !strings.Contains(out, "reloaded") {
		t.Errorf("reload with $%s: %v, %d reloads, %q", tokenEnv, err, b.reloads, out)
	}
	// A token file others can read is refused before anything is sent.
	if err := os.Chmod(tokFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd("stats", "--api", addr); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable token file: %v", err)
	}
}

// TestPrintHealth: switchyard stats shows each checked TM's health and a
// service on its fallback pool; nothing when no service is checked.
func TestPrintHealth(t *testing.T) {
	var b strings.Builder
	printHealth(&b, api.Stats{Services: []api.ServiceStats{{Name: "web"}}})
	if b.Len() != 0 {
		t.Fatalf("no checks, yet printed %q", b.String())
	}
	printHealth(&b, api.Stats{Services: []api.ServiceStats{
		{Name: "web", Health: []api.HealthState{{TM: "tm1", Healthy: false, Checked: true, LastError: "connection refused", Changes: 1}, {TM: "tm2", Healthy: true, RTTSeconds: 0.002}}},
		{Name: "dns", Fallback: true},
	}})
	out := b.String()
	for _, want := range []string{"HEALTH", "tm1", "UNHEALTHY", "connection refused", "healthy (unchecked)", "2.0ms", "dns", "fallback pool"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
