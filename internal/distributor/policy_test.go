package distributor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/signal"
)

// choice is the TM (by id) that service svc's ring gives a new flow with
// key k, as the data path computes it (flow.PolicyHash is sy_policy_hash).
func (h *harness) choice(t *testing.T, sk datapath.ServiceKey, k datapath.FlowKey) string {
	t.Helper()
	svc, ok := h.m.Services[sk]
	if !ok {
		t.Fatalf("no service %v", sk)
	}
	idx := h.m.Rings[svc.Index*testRing+flow.PolicyHash(k, svc, h.m.Seed)%testRing]
	if idx == datapath.NoTM {
		return "(none)"
	}
	return h.d.tmName(idx)
}

// TestSameChoiceAcrossDistributors: two distributors with the same config
// choose the same TM for the same key under every hash, even when their
// TM indexes differ (their histories differ): the property ECMP in front
// of several distributors, and mirroring, rely on.
func TestSameChoiceAcrossDistributors(t *testing.T) {
	hashes := []string{config.Hash5Tuple, config.HashSrcIP, config.HashDstIP, config.HashSrcIPPort, config.HashPort, config.HashSymmetric, config.HashSymmetricAdr}
	var svcs strings.Builder
	for i, hsh := range hashes {
		fmt.Fprintf(&svcs, "  - {name: s%d, vip: 10.0.0.100, port: %d, protocol: udp, traffic_managers: [tm1, tm2, tm3, tm4], policy: hash, hash: %s}\n", i, 1000+i, hsh)
	}
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12, weight: 2}\n  - {id: tm3, address: 10.1.0.13}\n  - {id: tm4, address: 10.1.0.14}\n"
	a := newHarness(t, tms, svcs.String(), "")
	defer a.d.Close(false)
	// b first knew other TMs, in another order: its indexes differ.
	b := newHarness(t, "  - {id: tm7, address: 10.1.0.17}\n  - {id: tm4, address: 10.1.0.14}\n  - {id: tm2, address: 10.1.0.12}\n",
		"  - {name: s0, vip: 10.0.0.100, port: 1000, protocol: udp, traffic_managers: [tm7, tm4, tm2]}\n", "")
	defer b.d.Close(false)
	b.reload(t, tms, svcs.String())
	if a.index(t, "tm4") == b.index(t, "tm4") {
		t.Fatal("the two distributors' TM indexes agree; the test needs them to differ")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i, hsh := range hashes {
		sk := flow.ServiceKey(testVIP, uint16(1000+i), flow.ProtoUDP)
		used := map[string]int{}
		for range 1000 {
			src := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
			k := flow.MakeKey(src, testVIP, uint16(1024+r.IntN(60000)), uint16(1000+i), flow.ProtoUDP, 0)
			ca, cb := a.choice(t, sk, k), b.choice(t, sk, k)
			if ca != cb {
				t.Fatalf("hash %s, key %s: distributor a chose %s, b %s", hsh, flow.String(k), ca, cb)
			}
			used[ca]++
		}
		t.Logf("hash %-14s 1000 keys: %v", hsh, used)
		if hsh != config.HashDstIP && hsh != config.HashPort && len(used) != 4 {
			t.Errorf("hash %s: 1000 keys used TMs %v, want all four", hsh, used)
		}
	}
}

// TestRoundRobinState: round-robin services get SY_POLICY_RR and a ring of
// equal shares whatever the weights; weighted-round-robin keeps them.
func TestRoundRobinState(t *testing.T) {
	tms := "  - {id: tm1, address: 10.1.0.11, weight: 1}\n  - {id: tm2, address: 10.1.0.12, weight: 3}\n"
	h := newHarness(t, tms,
		"  - {name: rr, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2], policy: round-robin}\n"+
			"  - {name: wrr, vip: 10.0.0.100, port: 81, protocol: tcp, traffic_managers: [tm1, tm2], policy: weighted-round-robin}\n"+
			"  - {name: mg, vip: 10.0.0.100, port: 82, protocol: tcp, traffic_managers: [tm1, tm2]}\n", "")
	defer h.d.Close(false)
	i1, i2 := h.index(t, "tm1"), h.index(t, "tm2")
	for _, tc := range []struct {
		port   uint16
		policy uint32
		share  float64 // tm2's share of the ring
	}{{80, datapath.PolicyRR, 0.5}, {81, datapath.PolicyRR, 0.75}, {82, datapath.PolicyHash, 0.75}} {
		svc := h.m.Services[flow.ServiceKey(testVIP, tc.port, flow.ProtoTCP)]
		if svc.Policy != tc.policy {
			t.Errorf("port %d: policy %d, want %d", tc.port, svc.Policy, tc.policy)
		}
		n := h.ringTMs(svc.Index)
		got := float64(n[i2]) / float64(n[i1]+n[i2])
		if got < tc.share-0.01 || got > tc.share+0.01 {
			t.Errorf("port %d: tm2 holds %.3f of the ring, want %.2f", tc.port, got, tc.share)
		}
	}
}

