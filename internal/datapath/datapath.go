// Package datapath loads the distributor's XDP program, attaches it to
// interfaces and gives typed access to its maps. The struct layouts come from
// bpf/switchyard.h through bpf2go.
package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// DefaultRingSize is the default Maglev ring size per service (SY_RING_SIZE_DEFAULT).
const DefaultRingSize = uint32(sySyLimitsSY_RING_SIZE_DEFAULT)

// Options size the data path. Zero values take the defaults.
type Options struct {
	MaxFlows    uint32 // flow and half-open entries in all; default 1,000,000
	RingSize    uint32 // Maglev slots per service; default DefaultRingSize
	MaxServices uint32 // default 64
	MaxSecond   uint32 // second-key entries; default 65536
	HashSeed    uint32 // must be equal on every distributor of a cluster
}

func (o *Options) defaults() {
	if o.MaxFlows == 0 {
		o.MaxFlows = 1_000_000
	}
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
	}
	if o.MaxServices == 0 {
		o.MaxServices = 64
	}
	if o.MaxSecond == 0 {
		o.MaxSecond = 65536
	}
}

// Datapath is a loaded (not necessarily attached) distributor program.
type Datapath struct {
	opts  Options
	objs  syObjects
	links map[int]link.Link
	// pinDir is where maps and links are pinned (LoadPinned); "" when not.
	pinDir string

	evMu   sync.Mutex
	events *ringbuf.Reader // made by the first ReadEvents
}

// Load loads the XDP program and creates its maps, sized by opts.
func Load(opts Options) (*Datapath, error) {
	opts.defaults()
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, err := loadSy()
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	if err := sizeSpec(spec, opts); err != nil {
		return nil, err
	}
	return load(spec, opts, nil)
}

// load loads a sized spec (Load, LoadPinned).
func load(spec *ebpf.CollectionSpec, opts Options, copts *ebpf.CollectionOptions) (*Datapath, error) {
	d := &Datapath{opts: opts, links: map[int]link.Link{}}
	if err := spec.LoadAndAssign(&d.objs, copts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load XDP program: %+v", verr)
		}
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	return d, nil
}

// HalfOpenSize is how many of maxFlows entries are the half-open table's: a
// sixteenth, at least 256. The flow table gets the rest, so that maxFlows
// bounds both together.
func HalfOpenSize(maxFlows uint32) uint32 {
	return max(maxFlows/16, 256)
}

// sizeSpec applies opts to the map sizes and load-time constants of spec, a
// spec of the distributor program or of an object that includes it.
func sizeSpec(spec *ebpf.CollectionSpec, opts Options) error {
	if opts.RingSize < 2 || uint64(opts.RingSize)*uint64(opts.MaxServices) > 1<<30 {
		return fmt.Errorf("ring size %d × %d services is out of range", opts.RingSize, opts.MaxServices)
	}
	half := HalfOpenSize(opts.MaxFlows)
	if opts.MaxFlows < 2*half {
		return fmt.Errorf("%d flow entries: at least %d needed", opts.MaxFlows, 2*half)
	}
	spec.Maps["flows"].MaxEntries = opts.MaxFlows - half
	spec.Maps["half_open"].MaxEntries = half
	spec.Maps["second_keys"].MaxEntries = opts.MaxSecond
	spec.Maps["rings"].MaxEntries = opts.RingSize * opts.MaxServices
	spec.Maps["policy_qos_rings"].MaxEntries = opts.RingSize * PolicyQoSRings
	spec.Maps["svc_stats"].MaxEntries = opts.MaxServices
	spec.Maps["services"].MaxEntries = max(opts.MaxServices, 16)
	spec.Maps["vips"].MaxEntries = max(opts.MaxServices, 16)
	if err := spec.Variables["sy_ring_size"].Set(opts.RingSize); err != nil {
		return fmt.Errorf("set ring size: %w", err)
	}
	if err := spec.Variables["sy_hash_seed"].Set(opts.HashSeed); err != nil {
		return fmt.Errorf("set hash seed: %w", err)
	}
	return nil
}

// AttachMode says how to attach the program.
type AttachMode string

