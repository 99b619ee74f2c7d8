package mirror

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// startCfg runs a mirror with id on conn, peering with peers, with mut
// applied to its config.
func startCfg(t testing.TB, id uint32, conn *net.UDPConn, mut func(*Config), peers ...netip.AddrPort) *node {
	t.Helper()
	model := flow.NewModel(7, 1, 0)
	model.Now = 1000
	cfg := Config{ID: id, Key: testKey, Conn: conn, Peers: peers, Tables: model, Heartbeat: 20 * time.Millisecond}
	mut(&cfg)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{m: m, model: model, addr: addrOf(conn), stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- m.Run(ctx) }()
	t.Cleanup(n.close)
	return n
}

// newFlows has n's data path make flows [from, to) now, reported with
// their time.
func (n *node) newFlows(from, to int, flags uint16) {
	for i := from; i < to; i++ {
		k := testFlowKey(i)
		var now uint32
		n.m.Do(func(t datapath.Tables) {
			now = n.model.Now
			_ = t.InsertFlow(k, datapath.Flow{LastSeen: now, Tm: uint16(i % 3), Flags: flags, TcpState: datapath.TCPSynSeen})
		})
		n.m.Offer(datapath.Event{Key: k, Type: datapath.EventNew, Flags: flags, Time: now})
	}
}

func (n *node) count() (c int) {
	n.m.Do(func(datapath.Tables) { c = len(n.model.Flows) })
	return c
}

// TestMirrorOlder: with MirrorOlder and a minimum age of 2 s, d1's new
// flows are not sent (nor their state changes); those a TM asked to mirror
// are, at once; those that end young (expire, or have a FIN when they come
// of age) never are; the others are sent once d1's clock has moved 2 s
// past their birth.
func TestMirrorOlder(t *testing.T) {
	c1, c2 := listen(t), listen(t)
	d1 := startCfg(t, 1, c1, func(c *Config) { c.Policy, c.MinAge = MirrorOlder, 2*time.Second }, addrOf(c2))
	d2 := start(t, 2, c2, "", addrOf(c1))
	if _, err := New(Config{Conn: c1, Tables: d1.model, Key: testKey, Policy: MirrorOlder, MinAge: time.Millisecond}); err == nil {
		t.Fatal("MirrorOlder with a minimum age under 1 s accepted")
	}
	d1.newFlows(0, 100, datapath.FlowSelected)
	d1.newFlows(100, 110, datapath.FlowSelected|datapath.FlowMirror)
	d1.newFlows(110, 120, datapath.FlowSelected)
	for i := 0; i < 50; i++ { // a state change of a young flow
		k := testFlowKey(i)
		d1.m.Offer(datapath.Event{Key: k, Type: datapath.EventState, Time: 1001, TcpState: datapath.TCPEstablished})
	}
	for i := 110; i < 120; i++ { // flows that end young
		k := testFlowKey(i)
		d1.m.Do(func(t datapath.Tables) { _ = t.DeleteFlow(k) })
		d1.m.Offer(datapath.Event{Key: k, Type: datapath.EventExpired, Time: 1001})
	}
	eventually(t, 10*time.Second, "the 10 flows a TM asked to mirror", func() (bool, string) {
		n := d2.count()
		return n == 10, fmt.Sprintf("%d entries on d2", n)
	})
	time.Sleep(200 * time.Millisecond) // 10 heartbeats: nothing young may follow
	if n := d2.count(); n != 10 {
		t.Fatalf("%d entries on d2 before any flow came of age, want the 10 signalled", n)
	}
	if c := d1.m.Counters(); c.OlderWaiting != 100 || c.OlderEndedYoung != 10 || c.OlderPromoted != 0 {
		t.Fatalf("d1 counters before coming of age: %+v", c)
	}
	// Flow 99 ends (a FIN) before it comes of age: it is not sent.
	d1.m.Do(func(t datapath.Tables) {
		f, _ := t.LookupFlow(testFlowKey(99))
		f.TcpState |= datapath.TCPFinFwd
		_ = t.UpdateFlow(testFlowKey(99), f)
	})
	d1.m.Do(func(datapath.Tables) { d1.model.Now = 1002 })
	eventually(t, 10*time.Second, "the 99 flows that came of age", func() (bool, string) {
		n := d2.count()
		return n == 109, fmt.Sprintf("%d entries on d2", n)
	})
	d2.m.Do(func(datapath.Tables) {
		for i := 99; i < 120; i++ {
			if _, ok := d2.model.Flows[testFlowKey(i)]; ok && (i < 100 || i >= 110) {
				t.Errorf("flow %d ended young on d1 but reached d2", i)
			}
		}
	})
	if c := d1.m.Counters(); c.OlderWaiting != 0 || c.OlderPromoted != 99 || c.OlderEndedYoung != 11 || c.OlderOverflow != 0 {
		t.Fatalf("d1 counters after: %+v", c)
	}
}