// TestPriorityGroups: with min_eligible 2, the fallback pool takes over
// when the pool has fewer than 2 eligible TMs and the fallback pool has 2;
// with only 1 in each, the pool keeps its last TM; with none, the
// fallback pool's one; with none in either, an empty ring.
func TestPriorityGroups(t *testing.T) {
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n  - {id: tm3, address: 10.1.0.13}\n  - {id: tm4, address: 10.1.0.14}\n"
	h := newHarness(t, tms, "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2], fallback_traffic_managers: [tm3, tm4], min_eligible: 2}\n", "")
	defer h.d.Close(false)
	id := serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}
	svc := h.d.svcs[id].index
	i1, i2, i3, i4 := h.index(t, "tm1"), h.index(t, "tm2"), h.index(t, "tm3"), h.index(t, "tm4")
	for _, tc := range []struct {
		down []string
		want []uint32
	}{
		{nil, []uint32{i1, i2}},
		{[]string{"tm1"}, []uint32{i3, i4}},
		{[]string{"tm1", "tm3"}, []uint32{i2}},
		{[]string{"tm1", "tm2", "tm3"}, []uint32{i4}},
		{[]string{"tm1", "tm2", "tm3", "tm4"}, nil},
		{[]string{"tm3"}, []uint32{i1, i2}},
	} {
		h.d.mu.Lock()
		// As the health checker would leave them (syncHealth resets down
		// from the checker, so desired is called directly here).
		s := h.d.svcs[id]
		s.down = map[string]bool{}
		for _, tid := range tc.down {
			s.down[tid] = true
		}
		want, err := desired(h.d.cfg, h.d.tms, h.d.svcs)
		if err == nil {
			err = h.d.write(want)
		}
		h.d.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if len(tc.want) == 0 {
			tc.want = []uint32{datapath.NoTM} // an empty ring
		}
		h.wantRing(t, svc, tc.want...)
	}
}

// TestPriorityGroupsMany: three priority groups with their own
// min_eligible: new flows go to the first group with enough eligible TMs;
// with none such, to the first with any; a lower group serving is shown
// as the fallback in stats.
func TestPriorityGroupsMany(t *testing.T) {
	var tms strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&tms, "  - {id: tm%d, address: 10.1.0.1%d}\n", i, i)
	}
	h := newHarness(t, tms.String(), "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2], min_eligible: 2,\n"+
		"     policy: priority-groups, priority_groups: [{traffic_managers: [tm3, tm4], min_eligible: 2}, {traffic_managers: [tm5]}]}\n", "")
	defer h.d.Close(false)
	id := serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}
	svc := h.d.svcs[id].index
	i := func(id string) uint32 { return h.index(t, id) }
	for _, tc := range []struct {
		down     []string
		want     []uint32
		fallback bool
	}{
		{nil, []uint32{i("tm1"), i("tm2")}, false},
		{[]string{"tm1"}, []uint32{i("tm3"), i("tm4")}, true},
		{[]string{"tm1", "tm3"}, []uint32{i("tm5")}, true},
		{[]string{"tm1", "tm3", "tm5"}, []uint32{i("tm2")}, false}, // none has enough: the first with any
		{[]string{"tm1", "tm2", "tm3", "tm5"}, []uint32{i("tm4")}, true},
		{[]string{"tm1", "tm2", "tm3", "tm4", "tm5"}, nil, false},
		{[]string{"tm5"}, []uint32{i("tm1"), i("tm2")}, false},
	} {
		h.d.mu.Lock()
		s := h.d.svcs[id]
		s.down = map[string]bool{}
		for _, tid := range tc.down {
			s.down[tid] = true
		}
		want, err := desired(h.d.cfg, h.d.tms, h.d.svcs)
		if err == nil {
			err = h.d.write(want)
		}
		h.d.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if len(tc.want) == 0 {
			tc.want = []uint32{datapath.NoTM} // an empty ring
		}
		h.wantRing(t, svc, tc.want...)
		if st := h.svcStats(t, "web"); st.Fallback != tc.fallback {
			t.Errorf("down %v: stats say fallback %v, want %v", tc.down, st.Fallback, tc.fallback)
		}
	}
}