// Attach modes.
const (
	AttachAuto    AttachMode = "auto" // native, generic as a logged fallback
	AttachNative  AttachMode = "native"
	AttachGeneric AttachMode = "generic"
	// AttachAdopted: a pinned link of a previous daemon, kept with its mode.
	AttachAdopted AttachMode = "adopted"
)

// Attach attaches the program to the interface with index ifindex and returns
// the mode that took. The attachment is a BPF link. Unpinned (Load), it goes
// away with the process, so a crashed daemon leaves no program behind;
// pinned (LoadPinned), it stays, and the program keeps forwarding for the
// next daemon, which swaps its own program into it (AttachAdopted).
func (d *Datapath) Attach(ifindex int, name string, mode AttachMode) (AttachMode, error) {
	if _, ok := d.links[ifindex]; ok {
		return "", fmt.Errorf("attach XDP to %s: already attached", name)
	}
	if d.pinDir != "" {
		// A pinned link still on the interface: the new program replaces
		// the old one in it, atomically, without a moment detached.
		ok, err := d.adoptLink(ifindex)
		if err != nil {
			return "", fmt.Errorf("attach XDP to %s: %w", name, err)
		}
		if ok {
			return AttachAdopted, nil
		}
	}
	try := func(flags link.XDPAttachFlags) error {
		l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.SwitchyardXdp, Interface: ifindex, Flags: flags})
		if err != nil {
			return err
		}
		if d.pinDir != "" {
			if err := d.pinLink(ifindex, l); err != nil {
				l.Close()
				return err
			}
		}
		d.links[ifindex] = l
		return nil
	}
	switch mode {
	case AttachNative:
		if err := try(link.XDPDriverMode); err != nil {
			return "", fmt.Errorf("attach XDP to %s in native mode: %w", name, err)
		}
		return AttachNative, nil
	case AttachGeneric:
		if err := try(link.XDPGenericMode); err != nil {
			return "", fmt.Errorf("attach XDP to %s in generic mode: %w", name, err)
		}
		return AttachGeneric, nil
	case AttachAuto, "":
		nerr := try(link.XDPDriverMode)
		if nerr == nil {
			return AttachNative, nil
		}
		slog.Warn("native XDP attach failed; falling back to generic mode (slower)", "interface", name, "error", nerr)
		if err := try(link.XDPGenericMode); err != nil {
			return "", fmt.Errorf("attach XDP to %s: native: %v; generic: %w", name, nerr, err)
		}
		return AttachGeneric, nil
	}
	return "", fmt.Errorf("attach XDP to %s: unknown mode %q", name, mode)
}

// Detach removes the program from every interface it was attached to. The
// links of a pinned data path stay (Remove removes them).
func (d *Datapath) Detach() error {
	var errs []error
	for idx, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from ifindex %d: %w", idx, err))
		}
		delete(d.links, idx)
	}
	return errors.Join(errs...)
}

// Close detaches and releases the program and its maps; a pinned data path
// stays attached and keeps its maps (Remove removes it).
func (d *Datapath) Close() error {
	d.evMu.Lock()
	var everr error
	if d.events != nil {
		everr = d.events.Close()
	}
	d.evMu.Unlock()
	return errors.Join(d.Detach(), everr, d.objs.Close())
}

// MaxEventsPerRead bounds one ReadEvents call; the rest wait for the next.
const MaxEventsPerRead = 65536

// ReadEvents calls fn for each flow event waiting in the ring buffer, at
// most MaxEventsPerRead, without blocking, and returns how many it read.
func (d *Datapath) ReadEvents(fn func(Event)) (int, error) {
	d.evMu.Lock()
	defer d.evMu.Unlock()
	if d.events == nil {
		r, err := ringbuf.NewReader(d.maps().Events)
		if err != nil {
			return 0, fmt.Errorf("open flow events: %w", err)
		}
		d.events = r
	}
	// A deadline in the past: read what is there, then stop.
	d.events.SetDeadline(time.Now())
	var rec ringbuf.Record
	n := 0
	for n < MaxEventsPerRead {
		err := d.events.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read flow events: %w", err)
		}
		var ev Event
		if len(rec.RawSample) < int(unsafe.Sizeof(ev)) {
			return n, fmt.Errorf("read flow events: a %d-byte record, want %d", len(rec.RawSample), unsafe.Sizeof(ev))
		}
		ev = *(*Event)(unsafe.Pointer(&rec.RawSample[0]))
		fn(ev)
		n++
	}
	return n, nil
}

