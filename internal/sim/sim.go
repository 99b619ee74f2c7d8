// Package sim simulates Switchyard scaled out: N distributors behind a
// router's ECMP, each choosing TMs with the real weighted Maglev ring
// (internal/selector) indexed by the data path's own hash (flow.Hash, as
// sy_policy_hash with the 5-tuple), optionally mirroring flows to peers.
//
// It answers, without namespaces or root: how big each distributor's flow
// table is, what mirroring costs on the wire and in CPU (from measured
// per-update costs, given as parameters), and what share of established
// flows breaks when a distributor or a TM is added or lost, with and
// without mirroring. Flows are sampled (Params.Sample of Params.Flows) and
// each share comes with its 95% confidence half-width.
package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/mirror"
	"github.com/switchyard/switchyard/internal/selector"
)

// Params are the simulation's inputs. Default returns the figures of the
// issue (64 distributors, 1,000 TMs, 10 M flows) and the measured costs.
type Params struct {
	Distributors int    // N, the distributors behind ECMP (2..1024)
	TMs          int    // TMs in the one service's pool (2..65535)
	Flows        int64  // established flows across the cluster (the population)
	Sample       int    // flows actually simulated (≤ Flows); 0: all of them
	RingSize     uint32 // Maglev slots (prime)
	Replicas     int    // k of k-replica mirroring: copies besides the owner's (1..N-1)
	Seed         uint64 // flows, the lost TM and distributor, the router's hash key
	ECMP         string // ECMPThreshold, ECMPModulo or ECMPResilient

	// Pinned is the share of flows whose TM no hash recomputes (memorized
	// by a TM, learned from a TM's SYN, round-robin): a distributor that
	// gets one without its entry sends it to the ring's TM, the wrong one.
	Pinned float64

	// BytesPerFlow is the flow table's memory per entry (docs/performance.md,
	// BenchmarkFlowTableMemory: 138.8 B at 10 M entries).
	BytesPerFlow float64
	// NewFlowRate is new flows per second across the cluster.
	NewFlowRate float64
	// UpdatesPerFlow is how many mirror updates one flow's life makes
	// (events of one key within a 1 ms batch make one): new, a state
	// change, the delete.
	UpdatesPerFlow float64
	// RefreshSeconds is the refresh walk's period (mirror.Config.Refresh).
	RefreshSeconds float64
	// ActiveShare is the share of the flows used within each refresh period
	// (the refresh walk sends only those).
	ActiveShare float64
	// HopCPUNanos is the CPU (sender and receiver together, syscalls
	// included) of one entry delivered to one peer, measured with
	// BenchmarkHopCost.
	HopCPUNanos float64
	// MirrorN are the cluster sizes the mirroring table is computed for.
	MirrorN []int
}

// Default returns the parameters of docs/performance.md's "Scale-out
// simulation".
func Default() Params {
	return Params{
		Distributors:   64,
		TMs:            1000,
		Flows:          10_000_000,
		Sample:         1_000_000,
		RingSize:       datapath.DefaultRingSize,
		Replicas:       2,
		Seed:           1,
		ECMP:           ECMPThreshold,
		BytesPerFlow:   138.8,
		NewFlowRate:    100_000,
		UpdatesPerFlow: 3,
		RefreshSeconds: 5,
		ActiveShare:    1,
		HopCPUNanos:    DefaultHopCPUNanos,
		MirrorN:        []int{2, 4, 16, 64},
	}
}

// DefaultHopCPUNanos is the CPU per entry per peer measured by
// BenchmarkHopCost (sender's lookup, encode and sign, loopback UDP send and
// receive, check and decode, install into the Go model; the thread's CPU
// time): 923, 949 and 1,053 ns in three runs, the median
// (docs/performance.md, "Scale-out simulation").
const DefaultHopCPUNanos = 949

