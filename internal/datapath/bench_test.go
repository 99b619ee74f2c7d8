package datapath

// Microbenchmarks of the XDP program against a floor, measured in one run
// (docs/performance.md). They load the benchmark object (bpf/bench.c), whose
// wrappers restore the packet after each run of BPF_PROG_TEST_RUN and, for
// the "vary" ones, write a fresh counter into the source address so that
// every run is a new flow.
//
//	go test ./internal/datapath -run XXX -bench Distributor -benchtime 1x

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/signal"
)

const (
	benchFlows = 1_000_000 // flows pre-filled in each table
	// The flow table's share (max_flows - HalfOpenSize) holds the pre-fill
	// and one measurement's inserts: it is a hash that refuses when full,
	// and the cases that insert empty it of their entries first (clean).
	benchMaxFlows = 1<<20 + 1<<18
	benchRing     = DefaultRingSize
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
	// The TM that signals and learns (index 1), its own address (a
	// learning source of its own) and the servers it talks to.
	benchTMMAC    = [6]uint8{0x02, 0xaa, 0, 0, 0, 1}
	benchOurMAC   = [6]uint8{0x02, 0xee, 0, 0, 0, 1} // lo's MAC: benchPacket's destination
	benchTMAddr4  = netip.MustParseAddr("10.9.0.1")
	benchTMAddr6  = netip.MustParseAddr("fd00:9::1")
	benchServer4  = netip.MustParseAddr("192.0.2.1")
	benchServer6  = netip.MustParseAddr("2001:db8::1")
	benchClient4  = netip.MustParseAddr("10.3.0.1")
	benchClient6  = netip.MustParseAddr("fd00:3::1")
	benchSecondTM = uint16(1)
)

const (
	benchTMIdx      = 1
	benchSecondPort = 2121 // destination port of the second key's flows
	benchSecondMask = FieldProto | FieldDst | FieldDstPort
	tcpSYN          = 0x02
	tcpACK          = 0x10
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
	l4[13] = tcpACK
	for i := 20; i < len(l4); i++ {
		l4[i] = byte(i) // payload padding
	}
	return pkt
}

// withTCPFlags returns a copy of a benchPacket packet with other TCP flags.
func withTCPFlags(pkt []byte, v4 bool, flags uint8) []byte {
	out := slices.Clone(pkt)
	if v4 {
		out[34+13] = flags
	} else {
		out[54+13] = flags
	}
	return out
}

// fromTM returns a copy of pkt as sent by the benchmark's TM.
func fromTM(pkt []byte) []byte {
	out := slices.Clone(pkt)
	copy(out[6:12], benchTMMAC[:])
	return out
}

// varyOffset is where the vary wrappers write their counter: the last four
// bytes of the source address.
func varyOffset(v4 bool) uint32 {
	if v4 {
		return 14 + 12
	}
	return 14 + 8 + 12
}

// varyDstOffset: the last four bytes of the destination address.
func varyDstOffset(v4 bool) uint32 {
	if v4 {
		return 14 + 16
	}
	return 14 + 8 + 16 + 12
}

// varyMemorizeOffset: the last four bytes of the source address of the key
// of the first MEMORIZE in a signal frame or shim (Ethernet or MACs and
// EtherType, message header, TLV header; IPv4 addresses take the first four
// bytes of the 16).
func varyMemorizeOffset(v4 bool) uint32 {
	off := uint32(14 + SigHeaderLen + SigTLVHeaderLen)
	if v4 {
		return off
	}
	return off + 12
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
	events  *ringbuf.Reader
}

// benchEventRing holds a measurement's flow events (200,000 runs, 64 bytes
// each, and a few extra runs): every run's event is written, as when the
// daemon keeps up, instead of overrunning a full ring.
const benchEventRing = 1 << 25

