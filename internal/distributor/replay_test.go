package distributor

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/signal"
)

// TestReplayStateAcrossRestart: a datagram applied before a restart is
// refused after it, as is anything up to the highest number accepted before;
// a newer one is applied. (Before, the window started empty and the old
// datagram was applied again.)
func TestReplayStateAcrossRestart(t *testing.T) {
	h, _, _ := newUDPHarness(t)
	dir := t.TempDir()
	path := replayFile(dir, "d1")
	open := func() *udpControl {
		t.Helper()
		st, err := openReplayStore(dir, path)
		if err != nil {
			t.Fatal(err)
		}
		return &udpControl{windows: map[string]*signal.ReplayWindow{}, store: st}
	}
	old := seal(t, 100, signal.Memorize{Key: udpKey})
	u := open()
	h.d.handleUDP(u, seal(t, 90, signal.Forget{Key: udpKey}))
	h.d.handleUDP(u, old)
	wantCounts(t, u, map[string]uint64{"udp_sig_forget": 1, cMemorize: 1})
	b, err := os.ReadFile(path)
	if err != nil || string(b) != replayHeader+"\ntm1 100\n" {
		t.Fatalf("replay state file: %q, %v", b, err)
	}

	// The daemon restarts (a fresh transport over the same state dir); the
	// flow is gone, as after a real restart.
	delete(h.m.Flows, udpFlowKey())
	u = open()
	h.d.handleUDP(u, old)
	h.d.handleUDP(u, seal(t, 99, signal.Memorize{Key: udpKey}))
	h.d.handleUDP(u, seal(t, 100-64, signal.Memorize{Key: udpKey}))
	wantCounts(t, u, map[string]uint64{"udp_refused_replay": 3})
	if _, ok := h.m.Flows[udpFlowKey()]; ok {
		t.Fatal("a replayed datagram was applied after the restart")
	}
	h.d.handleUDP(u, seal(t, 101, signal.Memorize{Key: udpKey}))
	wantCounts(t, u, map[string]uint64{"udp_refused_replay": 3, cMemorize: 1})
	if _, ok := h.m.Flows[udpFlowKey()]; !ok {
		t.Fatal("a new datagram was not applied after the restart")
	}
}

