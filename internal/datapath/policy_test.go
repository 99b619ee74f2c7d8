package datapath_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/internal/selector"
)

// hashService sets up a UDP service whose ring is indexed by hash (a
// Service.Hash value) over four TMs of equal weight.
func (f *fixture) hashService(t *testing.T, vip netip.Addr, port uint16, idx, hash uint32) {
	t.Helper()
	pool := []selector.Backend{{Index: 0, Name: "tm0", Weight: 1}, {Index: 1, Name: "tm1", Weight: 1}, {Index: 7, Name: "tm7", Weight: 1}, {Index: 8, Name: "tm8", Weight: 1}}
	f.service(t, vip, port, flow.ProtoUDP, idx, pool)
	sk := flow.ServiceKey(vip, port, flow.ProtoUDP)
	svc := f.model.Services[sk]
	svc.Hash = hash
	must(t, f.tables.SetService(sk, svc))
}

// chosen runs a new UDP flow's first packet through XDP and the model
// (which must agree), checks it was selected (fwd_new) and returns
// the TM it went to: the last octet of the output's destination MAC.
func (f *fixture) chosen(t *testing.T, src, dst string, sport, dport uint16) uint8 {
	t.Helper()
	p := flowtest.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: flow.ProtoUDP, SrcPort: sport, DstPort: dport, Payload: []byte("x")}
	before := f.model.Counters[datapath.CounterFwdNew].Packets
	v, out := f.run(t, p.Bytes())
	if v != datapath.TX || f.model.Counters[datapath.CounterFwdNew].Packets != before+1 {
		t.Fatalf("%s:%d → %s:%d: verdict %v, fwd_new moved by %d; want a selected new flow", src, sport, dst, dport, v,
			f.model.Counters[datapath.CounterFwdNew].Packets-before)
	}
	return out[5]
}