// drainEvents empties the events ring buffer before a measurement.
func (e *benchEnv) drainEvents(b *testing.B) {
	b.Helper()
	if e.events == nil {
		r, err := ringbuf.NewReader(e.objs.Events)
		if err != nil {
			b.Fatal(err)
		}
		e.events = r // closed by BenchmarkDistributor
	}
	e.events.SetDeadline(time.Now())
	var rec ringbuf.Record
	for {
		err := e.events.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			b.Fatal(err)
		}
	}
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
	if err := sizeSpec(spec, Options{MaxFlows: benchMaxFlows, RingSize: benchRing, MaxServices: 4, MaxSecond: 1024}); err != nil {
		b.Fatal(err)
	}
	spec.Maps["floor_flows"].MaxEntries = benchMaxFlows
	if m, ok := spec.Maps["events"]; ok {
		m.MaxEntries = benchEventRing
	}
	e := &benchEnv{variant: variant}
	if err := spec.LoadAndAssign(&e.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			b.Fatalf("load bench object: %+v", verr)
		}
		b.Fatalf("load bench object: %v", err)
	}
	b.Cleanup(func() { e.objs.Close() })

	// Three ready TMs that leave by XDP_TX (their interface is the ingress),
	// spread over the ring in turn: the cost of a lookup does not depend on
	// which TM a slot holds (and selector imports this package).
	for i := range uint32(3) {
		tm := TM{Mac: [6]uint8{0x02, 0xaa, 0, 0, 0, uint8(i)}, SrcMac: [6]uint8{0x02, 0xdd, 0, 0, 0, 1}, Ifindex: benchLo, Flags: TMReady}
		if err := e.objs.Tms.Put(i, tm); err != nil {
			b.Fatal(err)
		}
	}
	table := make([]uint32, benchRing)
	for i := range table {
		table[i] = uint32(i % 3)
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

	// Signals and learning: TM 1 is a signal sender, its own address a
	// learning source; a second key (any client to VIP:2121) for TM 1. The
	// cases set lo's role and the masks.
	if err := e.objs.TmByMac.Put(MACKey{Mac: benchTMMAC}, uint32(benchTMIdx)); err != nil {
		b.Fatal(err)
	}
	for _, a := range []netip.Addr{benchTMAddr4, benchTMAddr6} {
		k := benchKey(a, a, 0, 0)
		if err := e.objs.LearnSrcs.Put(VIPKey{Addr: k.Src, Family: k.Family}, uint32(benchTMIdx)); err != nil {
			b.Fatal(err)
		}
	}
	for _, vip := range []netip.Addr{benchVIP4, benchVIP6} {
		k := benchKey(vip, vip, 0, benchSecondPort)
		sk := SecondKey{Key: FlowKey{Dst: k.Dst, Dport: k.Dport, Proto: k.Proto, Family: k.Family}, Mask: benchSecondMask}
		if err := e.objs.SecondKeys.Put(sk, Second{Tm: benchSecondTM, Timeout: 300}); err != nil {
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
func measure(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32, strict bool) (kernel, wall float64) {
	b.Helper()
	t0 := time.Now()
	ret, d, err := prog.Benchmark(pkt, benchRepeat, nil)
	el := time.Since(t0)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want && strict {
		b.Fatalf("%v returned %d, want %d", prog, ret, want)
	}
	return float64(d.Nanoseconds()), float64(el.Nanoseconds()) / benchRepeat
}

type benchCase struct {
	name     string
	prog     *ebpf.Program
	pkt      []byte
	vary     bool
	varyOff  uint32 // where the vary wrapper writes; 0: the source address
	want     uint32
	role     uint32    // lo's role during the case
	mask     uint32    // the one configured second-key mask; 0: none
	counters []Counter // each must count every run (no other may move, but tx and allowed)
	allowed  []Counter // may move by any amount (a table that fills during the runs)
	before   func()    // run before each round
}

// configure sets lo's role, the masks and the vary offset for c.
func (e *benchEnv) configure(b *testing.B, c benchCase, v4 bool) {
	b.Helper()
	if err := e.objs.Ifaces.Put(uint32(benchLo), Iface{Role: c.role, Mac: benchOurMAC}); err != nil {
		b.Fatal(err)
	}
	if err := e.objs.Masks.Put(uint32(0), c.mask); err != nil {
		b.Fatal(err)
	}
	off := c.varyOff
	if off == 0 {
		off = varyOffset(v4)
	}
	if err := e.objs.BenchCfg.Put(uint32(0), off); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkDistributor(b *testing.B) {
	e := newBenchEnv(b)
	defer func() {
		if e.events != nil {
			e.events.Close()
		}
	}()
	for _, v4 := range []bool{true, false} {
		name := "IPv6"
		if v4 {
			name = "IPv4"
		}
		b.Run(name, func(b *testing.B) { e.run(b, v4) })
	}
}

func benchFrame(b *testing.B, m signal.Message) []byte {
	b.Helper()
	f, err := signal.Frame(net.HardwareAddr(benchOurMAC[:]), net.HardwareAddr(benchTMMAC[:]), m)
	if err != nil {
		b.Fatal(err)
	}
	// Padded to the wrappers' 128 bytes (trailing bytes are Ethernet
	// padding to the program).
	return append(f, make([]byte, benchPktLen-len(f))...)
}

func (e *benchEnv) run(b *testing.B, v4 bool) {
	vip, notVIP, tmAddr, server, client := benchVIP6, benchNotVIP6, benchTMAddr6, benchServer6, benchClient6
	if v4 {
		vip, notVIP, tmAddr, server, client = benchVIP4, benchNotVIP4, benchTMAddr4, benchServer4, benchClient4
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
	// A related connection's SYN: no exact entry, the second key
	// (proto, VIP, port 2121) has one.
	secondPkt := withTCPFlags(benchPacket(varySrc, vip, benchVaryPort, benchSecondPort), v4, tcpSYN)
	// The TM's own traffic: an ACK and a SYN to a server from its address.
	tmACK := fromTM(benchPacket(tmAddr, server, 33000, 443))
	tmSYN := withTCPFlags(tmACK, v4, tcpSYN)
	// A MEMORIZE of a client's flow, as a frame and as a shim on the TM's
	// ACK (the key's port differs from the pre-filled flows').
	mem := signal.Message{Ops: []signal.Op{signal.Memorize{Key: signal.Key{Src: client, Dst: vip, SrcPort: 50000, DstPort: 8080, Proto: unix.IPPROTO_TCP}, Timeout: 300 * time.Second}}}
	sigFrame := benchFrame(b, mem)
	shimPkt, err := signal.Shim(tmACK, mem)
	if err != nil {
		b.Fatal(err)
	}
	// The new MAC header lands on the shim's last 12 bytes: they must be
	// among the bytes the wrapper restores.
	if strip := len(shimPkt) - len(tmACK); strip+12 > benchPktLen {
		b.Fatalf("shim of %d bytes: beyond the wrapper's %d restored bytes", strip, benchPktLen)
	}

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
	// The flow table refuses when full: the cases that insert into it
	// first remove what earlier runs inserted (every entry but the
	// pre-filled ones, which are selected and carry no TCP state).
	clean := func() {
		if _, err := deleteWhere(e.objs.Flows, func(_ FlowKey, f Flow) bool {
			return f.Flags != FlowSelected || f.TcpState != 0
		}, 0, nil); err != nil {
			b.Fatal(err)
		}
		restoreHit()
	}
	// withHash cleans like clean and sets the services' hash (Service.Hash).
	withHash := func(hash, policy uint32) func() {
		return func() {
			clean()
			for idx, vip := range []netip.Addr{benchVIP4, benchVIP6} {
				k := benchKey(vip, vip, 0, 80)
				sk := ServiceKey{Addr: k.Dst, Port: k.Dport, Proto: k.Proto, Family: k.Family}
				if err := e.objs.Services.Put(sk, Service{Index: uint32(idx), Hash: hash, Policy: policy}); err != nil {
					b.Fatal(err)
				}
				if err := e.objs.PolicyQos.Put(uint32(idx), QoS{}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	ext, in := RoleExternal, RoleInternal
	cases := []benchCase{
		{name: "noop", prog: e.objs.BenchNoop, pkt: hitPkt, want: uint32(TX), role: ext},
		{name: "noop_vary", prog: e.objs.BenchNoopVary, pkt: newPkt, vary: true, want: uint32(TX), role: ext},
		{name: "floor", prog: e.objs.BenchFloor, pkt: hitPkt, want: uint32(TX), role: ext, before: restoreHit},
		{name: "floor_insert", prog: e.objs.BenchFloorInsertVary, pkt: newPkt, vary: true, want: uint32(TX), role: ext},
		{name: "hit", prog: e.objs.BenchMain, pkt: hitPkt, want: uint32(TX), role: ext, counters: []Counter{CounterFwdHit}, before: restoreHit},
		{name: "new", prog: e.objs.BenchMainVary, pkt: newPkt, vary: true, want: uint32(TX), role: ext, counters: []Counter{CounterFwdNew}, before: withHash(0, PolicyHash)},
		// Issue 8: a bare SYN of a new flow, into the half-open table,
		// which the runs fill: most runs measure a refused insert, the
		// cost of a flood's SYN once the table is full.
		{name: "syn_new", prog: e.objs.BenchMainVary, pkt: withTCPFlags(newPkt, v4, tcpSYN), vary: true, want: uint32(TX), role: ext,
			counters: []Counter{CounterFwdNew}, allowed: []Counter{CounterHalfOpenRefused}},
		{name: "notvip", prog: e.objs.BenchMain, pkt: notVIPPkt, want: uint32(Pass), role: ext, counters: []Counter{CounterPassNotVIP}},
		// Issue 3: signals, learning, second keys.
		{name: "new_mask", prog: e.objs.BenchMainVary, pkt: newPkt, vary: true, want: uint32(TX), role: ext, mask: benchSecondMask, counters: []Counter{CounterFwdNew}, before: clean},
		// A SYN: into the half-open table (refused once it is full).
		{name: "second", prog: e.objs.BenchMainVary, pkt: secondPkt, vary: true, want: uint32(TX), role: ext, mask: benchSecondMask,
			counters: []Counter{CounterFwdSecondKey}, allowed: []Counter{CounterHalfOpenRefused}},
		{name: "sigframe", prog: e.objs.BenchMain, pkt: sigFrame, want: uint32(Drop), role: in, counters: []Counter{CounterSigFrame, CounterSigMemorize}},
		{name: "sigframe_new", prog: e.objs.BenchMainVary, pkt: sigFrame, vary: true, varyOff: varyMemorizeOffset(v4), want: uint32(Drop), role: in, counters: []Counter{CounterSigFrame, CounterSigMemorize}, before: clean},
		{name: "fromtm", prog: e.objs.BenchMain, pkt: tmACK, want: uint32(Pass), role: in, counters: []Counter{CounterPassFromTM}},
		{name: "shim", prog: e.objs.BenchMain, pkt: shimPkt, want: uint32(Pass), role: in, counters: []Counter{CounterSigShim, CounterSigMemorize, CounterPassFromTM}},
		{name: "learn", prog: e.objs.BenchMainVary, pkt: tmSYN, vary: true, varyOff: varyDstOffset(v4), want: uint32(Pass), role: in, counters: []Counter{CounterLearned, CounterPassFromTM}, before: clean},
	}
	// Issue 10: the new-flow path under each kind of service hash
	// (sy_policy_hash), against "new" (the whole key) in the same rounds.
	for _, h := range benchHashes {
		cases = append(cases, benchCase{name: "new_" + h.name, prog: e.objs.BenchMainVary, pkt: newPkt, vary: true, want: uint32(TX), role: ext,
			counters: []Counter{CounterFwdNew}, before: withHash(h.hash, h.policy)})
	}
	// A QoS service whose class holds the packets' DSCP (0): the DSCP read
	// and the class ring's lookup (its zero slots: TM 0, ready).
	withQoS := func() {
		withHash(0, PolicyHash)()
		for idx := range 2 {
			if err := e.objs.PolicyQos.Put(uint32(idx), QoS{Dscp: 1, Ring: 0}); err != nil {
				b.Fatal(err)
			}
		}
	}
	cases = append(cases, benchCase{name: "new_qos", prog: e.objs.BenchMainVary, pkt: newPkt, vary: true, want: uint32(TX), role: ext,
		counters: []Counter{CounterFwdNew}, before: withQoS})
	// One run of each: the verdict, and the packet comes out as it went in
	// (the wrapper restored it, head adjustment included).
	for _, c := range cases {
		e.configure(b, c, v4)
		if c.before != nil {
			c.before()
		}
		v, out, err := testRun(c.prog, c.pkt, benchLo)
		if err != nil {
			b.Fatal(err)
		}
		if uint32(v) != c.want || !bytes.Equal(out, c.pkt) {
			if e.variant {
				// A variant may take another path: measure it anyway.
				b.Logf("%s: one run gave %v, want %v (variant)", c.name, v, Verdict(c.want))
				continue
			}
			b.Fatalf("%s: one run gave %v %x, want %v and the packet unchanged %x", c.name, v, out, Verdict(c.want), c.pkt)
		}
	}
	kernel := map[string][]float64{}
	wall := map[string][]float64{}
	// Rounds interleave the cases, so that drift (frequency, other load)
	// hits every case alike.
	for range benchRounds {
		for _, c := range cases {
			e.configure(b, c, v4)
			if c.before != nil {
				c.before()
			}
			var before []uint64
			check := len(c.counters) > 0 && !e.variant
			if check {
				before = e.counters()
			}
			if e.objs.Events != nil {
				e.drainEvents(b)
			}
			k, w := measure(b, c.prog, c.pkt, c.want, !e.variant)
			if check {
				// Every run counted each of c.counters and no other
				// counter moved (but tx). (A signal at the start of
				// the syscall makes cilium/ebpf run it again: a few
				// extra runs.)
				after := e.counters()
				for i := range after {
					d := after[i] - before[i]
					switch {
					case slices.Contains(c.counters, Counter(i)) && (d < benchRepeat || d > 2*benchRepeat):
						b.Fatalf("%s: counter %s moved by %d, want %d", c.name, CounterName(Counter(i)), d, benchRepeat)
					case !slices.Contains(c.counters, Counter(i)) && !slices.Contains(c.allowed, Counter(i)) &&
						Counter(i) != CounterTX && d != 0:
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
		// On stdout: the testing package keeps only 10 lines of a
		// benchmark's log.
		fmt.Printf("%s %-12s kernel %4.0f ns (net %4.0f) %v  wall %6.1f ns (net %6.1f)\n",
			b.Name(), c.name, med(kernel[c.name]), net[c.name], kernel[c.name], med(wall[c.name]), med(wall[c.name])-med(wall[wrap]))
	}
	for _, n := range []string{"noop", "noop_vary"} {
		fmt.Printf("%s %-12s kernel %4.0f ns %v  wall %6.1f ns\n", b.Name(), n, med(kernel[n]), kernel[n], med(wall[n]))
	}
	for _, c := range cases[2:] {
		b.ReportMetric(net[c.name], c.name+"-ns/pkt")
	}
	b.ReportMetric(med(kernel["noop"]), "wrapper-ns/pkt")
	ratio := func(a, bb string) { b.ReportMetric(net[a]/net[bb], a+"/"+bb) }
	ratio("hit", "floor")
	ratio("new", "floor_insert")
	ratio("syn_new", "floor_insert")
	ratio("syn_new", "new")
	ratio("notvip", "floor")
	// Issue 3, against the hit (and, for the paths that insert into the
	// full table, against the new-flow path and the floor insert).
	ratio("sigframe", "hit")
	ratio("shim", "hit")
	ratio("shim", "fromtm")
	ratio("learn", "hit")
	ratio("learn", "new")
	ratio("learn", "floor_insert")
	ratio("second", "hit")
	ratio("second", "new")
	ratio("second", "new_mask")
	ratio("second", "floor_insert")
	ratio("sigframe_new", "new")
	for _, h := range benchHashes {
		ratio("new_"+h.name, "new")
	}
	ratio("new_qos", "new")
}

// benchHashes are the service hashes (config.HashBits' values) and
// policies the new-flow benchmark compares with the whole key's hash.
var benchHashes = []struct {
	name         string
	hash, policy uint32
}{
	{"src", FieldSrc, PolicyHash},
	{"srcport", FieldSrc | FieldSrcPort, PolicyHash},
	{"sym", HashSymPort, PolicyHash},
	{"symaddr", HashSymAddr, PolicyHash},
	{"rr", 0, PolicyRR},
	{"lc", 0, PolicyLC},
	{"wlc", 0, PolicyWLC},
}
