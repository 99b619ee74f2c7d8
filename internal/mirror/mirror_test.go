package mirror

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// node is one distributor's mirror over a Go model, on loopback.
type node struct {
	m     *Mirror
	model *flow.Model
	addr  netip.AddrPort
	stop  context.CancelFunc
	done  chan error
}

func listen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// start runs a mirror with id on conn, peering with peers.
func start(t testing.TB, id uint32, conn *net.UDPConn, state string, peers ...netip.AddrPort) *node {
	t.Helper()
	model := flow.NewModel(7, 1, 0)
	model.Now = 1000
	m, err := New(Config{ID: id, Key: testKey, Conn: conn, Peers: peers, Tables: model, StateFile: state, Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{m: m, model: model, addr: addrOf(conn), stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- m.Run(ctx) }()
	t.Cleanup(n.close)
	return n
}

func (n *node) close() {
	if n.stop == nil {
		return
	}
	n.stop()
	<-n.done
	n.m.cfg.Conn.Close()
	n.stop = nil
}

func testFlowKey(i int) datapath.FlowKey {
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	if i%4 == 3 {
		src = netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		return flow.MakeKey(src, netip.MustParseAddr("2001:db8::10"), uint16(1024+i%60000), 443, flow.ProtoTCP, uint16(i%4095))
	}
	return flow.MakeKey(src, netip.MustParseAddr("192.0.2.10"), uint16(1024+i%60000), 80, flow.ProtoTCP, uint16(i%3))
}

// makeFlows has n's data path make flows [from, to) and report them.
func (n *node) makeFlows(from, to int, flags uint16) {
	for i := from; i < to; i++ {
		k := testFlowKey(i)
		f := datapath.Flow{LastSeen: n.model.Now, Tm: uint16(i % 3), Svc: 0, Flags: flags, TcpState: datapath.TCPEstablished | datapath.TCPSynSeen, SeqFwd: uint32(i), SeqRev: uint32(i * 7)}
		n.m.Do(func(t datapath.Tables) { _ = t.InsertFlow(k, f) })
		n.m.Offer(datapath.Event{Key: k, Type: datapath.EventNew, Tm: f.Tm, Flags: flags, TcpState: f.TcpState})
	}
}

// same reports whether b holds a's entries (from a peer), and how many
// differ.
func same(a, b *node) (bool, string) {
	var sa, sb map[datapath.FlowKey]datapath.Flow
	a.m.Do(func(datapath.Tables) { sa = clone(a.model.Flows) })
	b.m.Do(func(datapath.Tables) { sb = clone(b.model.Flows) })
	diff := 0
	for k, f := range sa {
		g, ok := sb[k]
		f.Flags &^= datapath.FlowPeer
		if !ok || g.Tm != f.Tm || g.Flags&^datapath.FlowPeer != f.Flags || g.TcpState != f.TcpState || g.SeqFwd != f.SeqFwd || g.SeqRev != f.SeqRev || g.Svc != f.Svc {
			diff++
		}
	}
	extra := len(sb) - (len(sa) - diff)
	return diff == 0 && len(sa) == len(sb), fmt.Sprintf("%d of %d differ or are missing, %d entries on the peer", diff, len(sa), len(sb)+0*extra)
}

func clone(m map[datapath.FlowKey]datapath.Flow) map[datapath.FlowKey]datapath.Flow {
	o := make(map[datapath.FlowKey]datapath.Flow, len(m))
	for k, v := range m {
		o[k] = v
	}
	return o
}

// eventually polls cond for up to d (generous: two shared cores).
func eventually(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var why string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %s", what, d, why)
}

func pair(t testing.TB) (*node, *node) {
	c1, c2 := listen(t), listen(t)
	d1 := start(t, 1, c1, "", addrOf(c2))
	d2 := start(t, 2, c2, "", addrOf(c1))
	return d1, d2
}

// TestMirrorConverges: flows d1 makes appear on d2, marked from-peer with
// their TM, origin, state and sequence numbers; d2's flows on d1.
func TestMirrorConverges(t *testing.T) {
	d1, d2 := pair(t)
	d1.makeFlows(0, 20000, datapath.FlowSelected)
	d2.makeFlows(20000, 20500, datapath.FlowLearned)
	eventually(t, 30*time.Second, "d2 has d1's flows", func() (bool, string) {
		var n int
		d2.m.Do(func(datapath.Tables) { n = len(d2.model.Flows) })
		return n == 20500, fmt.Sprintf("%d entries", n)
	})
	eventually(t, 30*time.Second, "d1 and d2 agree", func() (bool, string) { return same(d1, d2) })
	d2.m.Do(func(datapath.Tables) {
		f := d2.model.Flows[testFlowKey(5)]
		if f.Flags != datapath.FlowSelected|datapath.FlowPeer || f.Tm != 2 || f.SeqRev != 35 {
			t.Errorf("mirrored entry %+v", f)
		}
	})
	c := d2.m.Counters()
	if c.Inserted < 20000 || c.BadAuth+c.Malformed+c.Replayed+c.InstallErrors != 0 {
		t.Errorf("d2 counters %+v", c)
	}
}

// TestFinAndDeleteReachPeer: a validated FIN on d1 ages the flow on d2 (its
// state carries the FIN); a deletion on d1 deletes on d2.
func TestFinAndDeleteReachPeer(t *testing.T) {
	d1, d2 := pair(t)
	d1.makeFlows(0, 10, datapath.FlowSelected)
	eventually(t, 10*time.Second, "mirrored", func() (bool, string) { return same(d1, d2) })
	for _, d := range []*node{d1, d2} {
		select {
		case <-d.m.Synced(): // no resync in flight that could race the delete
		case <-time.After(10 * time.Second):
			t.Fatal("not synced")
		}
	}
	k := testFlowKey(3)
	d1.m.Do(func(t datapath.Tables) {
		f, _ := t.LookupFlow(k)
		f.TcpState |= datapath.TCPFinFwd
		_ = t.UpdateFlow(k, f)
	})
	d1.m.Offer(datapath.Event{Key: k, Type: datapath.EventState})
	d1.m.Do(func(t datapath.Tables) { _ = t.DeleteFlow(testFlowKey(4)) })
	d1.m.Offer(datapath.Event{Key: testFlowKey(4), Type: datapath.EventExpired})
	eventually(t, 10*time.Second, "FIN and delete on d2", func() (bool, string) {
		var f datapath.Flow
		var gone bool
		d2.m.Do(func(t datapath.Tables) {
			f, _ = t.LookupFlow(k)
			_, err := t.LookupFlow(testFlowKey(4))
			gone = err != nil
		})
		return f.TcpState&datapath.TCPFinFwd != 0 && gone, fmt.Sprintf("state %#x, deleted %v, d1 %+v d2 %+v", f.TcpState, gone, d1.m.Counters(), d2.m.Counters())
	})
}

// TestResyncOnJoin: a distributor that starts after its peer made flows
// gets them all, and Synced closes then.
func TestResyncOnJoin(t *testing.T) {
	c1, c2 := listen(t), listen(t)
	d1 := start(t, 1, c1, "", addrOf(c2))
	d1.makeFlows(0, 30000, datapath.FlowSelected|datapath.FlowMemorized)
	time.Sleep(100 * time.Millisecond) // d1 sends into the void
	d2 := start(t, 2, c2, "", addrOf(c1))
	select {
	case <-d2.m.Synced():
	case <-time.After(30 * time.Second):
		t.Fatalf("d2 never synced: %+v %+v", d2.m.Peers(), d2.m.Counters())
	}
	if ok, why := same(d1, d2); !ok {
		t.Fatalf("synced but: %s", why)
	}
	// Synced (its state may read "silent" if a loaded machine delays a
	// heartbeat past 5 intervals: not asserted).
	if p := d2.m.Peers(); len(p) != 1 || p[0].SyncedAt.IsZero() || p[0].ID != 1 {
		t.Fatalf("d2's peers: %+v", p)
	}
}

// TestSignalledOnly: with MirrorSignalled, only flows a TM asked to mirror
// are sent.
func TestSignalledOnly(t *testing.T) {
	c1, c2 := listen(t), listen(t)
	model := flow.NewModel(7, 1, 0)
	m, err := New(Config{ID: 1, Key: testKey, Conn: c1, Peers: []netip.AddrPort{addrOf(c2)}, Tables: model, Policy: MirrorSignalled, Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done; c1.Close() }()
	d1 := &node{m: m, model: model}
	d2 := start(t, 2, c2, "", addrOf(c1))
	d1.makeFlows(0, 100, datapath.FlowSelected)
	d1.makeFlows(100, 110, datapath.FlowSelected|datapath.FlowMirror)
	eventually(t, 10*time.Second, "the 10 signalled flows", func() (bool, string) {
		var n int
		d2.m.Do(func(datapath.Tables) { n = len(d2.model.Flows) })
		return n == 10, fmt.Sprintf("%d entries", n)
	})
	time.Sleep(200 * time.Millisecond)
	d2.m.Do(func(datapath.Tables) {
		if len(d2.model.Flows) != 10 {
			t.Errorf("%d entries mirrored, want the 10 signalled", len(d2.model.Flows))
		}
	})
}

// TestBadDatagramsChangeNothing: forged, replayed, truncated and
// malformed datagrams are counted and leave the table as it was.
func TestBadDatagramsChangeNothing(t *testing.T) {
	c1, c2 := listen(t), listen(t)
	d2 := start(t, 2, c2, "", addrOf(c1))
	// d1 is this test: it speaks the protocol by hand from c1.
	send := func(b []byte) {
		if _, err := c1.WriteToUDPAddrPort(b, d2.addr); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := NewCodec(testKey)
	bad, _ := NewCodec([]byte("not the shared key at all"))
	boot := uint64(time.Now().UnixNano())
	e := sampleEntries()[:1]
	msg := &Message{Type: TypeUpdate, Sender: 1, Boot: boot, Seq: boot + 1, Entries: e}
	first, _ := good.Append(nil, msg)
	send(first)
	eventually(t, 5*time.Second, "the genuine entry", func() (bool, string) {
		var n int
		d2.m.Do(func(datapath.Tables) { n = len(d2.model.Flows) })
		return n == 1, fmt.Sprintf("%d entries", n)
	})
	var before map[datapath.FlowKey]datapath.Flow
	d2.m.Do(func(datapath.Tables) { before = clone(d2.model.Flows) })

	other := sampleEntries()[1:2]
	forged, _ := bad.Append(nil, &Message{Type: TypeUpdate, Sender: 1, Boot: boot, Seq: boot + 2, Entries: other})
	send(forged)
	send(first) // replayed
	replayDel, _ := good.Append(nil, &Message{Type: TypeUpdate, Sender: 1, Boot: boot - 1, Seq: boot + 5, Entries: []Entry{{Op: OpDelete, Key: e[0].Key}}})
	send(replayDel) // an earlier run's datagram
	valid, _ := good.Append(nil, &Message{Type: TypeUpdate, Sender: 1, Boot: boot, Seq: boot + 3, Entries: other})
	send(valid[:len(valid)-1])          // cut: its HMAC fails
	send(valid[:HeaderSize-1])          // truncated in the header
	send(append(valid[:0:0], 'x', 'y')) // garbage
	self, _ := good.Append(nil, &Message{Type: TypeUpdate, Sender: 2, Boot: boot, Seq: boot + 4, Entries: other})
	send(self) // claims to be d2 itself
	eventually(t, 5*time.Second, "all counted", func() (bool, string) {
		c := d2.m.Counters()
		return c.BadAuth == 2 && c.Replayed == 2 && c.Truncated == 2 && c.UnknownPeer == 1, fmt.Sprintf("%+v", c)
	})
	d2.m.Do(func(datapath.Tables) {
		if len(d2.model.Flows) != len(before) {
			t.Fatalf("table changed: %d entries, was %d", len(d2.model.Flows), len(before))
		}
		for k, f := range before {
			if d2.model.Flows[k] != f {
				t.Fatalf("entry %v changed", k)
			}
		}
	})
}