// TestPolicyHashCases: each hash policy of a service (sy_policy_hash) in
// XDP and the model alike, and what each promises: the flows that share
// the hashed fields share a TM, and the symmetric hashes give both
// directions of a flow (through a NAT that keeps the larger port) one TM.
func TestPolicyHashCases(t *testing.T) {
	f := newFixture(t)
	for _, idx := range []uint32{0, 1, 7, 8} {
		f.tm(t, idx, loIfindex, datapath.TMReady)
	}
	f.setRole(t, roleExternal)
	vip := "10.0.0.100"
	const (
		portSrc = 1001 + iota
		portDst
		portSrcPort
		portDport
		portSym
		portSymAddr
		port5
	)
	v := netip.MustParseAddr(vip)
	f.hashService(t, v, portSrc, 0, datapath.FieldSrc) // the bits of config.HashBits
	f.hashService(t, v, portDst, 1, datapath.FieldDst)
	f.hashService(t, v, portSrcPort, 2, datapath.FieldSrc|datapath.FieldSrcPort)
	f.hashService(t, v, portDport, 3, datapath.FieldDstPort)
	f.hashService(t, v, portSym, 4, datapath.HashSymPort)
	f.hashService(t, v, portSymAddr, 5, datapath.HashSymAddr)
	f.hashService(t, v, port5, 6, 0)
	// The shared SNAT address is a VIP of all UDP ports with the same pool
	// and the symmetric port hash: a server's answer is selected, not learned.
	snat := netip.MustParseAddr("10.0.0.200")
	f.hashService(t, snat, 0, 7, datapath.HashSymPort)

	spread := func(name string, tms map[uint8]int) {
		t.Helper()
		if len(tms) < 3 {
			t.Errorf("%s: 64 keys went to TMs %v, want at least 3 of 4", name, tms)
		}
	}
	// src: one client's flows share a TM whatever its ports; clients spread.
	bySrc := map[uint8]int{}
	for i := range 64 {
		src := fmt.Sprintf("10.9.%d.%d", i/200, i%200+1)
		tm := f.chosen(t, src, vip, 40000, portSrc)
		if again := f.chosen(t, src, vip, 50000+uint16(i), portSrc); again != tm {
			t.Fatalf("src hash: %s went to %d and %d", src, tm, again)
		}
		bySrc[tm]++
	}
	spread("src", bySrc)
	// dst: every client of the VIP to one TM.
	first := f.chosen(t, "10.9.1.1", vip, 1, portDst)
	for i := range 32 {
		if tm := f.chosen(t, fmt.Sprintf("10.9.2.%d", i+1), vip, uint16(30000+i), portDst); tm != first {
			t.Fatalf("dst hash: a client went to %d, the first to %d", tm, first)
		}
	}
	// src + sport: the same source port and address, the same TM; another
	// port of the same client may go elsewhere.
	bySrcPort := map[uint8]int{}
	for i := range 64 {
		tm := f.chosen(t, "10.9.3.1", vip, uint16(20000+i), portSrcPort)
		bySrcPort[tm]++
	}
	spread("src+sport", bySrcPort)
	// dport: one TM per port.
	first = f.chosen(t, "10.9.4.1", vip, 1, portDport)
	for i := range 32 {
		if tm := f.chosen(t, fmt.Sprintf("10.9.5.%d", i+1), vip, uint16(30000+i), portDport); tm != first {
			t.Fatalf("dport hash: a client went to %d, the first to %d", tm, first)
		}
	}
	// The symmetric port hash: client C:p → VIP:portSym, the TM source-NATs
	// to the SNAT address keeping p (p > portSym), and the server's answer
	// S:portSym → SNAT:p comes back to the same TM with no signal.
	bySym := map[uint8]int{}
	for i := range 64 {
		p := uint16(40000 + i*7)
		fwd := f.chosen(t, fmt.Sprintf("10.9.6.%d", i+1), vip, p, portSym)
		back := f.chosen(t, "10.7.0.1", snat.String(), portSym, p)
		if fwd != back {
			t.Fatalf("symmetric port hash, port %d: forward to TM %d, the answer to TM %d", p, fwd, back)
		}
		bySym[fwd]++
	}
	spread("symmetric port", bySym)
	// The symmetric address hash: both directions of one tuple (the end with
	// the larger port keeps its address: here the client's, made a VIP of
	// all ports so that its answer is selected too).
	client := netip.MustParseAddr("10.0.0.201")
	f.hashService(t, client, 0, 5, datapath.HashSymAddr) // index 5: the same pool, so the same ring as portSymAddr
	bySymAddr := map[uint8]int{}
	for i := range 64 {
		p := uint16(40000 + i*5)
		fwd := f.chosen(t, client.String(), vip, p, portSymAddr)
		back := f.chosen(t, vip, client.String(), portSymAddr, p)
		if fwd != back {
			t.Fatalf("symmetric address hash, port %d: forward to TM %d, back to TM %d", p, fwd, back)
		}
		bySymAddr[fwd]++
	}
	spread("symmetric address", bySymAddr)
	// Equal ports: the XOR of the addresses, the same both ways.
	if a, b := f.chosen(t, client.String(), vip, portSymAddr, portSymAddr), f.chosen(t, vip, client.String(), portSymAddr, portSymAddr); a != b {
		t.Fatalf("symmetric address hash, equal ports: %d and %d", a, b)
	}
	// The default (whole key) is unchanged: the model's Hash of the key.
	k := flow.MakeKey(netip.MustParseAddr("10.9.7.1"), v, 1234, port5, flow.ProtoUDP, 0)
	want := f.model.Rings[6*testRing+flow.Hash(k, 7)%testRing]
	if got := f.chosen(t, "10.9.7.1", vip, 1234, port5); uint32(got) != want {
		t.Fatalf("whole-key hash: TM %d, want %d", got, want)
	}
	f.compareTables(t)
}

