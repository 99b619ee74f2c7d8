// Package distributor is the distributor daemon's control plane: it turns a
// config into data-path state (TMs, services, Maglev rings, VIPs), keeps TM
// MACs resolved, reloads without moving established flows, and answers the
// admin API.
package distributor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/selector"
)

// tmSlot is a TM's data-path index and what the daemon knows about it. A
// slot outlives its TM's removal from the config: the index stays disabled
// (so its flows are re-selected) and is reused only when no fresh index is
// left.
type tmSlot struct {
	index     uint32
	cfg       config.TrafficManager
	present   bool // in the current config
	mac       net.HardwareAddr
	ifindex   int
	srcMAC    net.HardwareAddr
	reason    string // why it is not ready, for status
	lastProbe time.Time
	written   *datapath.TM
}

func (s *tmSlot) ready() bool { return s.mac != nil && s.ifindex != 0 }

// serviceID is what makes two config services the same service across a
// reload: the name may change, the VIP, port and protocol may not.
type serviceID struct {
	vip   netip.Addr
	port  uint16
	proto uint8
}

type svcSlot struct {
	id      serviceID
	name    string
	index   uint32
	table   []uint32 // the ring as last written
	pool    []string // TM ids in the ring as last written
	written *datapath.Service
}

type iface struct {
	name  string
	role  string
	index int
	mac   net.HardwareAddr
	mode  datapath.AttachMode
}

// Daemon is a running distributor.
type Daemon struct {
	log     *slog.Logger
	cfgPath string
	dp      *datapath.Datapath

	mu         sync.Mutex
	cfg        *config.Config
	loadedAt   time.Time
	reloadErr  string
	reloads    int
	ifaces     []iface
	tms        map[string]*tmSlot // by TM id, including removed ones
	nextTM     uint32
	svcs       map[serviceID]*svcSlot
	vipCounts  map[datapath.VIPKey]uint32
	senders    map[[6]uint8]uint32        // signal senders as written
	learnSrcs  map[datapath.VIPKey]uint32 // learning sources as written
	countsMu   sync.Mutex                 // serializes flow-table walks for counts
	flowCounts *flowCounts
	udp        *udpControl
}

// New loads the data path for cfg and programs it; Attach puts it on the
// interfaces. The daemon does not own cfgPath's contents: Reload re-reads it.
func New(log *slog.Logger, cfgPath string, cfg *config.Config) (*Daemon, error) {
	d := &Daemon{
		log:       log,
		cfgPath:   cfgPath,
		tms:       map[string]*tmSlot{},
		svcs:      map[serviceID]*svcSlot{},
		vipCounts: map[datapath.VIPKey]uint32{},
		senders:   map[[6]uint8]uint32{},
		learnSrcs: map[datapath.VIPKey]uint32{},
	}
	for _, ic := range cfg.Distributor.Interfaces {
		l, err := netlink.LinkByName(ic.Name)
		if err != nil {
			return nil, fmt.Errorf("interface %q (distributor.interfaces): %w", ic.Name, err)
		}
		d.ifaces = append(d.ifaces, iface{name: ic.Name, role: ic.Role, index: l.Attrs().Index, mac: l.Attrs().HardwareAddr})
	}
	dp, err := datapath.Load(datapath.Options{
		MaxFlows:    cfg.FlowTable.MaxFlows,
		RingSize:    cfg.Selection.TableSize,
		MaxServices: cfg.Selection.MaxServices,
		MaxSecond:   cfg.SecondKeys.MaxEntries,
	})
	if err != nil {
		return nil, err
	}
	d.dp = dp
	if err := dp.SetNow(d.now()); err != nil {
		dp.Close()
		return nil, fmt.Errorf("set the data path clock: %w", err)
	}
	for _, ifc := range d.ifaces {
		role := datapath.RoleExternal
		if ifc.role == config.RoleInternal {
			role = datapath.RoleInternal
		}
		if err := dp.SetIface(uint32(ifc.index), role, [6]uint8(ifc.mac)); err != nil {
			dp.Close()
			return nil, fmt.Errorf("interface %s: %w", ifc.name, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resolveAll()
	if err := d.apply(cfg); err != nil {
		dp.Close()
		return nil, err
	}
	return d, nil
}

// Attach attaches the XDP program to every configured interface.
func (d *Daemon) Attach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	mode := datapath.AttachMode(d.cfg.Distributor.XDPMode)
	for i := range d.ifaces {
		ifc := &d.ifaces[i]
		got, err := d.dp.Attach(ifc.index, ifc.name, mode)
		if err != nil {
			d.dp.Detach()
			return err
		}
		ifc.mode = got
		d.log.Info("XDP attached", "interface", ifc.name, "role", ifc.role, "mode", got)
	}
	return nil
}

// Close detaches the program from every interface and frees it.
func (d *Daemon) Close() error {
	return d.dp.Close()
}

// StartControl starts the UDP signal transport, when configured.
func (d *Daemon) StartControl(ctx context.Context) error {
	d.mu.Lock()
	addr := d.cfg.Signals.UDPListen
	d.mu.Unlock()
	if addr == "" {
		return nil
	}
	return d.startUDP(ctx, addr)
}

// sweepEvery is how often idle entries are removed.
const sweepEvery = 5 * time.Second

// Run keeps the data path's clock ticking, TM MACs resolved, and idle
// entries swept, until ctx is done.
func (d *Daemon) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastSweep := time.Now()
	var sweeping atomic.Bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.dp.SetNow(d.now()); err != nil {
			d.log.Error("set the data path clock", "error", err)
		}
		// The sweep walks the whole table: never let it hold up the clock.
		if time.Since(lastSweep) >= sweepEvery && sweeping.CompareAndSwap(false, true) {
			lastSweep = time.Now()
			go func() {
				defer sweeping.Store(false)
				if nf, ns, err := d.sweep(); err != nil {
					d.log.Error("sweep idle entries", "error", err)
				} else if nf+ns > 0 {
					d.log.Debug("swept idle entries", "flows", nf, "second_keys", ns)
				}
			}()
		}
		d.mu.Lock()
		if d.resolveAll() {
			if err := d.apply(d.cfg); err != nil {
				d.log.Error("apply after TM change", "error", err)
			}
		}
		d.mu.Unlock()
	}
}

