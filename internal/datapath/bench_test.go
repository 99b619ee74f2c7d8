package datapath

// Microbenchmarks of the XDP program against a floor, measured in one run
// (docs/performance.md). They load the benchmark object (bpf/bench.c), whose
// wrappers restore the packet after each run of BPF_PROG_TEST_RUN and, for
// the "vary" ones, write a fresh counter into the source address so that
// every run is a new flow.
//
//	go test ./internal/datapath -run XXX -bench Distributor -benchtime 1x

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/internal/selector"
)

const (
	benchFlows    = 1_000_000 // flows pre-filled in each table
	benchMaxFlows = 1 << 20
	benchRing     = 65537
	benchRounds   = 7
	benchRepeat   = 200_000
	benchPktLen   = 128   // the wrappers save and restore SY_BENCH_LEN = 128 bytes
	benchLo       = 1     // ifindex of lo: test runs without a context arrive there
	benchVaryPort = 40000 // source port of the vary wrappers' flows
)

var (
	benchVIP4    = netip.MustParseAddr("10.0.0.100")
	benchVIP6    = netip.MustParseAddr("fd00:100::100")
	benchNotVIP4 = netip.MustParseAddr("10.0.0.200")
	benchNotVIP6 = netip.MustParseAddr("fd00:100::200")
)

func htons(v uint16) uint16 { return bits.ReverseBytes16(v) }

// benchKey builds a flow key (the flow package cannot be imported here: it
// imports this one).
func benchKey(src, dst netip.Addr, sport, dport uint16) FlowKey {
	var k FlowKey
	s, d := src.As16(), dst.As16()
	k.Family = FamilyIPv6
	if src.Is4() {
		s, d = [16]byte{}, [16]byte{}
		a, b := src.As4(), dst.As4()
		copy(s[:], a[:])
		copy(d[:], b[:])
		k.Family = FamilyIPv4
	}
	k.Src, k.Dst = s, d
	k.Sport, k.Dport = htons(sport), htons(dport)
	k.Proto = unix.IPPROTO_TCP
	return k
}

// benchPacket builds a benchPktLen-byte TCP packet (ACK, zero checksums: the
// program does not check them).
func benchPacket(src, dst netip.Addr, sport, dport uint16) []byte {
	pkt := make([]byte, benchPktLen)
	copy(pkt[0:6], []byte{0x02, 0xee, 0, 0, 0, 1})
	copy(pkt[6:12], []byte{0x02, 0xcc, 0, 0, 0, 1})
	var l4 []byte
	if src.Is4() {
		binary.BigEndian.PutUint16(pkt[12:], 0x0800)
		ip := pkt[14:34]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(benchPktLen-14))
		ip[8] = 64
		ip[9] = unix.IPPROTO_TCP
		s, d := src.As4(), dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		l4 = pkt[34:]
	} else {
		binary.BigEndian.PutUint16(pkt[12:], 0x86dd)
		ip := pkt[14:54]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(benchPktLen-54))
		ip[6] = unix.IPPROTO_TCP
		ip[7] = 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		l4 = pkt[54:]
	}
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	l4[12] = 5 << 4
	l4[13] = 0x10 // ACK
	for i := 20; i < len(l4); i++ {
		l4[i] = byte(i) // payload padding
	}
	return pkt
}

// varyOffset is where the vary wrappers write their counter: the last four
// bytes of the source address.
func varyOffset(v4 bool) uint32 {
	if v4 {
		return 14 + 12
	}
	return 14 + 8 + 12
}

// prefillKey is the i-th pre-filled flow of a family. Its source port is
// below benchVaryPort, so a vary wrapper's flow never collides with it.
func prefillKey(v4 bool, i int) FlowKey {
	sport := uint16(1024 + i%30000)
	if v4 {
		src := netip.AddrFrom4([4]byte{10, 1 + byte(i>>16), byte(i >> 8), byte(i)})
		return benchKey(src, benchVIP4, sport, 80)
	}
	var a [16]byte
	copy(a[:], []byte{0xfd, 0, 0, 1})
	binary.BigEndian.PutUint32(a[12:], uint32(i))
	return benchKey(netip.AddrFrom16(a), benchVIP6, sport, 80)
}