// TestReplayStateWriteFailure: when the state cannot be saved, the datagram
// is refused and nothing is applied.
func TestReplayStateWriteFailure(t *testing.T) {
	h, _, _ := newUDPHarness(t)
	dir := t.TempDir()
	st, err := openReplayStore(dir, replayFile(dir, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	u := &udpControl{windows: map[string]*signal.ReplayWindow{}, store: st}
	h.d.handleUDP(u, seal(t, 1, signal.Memorize{Key: udpKey}))
	wantCounts(t, u, map[string]uint64{udpRefusedState: 1})
	if _, ok := h.m.Flows[udpFlowKey()]; ok {
		t.Fatal("applied without saved replay state")
	}
}

// TestReplayStateFile: bad files are refused at start with what is wrong
// and where; good ones round-trip.
func TestReplayStateFile(t *testing.T) {
	for _, c := range []struct {
		in, err string
	}{
		{"", "empty"},
		{"switchyard-replay 2\n", `line 1: "switchyard-replay 2" is not`},
		{replayHeader + "\ntm1\n", `line 2: "tm1" is not "<tm id> <sequence number>"`},
		{replayHeader + "\nTM1 5\n", `line 2: "TM1 5" is not`},
		{replayHeader + "\ntm1 -5\n", "line 2: sequence number of tm1"},
		{replayHeader + "\ntm1 18446744073709551616\n", "value out of range"},
		{replayHeader + "\ntm1 5\ntm1 6\n", "line 3: tm1 listed twice"},
		{replayHeader + "\n" + strings.Repeat("x", maxReplayFile), "over 65536 bytes"},
	} {
		_, err := parseReplayState([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%.40q: error %v, want %q", c.in, err, c.err)
		}
	}
	want := map[string]uint64{"tm1": 1, "tm-2": 1<<64 - 1, "a_b": 0}
	got, err := parseReplayState(formatReplayState(want))
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("round trip: %v, %v", got, err)
	}

	// A file that does not parse stops the transport from starting.
	dir := t.TempDir()
	path := replayFile(dir, "d1")
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openReplayStore(dir, path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt state file: %v", err)
	}
	// A missing directory is created.
	sub := filepath.Join(dir, "new", "state")
	if _, err := openReplayStore(sub, replayFile(sub, "d1")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sub); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v %v", fi, err)
	}
}

// TestReplayStateBounded: ids of TMs no longer configured are kept until
// the file would hold more than maxReplayIDs, then dropped; the file stays
// readable (under maxReplayFile) with the longest ids and numbers.
func TestReplayStateBounded(t *testing.T) {
	dir := t.TempDir()
	path := replayFile(dir, "d1")
	st, err := openReplayStore(dir, path)
	if err != nil {
		t.Fatal(err)
	}
	st.configured = func(id string) bool { return id == "keep" }
	long := func(i int) string { return fmt.Sprintf("%032d", i) }
	all := map[string]uint64{"keep": 1}
	for i := range maxReplayIDs - 1 {
		all[long(i)] = 1<<64 - 1
	}
	if err := st.saveAll(all); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || len(b) > maxReplayFile {
		t.Fatalf("file of %d bytes (limit %d), %v", len(b), maxReplayFile, err)
	}
	if again, err := openReplayStore(dir, path); err != nil || len(again.saved) != maxReplayIDs {
		t.Fatalf("reopened: %d ids, %v", len(again.saved), err)
	}
	// One more id: the unconfigured ones go, the configured and the new stay.
	if err := st.save("new", 5); err != nil {
		t.Fatal(err)
	}
	again, err := openReplayStore(dir, path)
	if err != nil || len(again.saved) != 2 || again.saved["keep"] != 1 || again.saved["new"] != 5 {
		t.Fatalf("after pruning: %v, %v", again.saved, err)
	}
}

func FuzzReplayState(f *testing.F) {
	f.Add([]byte(replayHeader + "\ntm1 5\ntm2 18446744073709551615\n"))
	f.Add([]byte(replayHeader + "\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseReplayState(b)
		if err != nil {
			return
		}
		// What parses formats back to something that parses the same.
		again, err := parseReplayState(formatReplayState(got))
		if err != nil || !maps.Equal(got, again) {
			t.Fatalf("%q: reparsed %v, %v", b, again, err)
		}
	})
}

// BenchmarkReplaySave is the cost each accepted datagram pays to keep the
// replay state durable (write, fsync, rename, fsync of the directory) on the
// file system of the test's temporary directory.
func BenchmarkReplaySave(b *testing.B) {
	dir := b.TempDir()
	st, err := openReplayStore(dir, replayFile(dir, "d1"))
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		if err := st.save("tm1", uint64(i)+1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUDPBatchSavesOnce: a batch of datagrams is admitted, saved in one
// write with each TM's highest number, then applied; a replay inside the
// batch is refused.
func TestUDPBatchSavesOnce(t *testing.T) {
	h, _, _ := newUDPHarness(t)
	dir := t.TempDir()
	st, err := openReplayStore(dir, replayFile(dir, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	u := &udpControl{windows: map[string]*signal.ReplayWindow{}, store: st}
	a := seal(t, 7, signal.Memorize{Key: udpKey})
	h.d.handleUDPBatch(u, [][]byte{seal(t, 5, signal.Forget{Key: udpKey}), a, a, seal(t, 6, signal.Mirror{Key: udpKey})})
	wantCounts(t, u, map[string]uint64{"udp_sig_forget": 1, cMemorize: 1, "udp_refused_replay": 1, "udp_sig_mirror": 1})
	if hi, ok := st.highest("tm1"); !ok || hi != 7 {
		t.Fatalf("saved highest %d (%v), want 7", hi, ok)
	}
}

// BenchmarkUDPControl compares, in one run, applying UDP control datagrams
// one at a time (a durable replay-state write each) with applying them in
// batches of udpBatch, as readUDP does with a burst: datagrams/s of each and
// their ratio. The data path is the model, so the write dominates.
func BenchmarkUDPControl(b *testing.B) {
	y := baseConfig + "traffic_managers:\n" + udpTMs + "services:\n" + udpWeb
	cfg, err := config.Parse([]byte(y), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	res := &fakeResolver{macs: map[string]net.HardwareAddr{"tm1": tmMAC(1), "tm2": tmMAC(2)}}
	d, err := newDaemon(slog.New(slog.NewTextHandler(io.Discard, nil)), "", cfg, flow.NewModel(testRing, testServices, 0), res, testIfaces, func() uint32 { return 1000 })
	if err != nil {
		b.Fatal(err)
	}
	const n = 4 * udpBatch
	msgs := make([][]byte, 2*n)
	for i := range msgs {
		k := udpKey
		k.SrcPort = uint16(1000 + i)
		msgs[i], err = signal.SealUDP("tm1", signalKey, uint64(i+1), signal.Message{Ops: []signal.Op{signal.Memorize{Key: k}}})
		if err != nil {
			b.Fatal(err)
		}
	}
	var one, batched time.Duration
	for range b.N {
		dir := b.TempDir()
		st, err := openReplayStore(dir, replayFile(dir, "d1"))
		if err != nil {
			b.Fatal(err)
		}
		u := &udpControl{windows: map[string]*signal.ReplayWindow{}, store: st}
		start := time.Now()
		for _, m := range msgs[:n] {
			d.handleUDP(u, m)
		}
		one += time.Since(start)
		start = time.Now()
		for i := n; i < 2*n; i += udpBatch {
			d.handleUDPBatch(u, msgs[i:i+udpBatch])
		}
		batched += time.Since(start)
		if got := u.Counters()[cMemorize]; got != 2*n {
			b.Fatalf("%d applied, want %d (%v)", got, 2*n, u.Counters())
		}
	}
	total := float64(b.N * n)
	b.ReportMetric(total/one.Seconds(), "one-by-one-datagrams/s")
	b.ReportMetric(total/batched.Seconds(), "batched-datagrams/s")
	b.ReportMetric(one.Seconds()/batched.Seconds(), "batch-speedup")
}