// Bounds of the parameters: the simulation's memory and time stay bounded.
const (
	MaxDistributors = 1024
	MaxTMs          = 65535
	MaxSample       = 100_000_000
)

// Validate checks p and says what is wrong.
func (p Params) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if p.Distributors < 2 || p.Distributors > MaxDistributors {
		bad("distributors %d: want 2..%d", p.Distributors, MaxDistributors)
	}
	if p.TMs < 2 || p.TMs > MaxTMs {
		bad("tms %d: want 2..%d", p.TMs, MaxTMs)
	}
	if p.Flows < 1 {
		bad("flows %d: want at least 1", p.Flows)
	}
	if p.Sample < 0 || p.Sample > MaxSample || int64(p.Sample) > p.Flows {
		bad("sample %d: want 0 (all flows) or 1..min(flows, %d)", p.Sample, MaxSample)
	}
	if p.Sample == 0 && p.Flows > MaxSample {
		bad("flows %d without a sample: at most %d flows are simulated", p.Flows, MaxSample)
	}
	if !selector.IsPrime(p.RingSize) {
		bad("ring size %d: want a prime", p.RingSize)
	} else if p.RingSize < uint32(p.TMs) {
		bad("ring size %d: want at least one slot per TM (%d)", p.RingSize, p.TMs)
	} else if p.RingSize > 1<<24 {
		bad("ring size %d: want at most %d", p.RingSize, 1<<24)
	}
	if p.Replicas < 1 || p.Replicas > p.Distributors-1 {
		bad("replicas %d: want 1..distributors-1 (%d)", p.Replicas, p.Distributors-1)
	}
	if _, err := newRouter(p.ECMP, 1); err != nil {
		bad("%w", err)
	}
	for name, v := range map[string]float64{"pinned": p.Pinned, "active share": p.ActiveShare} {
		if !(v >= 0 && v <= 1) {
			bad("%s %v: want 0..1", name, v)
		}
	}
	for name, v := range map[string]float64{"bytes per flow": p.BytesPerFlow, "new flow rate": p.NewFlowRate,
		"updates per flow": p.UpdatesPerFlow, "hop cpu": p.HopCPUNanos} {
		if !(v >= 0 && v < 1e12) {
			bad("%s %v: want 0..1e12", name, v)
		}
	}
	if !(p.RefreshSeconds > 0 && p.RefreshSeconds < 1e6) {
		bad("refresh %v s: want more than 0", p.RefreshSeconds)
	}
	if len(p.MirrorN) > 32 {
		bad("mirror-n: at most 32 sizes")
	}
	for _, n := range p.MirrorN {
		if n < 2 || n > MaxDistributors {
			bad("mirror-n %d: want 2..%d", n, MaxDistributors)
		}
	}
	return errors.Join(errs...)
}

// Share is a measured proportion of the sampled flows.
type Share struct {
	Count int64   // sampled flows
	Of    int64   // the sample
	P     float64 // Count/Of
	CI95  float64 // half-width of the 95% confidence interval (Wilson)
}

func share(count, of int64) Share {
	if of == 0 {
		return Share{}
	}
	p := float64(count) / float64(of)
	// Wilson score interval: right at 0 and near it, where the normal
	// approximation gives a zero width.
	const z = 1.96
	n := float64(of)
	d := 1 + z*z/n
	half := z * math.Sqrt(p*(1-p)/n+z*z/(4*n*n)) / d
	centre := (p + z*z/(2*n)) / d
	return Share{Count: count, Of: of, P: p, CI95: math.Max(math.Abs(centre-p)+half, 0)}
}

// Event is one change and its effect on the established flows.
type Event struct {
	Name string
	// Moved: flows the router now sends to another distributor.
	Moved Share
	// Changed: flows whose ring slot now names another TM than the one
	// they are on (they stay on theirs where a distributor holds the entry).
	Changed Share
	// Broken flows with no mirroring, full-mesh mirroring and k-replica
	// mirroring: they reach a TM that does not have their state.
	BrokenNone, BrokenFull, BrokenK Share
}

