package datapath_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/selector"
)

// A distributor's data path for the consistency tests: the XDP program
// (its own maps) and the model, written through a tee, with the hash seed
// every distributor uses (sy_hash_seed 0).
func newDistributorFixture(t *testing.T) *fixture {
	t.Helper()
	labtest.Require(t)
	dp, err := datapath.Load(datapath.Options{MaxFlows: 65536, RingSize: testRing, MaxServices: testServices, MaxSecond: 4096, HashSeed: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	f := &fixture{dp: dp, model: flow.NewModel(testRing, testServices, 0)}
	f.model.MaxSecond = 4096
	f.model.MaxHalfOpen = int(datapath.HalfOpenSize(65536))
	f.model.MaxFlows = 65536 - f.model.MaxHalfOpen
	f.model.EventCap = datapath.EventRingBytes/64 - 1
	f.tables = tee{dp: dp, model: f.model}
	f.setNow(t, 1000)
	f.setRole(t, roleExternal)
	return f
}

// consistentPool is five TMs by id and weight; index[id] is the TM's index
// on one distributor (they differ between distributors with other
// histories). The TM's MAC ends in its id, so the output names the TM.
func (f *fixture) consistentPool(t *testing.T, index map[int]uint32) []selector.Backend {
	t.Helper()
	weights := map[int]uint32{1: 1, 2: 2, 3: 1, 4: 3, 5: 1}
	var pool []selector.Backend
	for id := 1; id <= 5; id++ {
		idx := index[id]
		must(t, f.tables.SetTM(idx, datapath.TM{Mac: [6]uint8{0x02, 0xaa, 0, 0, 0, uint8(id)}, SrcMac: ourMAC, Ifindex: loIfindex, Flags: datapath.TMReady}))
		pool = append(pool, selector.Backend{Index: idx, Name: fmt.Sprintf("tm%d", id), Weight: weights[id]})
	}
	return pool
}

// consistentService writes a service (port, proto, hash bits, persistence
// mask) over pool at service index idx.
func (f *fixture) consistentService(t *testing.T, pool []selector.Backend, port uint16, proto uint8, idx, hash, persist uint32) {
	t.Helper()
	ring, err := selector.Maglev(pool, testRing)
	if err != nil {
		t.Fatal(err)
	}
	must(t, f.tables.WriteRing(idx, ring, nil))
	must(t, f.tables.SetService(flow.ServiceKey(vip4a, port, proto), datapath.Service{Index: idx, Hash: hash, PersistMask: persist, PersistTimeout: 300}))
	vk := flow.AddrKey(vip4a)
	must(t, f.tables.SetVIP(vk, f.model.VIPs[vk]+1))
}

// tmOf runs p through the program and the model (which must agree) and
// returns the id of the TM it went to (0: not forwarded).
func (f *fixture) tmOf(t *testing.T, p flowtest.Packet) int {
	t.Helper()
	v, out := f.run(t, p.Bytes())
	if v != datapath.TX {
		return 0
	}
	return int(out[5])
}

// TestConsistentAcrossPrograms: two XDP programs loaded side by side, each
// with its own maps, written as two distributors with the same config but
// other histories would write them (the same TMs under other indexes),
// send the first packet of the same new flow to the same TM under every
// hash of docs/policies.md, for 1,000 flows per hash (BPF_PROG_TEST_RUN).
// Source persistence is per program: under the 5-tuple hash a client's
// next flow through the other program goes elsewhere for most clients,
// under src-ip for none.
func TestConsistentAcrossPrograms(t *testing.T) {
	d1, d2 := newDistributorFixture(t), newDistributorFixture(t)
	p1 := d1.consistentPool(t, map[int]uint32{1: 0, 2: 1, 3: 2, 4: 3, 5: 4})
	p2 := d2.consistentPool(t, map[int]uint32{1: 3, 2: 2, 3: 4, 4: 1, 5: 5})
	hashes := []string{config.Hash5Tuple, config.HashSrcIP, config.HashDstIP, config.HashSrcIPPort, config.HashPort, config.HashSymmetric, config.HashSymmetricAdr}
	for i, h := range hashes {
		d1.consistentService(t, p1, uint16(1000+i), flow.ProtoUDP, uint32(i), config.HashBits(h), 0)
		d2.consistentService(t, p2, uint16(1000+i), flow.ProtoUDP, uint32(i), config.HashBits(h), 0)
	}
	r := rand.New(rand.NewPCG(21, 22))
	client := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
	}
	for i, h := range hashes {
		used := map[int]int{}
		for range 1000 {
			p := flowtest.Packet{DstMAC: ourMAC, Src: client(), Dst: vip4a, Proto: flow.ProtoUDP, SrcPort: uint16(1024 + r.IntN(60000)), DstPort: uint16(1000 + i), Payload: []byte("x")}
			a, b := d1.tmOf(t, p), d2.tmOf(t, p)
			if a == 0 || a != b {
				t.Fatalf("hash %s, %s:%d: program 1 sent it to tm%d, program 2 to tm%d", h, p.Src, p.SrcPort, a, b)
			}
			used[a]++
		}
		t.Logf("hash %-14s 1000 new flows, the same TM in both programs: %v", h, used)
		if h != config.HashDstIP && h != config.HashPort && len(used) != 5 {
			t.Errorf("hash %s: used %v, want all five TMs", h, used)
		}
	}

	// Persistence on TCP: service index 7 (5-tuple) and 6 (src-ip; index 6
	// is reused: its ring is the same pool's, and the UDP service on it is
	// done).
	mask := datapath.FieldProto | datapath.FieldSrc | datapath.FieldDst | datapath.FieldDstPort
	for _, d := range []*fixture{d1, d2} {
		must(t, d.tables.SetMasks([]uint32{mask})) // the second keys' masks, as the daemon writes them
	}
	d1.consistentService(t, p1, 2000, flow.ProtoTCP, 7, 0, mask)
	d2.consistentService(t, p2, 2000, flow.ProtoTCP, 7, 0, mask)
	d1.consistentService(t, p1, 2001, flow.ProtoTCP, 6, config.HashBits(config.HashSrcIP), mask)
	d2.consistentService(t, p2, 2001, flow.ProtoTCP, 6, config.HashBits(config.HashSrcIP), mask)
	for _, tc := range []struct {
		port       uint16
		consistent bool
	}{{2000, false}, {2001, true}} {
		differ := 0
		const clients = 300
		for range clients {
			first := flowtest.Packet{DstMAC: ourMAC, Src: client(), Dst: vip4a, Proto: flow.ProtoTCP, SrcPort: uint16(1024 + r.IntN(30000)), DstPort: tc.port, TCPFlags: flowtest.ACK}
			second := first
			second.SrcPort += 30000
			on1 := d1.tmOf(t, first)
			if again := d1.tmOf(t, second); again != on1 {
				t.Fatalf("port %d: program 1 sent the client's second flow to tm%d, its persistence entry to tm%d", tc.port, again, on1)
			}
			if d2.tmOf(t, second) != on1 {
				differ++
			}
		}
		t.Logf("persistence on port %d: %d of %d clients' second flow went elsewhere through the other program", tc.port, differ, clients)
		if tc.consistent && differ != 0 || !tc.consistent && differ < clients/4 {
			t.Errorf("persistence on port %d: %d of %d clients differ (consistent: %v)", tc.port, differ, clients, tc.consistent)
		}
	}
	d1.compareTables(t)
	d2.compareTables(t)
}