// TestPolicyRoundRobinCases: a round-robin service (SY_POLICY_RR) walks its
// ring one slot per new flow, in XDP and the model alike, so that over
// every ring's worth of new flows on a CPU each TM gets exactly its slots:
// equal shares with equal weights, shares by weight otherwise.
func TestPolicyRoundRobinCases(t *testing.T) {
	// policy_rr is per CPU and the model has one position per service:
	// run the program on one CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var one unix.CPUSet
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Skipf("cannot pin the test to CPU 0: %v", err)
	}
	f := newFixture(t)
	for _, idx := range []uint32{0, 1, 7, 8} {
		f.tm(t, idx, loIfindex, datapath.TMReady)
	}
	f.setRole(t, roleExternal)
	v := netip.MustParseAddr("10.0.0.100")
	for _, tc := range []struct {
		name    string
		port    uint16
		idx     uint32
		weights []uint32
	}{
		{"round-robin", 2001, 0, []uint32{1, 1, 1, 1}},
		{"weighted", 2002, 1, []uint32{1, 2, 3, 4}},
	} {
		pool := []selector.Backend{{Index: 0, Name: "tm0"}, {Index: 1, Name: "tm1"}, {Index: 7, Name: "tm7"}, {Index: 8, Name: "tm8"}}
		for i := range pool {
			pool[i].Weight = tc.weights[i]
		}
		ring, err := selector.Maglev(pool, testRing)
		if err != nil {
			t.Fatal(err)
		}
		slots := map[uint8]int{}
		for _, idx := range ring {
			slots[uint8(idx)]++
		}
		f.service(t, v, tc.port, flow.ProtoUDP, tc.idx, pool)
		sk := flow.ServiceKey(v, tc.port, flow.ProtoUDP)
		svc := f.model.Services[sk]
		svc.Policy = datapath.PolicyRR
		must(t, f.tables.SetService(sk, svc))
		got := map[uint8]int{}
		var seq []uint8
		for i := range 2 * testRing {
			tm := f.chosen(t, fmt.Sprintf("10.8.%d.%d", i/200, i%200+1), v.String(), 40000, tc.port)
			got[tm]++
			seq = append(seq, tm)
		}
		for tm, n := range slots {
			if got[tm] != 2*n {
				t.Errorf("%s: TM %d got %d of %d new flows, want %d (twice its %d slots)", tc.name, tm, got[tm], 2*testRing, 2*n, n)
			}
		}
		// The walk follows the ring: the flows' TMs are the ring's slots in order.
		for i, tm := range seq[:testRing] {
			if uint32(tm) != ring[i] {
				t.Fatalf("%s: new flow %d went to TM %d, ring slot %d holds %d", tc.name, i, tm, i, ring[i])
			}
		}
		t.Logf("%s: weights %v, %d new flows per TM %v", tc.name, tc.weights, 2*testRing, got)
	}
	f.compareTables(t)
}