// Maps are the program's maps, for the control plane's writers and readers.
func (d *Datapath) maps() *syMaps { return &d.objs.syMaps }

// SetService installs or updates a service.
func (d *Datapath) SetService(k ServiceKey, s Service) error {
	if s.Index >= d.opts.MaxServices {
		return fmt.Errorf("service index %d: only %d services fit", s.Index, d.opts.MaxServices)
	}
	if err := d.maps().Services.Put(k, s); err != nil {
		return fmt.Errorf("write service: %w", err)
	}
	return nil
}

// DeleteService removes a service.
func (d *Datapath) DeleteService(k ServiceKey) error {
	if err := d.maps().Services.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service: %w", err)
	}
	return nil
}

// SetVIP marks an address as a VIP; count is the number of services on it.
func (d *Datapath) SetVIP(k VIPKey, count uint32) error {
	if count == 0 {
		if err := d.maps().Vips.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete VIP: %w", err)
		}
		return nil
	}
	if err := d.maps().Vips.Put(k, count); err != nil {
		return fmt.Errorf("write VIP: %w", err)
	}
	return nil
}

// WriteRing writes the given slots of service svc's Maglev ring from table
// (a full ring of RingSize slots). slots nil means all of them.
func (d *Datapath) WriteRing(svc uint32, ring []uint32, slots []uint32) error {
	if uint32(len(ring)) != d.opts.RingSize {
		return fmt.Errorf("ring of service %d: %d slots, want %d", svc, len(ring), d.opts.RingSize)
	}
	base := svc * d.opts.RingSize
	if slots == nil {
		keys := make([]uint32, len(ring))
		for i := range keys {
			keys[i] = base + uint32(i)
		}
		if _, err := d.maps().Rings.BatchUpdate(keys, ring, nil); err != nil {
			return fmt.Errorf("write ring of service %d: %w", svc, err)
		}
		return nil
	}
	if len(slots) == 0 {
		return nil
	}
	keys := make([]uint32, len(slots))
	vals := make([]uint32, len(slots))
	for i, s := range slots {
		keys[i] = base + s
		vals[i] = ring[s]
	}
	if _, err := d.maps().Rings.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("write ring of service %d: %w", svc, err)
	}
	return nil
}

// SetTM writes a TM's forwarding entry.
func (d *Datapath) SetTM(idx uint32, tm TM) error {
	if idx >= uint32(MaxTMs) {
		return fmt.Errorf("TM index %d out of range", idx)
	}
	if err := d.maps().Tms.Put(idx, tm); err != nil {
		return fmt.Errorf("write TM %d: %w", idx, err)
	}
	return nil
}

// SetIface records an interface's role and MAC and makes it a redirect
// target.
func (d *Datapath) SetIface(ifindex uint32, role uint32, mac [6]uint8) error {
	if ifindex >= uint32(MaxIfindex) {
		return fmt.Errorf("interface index %d: the data path handles indexes below %d", ifindex, MaxIfindex)
	}
	if err := d.maps().Ifaces.Put(ifindex, Iface{Role: role, Mac: mac}); err != nil {
		return fmt.Errorf("write interface %d: %w", ifindex, err)
	}
	return d.SetTxPort(ifindex, ifindex)
}

// DeleteIface forgets an interface's role.
func (d *Datapath) DeleteIface(ifindex uint32) error {
	if ifindex >= uint32(MaxIfindex) {
		return nil
	}
	if err := d.maps().Ifaces.Put(ifindex, Iface{}); err != nil {
		return fmt.Errorf("clear interface %d: %w", ifindex, err)
	}
	return nil
}

// SetTxPort makes key a redirect target that sends out of ifindex.
func (d *Datapath) SetTxPort(key, ifindex uint32) error {
	if err := d.maps().TxPorts.Put(key, ifindex); err != nil {
		return fmt.Errorf("write tx port %d: %w", key, err)
	}
	return nil
}

// SetNow sets the data path's clock (seconds; any monotonic origin). The
// daemon ticks it every second; idle times are measured against it.
func (d *Datapath) SetNow(sec uint32) error {
	return d.objs.SyNow.Set(sec)
}

