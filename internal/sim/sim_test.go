package sim

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/internal/mirror"
	"github.com/switchyard/switchyard/internal/selector"
)

func small() Params {
	p := Default()
	p.Distributors, p.TMs, p.Flows, p.Sample, p.RingSize, p.Replicas = 4, 16, 4000, 0, 251, 1
	return p
}

// within fails unless got is within tol of want.
func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s: %.5f, want %.5f ± %.5f", what, got, want, tol)
	} else {
		t.Logf("%s: %.5f (want %.5f ± %.5f)", what, got, want, tol)
	}
}

// TestMaglevAddTM: adding a TM to a ring of 1,000 (the real Maglev, the
// default 65,537 slots) gives the new TM ≈ 1/1001 of the keys; keys move
// exactly as their slots do; and Maglev moves more than the minimum in
// total (keys between old TMs too), which the figures in
// docs/performance.md report.
func TestMaglevAddTM(t *testing.T) {
	p := Default()
	p.Sample = 400_000
	w, err := NewWorld(p)
	if err != nil {
		t.Fatal(err)
	}
	changedSlots := len(selector.Changed(w.ring, w.ringAdd))
	r := rand.New(rand.NewPCG(3, 4))
	var toNew, moved int
	for range p.Sample {
		f := w.MakeFlow(RandomKey(r), false)
		if f.TMAdd == uint32(p.TMs) {
			toNew++
		}
		if f.TMAdd != f.TM {
			moved++
		}
	}
	n := float64(p.Sample)
	sigma := func(q float64) float64 { return 4 * math.Sqrt(q*(1-q)/n) }
	// The new TM's share of the ring, then of the keys.
	newSlots := 0
	for _, tm := range w.ringAdd {
		if tm == uint32(p.TMs) {
			newSlots++
		}
	}
	within(t, "new TM's share of the slots", float64(newSlots)/float64(p.RingSize), 1.0/1001, 0.1/1001)
	within(t, "keys that go to the new TM", float64(toNew)/n, 1.0/1001, sigma(1.0/1001)+0.1/1001)
	q := float64(changedSlots) / float64(p.RingSize)
	within(t, "keys that move (all), against the changed slots", float64(moved)/n, q, sigma(q))
	if q < 1.0/1001 || q > 10.0/1001 {
		t.Errorf("adding one TM changed %.4f of the slots; want between the minimum 1/1001 and 10/1001", q)
	}
	t.Logf("adding one TM to 1000 changes %d of %d slots (%.2f× the minimum)", changedSlots, p.RingSize, q*1001)
}

// TestMaglevLoseTM: losing a TM breaks exactly the keys on it (its slots,
// ≈ 1/1000), and the lost TM's slots all go elsewhere.
func TestMaglevLoseTM(t *testing.T) {
	p := Default()
	w, err := NewWorld(p)
	if err != nil {
		t.Fatal(err)
	}
	for i, tm := range w.ring {
		if tm == w.lostTM && w.ringLost[i] == w.lostTM {
			t.Fatalf("slot %d still names the lost TM", i)
		}
	}
	p.Sample = 400_000
	res, err := Run(p)
	if err != nil {
		t.Fatal(err)
	}
	e := res.Events[1]
	within(t, "flows broken by a lost TM", e.BrokenNone.P, 1.0/1000, 4*math.Sqrt(1e-3/4e5)+0.1/1000)
	if e.BrokenFull != e.BrokenNone || e.BrokenK != e.BrokenNone {
		t.Errorf("mirroring changed what a lost TM breaks: %+v", e)
	}
}