// TestLeastConnectionsState: least-connections services get SY_POLICY_LC
// and a ring of equal shares, weighted ones SY_POLICY_WLC, a ring by weight
// and each TM's weight in policy_weight; the daemon's resync rewrites
// drifted active-flow counters from a walk of the tables, and flows the
// sweeper deletes are counted off.
func TestLeastConnectionsState(t *testing.T) {
	tms := "  - {id: tm1, address: 10.1.0.11, weight: 1}\n  - {id: tm2, address: 10.1.0.12, weight: 3}\n"
	h := newHarness(t, tms,
		"  - {name: lc, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2], policy: least-connections}\n"+
			"  - {name: wlc, vip: 10.0.0.100, port: 81, protocol: tcp, traffic_managers: [tm1, tm2], policy: weighted-least-connections}\n", "")
	defer h.d.Close(false)
	i1, i2 := h.index(t, "tm1"), h.index(t, "tm2")
	for _, tc := range []struct {
		port   uint16
		policy uint32
		share  float64 // tm2's share of the ring
	}{{80, datapath.PolicyLC, 0.5}, {81, datapath.PolicyWLC, 0.75}} {
		svc := h.m.Services[flow.ServiceKey(testVIP, tc.port, flow.ProtoTCP)]
		if svc.Policy != tc.policy {
			t.Errorf("port %d: policy %d, want %d", tc.port, svc.Policy, tc.policy)
		}
		n := h.ringTMs(svc.Index)
		got := float64(n[i2]) / float64(n[i1]+n[i2])
		if got < tc.share-0.01 || got > tc.share+0.01 {
			t.Errorf("port %d: tm2 holds %.3f of the ring, want %.2f", tc.port, got, tc.share)
		}
	}
	if h.m.PolicyWeight[i1] != 1 || h.m.PolicyWeight[i2] != 3 {
		t.Errorf("policy weights tm1 %d, tm2 %d; want 1, 3", h.m.PolicyWeight[i1], h.m.PolicyWeight[i2])
	}

	// Three flows of tm2 (one half-open), one of tm1, through the seam;
	// then the counters drift (a lost add, an overwrite) and the resync
	// restores what the tables hold.
	for i := range 3 {
		k := flow.MakeKey(netip.MustParseAddr(fmt.Sprintf("10.9.0.%d", i+1)), testVIP, 5000, 80, flow.ProtoTCP, 0)
		if err := h.m.InsertFlow(k, datapath.Flow{Tm: uint16(i2), Svc: 0, LastSeen: 1, Timeout: 1}); err != nil {
			t.Fatal(err)
		}
	}
	h.m.HalfOpen[flow.MakeKey(netip.MustParseAddr("10.9.1.1"), testVIP, 5000, 80, flow.ProtoTCP, 0)] = datapath.Flow{Tm: uint16(i2)}
	if err := h.m.InsertFlow(flow.MakeKey(netip.MustParseAddr("10.9.2.1"), testVIP, 5000, 80, flow.ProtoTCP, 0), datapath.Flow{Tm: uint16(i1)}); err != nil {
		t.Fatal(err)
	}
	if h.m.Active[i2] != 3 || h.m.Active[i1] != 1 {
		t.Errorf("after inserts: active tm1 %d, tm2 %d; want 1, 3", h.m.Active[i1], h.m.Active[i2])
	}
	h.m.Active[i1], h.m.Active[i2] = 40, -2
	if err := h.d.resyncActiveNow(); err != nil {
		t.Fatal(err)
	}
	if h.m.Active[i2] != 4 || h.m.Active[i1] != 1 {
		t.Errorf("after a resync: active tm1 %d, tm2 %d; want 1, 4", h.m.Active[i1], h.m.Active[i2])
	}
	// Deleting through the seam (as the sweeper and FORGET do) counts off.
	n, err := h.m.DeleteFlowsWhere(func(_ datapath.FlowKey, f datapath.Flow) bool { return uint32(f.Tm) == i2 }, 0)
	if err != nil || n != 3 {
		t.Fatalf("deleted %d flows of tm2 (%v), want 3", n, err)
	}
	if h.m.Active[i2] != 1 {
		t.Errorf("after deleting tm2's 3 flows: active %d, want 1 (its half-open one)", h.m.Active[i2])
	}
}