// onEachCPU calls fn(cpu, ncpu) on a thread pinned to each CPU in turn. The
// LRU tables are per-CPU (BPF_F_NO_COMMON_LRU): each CPU's list holds
// max_entries/ncpu elements and an update from user space takes from the list
// of the CPU it runs on, so a table is filled by writing a share from each.
func onEachCPU(fn func(cpu, ncpu int) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		return fmt.Errorf("get affinity: %w", err)
	}
	defer unix.SchedSetaffinity(0, &orig) //nolint:errcheck // best effort
	cpus := []int{}
	for c := range 1024 {
		if orig.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	for i, c := range cpus {
		var set unix.CPUSet
		set.Set(c)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", c, err)
		}
		if err := fn(i, len(cpus)); err != nil {
			return err
		}
	}
	return nil
}

// fillFlows writes the flows mk(0) … mk(n-1) into m in batches, a share from
// each CPU.
func fillFlows[V any](m *ebpf.Map, n int, mk func(i int) (FlowKey, V)) error {
	const chunk = 1 << 16
	keys := make([]FlowKey, chunk)
	vals := make([]V, chunk)
	return onEachCPU(func(cpu, ncpu int) error {
		lo, hi := n*cpu/ncpu, n*(cpu+1)/ncpu
		for start := lo; start < hi; start += chunk {
			c := min(chunk, hi-start)
			for j := range c {
				keys[j], vals[j] = mk(start + j)
			}
			if _, err := m.BatchUpdate(keys[:c], vals[:c], nil); err != nil {
				return fmt.Errorf("fill %s: %w", m, err)
			}
		}
		return nil
	})
}

// countEntries counts a hash map's entries.
func countEntries[V any](m *ebpf.Map) (int, error) {
	const chunk = 1 << 14
	keys := make([]FlowKey, chunk)
	vals := make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

type benchEnv struct {
	objs    benchObjects
	variant bool // not the committed object: its counters may not count
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	labtest.Require(b)
	if err := rlimit.RemoveMemlock(); err != nil {
		b.Fatal(err)
	}
	spec, err := loadBench()
	variant := false
	if obj := os.Getenv("SY_BENCH_OBJECT"); obj != "" {
		// A variant of bench.c built by hand, to see where the time
		// goes (docs/performance.md).
		b.Logf("loading %s instead of the committed bench object", obj)
		spec, err = ebpf.LoadCollectionSpec(obj)
		variant = true
	}
	if err != nil {
		b.Fatal(err)
	}
	if err := sizeSpec(spec, Options{MaxFlows: benchMaxFlows, RingSize: benchRing, MaxServices: 4}); err != nil {
		b.Fatal(err)
	}
	spec.Maps["floor_flows"].MaxEntries = benchMaxFlows
	e := &benchEnv{variant: variant}
	if err := spec.LoadAndAssign(&e.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			b.Fatalf("load bench object: %+v", verr)
		}
		b.Fatalf("load bench object: %v", err)
	}
	b.Cleanup(func() { e.objs.Close() })

	// Three ready TMs that leave by XDP_TX (their interface is the ingress).
	backends := []selector.Backend{}
	for i := range uint32(3) {
		tm := TM{Mac: [6]uint8{0x02, 0xaa, 0, 0, 0, uint8(i)}, SrcMac: [6]uint8{0x02, 0xdd, 0, 0, 0, 1}, Ifindex: benchLo, Flags: TMReady}
		if err := e.objs.Tms.Put(i, tm); err != nil {
			b.Fatal(err)
		}
		backends = append(backends, selector.Backend{Index: i, Name: fmt.Sprintf("tm%d", i), Weight: 1})
	}
	table, err := selector.Maglev(backends, benchRing)
	if err != nil {
		b.Fatal(err)
	}
	for idx, vip := range []netip.Addr{benchVIP4, benchVIP6} {
		k := benchKey(vip, vip, 0, 80)
		sk := ServiceKey{Addr: k.Dst, Port: k.Dport, Proto: k.Proto, Family: k.Family}
		if err := e.objs.Services.Put(sk, Service{Index: uint32(idx)}); err != nil {
			b.Fatal(err)
		}
		if err := e.objs.Vips.Put(VIPKey{Addr: k.Dst, Family: k.Family}, uint32(1)); err != nil {
			b.Fatal(err)
		}
		keys := make([]uint32, benchRing)
		for i := range keys {
			keys[i] = uint32(idx)*benchRing + uint32(i)
		}
		if _, err := e.objs.Rings.BatchUpdate(keys, table, nil); err != nil {
			b.Fatal(err)
		}
	}

	// 1,000,000 flows in each table, half IPv4 and half IPv6.
	start := time.Now()
	half := benchFlows / 2
	key := func(i int) FlowKey { return prefillKey(i < half, i%half) }
	if err := fillFlows(e.objs.Flows, benchFlows, func(i int) (FlowKey, Flow) {
		return key(i), Flow{Tm: uint16(i % 3), Svc: uint16(i / half), Flags: FlowSelected}
	}); err != nil {
		b.Fatal(err)
	}
	if err := fillFlows(e.objs.FloorFlows, benchFlows, func(i int) (FlowKey, TM) {
		return key(i), TM{Mac: [6]uint8{0x02, 0xaa, 0, 0, 0, uint8(i % 3)}, Ifindex: benchLo, Flags: TMReady}
	}); err != nil {
		b.Fatal(err)
	}
	nf, err := countEntries[Flow](e.objs.Flows)
	if err != nil {
		b.Fatal(err)
	}
	nff, err := countEntries[TM](e.objs.FloorFlows)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("pre-filled flows: %d, floor_flows: %d (%v)", nf, nff, time.Since(start).Round(time.Millisecond))
	if nf < benchFlows*99/100 || nff < benchFlows*99/100 {
		b.Fatalf("pre-fill kept %d and %d of %d flows", nf, nff, benchFlows)
	}
	return e
}

