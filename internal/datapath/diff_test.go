package datapath_test

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/selector"
	"github.com/switchyard/switchyard/signal"
)

// fixture is a data path and a model configured identically: every entry
// is written once, through the seam, into both (tables, a tee).
type fixture struct {
	dp     *datapath.Datapath
	model  *flow.Model
	tables datapath.Tables
}

const (
	testRing     = 251
	testServices = 8
	testSecond   = 16 // small, so that RELATE meets a full table
	loIfindex    = 1
)

var (
	vip4a = netip.MustParseAddr("10.0.0.100")
	vip4b = netip.MustParseAddr("10.0.0.101")
	vip6  = netip.MustParseAddr("fd00:100::100")
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	labtest.Require(t)
	// Small tables: the generated packets fill them, so that refusals are
	// compared too.
	const maxFlows = 2048
	dp, err := datapath.Load(datapath.Options{MaxFlows: maxFlows, RingSize: testRing, MaxServices: testServices, MaxSecond: testSecond, HashSeed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	f := &fixture{dp: dp, model: flow.NewModel(testRing, testServices, 7)}
	f.model.MaxSecond = testSecond
	f.model.MaxHalfOpen = int(datapath.HalfOpenSize(maxFlows))
	f.model.MaxFlows = maxFlows - f.model.MaxHalfOpen
	// The ring holds 64-byte records (a 52-byte event and the ring's
	// 8-byte header, rounded to 8), one fewer than fill it (the kernel
	// keeps producer - consumer below the size); nobody reads it until
	// compareTables.
	f.model.EventCap = datapath.EventRingBytes/64 - 1
	f.tables = tee{dp: dp, model: f.model}
	f.setNow(t, 1000)
	return f
}

// must fails the test on a write's error.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) setNow(t testing.TB, now uint32) {
	t.Helper()
	must(t, f.tables.SetNow(now))
}

// Roles the test gives lo (the only interface a test run can name).
const (
	roleNone = iota
	roleExternal
	roleInternal
)

var (
	ourMAC   = [6]uint8{2, 0, 0, 0, 0, 1} // the generator's destination MAC
	mcastMAC = [6]uint8{3, 0x53, 0x59, 0x47, 0, 1}
	// Generated source MACs end in 2..6 (signals: 2..7): 2 is TM 0, 3 TM 1,
	// 4 the disabled TM 4, 5 nobody, 6 TM 2, whose interface is not lo (a
	// borrowed MAC), 7 TM 3, which is not ready.
	senderMACs = map[[6]uint8]uint32{{2, 0, 0, 0, 0, 2}: 0, {2, 0, 0, 0, 0, 3}: 1, {2, 0, 0, 0, 0, 4}: 4, {2, 0, 0, 0, 0, 6}: 2, {2, 0, 0, 0, 0, 7}: 3}
	testMasks  = []uint32{
		datapath.FieldProto | datapath.FieldSrc | datapath.FieldDst | datapath.FieldDstPort,
		datapath.FieldProto | datapath.FieldDst | datapath.FieldDstPort,
		datapath.FieldProto | datapath.FieldSrc | datapath.FieldDst,
		datapath.FieldSrc,
	}
)

func (f *fixture) setRole(t testing.TB, role int) {
	t.Helper()
	if role == roleNone {
		must(t, f.tables.DeleteIface(loIfindex))
		return
	}
	r := datapath.RoleExternal
	if role == roleInternal {
		r = datapath.RoleInternal
	}
	must(t, f.tables.SetIface(loIfindex, r, ourMAC))
}

func (f *fixture) service(t testing.TB, vip netip.Addr, port uint16, proto uint8, idx uint32, backends []selector.Backend) {
	t.Helper()
	table, err := selector.Maglev(backends, testRing)
	if err != nil {
		t.Fatal(err)
	}
	must(t, f.tables.WriteRing(idx, table, nil))
	must(t, f.tables.SetService(flow.ServiceKey(vip, port, proto), datapath.Service{Index: idx}))
	vk := flow.AddrKey(vip)
	must(t, f.tables.SetVIP(vk, f.model.VIPs[vk]+1))
}

// persist turns on source persistence for a service set up by service.
func (f *fixture) persist(t testing.TB, vip netip.Addr, port uint16, proto uint8, mask, timeout uint32) {
	t.Helper()
	sk := flow.ServiceKey(vip, port, proto)
	svc := f.model.Services[sk]
	svc.PersistMask, svc.PersistTimeout = mask, timeout
	must(t, f.tables.SetService(sk, svc))
}

func (f *fixture) tm(t testing.TB, idx uint32, ifindex uint32, flags uint32) {
	t.Helper()
	tm := datapath.TM{Mac: [6]uint8{0x02, 0xaa, 0, 0, 0, uint8(idx)}, SrcMac: [6]uint8{0x02, 0xdd, 0, 0, 0, 1}, Ifindex: ifindex, Flags: flags}
	must(t, f.tables.SetTM(idx, tm))
}

func (f *fixture) flow(t testing.TB, k datapath.FlowKey, e datapath.Flow) {
	t.Helper()
	must(t, f.tables.PutFlow(k, e))
}

// standard sets up services, TMs in every state and a few odd flows.
func (f *fixture) standard(t testing.TB) {
	// TMs 0 and 1 are behind lo (XDP_TX: the ingress), TM 2 redirects
	// (devmap key 2 → lo), TM 3 has no MAC yet, TM 4 is disabled, TM 5's
	// interface is not in the devmap, TM 6 is draining.
	must(t, f.tables.SetTxPort(2, loIfindex))
	f.tm(t, 0, loIfindex, datapath.TMReady)
	f.tm(t, 1, loIfindex, datapath.TMReady)
	f.tm(t, 2, 2, datapath.TMReady)
	f.tm(t, 3, 2, 0)
	f.tm(t, 4, loIfindex, datapath.TMReady|datapath.TMDisabled)
	f.tm(t, 5, 77, datapath.TMReady)
	f.tm(t, 6, loIfindex, datapath.TMReady|datapath.TMDraining)

	all := []selector.Backend{{Index: 0, Name: "tm0", Weight: 1}, {Index: 1, Name: "tm1", Weight: 2}, {Index: 2, Name: "tm2", Weight: 1}, {Index: 3, Name: "tm3", Weight: 1}, {Index: 5, Name: "tm5", Weight: 1}}
	good := []selector.Backend{{Index: 0, Name: "tm0", Weight: 1}, {Index: 1, Name: "tm1", Weight: 1}}
	f.service(t, vip4a, 80, flow.ProtoTCP, 0, all)
	f.service(t, vip4a, 0, flow.ProtoUDP, 1, good)
	f.service(t, vip6, 443, flow.ProtoTCP, 2, all)
	f.service(t, vip6, 80, flow.ProtoTCP, 3, good)
	f.service(t, vip4b, 53, flow.ProtoUDP, 4, nil) // empty pool
	f.service(t, vip4b, 80, flow.ProtoTCP, 5, good)
	f.persist(t, vip4b, 80, flow.ProtoTCP, testMasks[0], 300)
	// Weighted-least-connections on one service, so that the random
	// packets to it choose by the active-flow counters they move
	// (compared with the model's after every case).
	for _, p := range []struct {
		vip    netip.Addr
		port   uint16
		policy uint32
	}{{vip6, 80, datapath.PolicyWLC}} {
		sk := flow.ServiceKey(p.vip, p.port, flow.ProtoTCP)
		svc := f.model.Services[sk]
		svc.Policy = p.policy
		must(t, f.tables.SetService(sk, svc))
	}
	for _, b := range []selector.Backend{{Index: 0, Weight: 1}, {Index: 1, Weight: 3}} {
		must(t, f.tables.SetPolicyWeight(b.Index, b.Weight))
	}

	// Signals and learning.
	must(t, f.tables.SetMasks(testMasks))
	must(t, f.tables.SetSettings(datapath.Settings{SignalMcast: mcastMAC}))
	for mac, idx := range senderMACs {
		must(t, f.tables.SetSender(mac, idx))
	}
	for addr, owner := range map[string]uint32{"10.0.1.11": datapath.TMAny, "fd00:1::11": 0, "10.0.1.12": 1} {
		must(t, f.tables.SetLearnSource(flow.AddrKey(netip.MustParseAddr(addr)), owner))
	}
	f.setRole(t, roleExternal)

	// Second keys on the draining TM 6: its persistence key is skipped, its
	// related (RELATE) key still used.
	for _, c := range []struct {
		src string
		svc uint16
	}{{"10.0.1.11", 5}, {"10.0.1.12", datapath.SvcNone}} {
		k := flow.MakeKey(netip.MustParseAddr(c.src), vip4b, 0, 80, flow.ProtoTCP, 0)
		sk := datapath.SecondKey{Key: flow.MaskKey(k, testMasks[0]), Mask: testMasks[0]}
		must(t, f.tables.PutSecondKey(sk, datapath.Second{LastSeen: 1, Tm: 6, Svc: c.svc}))
	}

	// Flows whose TM is disabled, not ready, or out of range.
	c4 := netip.MustParseAddr("10.0.1.11")
	c6 := netip.MustParseAddr("fd00:1::11")
	for _, c := range []netip.Addr{c4, netip.MustParseAddr("10.0.1.12")} {
		for port := uint16(1026); port < 1032; port++ {
			f.flow(t, flow.MakeKey(c, vip4a, port, 80, flow.ProtoTCP, 0), datapath.Flow{Tm: 4, Svc: 0, Flags: datapath.FlowSelected})
		}
	}
	f.flow(t, flow.MakeKey(c4, vip4a, 1024, 80, flow.ProtoTCP, 0), datapath.Flow{Tm: 4, Svc: 0, Flags: datapath.FlowSelected})
	f.flow(t, flow.MakeKey(c4, vip4a, 1025, 80, flow.ProtoTCP, 0), datapath.Flow{Tm: 3, Svc: 0, Flags: datapath.FlowSelected})
	f.flow(t, flow.MakeKey(c6, vip6, 1024, 443, flow.ProtoTCP, 0), datapath.Flow{Tm: 300, Svc: 2, Flags: datapath.FlowSelected})
}

func (f *fixture) check(t *testing.T, i int, pkt []byte) datapath.Verdict {
	t.Helper()
	if len(pkt) < 14 {
		// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet
		// header (and no driver delivers one); the model's answer for
		// them is asserted by flow.TestModelShortFrames.
		if _, _, err := f.dp.TestRun(pkt, loIfindex); err == nil {
			t.Fatalf("packet %d: a %d-byte test run was accepted", i, len(pkt))
		}
		return datapath.Aborted
	}
	got, out, err := f.dp.TestRun(pkt, loIfindex)
	if err != nil {
		t.Fatalf("packet %d: %v", i, err)
	}
	want, wantOut := f.model.Process(pkt, loIfindex)
	if got != want || !bytes.Equal(out, wantOut) {
		t.Fatalf("packet %d (%x):\nXDP   %v %x\nmodel %v %x", i, pkt, got, out, want, wantOut)
	}
	return got
}

func (f *fixture) compareTables(t *testing.T) {
	t.Helper()
	n := 0
	err := f.dp.WalkFlows(func(k datapath.FlowKey, v datapath.Flow) bool {
		n++
		m, ok := f.model.Flows[k]
		if !ok {
			t.Errorf("flow %s in XDP only", flow.String(k))
			return true
		}
		if m != v {
			t.Errorf("flow %s: XDP %+v, model %+v", flow.String(k), v, m)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(f.model.Flows) {
		t.Errorf("flow table: XDP %d entries, model %d", n, len(f.model.Flows))
	}
	n = 0
	err = f.dp.WalkHalfOpen(func(k datapath.FlowKey, v datapath.Flow) bool {
		n++
		if m, ok := f.model.HalfOpen[k]; !ok || m != v {
			t.Errorf("half-open %s: XDP %+v, model %+v (present %v)", flow.String(k), v, m, ok)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(f.model.HalfOpen) {
		t.Errorf("half-open table: XDP %d entries, model %d", n, len(f.model.HalfOpen))
	}
	n = 0
	err = f.dp.WalkSecondKeys(func(k datapath.SecondKey, v datapath.Second) bool {
		n++
		if m, ok := f.model.SecondKeys[k]; !ok || m != v {
			t.Errorf("second key %s mask %#x: XDP %+v, model %+v (present %v)", flow.String(k.Key), k.Mask, v, m, ok)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(f.model.SecondKeys) {
		t.Errorf("second keys: XDP %d entries, model %d", n, len(f.model.SecondKeys))
	}
	// The events: the same ones, in the same order, and the same overruns
	// (counted below with the other counters).
	if _, err := f.tables.ReadEvents(func(datapath.Event) {}); err != nil {
		t.Error(err)
	}
	counters, err := f.dp.ReadCounters()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range counters {
		if c != f.model.Counters[i] {
			t.Errorf("counter %s: XDP %+v, model %+v", datapath.CounterName(datapath.Counter(i)), c, f.model.Counters[i])
		}
	}
	for i := range uint32(testServices) {
		tr, err := f.dp.ServiceTraffic(i)
		if err != nil {
			t.Fatal(err)
		}
		if tr != f.model.SvcStats[i] {
			t.Errorf("service %d traffic: XDP %+v, model %+v", i, tr, f.model.SvcStats[i])
		}
	}
	for i := range uint32(8) {
		tr, err := f.dp.TMTraffic(i)
		if err != nil {
			t.Fatal(err)
		}
		if tr != f.model.TMStats[i] {
			t.Errorf("TM %d traffic: XDP %+v, model %+v", i, tr, f.model.TMStats[i])
		}
	}
	// The active flows of the least-connections policies, counted alike.
	active, err := f.dp.ReadActive()
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range active {
		if n != f.model.Active[i] {
			t.Errorf("TM %d active flows: XDP %d, model %d", i, n, f.model.Active[i])
		}
	}
}

func signalOptions(g *flowtest.Generator) flowtest.SignalOptions {
	var src [][6]byte
	for i := range 6 {
		src = append(src, [6]byte{2, 0, 0, 0, 0, byte(2 + i)})
	}
	return flowtest.SignalOptions{
		DstMACs: [][6]byte{ourMAC, ourMAC, mcastMAC, {2, 9, 9, 9, 9, 9}},
		SrcMACs: src,
		Masks: []signal.Field{signal.Field(testMasks[0]), signal.Field(testMasks[1]), signal.Field(testMasks[2]), signal.Field(testMasks[3]),
			signal.FieldDst | signal.FieldDstPort},
		TMs:    []uint16{0, 1, 2, 4},
		Packet: func() []byte { return g.Describe().Bytes() },
	}
}

func generator(seed uint64) *flowtest.Generator {
	return &flowtest.Generator{
		R:       rand.New(rand.NewPCG(seed, 1)),
		VIPs:    []netip.Addr{vip4a, vip4b, vip6},
		Others:  []netip.Addr{netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("fd00:1::1")},
		Clients: []netip.Addr{netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.1.12"), netip.MustParseAddr("fd00:1::11"), netip.MustParseAddr("fd00:1::12")},
		Ports:   []uint16{80, 443, 53, 8080},
	}
}

// TestDifferential feeds the same generated packets to the XDP program and to
// the Go model and requires the same verdicts, bytes, tables and counters.
func TestDifferential(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	g := generator(1)
	so := signalOptions(g)
	const n = 40000
	verdicts := map[string]int{}
	for i := range n {
		// lo plays every role in turn, and the clock moves.
		if i%500 == 0 {
			f.setRole(t, []int{roleExternal, roleInternal, roleExternal, roleInternal, roleNone}[(i/500)%5])
		}
		if i%1500 == 0 {
			f.setNow(t, 1000+uint32(i/1500))
		}
		var pkt []byte
		if g.R.IntN(5) == 0 {
			pkt = g.Signal(so)
		} else {
			pkt = g.Next()
		}
		v := f.check(t, i, pkt)
		if len(pkt) < 14 {
			verdicts["refused-short"]++
			continue
		}
		verdicts[v.String()]++
	}
	f.compareTables(t)
	t.Logf("%d packets, verdicts %v, %d flows, %d second keys", n, verdicts, len(f.model.Flows), len(f.model.SecondKeys))
	// The weighted-least-connections service (index 3) chose for some.
	if nf := f.model.SvcStats[3].NewFlows; nf == 0 {
		t.Error("no generated packet made a new flow of the weighted-least-connections service")
	} else {
		t.Logf("weighted-least-connections service: %d new flows, active flows tm0 %d, tm1 %d", nf, f.model.Active[0], f.model.Active[1])
	}
	// The generator must have reached every counter, or the test is weaker
	// than it looks.
	for i, c := range f.model.Counters {
		// Frames under 14 bytes cannot be test-run (flow.TestModelShortFrames
		// asserts them); a full second-key table depends on the seed
		// (TestSignalCases asserts it).
		if c.Packets == 0 && datapath.Counter(i) != datapath.CounterDropTruncEth && datapath.Counter(i) != datapath.CounterSigRefTableFull {
			t.Errorf("no generated packet reached counter %s", datapath.CounterName(datapath.Counter(i)))
		}
	}
}