// Table is one distributor's flow table at a mirroring scheme.
type Table struct {
	Scheme  string
	Entries float64 // per distributor
	Bytes   float64 // Entries × BytesPerFlow
}

// Mirroring is the cost of one scheme at one cluster size, per distributor.
type Mirroring struct {
	N          int
	Scheme     string
	Peers      int     // peers each update goes to
	Updates    float64 // updates/s a distributor makes (events + refresh)
	Entries    float64 // entries/s sent (= received, by symmetry)
	Datagrams  float64 // datagrams/s sent, full datagrams of 21 entries, plus heartbeats
	Bytes      float64 // bytes/s sent at the IP layer (UDP/IPv4 headers included)
	CPU        float64 // cores: Entries × HopCPUNanos (send and receive sides)
	TableBytes float64 // flow-table memory per distributor
}

// Result is what Run found.
type Result struct {
	Params Params
	Ring   struct {
		SlotsPerTMMin, SlotsPerTMMax int
		Bytes                        int // one service's ring in the data path
	}
	LostTM, LostDistributor int
	// Divergent: flows no hash recomputes after one TM was added during
	// their life (ring choice changed) or pinned: what SchemeDivergent
	// mirrors.
	Divergent Share
	// Busiest is the largest distributor's share of the flows, as a
	// multiple of the mean (1/N): before and after the lost one's flows
	// are spread over the survivors (its mean then 1/(N-1)). Size
	// max_flows for it, not for the mean.
	Busiest, BusiestAfterLoss float64
	Tables                    []Table
	Events                    []Event
	Mirroring                 []Mirroring
	// Warnings: what the simulated fleet exceeds in the data path.
	Warnings []string
}

// Mirroring schemes.
const (
	SchemeNone     = "none"
	SchemeFullEcho = "full mesh (as built)"
	SchemeFull     = "full mesh, owner refresh"
	SchemeK        = "k-replica"
	// SchemeDivergent is the design docs/mirror.md proposes: a full mesh
	// of only the entries no hash recomputes (their TM is not the ring's
	// current choice, or they were memorized or learned).
	SchemeDivergent = "full mesh, divergent only"
)

// entryWire is the bytes one datagram of full entries takes at the IP layer
// (IPv4 20 + UDP 8).
const ipUDP = 28

// MirrorCost computes the mirroring schemes' cost at cluster size n.
// divergent is the share of flows whose TM no hash recomputes (for
// SchemeDivergent): the ring choice changed since they began, or pinned.
func MirrorCost(p Params, n int, divergent float64) []Mirroring {
	f := float64(p.Flows)
	owned := f / float64(n)
	events := p.NewFlowRate / float64(n) * p.UpdatesPerFlow
	refreshOwn := owned * p.ActiveShare / p.RefreshSeconds
	// As built, every holder's refresh walk sends every entry used since
	// its last walk, its peers' copies included (an installed copy's
	// last_seen is the owner's): with a full mesh each distributor refreshes
	// the whole cluster's active flows.
	refreshAll := f * p.ActiveShare / p.RefreshSeconds
	k := min(p.Replicas, n-1)
	row := func(scheme string, peers int, updates float64, entries float64) Mirroring {
		m := Mirroring{N: n, Scheme: scheme, Peers: peers, Updates: updates}
		m.Entries = updates * float64(peers)
		dgrams := m.Entries / float64(mirror.MaxEntries)
		hb := float64(peers) * 10 // heartbeats every 100 ms per peer
		m.Datagrams = dgrams + hb
		m.Bytes = m.Entries*mirror.EntrySize + dgrams*(mirror.HeaderSize+mirror.MACSize+ipUDP) + hb*(mirror.HeaderSize+mirror.MACSize+ipUDP)
		m.CPU = m.Entries * p.HopCPUNanos / 1e9
		m.TableBytes = entries * p.BytesPerFlow
		return m
	}
	return []Mirroring{
		row(SchemeFullEcho, n-1, events+refreshAll, f),
		row(SchemeFull, n-1, events+refreshOwn, f),
		row(SchemeK, k, events+refreshOwn, owned*float64(1+k)),
		// Divergent only: pinned flows from birth (their events), the
		// divergent share of the owned flows in the refresh; every
		// distributor holds its own flows and everyone's divergent ones.
		// A ring change sends the newly divergent entries once (Burst).
		row(SchemeDivergent, n-1, p.NewFlowRate/float64(n)*p.UpdatesPerFlow*p.Pinned+refreshOwn*divergent, owned+f*divergent*float64(n-1)/float64(n)),
	}
}