// TestMeasuredWeights: packet-rate and completion-rate turn the data path's
// per-TM counters into ring weights through costWeights: tm1, sent ten
// times the packets of the others, weighs a tenth of them; tm1, whose
// TCP flows end half by reset and half by FIN, weighs half. Idle TMs and
// TMs without ends keep their configured weight × 100.
func TestMeasuredWeights(t *testing.T) {
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n  - {id: tm3, address: 10.1.0.13}\n"
	h := newHarness(t, tms,
		"  - {name: pr, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3], policy: packet-rate}\n"+
			"  - {name: cr, vip: 10.0.0.100, port: 81, protocol: tcp, traffic_managers: [tm1, tm2, tm3], policy: completion-rate}\n", "")
	defer h.d.Close(false)
	i1, i2, i3 := h.index(t, "tm1"), h.index(t, "tm2"), h.index(t, "tm3")
	pr := h.m.Services[flow.ServiceKey(testVIP, 80, flow.ProtoTCP)].Index
	cr := h.m.Services[flow.ServiceKey(testVIP, 81, flow.ProtoTCP)].Index
	h.d.reweigh() // the baseline of the counters
	h.m.TMStats[i1].Packets += 1_000_000
	h.m.TMStats[i2].Packets += 100_000
	h.m.TMStats[i3].Packets += 100_000
	ev := func(tm uint32, state uint8) datapath.Event {
		return datapath.Event{Type: datapath.EventState, Tm: uint16(tm), TcpState: state,
			Key: flow.MakeKey(netip.MustParseAddr("10.9.0.1"), testVIP, 5000, 81, flow.ProtoTCP, 0)}
	}
	for range 10 {
		h.d.countEnd(ev(i1, datapath.TCPEstablished|datapath.TCPFinFwd))
		h.d.countEnd(ev(i1, datapath.TCPEstablished|datapath.TCPFinFwd|datapath.TCPFinRev)) // the second FIN: not counted again
		h.d.countEnd(ev(i1, datapath.TCPEstablished|datapath.TCPReset))
		h.d.countEnd(ev(i2, datapath.TCPEstablished|datapath.TCPFinRev))
	}
	h.d.reweigh()
	h.d.mu.Lock()
	var prw, crw map[string]uint32
	for _, s := range h.d.svcs {
		switch s.name {
		case "pr":
			prw = s.weights
		case "cr":
			crw = s.weights
		}
	}
	h.d.mu.Unlock()
	if prw["tm1"] != 10 || prw["tm2"] != 100 || prw["tm3"] != 100 {
		t.Errorf("packet-rate weights %v, want tm1 10, tm2 100, tm3 100", prw)
	}
	if crw["tm1"] != 50 || crw["tm2"] != 100 || crw["tm3"] != 100 {
		t.Errorf("completion-rate weights %v, want tm1 50, tm2 100, tm3 100 (tm3: no ends, configured)", crw)
	}
	if sh := h.ringShare(pr, i1); sh > 0.06 {
		t.Errorf("packet-rate: tm1 holds %.3f of the ring, want about 10/210", sh)
	}
	if sh := h.ringShare(cr, i1); sh < 0.15 || sh > 0.25 {
		t.Errorf("completion-rate: tm1 holds %.3f of the ring, want about 50/250", sh)
	}
	// An idle timeout before any FIN is a failure too.
	h.d.countExpired(datapath.Flow{Tm: uint16(i3), TcpState: datapath.TCPEstablished}, flow.ProtoTCP)
	h.d.countExpired(datapath.Flow{Tm: uint16(i3), TcpState: datapath.TCPEstablished | datapath.TCPFinFwd}, flow.ProtoTCP) // ended: not
	h.d.countExpired(datapath.Flow{Tm: uint16(i3)}, flow.ProtoUDP)                                                         // UDP: not
	if b := h.d.meas[i3].bad.Load(); b != 1 {
		t.Errorf("tm3: %d failures counted, want 1", b)
	}
}

// discard is an agent's signal sender that drops every message: these
// agents only report load.
type discard struct{}