// Reload re-reads the config file and applies it. A config that does not
// load, or that changes what needs a restart, is refused and the running
// state is left as it was.
func (d *Daemon) Reload() error {
	cfg, err := config.Load(d.cfgPath)
	if err == nil {
		err = d.reloadable(cfg)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reloads++
	if err != nil {
		d.reloadErr = err.Error()
		return fmt.Errorf("reload refused, running config unchanged: %w", err)
	}
	if err := d.apply(cfg); err != nil {
		d.reloadErr = err.Error()
		return fmt.Errorf("reload: %w", err)
	}
	d.reloadErr = ""
	return nil
}

// reloadable refuses changes that only a restart can make: they size or
// shape the loaded program.
func (d *Daemon) reloadable(next *config.Config) error {
	d.mu.Lock()
	cur := d.cfg
	d.mu.Unlock()
	return config.RestartNeeded(cur, next)
}

func protoNumber(p string) uint8 {
	if p == config.ProtocolUDP {
		return flow.ProtoUDP
	}
	return flow.ProtoTCP
}

func serviceKey(id serviceID) datapath.ServiceKey { return flow.ServiceKey(id.vip, id.port, id.proto) }

// apply makes the data path match cfg. Called with d.mu held. Order keeps
// the data path consistent at every step: TMs, then rings, then service
// keys, then VIPs; removals the other way round.
func (d *Daemon) apply(cfg *config.Config) error {
	// TMs: stable indexes by id. Removals first, so that their indexes
	// count as free if the new ones need them.
	seen := map[string]bool{}
	for _, tc := range cfg.TrafficManagers {
		seen[tc.ID] = true
	}
	for id, s := range d.tms {
		if !seen[id] && s.present {
			s.present = false
			d.log.Info("traffic manager removed from config: its flows will be re-selected", "tm", id)
		}
	}
	for _, tc := range cfg.TrafficManagers {
		s, ok := d.tms[tc.ID]
		if !ok {
			idx, err := d.allocTM()
			if err != nil {
				return fmt.Errorf("traffic manager %s: %w", tc.ID, err)
			}
			s = &tmSlot{index: idx}
			d.tms[tc.ID] = s
			if err := d.dp.ResetTraffic(false, idx); err != nil {
				return fmt.Errorf("traffic manager %s: reset counters: %w", tc.ID, err)
			}
		}
		// A new, returning or readdressed TM is resolved at once.
		resolve := !s.present || !sameMAC(s.cfg.MAC, tc.MAC) || s.cfg.Address != tc.Address
		s.cfg, s.present = tc, true
		if resolve {
			d.resolve(s)
		}
	}
	for id, s := range d.tms {
		if err := d.writeTM(id, s); err != nil {
			return err
		}
	}
	if err := d.writeSignalState(cfg); err != nil {
		return err
	}

	// Services: stable indexes by (VIP, port, protocol).
	want := map[serviceID]config.Service{}
	for _, sc := range cfg.Services {
		want[serviceID{vip: sc.VIP.Unmap(), port: sc.Port, proto: protoNumber(sc.Protocol)}] = sc
	}
	for id, s := range d.svcs {
		if _, ok := want[id]; ok {
			continue
		}
		if err := d.dp.DeleteService(serviceKey(id)); err != nil {
			return fmt.Errorf("service %s: %w", s.name, err)
		}
		delete(d.svcs, id)
		d.log.Info("service removed: its established flows stay on their TMs until they end", "service", s.name)
	}
	for id, sc := range want {
		s, ok := d.svcs[id]
		if !ok {
			idx, err := d.allocService(cfg.Selection.MaxServices)
			if err != nil {
				return fmt.Errorf("service %s: %w", sc.Name, err)
			}
			s = &svcSlot{id: id, index: idx}
			if err := d.dp.ResetTraffic(true, idx); err != nil {
				return fmt.Errorf("service %s: reset counters: %w", sc.Name, err)
			}
		}
		s.name = sc.Name
		if err := d.writeRing(s, sc, cfg.Selection.TableSize); err != nil {
			return fmt.Errorf("service %s: %w", sc.Name, err)
		}
		v := datapath.Service{Index: s.index}
		if p := sc.Persistence; p != nil {
			v.PersistMask = config.MaskBits(p.Mask)
			v.PersistTimeout = p.Timeout
		}
		if s.written == nil || *s.written != v {
			if err := d.dp.SetService(serviceKey(id), v); err != nil {
				return fmt.Errorf("service %s: %w", sc.Name, err)
			}
			s.written = &v
		}
		d.svcs[id] = s
	}

	if err := d.prunePersistence(); err != nil {
		return err
	}

	// VIPs: an address is a VIP while a service uses it.
	counts := map[datapath.VIPKey]uint32{}
	for id := range want {
		counts[flow.AddrKey(id.vip)]++
	}
	for k, n := range counts {
		if d.vipCounts[k] != n {
			if err := d.dp.SetVIP(k, n); err != nil {
				return err
			}
		}
	}
	for k := range d.vipCounts {
		if counts[k] == 0 {
			if err := d.dp.SetVIP(k, 0); err != nil {
				return err
			}
		}
	}
	d.vipCounts = counts
	if d.cfg != cfg {
		d.cfg = cfg
		d.loadedAt = time.Now()
	}
	return nil
}

// writeSignalState programs who may signal (TM MACs), where learning
// applies (TM and shared SNAT addresses), the second-key masks and the
// signal multicast MAC.
func (d *Daemon) writeSignalState(cfg *config.Config) error {
	senders := map[[6]uint8]uint32{}
	owners := map[[6]uint8][]string{}
	learn := map[datapath.VIPKey]uint32{}
	for id, s := range d.tms {
		if !s.present || s.cfg.State == config.StateDisabled {
			continue
		}
		if len(s.mac) == 6 {
			senders[[6]uint8(s.mac)] = s.index
			owners[[6]uint8(s.mac)] = append(owners[[6]uint8(s.mac)], id)
		}
		learn[flow.AddrKey(s.cfg.Address)] = s.index
	}
	// Two TMs behind one MAC cannot be told apart: neither may signal.
	for mac, ids := range owners {
		if len(ids) > 1 {
			delete(senders, mac)
			slices.Sort(ids)
			d.log.Error("traffic managers share a MAC; their signals are refused", "mac", net.HardwareAddr(mac[:]), "tms", ids)
		}
	}
	for _, a := range cfg.Learning.SNATAddresses {
		learn[flow.AddrKey(a)] = datapath.TMAny
	}
	if err := syncTable(d.senders, senders, d.dp.SetSender, d.dp.DeleteSender); err != nil {
		return err
	}
	d.senders = senders
	if err := syncTable(d.learnSrcs, learn, d.dp.SetLearnSource, d.dp.DeleteLearnSource); err != nil {
		return err
	}
	d.learnSrcs = learn
	var masks []uint32
	for _, m := range cfg.SecondKeys.Masks {
		masks = append(masks, config.MaskBits(m))
	}
	if err := d.dp.SetMasks(masks); err != nil {
		return err
	}
	var st datapath.Settings
	copy(st.SignalMcast[:], cfg.Signals.MulticastMAC)
	return d.dp.SetSettings(st)
}

// clearTM removes every flow and second key of TM index idx.
func (d *Daemon) clearTM(idx uint32) error {
	if _, err := d.dp.DeleteFlowsWhere(func(_ datapath.FlowKey, f datapath.Flow) bool { return uint32(f.Tm) == idx }, 0); err != nil {
		return err
	}
	_, err := d.dp.DeleteSecondKeysWhere(func(_ datapath.SecondKey, v datapath.Second) bool { return uint32(v.Tm) == idx }, 0)
	return err
}

// prunePersistence removes persistence keys whose TM is no longer eligible
// for their service (drained, removed from the pool, not ready), so that a
// returning client is selected afresh. RELATE keys stay: a drained TM keeps
// its flows and what they relate.
func (d *Daemon) prunePersistence() error {
	eligible := map[uint16]map[uint16]bool{}
	for _, s := range d.svcs {
		m := map[uint16]bool{}
		for _, id := range s.pool {
			m[uint16(d.tms[id].index)] = true
		}
		eligible[uint16(s.index)] = m
	}
	_, err := d.dp.DeleteSecondKeysWhere(func(_ datapath.SecondKey, v datapath.Second) bool {
		return v.Svc != datapath.SvcNone && !eligible[v.Svc][v.Tm]
	}, 0)
	return err
}

// syncTable makes a data-path table go from cur to want, writing only the
// entries that differ.
func syncTable[K comparable](cur, want map[K]uint32, put func(K, uint32) error, del func(K) error) error {
	for k := range cur {
		if _, ok := want[k]; !ok {
			if err := del(k); err != nil {
				return err
			}
		}
	}
	for k, v := range want {
		if old, ok := cur[k]; !ok || old != v {
			if err := put(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func sameMAC(a, b net.HardwareAddr) bool { return a.String() == b.String() }

// allocTM returns a never-used index while there is one, so that a removed
// TM's flows are re-selected rather than inherited by a newcomer.
func (d *Daemon) allocTM() (uint32, error) {
	if d.nextTM < uint32(datapath.MaxTMs) {
		d.nextTM++
		return d.nextTM - 1, nil
	}
	for id, s := range d.tms {
		if !s.present {
			// Whatever still points at the old TM must not pass to the
			// newcomer.
			if err := d.clearTM(s.index); err != nil {
				return 0, err
			}
			delete(d.tms, id)
			return s.index, nil
		}
	}
	return 0, fmt.Errorf("no free TM index (at most %d)", datapath.MaxTMs)
}

func (d *Daemon) allocService(limit uint32) (uint32, error) {
	used := make([]bool, limit)
	for _, s := range d.svcs {
		used[s.index] = true
	}
	for i, u := range used {
		if !u {
			return uint32(i), nil
		}
	}
	return 0, fmt.Errorf("no free service index (selection.max_services is %d)", limit)
}

func (d *Daemon) writeTM(id string, s *tmSlot) error {
	var e datapath.TM
	if s.ready() {
		copy(e.Mac[:], s.mac)
		copy(e.SrcMac[:], s.srcMAC)
		e.Ifindex = uint32(s.ifindex)
		e.Flags |= datapath.TMReady
	}
	if !s.present || s.cfg.State == config.StateDisabled {
		e.Flags |= datapath.TMDisabled
	}
	if s.cfg.State == config.StateDraining {
		e.Flags |= datapath.TMDraining
	}
	if s.written != nil && *s.written == e {
		return nil
	}
	if err := d.dp.SetTM(s.index, e); err != nil {
		return fmt.Errorf("traffic manager %s: %w", id, err)
	}
	s.written = &e
	return nil
}

// eligible reports whether TM id gets new flows.
func (d *Daemon) eligible(id string) (*tmSlot, bool) {
	s, ok := d.tms[id]
	if !ok || !s.present || s.cfg.State != config.StateActive || !s.ready() {
		return s, false
	}
	return s, true
}

// writeRing rebuilds a service's Maglev ring and writes only the slots that
// changed. Established flows do not read the ring, so this moves none.
func (d *Daemon) writeRing(s *svcSlot, sc config.Service, size uint32) error {
	var backends []selector.Backend
	var pool []string
	for _, id := range sc.TrafficManagers {
		tm, ok := d.eligible(id)
		if !ok {
			continue
		}
		backends = append(backends, selector.Backend{Index: tm.index, Name: id, Weight: tm.cfg.Weight})
		pool = append(pool, id)
	}
	table, err := selector.Maglev(backends, size)
	if err != nil {
		return err
	}
	changed := selector.Changed(s.table, table)
	if s.table == nil {
		changed = nil // write all
	} else if len(changed) == 0 {
		return nil
	}
	if err := d.dp.WriteRing(s.index, table, changed); err != nil {
		return err
	}
	if !slices.Equal(pool, s.pool) {
		d.log.Info("service pool", "service", sc.Name, "eligible", pool, "slots_changed", len(changed))
	}
	s.table, s.pool = table, pool
	return nil
}

// Settle waits up to timeout for every configured TM's MAC to resolve, so
// that the first flows are not refused for want of one.
func (d *Daemon) Settle(ctx context.Context, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		d.mu.Lock()
		if d.resolveAll() {
			if err := d.apply(d.cfg); err != nil {
				d.log.Error("apply after TM change", "error", err)
			}
		}
		waiting := []string{}
		for id, s := range d.tms {
			if s.present && !s.ready() {
				waiting = append(waiting, id)
			}
		}
		d.mu.Unlock()
		if len(waiting) == 0 {
			return
		}
		if time.Now().After(deadline) {
			slices.Sort(waiting)
			d.log.Warn("traffic managers not ready yet; they get no new flows until they are", "tms", waiting)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