// TestECMPModels: the router models move what they are known to move when
// one of N next hops is withdrawn: modulo ≈ (N-1)/N, resilient exactly the
// dead one's flows (≈ 1/N), hash-threshold the dead one's and some of the
// survivors'; an added next hop under resilient takes ≈ 1/(N+1).
func TestECMPModels(t *testing.T) {
	const n = 8
	r := rand.New(rand.NewPCG(5, 6))
	hashes := make([]uint32, 200_000)
	for i := range hashes {
		hashes[i] = r.Uint32()
	}
	tol := 4 * math.Sqrt(0.25/float64(len(hashes)))
	for _, tc := range []struct {
		mode         string
		lost, added  float64 // share moved
		onlyTheDeads bool
	}{
		{ECMPModulo, float64(n-1) / n, float64(n) / (n + 1), false},
		{ECMPResilient, 1.0 / n, 1.0 / (n + 1), true},
		{ECMPThreshold, -1, -1, false},
	} {
		base, err := newRouter(tc.mode, n)
		if err != nil {
			t.Fatal(err)
		}
		const dead = 3
		lost, added := base.without(dead), base.with(n)
		var movedL, movedA, survivorsMoved, onDead int
		for _, h := range hashes {
			a, b, c := base.pick(h), lost.pick(h), added.pick(h)
			if b == dead {
				t.Fatalf("%s: a flow still goes to the withdrawn next hop", tc.mode)
			}
			if a == dead {
				onDead++
			}
			if a != b {
				movedL++
				if a != dead {
					survivorsMoved++
				}
			}
			if a != c {
				movedA++
				if tc.onlyTheDeads && c != n {
					t.Fatalf("%s: adding a next hop moved a flow between old ones", tc.mode)
				}
			}
		}
		m := float64(len(hashes))
		if tc.lost >= 0 {
			within(t, tc.mode+": moved when one is lost", float64(movedL)/m, tc.lost, tol)
			within(t, tc.mode+": moved when one is added", float64(movedA)/m, tc.added, tol)
		}
		if tc.onlyTheDeads && survivorsMoved != 0 {
			t.Errorf("%s: %d flows of survivors moved", tc.mode, survivorsMoved)
		}
		if tc.mode == ECMPThreshold {
			// Withdrawing next hop 3 of 8 resizes every range: the dead
			// one's flows and a share of the survivors' move.
			if movedL <= onDead || survivorsMoved == 0 {
				t.Errorf("hash-threshold: %d moved, %d were on the dead one; want survivors' flows moved too", movedL, onDead)
			}
			t.Logf("hash-threshold: withdrawing 1 of %d moves %.3f (the dead one held %.3f); adding one moves %.3f", n, float64(movedL)/m, float64(onDead)/m, float64(movedA)/m)
		}
	}
}

// TestReplicas: the rendezvous replicas are k distinct distributors other
// than the owner; removing a distributor that is not a replica changes no
// replica set; and of the flows moved off a dead distributor, the share
// whose new distributor holds a copy is ≈ k/(N-1).
func TestReplicas(t *testing.T) {
	p := Default()
	p.Distributors, p.Replicas = 16, 3
	w, err := NewWorld(p)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	var rep, rep2 []int
	var moved, kept int
	for range 100_000 {
		f := w.MakeFlow(RandomKey(r), false)
		rep = w.Replicas(rep, f.KeyHash, f.Owner, p.Distributors, p.Replicas)
		if len(rep) != p.Replicas || slices.Contains(rep, f.Owner) {
			t.Fatalf("replicas %v of owner %d", rep, f.Owner)
		}
		s := slices.Clone(rep)
		slices.Sort(s)
		if len(slices.Compact(s)) != p.Replicas {
			t.Fatalf("replicas %v repeat", rep)
		}
		// Over N+1 distributors, the set is the N's with at most one
		// member swapped for the newcomer.
		rep2 = w.Replicas(rep2, f.KeyHash, f.Owner, p.Distributors+1, p.Replicas)
		var same int
		for _, d := range rep2 {
			if slices.Contains(rep, d) {
				same++
			}
		}
		if same < p.Replicas-1 || (same == p.Replicas-1 && !slices.Contains(rep2, p.Distributors)) {
			t.Fatalf("replicas %v became %v with one more distributor", rep, rep2)
		}
		if f.Owner == w.lostDist {
			moved++
			if slices.Contains(rep, f.OwnerLost) {
				kept++
			}
		}
	}
	q := float64(p.Replicas) / float64(p.Distributors-1)
	within(t, "flows off the dead distributor that find a copy", float64(kept)/float64(moved), q, 4*math.Sqrt(q*(1-q)/float64(moved)))
}

// distributor is one simulated distributor running the Go model of the
// XDP program (flow.Model): the real flow table, ring and selection.
type distributor struct {
	m *flow.Model
}

var ourMAC = [6]uint8{2, 0, 0, 0, 0, 1}

const ifExt = 1

func newDistributor(t *testing.T, ring []uint32, ringSize uint32, tms int) *distributor {
	t.Helper()
	m := flow.NewModel(ringSize, 1, 0)
	d := &distributor{m: m}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.SetNow(1000))
	must(m.SetIface(ifExt, datapath.RoleExternal, ourMAC))
	for i := range tms + 1 {
		must(m.SetTM(uint32(i), datapath.TM{Mac: [6]uint8{2, 0xaa, 0, 0, 0, uint8(i)}, SrcMac: ourMAC, Ifindex: ifExt, Flags: datapath.TMReady}))
	}
	must(m.WriteRing(0, ring, nil))
	must(m.SetService(flow.ServiceKey(vip, 443, flow.ProtoTCP), datapath.Service{Index: 0}))
	must(m.SetVIP(flow.AddrKey(vip), 1))
	return d
}