// TestPolicyLeastConnectionsCases: the least-connections policies
// (SY_POLICY_LC, SY_POLICY_WLC) in XDP and the model alike: of the two
// slots of a flow's hash, the TM with fewer active flows (per unit of
// weight), and the active-flow counters (policy_active) each new, deleted
// or swept entry moves, equal on both sides.
func TestPolicyLeastConnectionsCases(t *testing.T) {
	f := newFixture(t)
	ids := []uint32{0, 1, 7, 8}
	for _, idx := range ids {
		f.tm(t, idx, loIfindex, datapath.TMReady)
	}
	f.setRole(t, roleExternal)
	v := netip.MustParseAddr("10.0.0.100")
	for _, tc := range []struct {
		name    string
		port    uint16
		idx     uint32
		policy  uint32
		weights []uint32
	}{
		{"least-connections", 3001, 0, datapath.PolicyLC, []uint32{1, 1, 1, 1}},
		{"weighted-least-connections", 3002, 1, datapath.PolicyWLC, []uint32{1, 2, 3, 4}},
	} {
		pool := []selector.Backend{{Index: 0, Name: "tm0"}, {Index: 1, Name: "tm1"}, {Index: 7, Name: "tm7"}, {Index: 8, Name: "tm8"}}
		for i := range pool {
			pool[i].Weight = tc.weights[i]
			must(t, f.tables.SetPolicyWeight(pool[i].Index, tc.weights[i]))
		}
		f.service(t, v, tc.port, flow.ProtoUDP, tc.idx, pool)
		sk := flow.ServiceKey(v, tc.port, flow.ProtoUDP)
		svc := f.model.Services[sk]
		svc.Policy = tc.policy
		must(t, f.tables.SetService(sk, svc))
		must(t, f.tables.SetActive([datapath.MaxTMs]int64{}))

		// 1200 new flows from zero: each adds one active flow to its TM,
		// and the two choices keep the TMs level (per unit of weight).
		const n = 1200
		src := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", 9+tc.idx, i/200, i%200+1) }
		for i := range n {
			f.chosen(t, src(i), v.String(), 40000, tc.port)
		}
		active, err := f.dp.ReadActive()
		if err != nil {
			t.Fatal(err)
		}
		var sumW uint32
		for _, w := range tc.weights {
			sumW += w
		}
		for i, id := range ids {
			want := float64(n) * float64(tc.weights[i]) / float64(sumW)
			if d := float64(active[id]) - want; d > 0.01*n || d < -0.01*n {
				t.Errorf("%s: TM %d has %d active flows, want %.0f ± %d (weights %v)", tc.name, id, active[id], want, n/100, tc.weights)
			}
		}
		t.Logf("%s: weights %v, active flows after %d new: %v", tc.name, tc.weights, n, []int64{active[0], active[1], active[7], active[8]})
		counted, err := datapath.CountActive(f.tables)
		if err != nil {
			t.Fatal(err)
		}
		if counted != active {
			t.Errorf("%s: counters %v, a walk counts %v", tc.name, active[:9], counted[:9])
		}

		// TM 0 loaded: it gets a new flow only when both choices are its.
		active[0] = 10 * n
		must(t, f.tables.SetActive(active))
		got, both := 0, 0
		for i := range 400 {
			k := flow.MakeKey(netip.MustParseAddr(src(n+i)), v, 40000, tc.port, flow.ProtoUDP, 0)
			a, b := flow.PolicyLeastSlots(k, svc, f.model.Seed, testRing)
			ring := f.model.Rings[svc.Index*testRing : (svc.Index+1)*testRing]
			if ring[a] == 0 && ring[b] == 0 {
				both++
			}
			if f.chosen(t, src(n+i), v.String(), 40000, tc.port) == 0 {
				got++
			}
		}
		if got != both {
			t.Errorf("%s: loaded TM 0 got %d of 400 new flows, want %d (those whose two choices are both TM 0)", tc.name, got, both)
		}
		t.Logf("%s: loaded TM 0 got %d of 400 new flows", tc.name, got)
		f.compareTables(t)

		// Deletes through the seam count the flows off their TMs.
		before, err := f.dp.ReadActive()
		if err != nil {
			t.Fatal(err)
		}
		gone, err := f.tables.DeleteFlowsWhere(func(_ datapath.FlowKey, e datapath.Flow) bool { return e.Tm == 7 && uint32(e.Svc) == tc.idx }, 0)
		if err != nil {
			t.Fatal(err)
		}
		after, err := f.dp.ReadActive()
		if err != nil {
			t.Fatal(err)
		}
		if gone == 0 || after[7] != before[7]-int64(gone) {
			t.Errorf("%s: deleting %d flows of TM 7 moved its active flows %d → %d", tc.name, gone, before[7], after[7])
		}
		f.compareTables(t)
		// Clean for the next case.
		_, err = f.tables.DeleteFlowsWhere(func(datapath.FlowKey, datapath.Flow) bool { return true }, 0)
		must(t, err)
	}

	// TCP: a bare SYN's half-open entry counts; its valid RST uncounts it.
	f.service(t, v, 3003, flow.ProtoTCP, 2, []selector.Backend{{Index: 0, Name: "tm0", Weight: 1}, {Index: 1, Name: "tm1", Weight: 1}})
	sk := flow.ServiceKey(v, 3003, flow.ProtoTCP)
	svc := f.model.Services[sk]
	svc.Policy = datapath.PolicyLC
	must(t, f.tables.SetService(sk, svc))
	must(t, f.tables.SetActive([datapath.MaxTMs]int64{}))
	c := netip.MustParseAddr("10.30.0.1")
	f.run(t, flowtest.Packet{Src: c, Dst: v, Proto: flow.ProtoTCP, SrcPort: 5000, DstPort: 3003, TCPFlags: flowtest.SYN, Seq: 100}.Bytes())
	if f.model.Active[0]+f.model.Active[1] != 1 {
		t.Errorf("after a SYN: active %d + %d, want 1", f.model.Active[0], f.model.Active[1])
	}
	f.run(t, flowtest.Packet{Src: c, Dst: v, Proto: flow.ProtoTCP, SrcPort: 5000, DstPort: 3003, TCPFlags: flowtest.RST, Seq: 101}.Bytes())
	if f.model.Active[0]+f.model.Active[1] != 0 {
		t.Errorf("after its RST: active %d + %d, want 0", f.model.Active[0], f.model.Active[1])
	}
	f.compareTables(t)
}