// TestYouthBounded: the young flows waiting are bounded; past the bound a
// new flow is not held (sent at once).
func TestYouthBounded(t *testing.T) {
	y := newYouth(5)
	for i := range maxYoung {
		if !y.add(testFlowKey(i), 10) {
			t.Fatalf("flow %d refused under the bound", i)
		}
	}
	if y.add(testFlowKey(maxYoung), 10) {
		t.Fatal("a flow past the bound was held")
	}
	n := 0
	y.due(14, func(datapath.FlowKey) { n++ })
	if n != 0 || !y.young(testFlowKey(3), 14) {
		t.Fatalf("%d came of age at 4 s", n)
	}
	y.forget(testFlowKey(3))
	y.due(15, func(datapath.FlowKey) { n++ })
	if n != maxYoung-1 || y.waiting() != 0 || len(y.fifo) != 0 {
		t.Fatalf("%d came of age at 5 s, %d waiting, fifo %d", n, y.waiting(), len(y.fifo))
	}
}

// TestTMListMismatch: a peer whose TM list differs has its entries
// refused and counted, and shows as tm-list-differs; once both agree, the
// receiver asks for a resync and gets everything it refused.
func TestTMListMismatch(t *testing.T) {
	c1, c2 := listen(t), listen(t)
	a := TMDigest([]TMIndex{{0, "tm1"}, {1, "tm2"}})
	b := TMDigest([]TMIndex{{0, "tm1"}, {1, "tm3"}})
	if a == b || a != TMDigest([]TMIndex{{1, "tm2"}, {0, "tm1"}}) {
		t.Fatal("TMDigest: distinct lists agree or an order matters")
	}
	var d2Digest atomic.Uint32
	d2Digest.Store(b)
	d1 := startCfg(t, 1, c1, func(c *Config) { c.TMDigest = func() uint32 { return a } }, addrOf(c2))
	d2 := startCfg(t, 2, c2, func(c *Config) { c.TMDigest = d2Digest.Load }, addrOf(c1))
	d1.makeFlows(0, 200, datapath.FlowSelected)
	eventually(t, 10*time.Second, "d1's entries refused by d2", func() (bool, string) {
		c := d2.m.Counters()
		p := d2.m.Peers()
		// (State reads "tm-list-differs" unless a loaded machine delayed a
		// heartbeat past 5 intervals: "silent" comes first.)
		return c.RefusedTMList >= 200 && c.TMListMismatch == 1 && p[0].TMList == "differs" && p[0].State != "synced",
			fmt.Sprintf("%+v %+v", c, p)
	})
	if n := d2.count(); n != 0 {
		t.Fatalf("d2 installed %d entries from a peer whose TM list differs", n)
	}
	d2Digest.Store(a) // d2 reloads the same list
	eventually(t, 10*time.Second, "d2 resynced once the lists agree", func() (bool, string) {
		ok, why := same(d1, d2)
		p := d2.m.Peers()
		return ok && !p[0].SyncedAt.IsZero() && p[0].TMList == "agrees", why + fmt.Sprintf(" %+v", p)
	})
}