// counts of one worker.
type counts struct {
	n                                        int64
	pinned, pinnedChangedAdd                 int64
	perOwner, perOwnerLost                   []int64 // flows per distributor id, before and after the loss
	movedL, movedA                           int64
	changedAdd, changedLost, onLost          int64
	pinnedMovedL, pinnedMovedLKeep           int64
	pinnedMovedA, pinnedMovedAKeep           int64
	addLostBroken, addLostKeep               int64
	lostLostBroken, lostLostKeep, lostStaleL int64
	addAddBroken, addAddKeep                 int64
}

func (c *counts) add(o counts) {
	c.n += o.n
	for i, v := range o.perOwner {
		c.perOwner[i] += v
		c.perOwnerLost[i] += o.perOwnerLost[i]
	}
	c.pinned += o.pinned
	c.pinnedChangedAdd += o.pinnedChangedAdd
	c.movedL += o.movedL
	c.movedA += o.movedA
	c.changedAdd += o.changedAdd
	c.changedLost += o.changedLost
	c.onLost += o.onLost
	c.pinnedMovedL += o.pinnedMovedL
	c.pinnedMovedLKeep += o.pinnedMovedLKeep
	c.pinnedMovedA += o.pinnedMovedA
	c.pinnedMovedAKeep += o.pinnedMovedAKeep
	c.addLostBroken += o.addLostBroken
	c.addLostKeep += o.addLostKeep
	c.lostLostBroken += o.lostLostBroken
	c.lostLostKeep += o.lostLostKeep
	c.lostStaleL += o.lostStaleL
	c.addAddBroken += o.addAddBroken
	c.addAddKeep += o.addAddKeep
}

// World is the simulated cluster: the rings before and after a TM is added
// or lost, and the router before and after a distributor is lost or added.
type World struct {
	p                           Params
	ring, ringAdd, ringLost     []uint32
	lostTM                      uint32
	base, lostRouter, addRouter *router
	lostDist                    int
	routerSeed                  uint32
	distSeeds                   []uint64 // rendezvous: one per distributor id (N+1: the added one last)
}

// tmName is the TMs' stable identity, which the Maglev permutation hashes.
func tmName(i int) string { return fmt.Sprintf("tm%04d", i) }

// NewWorld builds the rings with the real Maglev and the routers.
func NewWorld(p Params) (*World, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("simulation parameters: %w", err)
	}
	r := rand.New(rand.NewPCG(p.Seed, 0x5ca1e))
	w := &World{p: p, lostTM: uint32(r.IntN(p.TMs)), lostDist: r.IntN(p.Distributors), routerSeed: r.Uint32()}
	pool := func(n int, skip int) []selector.Backend {
		var bs []selector.Backend
		for i := range n {
			if i != skip {
				bs = append(bs, selector.Backend{Index: uint32(i), Name: tmName(i), Weight: 1})
			}
		}
		return bs
	}
	var err error
	if w.ring, err = selector.Maglev(pool(p.TMs, -1), p.RingSize); err != nil {
		return nil, fmt.Errorf("ring of %d TMs: %w", p.TMs, err)
	}
	if w.ringAdd, err = selector.Maglev(pool(p.TMs+1, -1), p.RingSize); err != nil {
		return nil, fmt.Errorf("ring of %d TMs: %w", p.TMs+1, err)
	}
	if w.ringLost, err = selector.Maglev(pool(p.TMs, int(w.lostTM)), p.RingSize); err != nil {
		return nil, fmt.Errorf("ring without %s: %w", tmName(int(w.lostTM)), err)
	}
	if w.base, err = newRouter(p.ECMP, p.Distributors); err != nil {
		return nil, err
	}
	w.lostRouter = w.base.without(w.lostDist)
	w.addRouter = w.base.with(p.Distributors)
	for range p.Distributors + 1 {
		w.distSeeds = append(w.distSeeds, r.Uint64())
	}
	return w, nil
}