func (discard) Send(signal.Message) error { return nil }

// TestRatioDynamicWeights: real agents (their stats listeners on loopback)
// report their owned flows; ratio-dynamic polls them and weighs tm1, with
// three times the flows of tm2 and tm3, a third of them. A TM whose agent
// does not answer keeps its configured weight × 100.
func TestRatioDynamicWeights(t *testing.T) {
	vip := netip.MustParsePrefix("10.0.0.100/32")
	var addrs []string
	for i, flows := range []int{30, 10, 10} {
		a, err := agent.New(agent.Config{VIPs: []netip.Prefix{vip}}, discard{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		for j := range flows {
			orig := agent.Tuple{Src: netip.AddrFrom4([4]byte{10, 9, byte(i), byte(j + 1)}), Dst: vip.Addr(), SrcPort: 40000, DstPort: 80, Proto: 6}
			if err := a.FlowNew(ctx, orig, agent.Tuple{}); err != nil {
				t.Fatal(err)
			}
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = a.ServeStats(ctx, l); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		addrs = append(addrs, l.Addr().String())
	}
	// tm4's agent: a port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrs = append(addrs, l.Addr().String())
	l.Close()
	var tms strings.Builder
	for i, a := range addrs {
		fmt.Fprintf(&tms, "  - {id: tm%d, address: 10.1.0.1%d, agent_stats: %q}\n", i+1, i+1, a)
	}
	h := newHarness(t, tms.String(),
		"  - {name: rd, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3, tm4], policy: ratio-dynamic}\n", "")
	defer h.d.Close(false)
	h.d.pollAgents()
	h.d.reweigh()
	h.d.mu.Lock()
	var w map[string]uint32
	for _, s := range h.d.svcs {
		w = s.weights
	}
	m1 := h.d.meas[h.index(t, "tm1")].agent
	h.d.mu.Unlock()
	t.Logf("tm1's report %+v; weights %v", m1, w)
	if w["tm1"] != 33 || w["tm2"] != 100 || w["tm3"] != 100 || w["tm4"] != 100 {
		t.Errorf("weights %v, want tm1 33, tm2 100, tm3 100, tm4 100 (no report: configured)", w)
	}
	rd := h.m.Services[flow.ServiceKey(testVIP, 80, flow.ProtoTCP)].Index
	if sh := h.ringShare(rd, h.index(t, "tm1")); sh > 0.12 {
		t.Errorf("tm1 holds %.3f of the ring, want about 33/333", sh)
	}
}

// TestDecodeAgentLoad: an agent's reply is checked before it is a weight.
func TestDecodeAgentLoad(t *testing.T) {
	for _, tc := range []struct{ line, err string }{
		{`{"ok":true,"stats":{"active_flows":5,"cpu":0.5,"new_flows_per_sec":7}}`, ""},
		{`{"ok":false,"error":"this listener answers stats only"}`, "refused"},
		{`{"ok":true}`, "refused"},
		{`{"ok":true,"stats":{"cpu":1.5}}`, "out of range"},
		{`{"ok":true,"stats":{"active_flows":-1}}`, "out of range"},
		{`not json`, "bad reply"},
	} {
		l, err := decodeAgentLoad([]byte(tc.line))
		switch {
		case tc.err == "" && (err != nil || l != agentLoad{cpu: 0.5, active: 5, newPerSec: 7}):
			t.Errorf("%s: %+v, %v", tc.line, l, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.line, err, tc.err)
		}
	}
}

// FuzzDecodeAgentLoad: no reply line makes the decoder panic, and what it
// accepts is within range.
func FuzzDecodeAgentLoad(f *testing.F) {
	f.Add([]byte(`{"ok":true,"stats":{"active_flows":5,"cpu":0.5,"new_flows_per_sec":7}}`))
	f.Add([]byte(`{"ok":true,"stats":{"cpu":1e308}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		l, err := decodeAgentLoad(line)
		if err == nil && (l.cpu < 0 || l.cpu > 1 || l.active < 0 || l.active > agentMaxActive || l.newPerSec < 0 || l.newPerSec > agentMaxActive) {
			t.Fatalf("accepted %+v from %q", l, line)
		}
	})
}

// TestTopologyAndHopMetric: topology keeps new flows on the pool's TMs
// tagged with the distributor's zone while min_eligible of them are
// eligible, and spills over to the rest of the pool; hop-metric does the
// same over groups of ascending route metric (as the resolver reads it).
func TestTopologyAndHopMetric(t *testing.T) {
	tms := "  - {id: tm1, address: 10.1.0.11, tags: [a]}\n  - {id: tm2, address: 10.1.0.12, tags: [a, gold]}\n" +
		"  - {id: tm3, address: 10.1.0.13, tags: [b]}\n  - {id: tm4, address: 10.1.0.14}\n"
	h := newHarness(t, tms, "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3, tm4], min_eligible: 2}\n", "")
	defer h.d.Close(false)
	id := serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}
	svc := h.d.svcs[id].index
	i := func(id string) uint32 { return h.index(t, id) }
	for _, tc := range []struct {
		policy string
		down   []string
		want   []uint32
	}{
		{config.PolicyTopology, nil, []uint32{i("tm1"), i("tm2")}},
		{config.PolicyTopology, []string{"tm1"}, []uint32{i("tm3"), i("tm4")}}, // 1 < 2 in the zone: spill over
		{config.PolicyTopology, []string{"tm1", "tm3"}, []uint32{i("tm2")}},    // neither has 2: the zone's
		// Metrics: tm3 10, tm1 and tm4 20, tm2 30.
		{config.PolicyHopMetric, nil, []uint32{i("tm1"), i("tm4")}}, // tm3 alone is < 2: the next metric
		{config.PolicyHopMetric, []string{"tm4"}, []uint32{i("tm3")}},
	} {
		h.d.mu.Lock()
		h.d.cfg.Distributor.Zone = "a"
		h.d.cfg.Services[0].Policy = tc.policy
		for tid, m := range map[string]int{"tm1": 20, "tm2": 30, "tm3": 10, "tm4": 20} {
			h.d.tms[tid].metric = m
		}
		s := h.d.svcs[id]
		s.down = map[string]bool{}
		for _, tid := range tc.down {
			s.down[tid] = true
		}
		want, err := desired(h.d.cfg, h.d.tms, h.d.svcs)
		if err == nil {
			err = h.d.write(want)
		}
		h.d.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s, down %v", tc.policy, tc.down)
		h.wantRing(t, svc, tc.want...)
	}
}

// TestQoSState: a qos service gets its class (DSCP mask, class ring 0) and
// a class ring of the pool's TMs with the class's tag; with fewer than
// min_eligible of them eligible the class ring is the service's own
// (spill-over); a service that stops being qos has its class cleared.
func TestQoSState(t *testing.T) {
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n" +
		"  - {id: tm3, address: 10.1.0.13, tags: [gold]}\n  - {id: tm4, address: 10.1.0.14, tags: [gold]}\n"
	qos := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3, tm4], min_eligible: 2,\n" +
		"     policy: qos, qos: {dscp: [46, 34], tag: gold}}\n"
	h := newHarness(t, tms, qos, "")
	defer h.d.Close(false)
	id := serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}
	svc := h.d.svcs[id].index
	if q := h.m.QoS[svc]; q.Dscp != 1<<46|1<<34 || q.Ring != 0 {
		t.Fatalf("QoS entry %+v, want DSCP 46 and 34, ring 0", q)
	}
	classTMs := func() map[uint32]bool {
		out := map[uint32]bool{}
		for _, tm := range h.m.QoSRings[:testRing] {
			out[tm] = true
		}
		return out
	}
	if got := classTMs(); len(got) != 2 || !got[h.index(t, "tm3")] || !got[h.index(t, "tm4")] {
		t.Errorf("class ring holds %v, want tm3 and tm4", got)
	}
	// tm3 down: 1 < 2 gold TMs: the class spills over to the whole pool.
	h.d.mu.Lock()
	h.d.svcs[id].down = map[string]bool{"tm3": true}
	want, err := desired(h.d.cfg, h.d.tms, h.d.svcs)
	if err == nil {
		err = h.d.write(want)
	}
	h.d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := classTMs(); len(got) != 3 || got[h.index(t, "tm3")] {
		t.Errorf("spilled class ring holds %v, want tm1, tm2, tm4 (the service's own)", got)
	}
	h.reload(t, tms, "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3, tm4]}\n")
	if q := h.m.QoS[svc]; q.Dscp != 0 {
		t.Errorf("after a reload to maglev: QoS entry %+v, want none", q)
	}
}
