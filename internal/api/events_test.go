package api

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFollowFlows: events stream to the client as they come, the stream
// counts against the flow streams' limit, and ends when the client goes.
func TestFollowFlows(t *testing.T) {
	b := &tableBackend{n: 5}
	s := NewServer(b, logger(), ServerOptions{MaxFlowStreams: 1})
	path := serveUnix(t, s)
	c := NewClient("unix:" + path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []FlowEvent
	errEnough := errors.New("enough")
	err := c.FollowFlows(ctx, func(ev FlowEvent) error {
		got = append(got, ev)
		if len(got) == 5 {
			// While it is open, a second stream is refused (limit 1).
			if err := c.Flows(ctx, FlowFilter{}, func(Flow) error { return nil }); err == nil {
				t.Error("a second stream past the limit was served")
			}
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) || len(got) != 5 || got[4].Src != "10.0.0.1:1028" || got[0].Type != "new" {
		t.Fatalf("events %+v, err %v", got, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.FlowStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream stayed open after the client went")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