// fmix64 is murmur3's 64-bit finalizer.
func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// Replicas returns the k distributors (ids < n, not owner) that hold a copy
// of a flow whose key hash is kh under k-replica mirroring: the top k of a
// rendezvous (highest random weight) ranking over the distributor list, so
// every distributor computes the same set from the key alone, and a change
// of the list moves only the copies that must move.
func (w *World) Replicas(dst []int, kh uint64, owner, n, k int) []int {
	dst = dst[:0]
	var scores []uint64
	for d := range n {
		if d == owner {
			continue
		}
		s := fmix64(kh ^ w.distSeeds[d])
		// Insertion into the top k, highest first.
		i := len(dst)
		if i < k {
			dst = append(dst, d)
			scores = append(scores, s)
		} else if s <= scores[k-1] {
			continue
		} else {
			i = k - 1
			dst[i], scores[i] = d, s
		}
		for ; i > 0 && scores[i] > scores[i-1]; i-- {
			dst[i], dst[i-1] = dst[i-1], dst[i]
			scores[i], scores[i-1] = scores[i-1], scores[i]
		}
	}
	return dst
}

// Flow is one simulated flow's facts, exported for tests.
type Flow struct {
	Key                        datapath.FlowKey
	Slot                       uint32 // ring slot: flow.Hash(key, 0) % ring size (sy_policy_hash, 5-tuple, seed 0)
	TM, TMAdd, TMLost          uint32 // the ring's TM now, after a TM is added, after one is lost
	Owner, OwnerLost, OwnerAdd int    // distributor ids: now, after one is lost, after one is added
	Pinned                     bool
	KeyHash                    uint64 // rendezvous input
}

// MakeFlow computes a flow's facts from its key.
func (w *World) MakeFlow(k datapath.FlowKey, pinned bool) Flow {
	f := Flow{Key: k, Pinned: pinned}
	f.Slot = flow.Hash(k, 0) % w.p.RingSize
	f.TM, f.TMAdd, f.TMLost = w.ring[f.Slot], w.ringAdd[f.Slot], w.ringLost[f.Slot]
	rh := flow.Hash(k, w.routerSeed)
	f.Owner, f.OwnerLost, f.OwnerAdd = w.base.pick(rh), w.lostRouter.pick(rh), w.addRouter.pick(rh)
	f.KeyHash = fmix64(uint64(flow.Hash(k, 0x7e91ca5)) | uint64(rh)<<32)
	return f
}