// SetMasks sets the second-key masks, most specific first (at most
// MaxMasks; zero masks are not allowed).
func (d *Datapath) SetMasks(masks []uint32) error {
	if len(masks) > MaxMasks {
		return fmt.Errorf("%d second-key masks: at most %d", len(masks), MaxMasks)
	}
	for i := range MaxMasks {
		var m uint32
		if i < len(masks) {
			m = masks[i]
			if m == 0 || m&^FieldAll != 0 {
				return fmt.Errorf("second-key mask %#x is not a set of fields", m)
			}
		}
		if err := d.maps().Masks.Put(uint32(i), m); err != nil {
			return fmt.Errorf("write mask %d: %w", i, err)
		}
	}
	return nil
}

// SetSender allows signals from mac and learns its egress for TM idx.
func (d *Datapath) SetSender(mac [6]uint8, idx uint32) error {
	if err := d.maps().TmByMac.Put(MACKey{Mac: mac}, idx); err != nil {
		return fmt.Errorf("write signal sender: %w", err)
	}
	return nil
}

// DeleteSender stops accepting signals from mac.
func (d *Datapath) DeleteSender(mac [6]uint8) error {
	if err := d.maps().TmByMac.Delete(MACKey{Mac: mac}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete signal sender: %w", err)
	}
	return nil
}

// SetLearnSource makes addr a learning source of TM owner (TMAny: of every
// TM, a shared SNAT address).
func (d *Datapath) SetLearnSource(addr VIPKey, owner uint32) error {
	if err := d.maps().LearnSrcs.Put(addr, owner); err != nil {
		return fmt.Errorf("write learning source: %w", err)
	}
	return nil
}

// DeleteLearnSource removes a learning source.
func (d *Datapath) DeleteLearnSource(addr VIPKey) error {
	if err := d.maps().LearnSrcs.Delete(addr); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete learning source: %w", err)
	}
	return nil
}

// SetSettings writes the global settings.
func (d *Datapath) SetSettings(s Settings) error {
	if err := d.maps().Settings.Put(uint32(0), s); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// WalkHalfOpen calls fn for each half-open entry until fn returns false.
func (d *Datapath) WalkHalfOpen(fn func(FlowKey, Flow) bool) error {
	if err := walk(d.maps().HalfOpen, fn); err != nil {
		return fmt.Errorf("walk half-open flows: %w", err)
	}
	return nil
}

// DeleteHalfOpenWhere is DeleteFlowsWhere for the half-open table.
func (d *Datapath) DeleteHalfOpenWhere(match func(FlowKey, Flow) bool, limit int) (int, error) {
	n, err := deleteWhere(d.maps().HalfOpen, match, limit, d.activeGone)
	if err != nil {
		return n, fmt.Errorf("delete half-open flows: %w", err)
	}
	return n, nil
}

// PutSecondKey writes a second-key entry.
func (d *Datapath) PutSecondKey(k SecondKey, v Second) error {
	return d.maps().SecondKeys.Put(k, v)
}

// LookupSecondKey reads a second-key entry.
func (d *Datapath) LookupSecondKey(k SecondKey) (Second, error) {
	var v Second
	err := d.maps().SecondKeys.Lookup(k, &v)
	return v, err
}

// WalkSecondKeys calls fn for each second-key entry until fn returns false.
func (d *Datapath) WalkSecondKeys(fn func(SecondKey, Second) bool) error {
	if err := walk(d.maps().SecondKeys, fn); err != nil {
		return fmt.Errorf("walk second keys: %w", err)
	}
	return nil
}

// DeleteSecondKeysWhere is DeleteFlowsWhere for the second-key table.
func (d *Datapath) DeleteSecondKeysWhere(match func(SecondKey, Second) bool, limit int) (int, error) {
	n, err := deleteWhere(d.maps().SecondKeys, match, limit, nil)
	if err != nil {
		return n, fmt.Errorf("delete second keys: %w", err)
	}
	return n, nil
}

// ReadCounters returns the global counters summed over CPUs.
func (d *Datapath) ReadCounters() ([]CounterValue, error) {
	out := make([]CounterValue, NumCounters)
	var per []CounterValue
	for i := range out {
		if err := d.maps().Counters.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", CounterName(Counter(i)), err)
		}
		for _, v := range per {
			out[i].Packets += v.Packets
			out[i].Bytes += v.Bytes
		}
	}
	return out, nil
}

