package mirror

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/netlab/lossy"
)

// lossyPair runs two peers on the loopback of a namespace of their own whose
// lo drops ppm per million UDP datagrams (a tc BPF program).
func lossyPair(t *testing.T, ppm uint32) (*node, *node, *lossy.Link) {
	labtest.Require(t)
	ns, err := netlab.NewNS(fmt.Sprintf("symirror%06x", rand.N(1<<24)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("close namespace: %v", err)
		}
	})
	var c1, c2 *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		if c1, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		c2, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lk, err := lossy.Attach(ns, "lo", ppm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lk.Close() })
	d1 := start(t, 1, c1, "", addrOf(c2))
	d2 := start(t, 2, c2, "", addrOf(c1))
	return d1, d2, lk
}

// TestLossyLinkConverges: with 5% of the sync datagrams dropped (both
// directions: updates, heartbeats, NACKs, resyncs) during a burst of 100,000
// new flows, the peer's table converges to the same contents.
func TestLossyLinkConverges(t *testing.T) {
	d1, d2, lk := lossyPair(t, 50_000)
	const n = 100_000
	d1.makeFlows(0, n, datapath.FlowSelected)
	eventually(t, 90*time.Second, "d2 converges to d1's table", func() (bool, string) { return same(d1, d2) })
	passed, dropped, err := lk.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if dropped == 0 || float64(dropped)/float64(passed+dropped) < 0.03 {
		t.Fatalf("the link dropped %d of %d datagrams: not the 5%% the test is about", dropped, passed+dropped)
	}
	c1, c2 := d1.m.Counters(), d2.m.Counters()
	t.Logf("link: %d datagrams passed, %d dropped (%.1f%%); d1 queued %d events, resent %d, resyncs %d; d2 NACKed %d, inserted %d",
		passed, dropped, 100*float64(dropped)/float64(passed+dropped), c1.EventsQueued, c1.Resent, c1.ResyncsSent, c2.NacksSent, c2.Inserted)
	if c1.EventsDropped != 0 {
		t.Logf("d1 dropped %d events from its queue (covered by the refresh walk)", c1.EventsDropped)
	}
}
