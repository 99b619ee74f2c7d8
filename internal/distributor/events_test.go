package distributor

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/datapath"
)

// TestFollowFlows: a follower gets the data path's events (read from the
// seam) and the sweeper's expirations with their reason; one that does not
// read loses events, counted, and told as a "lost" event.
func TestFollowFlows(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1]}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n", web, "timeouts: {tcp_close: 10}\n")
	h.now = 10000
	tm1 := uint16(h.index(t, "tm1"))
	k := key("10.9.0.1", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan api.FlowEvent, 16)
	done := make(chan error, 1)
	go func() {
		done <- h.d.FollowFlows(ctx, func(ev api.FlowEvent) error {
			got <- ev
			return nil
		})
	}()
	for !h.d.hub.any() {
		time.Sleep(time.Millisecond)
	}
	h.m.Events = append(h.m.Events, datapath.Event{Key: k, Time: h.now, Tm: tm1, Flags: datapath.FlowSelected,
		Type: datapath.EventState, TcpState: datapath.TCPEstablished | datapath.TCPReset})
	h.d.readEvents()
	ev := <-got
	if ev.Type != "state" || ev.TM != "tm1" || ev.TCPState != "reset" || ev.Src != "10.9.0.1:1" {
		t.Errorf("state event %+v", ev)
	}
	if len(h.m.Events) != 0 {
		t.Error("the events were not drained")
	}
	if err := h.m.PutFlow(k, datapath.Flow{LastSeen: h.now - 11, Tm: tm1, Flags: datapath.FlowSelected,
		TcpState: datapath.TCPEstablished | datapath.TCPReset}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.d.sweep(); err != nil {
		t.Fatal(err)
	}
	ev = <-got
	if ev.Type != "expired" || ev.Reason != "reset" || ev.Src != "10.9.0.1:1" {
		t.Errorf("expired event %+v", ev)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A follower that does not read: its buffer fills, the rest is lost
	// and counted, the publisher never blocks.
	f := &follower{ch: make(chan api.FlowEvent, 2)}
	h.d.hub.mu.Lock()
	h.d.hub.subs[f] = struct{}{}
	h.d.hub.mu.Unlock()
	for range 5 {
		h.d.hub.publish(api.FlowEvent{Type: "new"})
	}
	if len(f.ch) != 2 || f.lost != 3 {
		t.Errorf("slow follower: %d buffered, %d lost; want 2 and 3", len(f.ch), f.lost)
	}
	h.d.hub.mu.Lock()
	delete(h.d.hub.subs, f)
	h.d.hub.mu.Unlock()
}