func sumTraffic(m *ebpf.Map, idx uint32) (Traffic, error) {
	var per []Traffic
	var t Traffic
	if err := m.Lookup(idx, &per); err != nil {
		return t, err
	}
	for _, v := range per {
		t.Packets += v.Packets
		t.Bytes += v.Bytes
		t.NewFlows += v.NewFlows
	}
	return t, nil
}

// ServiceTraffic returns service idx's counters summed over CPUs.
func (d *Datapath) ServiceTraffic(idx uint32) (Traffic, error) {
	return sumTraffic(d.maps().SvcStats, idx)
}

// TMTraffic returns TM idx's counters summed over CPUs.
func (d *Datapath) TMTraffic(idx uint32) (Traffic, error) {
	return sumTraffic(d.maps().TmStats, idx)
}

// ResetTraffic zeroes a service's or TM's counters, for a reused index.
func (d *Datapath) ResetTraffic(svc bool, idx uint32) error {
	m := d.maps().TmStats
	if svc {
		m = d.maps().SvcStats
	}
	zero := make([]Traffic, ebpf.MustPossibleCPU())
	return m.Put(idx, zero)
}

// WalkFlows calls fn for each flow-table entry until fn returns false. It
// reads the table in batches, so millions of entries are never all in
// memory. The table changes while it is walked: an entry may be missed or
// seen twice.
func (d *Datapath) WalkFlows(fn func(FlowKey, Flow) bool) error {
	if err := walk(d.maps().Flows, fn); err != nil {
		return fmt.Errorf("walk flow table: %w", err)
	}
	return nil
}

// DeleteFlowsWhere deletes up to limit entries (0: no limit) for which match
// holds, and returns how many it deleted. Each is looked up again and
// matched just before it is deleted, so an entry the data path changed
// meanwhile (refreshed, say) is kept.
func (d *Datapath) DeleteFlowsWhere(match func(FlowKey, Flow) bool, limit int) (int, error) {
	n, err := deleteWhere(d.maps().Flows, match, limit, d.activeGone)
	if err != nil {
		return n, fmt.Errorf("delete flows: %w", err)
	}
	return n, nil
}

// walk reads a hash map in batches and calls fn for each entry until fn
// returns false.
func walk[K, V any](m *ebpf.Map, fn func(K, V) bool) error {
	const batch = 4096
	keys := make([]K, batch)
	vals := make([]V, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if !fn(keys[i], vals[i]) {
				return nil
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// deleteWhere collects the keys that match during one walk, then deletes
// those that still match, calling gone (if set) with each deleted value.
func deleteWhere[K, V any](m *ebpf.Map, match func(K, V) bool, limit int, gone func(V)) (int, error) {
	var keys []K
	err := walk(m, func(k K, v V) bool {
		if match(k, v) {
			keys = append(keys, k)
		}
		return limit == 0 || len(keys) < limit
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		var v V
		if err := m.Lookup(k, &v); err != nil || !match(k, v) {
			continue
		}
		if err := m.Delete(k); err == nil {
			n++
			if gone != nil {
				gone(v)
			}
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, err
		}
	}
	return n, nil
}

// LookupFlow returns the entry for k.
func (d *Datapath) LookupFlow(k FlowKey) (Flow, error) {
	var f Flow
	err := d.maps().Flows.Lookup(k, &f)
	return f, err
}

// PutFlow writes a flow entry whether or not the key has one (BPF_ANY).
func (d *Datapath) PutFlow(k FlowKey, f Flow) error {
	if err := d.maps().Flows.Put(k, f); err != nil {
		return fmt.Errorf("write flow: %w", full(err))
	}
	return nil
}

// DeleteFlow removes a flow entry (and counts it off its TM's active
// flows).
func (d *Datapath) DeleteFlow(k FlowKey) error {
	var f Flow
	if err := d.maps().Flows.Lookup(k, &f); err != nil {
		return err
	}
	if err := d.maps().Flows.Delete(k); err != nil {
		return err
	}
	d.addActive(uint32(f.Tm), -1)
	return nil
}