// RandomKey is a flow key of the simulated traffic: a TCP client anywhere
// in IPv4 to one VIP on port 443.
func RandomKey(r *rand.Rand) datapath.FlowKey {
	var a [4]byte
	v := r.Uint32()
	a[0], a[1], a[2], a[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return flow.MakeKey(netip.AddrFrom4(a), vip, uint16(1024+r.IntN(64512)), 443, flow.ProtoTCP, 0)
}

var vip = netip.MustParseAddr("192.0.2.10")

// LostTM is the index of the TM the events take away (chosen by the seed).
func (w *World) LostTM() uint32 { return w.lostTM }

// LostDistributor is the id of the distributor the events take away
// (chosen by the seed).
func (w *World) LostDistributor() int { return w.lostDist }

// classify adds one flow to c.
func (w *World) classify(c *counts, f Flow, rep []int) []int {
	p := w.p
	n, k := p.Distributors, p.Replicas
	c.n++
	c.perOwner[f.Owner]++
	c.perOwnerLost[f.OwnerLost]++
	movedL, movedA := f.OwnerLost != f.Owner, f.OwnerAdd != f.Owner
	if movedL {
		c.movedL++
	}
	if movedA {
		c.movedA++
	}
	changedAdd := f.TMAdd != f.TM
	onLost := f.TM == w.lostTM
	changedLost := !onLost && f.TMLost != f.TM
	if changedAdd {
		c.changedAdd++
	}
	if f.Pinned {
		c.pinned++
		if changedAdd {
			c.pinnedChangedAdd++
		}
	}
	if changedLost {
		c.changedLost++
	}
	if onLost {
		c.onLost++
	}
	// k-replica copies: before a loss, over the N distributors; after an
	// addition, over N+1 (the newcomer resynced its share before it
	// announced).
	keepL, keepA := false, false
	if movedL {
		rep = w.Replicas(rep, f.KeyHash, f.Owner, n, k)
		for _, d := range rep {
			keepL = keepL || d == f.OwnerLost
		}
	}
	if movedA {
		rep = w.Replicas(rep, f.KeyHash, f.Owner, n+1, k)
		for _, d := range rep {
			keepA = keepA || d == f.OwnerAdd
		}
	}
	// A flow that reaches a distributor without its entry is re-selected
	// by the ring there: it breaks if the ring's TM is not its TM.
	if movedL && f.Pinned {
		c.pinnedMovedL++
		if keepL {
			c.pinnedMovedLKeep++
		}
	}
	if movedA && f.Pinned {
		c.pinnedMovedA++
		if keepA {
			c.pinnedMovedAKeep++
		}
	}
	if movedL && (changedAdd || f.Pinned) {
		c.addLostBroken++
		if keepL {
			c.addLostKeep++
		}
	}
	if movedA && (changedAdd || f.Pinned) {
		c.addAddBroken++
		if keepA {
			c.addAddKeep++
		}
	}
	if !onLost && movedL && (changedLost || f.Pinned) {
		c.lostLostBroken++
		if keepL {
			c.lostLostKeep++
		}
	}
	return rep
}

// Run simulates the sample over every CPU and returns the result. The
// result depends on Params only (each worker's flows come from its own
// seeded stream), not on the number of CPUs.
func Run(p Params) (*Result, error) {
	w, err := NewWorld(p)
	if err != nil {
		return nil, err
	}
	sample := int64(p.Sample)
	if sample == 0 {
		sample = p.Flows
	}
	const chunk = 1 << 16
	chunks := (sample + chunk - 1) / chunk
	newCounts := func() counts {
		return counts{perOwner: make([]int64, p.Distributors), perOwnerLost: make([]int64, p.Distributors)}
	}
	var (
		mu    sync.Mutex
		total = newCounts()
		next  int64
		wg    sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newCounts()
			rep := make([]int, 0, p.Replicas)
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= chunks {
					break
				}
				r := rand.New(rand.NewPCG(p.Seed, uint64(i)))
				for j := i * chunk; j < min(sample, (i+1)*chunk); j++ {
					f := w.MakeFlow(RandomKey(r), r.Float64() < p.Pinned)
					rep = w.classify(&c, f, rep)
				}
			}
			mu.Lock()
			total.add(c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return w.result(total), nil
}

func (w *World) result(c counts) *Result {
	p := w.p
	res := &Result{Params: p, LostTM: int(w.lostTM), LostDistributor: w.lostDist}
	slots := map[uint32]int{}
	for _, t := range w.ring {
		slots[t]++
	}
	res.Ring.SlotsPerTMMin = math.MaxInt
	for i := range p.TMs {
		res.Ring.SlotsPerTMMin = min(res.Ring.SlotsPerTMMin, slots[uint32(i)])
		res.Ring.SlotsPerTMMax = max(res.Ring.SlotsPerTMMax, slots[uint32(i)])
	}
	res.Ring.Bytes = int(p.RingSize) * 4
	res.Busiest = float64(slices.Max(c.perOwner)) * float64(p.Distributors) / float64(c.n)
	res.BusiestAfterLoss = float64(slices.Max(c.perOwnerLost)) * float64(p.Distributors-1) / float64(c.n)
	s := func(x int64) Share { return share(x, c.n) }
	zero := s(0)
	res.Events = []Event{
		{Name: "TM added", Changed: s(c.changedAdd), BrokenNone: zero, BrokenFull: zero, BrokenK: zero},
		{Name: "TM lost", Changed: s(c.changedLost + c.onLost), BrokenNone: s(c.onLost), BrokenFull: s(c.onLost), BrokenK: s(c.onLost)},
		{Name: "distributor added", Moved: s(c.movedA), BrokenNone: s(c.pinnedMovedA), BrokenFull: zero, BrokenK: s(c.pinnedMovedA - c.pinnedMovedAKeep)},
		{Name: "distributor lost", Moved: s(c.movedL), BrokenNone: s(c.pinnedMovedL), BrokenFull: zero, BrokenK: s(c.pinnedMovedL - c.pinnedMovedLKeep)},
		{Name: "TM added, then distributor added", Moved: s(c.movedA), Changed: s(c.changedAdd), BrokenNone: s(c.addAddBroken), BrokenFull: zero, BrokenK: s(c.addAddBroken - c.addAddKeep)},
		{Name: "TM added, then distributor lost", Moved: s(c.movedL), Changed: s(c.changedAdd), BrokenNone: s(c.addLostBroken), BrokenFull: zero, BrokenK: s(c.addLostBroken - c.addLostKeep)},
		{Name: "TM lost, then distributor lost", Moved: s(c.movedL), Changed: s(c.changedLost + c.onLost),
			BrokenNone: s(c.onLost + c.lostLostBroken), BrokenFull: s(c.onLost), BrokenK: s(c.onLost + c.lostLostBroken - c.lostLostKeep)},
	}
	n := float64(p.Distributors)
	f := float64(p.Flows)
	res.Tables = []Table{
		{Scheme: SchemeNone, Entries: f / n},
		{Scheme: "full mesh", Entries: f},
		{Scheme: fmt.Sprintf("k-replica (k=%d)", p.Replicas), Entries: f / n * float64(1+p.Replicas)},
	}
	for i := range res.Tables {
		res.Tables[i].Bytes = res.Tables[i].Entries * p.BytesPerFlow
	}
	sizes := append([]int{}, p.MirrorN...)
	if !contains(sizes, p.Distributors) {
		sizes = append(sizes, p.Distributors)
	}
	res.Divergent = share(c.changedAdd+c.pinned-c.pinnedChangedAdd, c.n)
	for _, n := range sizes {
		res.Mirroring = append(res.Mirroring, MirrorCost(p, n, res.Divergent.P)...)
	}
	if p.TMs > datapath.MaxTMs {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the data path addresses %d TM indexes (SY_MAX_TMS); %d TMs need it raised (the flow entry's TM field is 16 bits)", datapath.MaxTMs, p.TMs))
	}
	if float64(p.RingSize) < 100*float64(p.TMs) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("ring size %d is under 100 slots per TM (%d TMs): shares are uneven (%d..%d slots per TM); Maglev's paper uses at least 100", p.RingSize, p.TMs, res.Ring.SlotsPerTMMin, res.Ring.SlotsPerTMMax))
	}
	return res
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