// TestPolicyQoSCases: a QoS service (policy_qos) sends the new flows whose
// packet's DSCP is in its class to its class ring (policy_qos_rings), and
// the others to its own ring, in XDP and the model alike: IPv4 and IPv6,
// with VLAN tags.
func TestPolicyQoSCases(t *testing.T) {
	f := newFixture(t)
	for _, idx := range []uint32{0, 1, 7, 8} {
		f.tm(t, idx, loIfindex, datapath.TMReady)
	}
	f.setRole(t, roleExternal)
	v4, v6 := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("fd00:100::100")
	own := []selector.Backend{{Index: 0, Name: "tm0", Weight: 1}, {Index: 1, Name: "tm1", Weight: 1}}
	gold := []selector.Backend{{Index: 7, Name: "tm7", Weight: 1}, {Index: 8, Name: "tm8", Weight: 1}}
	f.service(t, v4, 4001, flow.ProtoUDP, 0, own)
	f.service(t, v6, 4001, flow.ProtoUDP, 1, own)
	ring, err := selector.Maglev(gold, testRing)
	if err != nil {
		t.Fatal(err)
	}
	must(t, f.tables.WriteQoSRing(3, ring, nil))
	for _, svc := range []uint32{0, 1} {
		must(t, f.tables.SetQoS(svc, datapath.QoS{Dscp: 1<<46 | 1<<34, Ring: 3}))
	}
	for _, vip := range []netip.Addr{v4, v6} {
		for _, vlans := range [][]uint16{nil, {7}, {100, 7}} {
			for _, dscp := range []uint8{0, 46, 34, 10, 63} {
				got := map[uint8]int{}
				for i := range 64 {
					src := netip.MustParseAddr(fmt.Sprintf("10.40.%d.%d", dscp, i+1))
					if vip.Is6() {
						src = netip.MustParseAddr(fmt.Sprintf("fd00:40::%d:%d", dscp, i+1))
					}
					p := flowtest.Packet{Src: src, Dst: vip, Proto: flow.ProtoUDP, SrcPort: 5000 + uint16(len(vlans)), DstPort: 4001,
						VLANs: vlans, DSCP: dscp, Payload: []byte("x")}
					v, out := f.run(t, p.Bytes())
					if v != datapath.TX {
						t.Fatalf("%s DSCP %d: verdict %v", vip, dscp, v)
					}
					got[out[5]]++
				}
				class := dscp == 46 || dscp == 34
				for tm, n := range got {
					if isGold := tm == 7 || tm == 8; isGold != class {
						t.Errorf("%s VLANs %v DSCP %d: TM %d got %d of 64 new flows (class %v)", vip, vlans, dscp, tm, n, class)
					}
				}
				if len(got) != 2 {
					t.Errorf("%s VLANs %v DSCP %d: TMs %v, want both of the ring", vip, vlans, dscp, got)
				}
			}
		}
	}
	f.compareTables(t)
}