// send runs an ACK of flow k through d and returns the TM it went to.
func (d *distributor) send(t *testing.T, k datapath.FlowKey) uint32 {
	t.Helper()
	pkt := flowtest.Packet{DstMAC: ourMAC, SrcMAC: [6]byte{2, 0xcc, 0, 0, 0, 1}, Src: flow.Src(k), Dst: flow.Dst(k), Proto: flow.ProtoTCP,
		SrcPort: flow.SrcPort(k), DstPort: flow.DstPort(k), TCPFlags: flowtest.ACK, Seq: 5000, Ack: 7000, Payload: []byte("x")}
	v, out := d.m.Process(pkt.Bytes(), ifExt)
	if v != datapath.TX {
		t.Fatalf("%s: verdict %v, want TX", flow.String(k), v)
	}
	return uint32(out[5])
}

// TestBrokenAgainstTheModel runs the events of the simulation through
// real data-path models (flow.Model, the executable spec of the XDP
// program), one per distributor, and checks flow by flow that what the
// simulation calls broken is what the model does: flows start on their
// ECMP distributor under the ring of 16 TMs; a TM is added (every
// distributor's ring rewritten); then a distributor is lost and each flow's
// next packet goes to its new ECMP distributor. Without mirroring a flow
// breaks exactly when it moved and its ring choice changed; with k-replica
// mirroring (the owner's entries installed on the replicas by
// mirror.Install, as the peer protocol does) when in addition its new
// distributor holds no copy; with a full mesh never.
func TestBrokenAgainstTheModel(t *testing.T) {
	for _, mode := range ECMPModes {
		t.Run(mode, func(t *testing.T) {
			p := small()
			p.ECMP = mode
			w, err := NewWorld(p)
			if err != nil {
				t.Fatal(err)
			}
			schemes := []string{SchemeNone, SchemeK, "full"}
			ds := map[string][]*distributor{}
			for _, s := range schemes {
				for range p.Distributors {
					ds[s] = append(ds[s], newDistributor(t, w.ring, p.RingSize, p.TMs))
				}
			}
			r := rand.New(rand.NewPCG(p.Seed, 99))
			flows := make([]Flow, p.Flows)
			var rep []int
			for i := range flows {
				f := w.MakeFlow(RandomKey(r), false)
				flows[i] = f
				for _, s := range schemes {
					if got := ds[s][f.Owner].send(t, f.Key); got != f.TM {
						t.Fatalf("%s: first packet went to TM %d, the ring's is %d", flow.String(f.Key), got, f.TM)
					}
					e, err := ds[s][f.Owner].m.LookupFlow(f.Key)
					if err != nil {
						t.Fatal(err)
					}
					var to []int
					switch s {
					case SchemeK:
						rep = w.Replicas(rep, f.KeyHash, f.Owner, p.Distributors, p.Replicas)
						to = rep
					case "full":
						for d := range p.Distributors {
							if d != f.Owner {
								to = append(to, d)
							}
						}
					}
					for _, d := range to {
						en := mirror.Entry{Op: mirror.OpPut, Key: f.Key, Flow: e}
						if _, err := mirror.Install(ds[s][d].m, &en, 1000); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			// A TM is added: every distributor's ring is rewritten.
			for _, s := range schemes {
				for _, d := range ds[s] {
					if err := d.m.WriteRing(0, w.ringAdd, selector.Changed(w.ring, w.ringAdd)); err != nil {
						t.Fatal(err)
					}
				}
			}
			broken := map[string]int{}
			var predicted, predictedK, moved int
			for _, f := range flows {
				stale := f.TMAdd != f.TM
				rep = w.Replicas(rep, f.KeyHash, f.Owner, p.Distributors, p.Replicas)
				hasCopy := f.OwnerLost == f.Owner || slices.Contains(rep, f.OwnerLost)
				if f.OwnerLost != f.Owner {
					moved++
				}
				wantNone := f.OwnerLost != f.Owner && stale
				wantK := wantNone && !hasCopy
				if wantNone {
					predicted++
				}
				if wantK {
					predictedK++
				}
				for _, s := range schemes {
					got := ds[s][f.OwnerLost].send(t, f.Key) != f.TM
					want := map[string]bool{SchemeNone: wantNone, SchemeK: wantK, "full": false}[s]
					if got != want {
						t.Fatalf("%s, %s: broken %v, the simulation says %v (moved %v, ring choice changed %v, copy %v)",
							s, flow.String(f.Key), got, want, f.OwnerLost != f.Owner, stale, hasCopy)
					}
					if got {
						broken[s]++
					}
				}
			}
			if predicted == 0 || moved == 0 {
				t.Fatalf("no flow both moved and changed its ring choice (%d moved): the test shows nothing", moved)
			}
			t.Logf("%d flows, %d moved to another distributor; broken: none %d, k-replica %d, full mesh %d", len(flows), moved, broken[SchemeNone], broken[SchemeK], broken["full"])
			// And Run counts the same kind of thing for the same world.
			res, err := Run(p)
			if err != nil {
				t.Fatal(err)
			}
			e := res.Events[5]
			if !strings.Contains(e.Name, "TM added, then distributor lost") {
				t.Fatalf("event 5 is %q", e.Name)
			}
			if e.BrokenFull.Count != 0 || e.BrokenK.Count > e.BrokenNone.Count || e.BrokenNone.Count > e.Moved.Count {
				t.Errorf("Run's counts are inconsistent: %+v", e)
			}
		})
	}
}

// TestRunDeterministic: the same parameters give the same result whatever
// the scheduling of the workers; another seed gives another sample.
func TestRunDeterministic(t *testing.T) {
	p := Default()
	p.Sample = 200_000
	a, err := Run(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Events, b.Events) {
		t.Errorf("two runs differ:\n%+v\n%+v", a.Events, b.Events)
	}
	p.Seed++
	c, err := Run(p)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a.Events, c.Events) {
		t.Errorf("another seed gave the same result")
	}
}

// TestMirrorCost: full mesh sends each update to N-1 peers and makes every
// distributor hold every flow; k-replica sends to k and holds (1+k)/N; the
// refresh echo of the protocol as built makes full-mesh traffic per
// distributor grow with N even at a fixed cluster load.
func TestMirrorCost(t *testing.T) {
	p := Default()
	at := func(n int) map[string]Mirroring {
		out := map[string]Mirroring{}
		for _, m := range MirrorCost(p, n, 0.006) {
			out[m.Scheme] = m
		}
		return out
	}
	c2, c64 := at(2), at(64)
	if c64[SchemeFull].TableBytes != float64(p.Flows)*p.BytesPerFlow {
		t.Errorf("full mesh table %v, want every flow", c64[SchemeFull].TableBytes)
	}
	within(t, "k-replica table at 64, flows", c64[SchemeK].TableBytes/p.BytesPerFlow, float64(p.Flows)*3/64, 1)
	if c64[SchemeFullEcho].Entries <= 20*c2[SchemeFullEcho].Entries {
		t.Errorf("full mesh as built: %v entries/s at 64, %v at 2; want the echo's growth", c64[SchemeFullEcho].Entries, c2[SchemeFullEcho].Entries)
	}
	if d := c64[SchemeDivergent]; d.Entries >= c64[SchemeK].Entries || d.TableBytes >= c64[SchemeK].TableBytes {
		t.Errorf("divergent-only full mesh (%v entries/s, %v B) not below k-replica at 64", d.Entries, d.TableBytes)
	}
	if c64[SchemeK].Entries >= c64[SchemeFull].Entries/10 {
		t.Errorf("k-replica %v entries/s against full mesh %v at 64", c64[SchemeK].Entries, c64[SchemeFull].Entries)
	}
	// Bytes per datagram stay within one MTU.
	for _, m := range MirrorCost(p, 16, 0.006) {
		if per := (m.Bytes - float64(m.Peers)*10*(mirror.HeaderSize+mirror.MACSize+ipUDP)) / (m.Datagrams - float64(m.Peers)*10); per > 1500 {
			t.Errorf("%s: %.0f bytes per datagram", m.Scheme, per)
		}
	}
}

// TestValidate: bad parameters are refused with what is wrong.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Params)
		want string
	}{
		{func(p *Params) { p.Distributors = 1 }, "distributors 1"},
		{func(p *Params) { p.TMs = 0 }, "tms 0"},
		{func(p *Params) { p.RingSize = 65536 }, "want a prime"},
		{func(p *Params) { p.RingSize = 251 }, "one slot per TM"},
		{func(p *Params) { p.Replicas = 64 }, "replicas 64"},
		{func(p *Params) { p.ECMP = "random" }, "ecmp mode"},
		{func(p *Params) { p.Sample = 0 }, "without a sample"},
		{func(p *Params) { p.Sample = 20_000_000 }, "sample 20000000"},
		{func(p *Params) { p.Pinned = 2 }, "pinned 2"},
		{func(p *Params) { p.ActiveShare = math.NaN() }, "active share"},
		{func(p *Params) { p.RefreshSeconds = 0 }, "refresh"},
		{func(p *Params) { p.MirrorN = []int{1} }, "mirror-n 1"},
	} {
		p := Default()
		p.Flows = 1e9
		if tc.want == "sample 20000000" {
			p.Flows = 10e6
		}
		tc.set(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error with %q, got %v", tc.want, err)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// BenchmarkRun: the simulation's cost, per simulated flow, at the default
// world (64 distributors, 1,000 TMs, ring 65,537, k = 2).
func BenchmarkRun(b *testing.B) {
	p := Default()
	p.Sample = 1_000_000
	b.ResetTimer()
	for range b.N {
		if _, err := Run(p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N)/float64(p.Sample), "ns/flow")
}