// counters returns the global packet counters summed over CPUs.
func (e *benchEnv) counters() []uint64 {
	out := make([]uint64, NumCounters)
	var per []CounterValue
	for i := range out {
		if err := e.objs.Counters.Lookup(uint32(i), &per); err != nil {
			panic(err)
		}
		for _, v := range per {
			out[i] += v.Packets
		}
	}
	return out
}

// measure runs prog on pkt benchRepeat times and returns the time per run
// from the kernel (whole nanoseconds) and from the wall clock around the
// call (fractional; it includes one syscall, < 0.1 ns per run).
func measure(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32) (kernel, wall float64) {
	b.Helper()
	t0 := time.Now()
	ret, d, err := prog.Benchmark(pkt, benchRepeat, nil)
	el := time.Since(t0)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want {
		b.Fatalf("%v returned %d, want %d", prog, ret, want)
	}
	return float64(d.Nanoseconds()), float64(el.Nanoseconds()) / benchRepeat
}

type benchCase struct {
	name    string
	prog    *ebpf.Program
	pkt     []byte
	vary    bool
	want    uint32
	counter Counter // when check: must count every run
	check   bool
	before  func() // run before each round
}

func BenchmarkDistributor(b *testing.B) {
	e := newBenchEnv(b)
	for _, v4 := range []bool{true, false} {
		name := "IPv6"
		if v4 {
			name = "IPv4"
		}
		b.Run(name, func(b *testing.B) { e.run(b, v4) })
	}
}

func (e *benchEnv) run(b *testing.B, v4 bool) {
	vip, notVIP := benchVIP6, benchNotVIP6
	if v4 {
		vip, notVIP = benchVIP4, benchNotVIP4
	}
	hitKey := prefillKey(v4, 12345)
	src := netip.AddrFrom16(hitKey.Src)
	varySrc := src
	if v4 {
		src = netip.AddrFrom4([4]byte(hitKey.Src[:4]))
		varySrc = netip.AddrFrom4([4]byte{10, 200, 0, 1})
	}
	hitPkt := benchPacket(src, vip, htons(hitKey.Sport), 80)
	newPkt := benchPacket(varySrc, vip, benchVaryPort, 80)
	notVIPPkt := benchPacket(src, notVIP, htons(hitKey.Sport), 80)
	// The new-flow runs evict from the LRU: put the hit flow back before
	// each round (the counter check below proves it hit).
	restoreHit := func() {
		if err := e.objs.Flows.Put(hitKey, Flow{Tm: 1, Svc: 0, Flags: FlowSelected}); err != nil {
			b.Fatal(err)
		}
		if err := e.objs.FloorFlows.Put(hitKey, TM{Mac: [6]uint8{0x02, 0xaa, 0, 0, 0, 1}, Ifindex: benchLo, Flags: TMReady}); err != nil {
			b.Fatal(err)
		}
	}
	cases := []benchCase{
		{name: "noop", prog: e.objs.BenchNoop, pkt: hitPkt, want: uint32(TX)},
		{name: "noop_vary", prog: e.objs.BenchNoopVary, pkt: newPkt, vary: true, want: uint32(TX)},
		{name: "floor", prog: e.objs.BenchFloor, pkt: hitPkt, want: uint32(TX), before: restoreHit},
		{name: "floor_insert", prog: e.objs.BenchFloorInsertVary, pkt: newPkt, vary: true, want: uint32(TX)},
		{name: "hit", prog: e.objs.BenchMain, pkt: hitPkt, want: uint32(TX), counter: CounterFwdHit, check: true, before: restoreHit},
		{name: "new", prog: e.objs.BenchMainVary, pkt: newPkt, vary: true, want: uint32(TX), counter: CounterFwdNew, check: true},
		{name: "notvip", prog: e.objs.BenchMain, pkt: notVIPPkt, want: uint32(Pass), counter: CounterPassNotVIP, check: true},
	}
	if err := e.objs.BenchCfg.Put(uint32(0), varyOffset(v4)); err != nil {
		b.Fatal(err)
	}
	kernel := map[string][]float64{}
	wall := map[string][]float64{}
	// Rounds interleave the cases, so that drift (frequency, other load)
	// hits every case alike.
	for range benchRounds {
		for _, c := range cases {
			if c.before != nil {
				c.before()
			}
			var before []uint64
			check := c.check && !e.variant
			if check {
				before = e.counters()
			}
			k, w := measure(b, c.prog, c.pkt, c.want)
			if check {
				// Every run counted c.counter and no other verdict.
				// (A signal at the start of the syscall makes
				// cilium/ebpf run it again: a few extra runs.)
				after := e.counters()
				for i := range after {
					d := after[i] - before[i]
					switch {
					case Counter(i) == c.counter && (d < benchRepeat || d > 2*benchRepeat):
						b.Fatalf("%s: counter %s moved by %d, want %d", c.name, CounterName(c.counter), d, benchRepeat)
					case Counter(i) != c.counter && Counter(i) != CounterTX && d != 0:
						b.Fatalf("%s: counter %s moved by %d, want 0", c.name, CounterName(Counter(i)), d)
					}
				}
			}
			kernel[c.name] = append(kernel[c.name], k)
			wall[c.name] = append(wall[c.name], w)
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	// Net time: the case minus its wrapper, from the kernel's figure. It
	// stops the clock while the test run yields the CPU (cond_resched), so
	// other load on the machine does not count; it is truncated to whole
	// ns. The wall clock around the syscall is logged as a cross-check: it
	// counts the time other tasks ran.
	net := map[string]float64{}
	for _, c := range cases[2:] {
		wrap := "noop"
		if c.vary {
			wrap = "noop_vary"
		}
		net[c.name] = med(kernel[c.name]) - med(kernel[wrap])
		b.Logf("%-12s kernel %4.0f ns (net %4.0f) %v  wall %6.1f ns (net %6.1f)",
			c.name, med(kernel[c.name]), net[c.name], kernel[c.name], med(wall[c.name]), med(wall[c.name])-med(wall[wrap]))
	}
	for _, n := range []string{"noop", "noop_vary"} {
		b.Logf("%-12s kernel %4.0f ns %v  wall %6.1f ns", n, med(kernel[n]), kernel[n], med(wall[n]))
	}
	for _, n := range []string{"hit", "new", "notvip", "floor", "floor_insert"} {
		b.ReportMetric(net[n], n+"-ns/pkt")
	}
	b.ReportMetric(med(kernel["noop"]), "wrapper-ns/pkt")
	b.ReportMetric(net["hit"]/net["floor"], "hit/floor")
	b.ReportMetric(net["new"]/net["floor_insert"], "new/floor_insert")
	b.ReportMetric(net["notvip"]/net["floor"], "notvip/floor")
}
