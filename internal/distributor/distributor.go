// Package distributor is the distributor daemon's control plane: it turns a
// config into data-path state (TMs, services, Maglev rings, VIPs), keeps TM
// MACs resolved, reloads without moving established flows, and answers the
// admin API.
package distributor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/mirror"
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
	// metric is the route metric to the TM's first address (policy
	// hop-metric), from the resolver.
	metric int
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
	id    serviceID
	name  string
	index uint32
	// down are the ids of the TMs the service's health check finds
	// unhealthy: they get none of its new flows (health.go keeps it).
	down map[string]bool
	// weights, if set, replace the TMs' configured weights in the ring:
	// a measured policy's (health.go: reweigh).
	weights map[string]uint32
}

type iface struct {
	name  string
	role  string
	index int
	mac   net.HardwareAddr
	mode  datapath.AttachMode
}

// resolver finds where a TM is: its egress interface (one of the daemon's
// interfaces) and its MAC, filling in s.mac, s.ifindex, s.srcMAC and
// s.reason. The daemon asks the kernel's routing and neighbour tables
// (netResolver); tests give fixed answers.
type resolver interface {
	resolve(s *tmSlot)
}

// Daemon is a running distributor.
type Daemon struct {
	log     *slog.Logger
	cfgPath string
	// dp is the one seam to the data path: every write and read of its
	// tables goes through it.
	dp datapath.Tables
	// prog is the loaded program, for attaching and closing only; nil when
	// dp is not a BPF data path (tests over the model).
	prog  *datapath.Datapath
	res   resolver
	clock func() uint32 // the data path's clock source (seconds)

	// resyncTicks counts reweigh ticks to the next resync of the
	// active-flow counters (policy.go); guarded by mu.
	resyncTicks int
	// meas are the per-TM measurements of the measured policies
	// (policy.go).
	meas measures

	mu              sync.Mutex
	cfg             *config.Config
	loadedAt        time.Time
	reloadErr       string
	reloads         int
	ifaces          []iface
	tms             map[string]*tmSlot // by TM id, including removed ones
	nextTM          uint32
	svcs            map[serviceID]*svcSlot
	written         State // what the data path holds, as the daemon wrote it
	settingsWritten bool
	countsMu        sync.Mutex // serializes flow-table walks for counts
	flowCounts      *flowCounts
	life            lifeStats // the sweeper's: aged entries, last sweep, pressure (sweep.go)
	hub             eventHub  // flow event followers (events.go)
	udp             *udpControl
	// Restart (restart.go): where the TM index assignment is kept, what
	// was last saved, whether a pinned data path was adopted.
	indexPath    string
	savedIndexes *tmIndexes
	adopted      bool
	gate         readyGate // what holds traffic back at start (gate.go)
	lock         *os.File  // held while the daemon runs (restart.go)
	health       *healthChecks
	peers        atomic.Pointer[mirror.Mirror] // the peer protocol (peers.go); nil: off
	bgp          atomic.Pointer[bgpCtl]        // the BGP speaker's control (bgp.go); nil: off
}

// New loads the data path for cfg and programs it; Attach puts it on the
// interfaces. The daemon does not own cfgPath's contents: Reload re-reads it.
func New(log *slog.Logger, cfgPath string, cfg *config.Config) (*Daemon, error) {
	var ifaces []iface
	for _, ic := range cfg.Distributor.Interfaces {
		l, err := netlink.LinkByName(ic.Name)
		if err != nil {
			return nil, fmt.Errorf("interface %q (distributor.interfaces): %w", ic.Name, err)
		}
		ifaces = append(ifaces, iface{name: ic.Name, role: ic.Role, index: l.Attrs().Index, mac: l.Attrs().HardwareAddr})
	}
	// The data path is pinned, so that it outlives this process; one left
	// by a previous daemon is adopted (restart.go), by one daemon at a time.
	lk, err := lock(cfg)
	if err != nil {
		return nil, err
	}
	dp, adopted, err := datapath.LoadPinned(Options(cfg), PinDir(cfg))
	if err != nil {
		lk.Close()
		return nil, err
	}
	seed := func(d *Daemon) error {
		d.indexPath = tmIndexFile(cfg)
		if adopted {
			return d.adopt(cfg, dp)
		}
		return nil
	}
	d, err := newDaemonSeeded(log, cfgPath, cfg, dp, &netResolver{log: log, ifaces: ifaces}, ifaces, monotonicSeconds, seed)
	if err != nil {
		if adopted {
			// Leave the running data path alone: it still forwards.
			dp.Close()
		} else {
			dp.Remove()
		}
		lk.Close()
		return nil, err
	}
	d.lock = lk
	d.prog = dp
	return d, nil
}

// Options are the data-path sizes cfg asks for.
func Options(cfg *config.Config) datapath.Options {
	return datapath.Options{
		MaxFlows:    cfg.FlowTable.MaxFlows,
		RingSize:    cfg.Selection.RingSize,
		MaxServices: cfg.Selection.MaxServices,
		MaxSecond:   cfg.SecondKeys.MaxEntries,
	}
}

// newDaemon programs the data path behind the seam dp for cfg: the
// reconcile logic with what needs root (loading, netlink) left outside, so
// that it runs against the model in tests.
func newDaemon(log *slog.Logger, cfgPath string, cfg *config.Config, dp datapath.Tables, res resolver, ifaces []iface, clock func() uint32) (*Daemon, error) {
	return newDaemonSeeded(log, cfgPath, cfg, dp, res, ifaces, clock, nil)
}

// newDaemonSeeded is newDaemon with seed run before the first apply (an
// adopted data path's indexes and written state).
func newDaemonSeeded(log *slog.Logger, cfgPath string, cfg *config.Config, dp datapath.Tables, res resolver, ifaces []iface, clock func() uint32, seed func(*Daemon) error) (*Daemon, error) {
	d := &Daemon{
		log:     log,
		cfgPath: cfgPath,
		dp:      dp,
		res:     res,
		clock:   clock,
		ifaces:  ifaces,
		tms:     map[string]*tmSlot{},
		svcs:    map[serviceID]*svcSlot{},
		written: emptyState(),
	}
	d.health = newHealthChecks(d)
	if err := dp.SetNow(clock()); err != nil {
		return nil, fmt.Errorf("set the data path clock: %w", err)
	}
	for _, ifc := range d.ifaces {
		role := datapath.RoleExternal
		if ifc.role == config.RoleInternal {
			role = datapath.RoleInternal
		}
		// XDP rewrites Ethernet headers: an interface without a 6-byte
		// MAC (lo, a tun device) cannot carry the distributor's traffic.
		if len(ifc.mac) != 6 {
			return nil, fmt.Errorf("interface %s (distributor.interfaces): no Ethernet address (%q); the distributor needs Ethernet interfaces", ifc.name, ifc.mac.String())
		}
		if err := dp.SetIface(uint32(ifc.index), role, [6]uint8(ifc.mac)); err != nil {
			return nil, fmt.Errorf("interface %s: %w", ifc.name, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if seed != nil {
		if err := seed(d); err != nil {
			return nil, err
		}
	}
	d.resolveAll()
	if err := d.apply(cfg); err != nil {
		// The checks apply may have started must stop; their goroutines
		// may be waiting for d.mu, so not here.
		go d.health.close()
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
		got, err := d.prog.Attach(ifc.index, ifc.name, mode)
		if err != nil {
			d.prog.Detach()
			return err
		}
		ifc.mode = got
		d.log.Info("XDP attached", "interface", ifc.name, "role", ifc.role, "mode", got)
	}
	// An adopted data path may hold links of interfaces no longer
	// configured.
	return d.prog.PruneLinks()
}

// Close detaches the program from every interface and frees it, pins
// included. With keep, the pinned data path stays attached and forwarding
// for the next daemon to adopt.
func (d *Daemon) Close(keep bool) error {
	// Not under d.mu: a probe that just changed state may be waiting for it.
	d.health.close()
	if d.prog == nil {
		return nil
	}
	if d.lock != nil {
		// Released last: the next daemon may adopt only once this one is done.
		defer d.lock.Close()
	}
	if keep {
		return d.prog.Close()
	}
	return d.prog.Remove()
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
	go func() {
		// Flow events: drained often, apart from the clock's tick.
		et := time.NewTicker(eventsEvery)
		defer et.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-et.C:
				d.readEvents()
			}
		}
	}()
	lastSweep := time.Now()
	var sweeping atomic.Bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.dp.SetNow(d.clock()); err != nil {
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

// apply makes the data path match cfg: config → indexes (assign) →
// desired data-path state (desired, pure) → the difference from what is
// written, written through the seam (write). Called with d.mu held.
func (d *Daemon) apply(cfg *config.Config) error {
	if err := d.assign(cfg); err != nil {
		return err
	}
	if err := d.saveIndexes(); err != nil {
		return err
	}
	d.syncHealth(cfg)
	want, err := desired(cfg, d.tms, d.svcs)
	if err != nil {
		return err
	}
	if err := d.write(want); err != nil {
		return err
	}
	if d.cfg != cfg {
		d.cfg = cfg
		d.loadedAt = time.Now()
	}
	d.kickBGP()
	return nil
}

// assign gives cfg's TMs and services their data-path indexes, stable
// across reloads: TMs by id, services by (VIP, port, protocol). A new TM is
// resolved at once. Called with d.mu held.
func (d *Daemon) assign(cfg *config.Config) error {
	// Removals first, so that their indexes count as free if the new ones
	// need them.
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
		resolve := !s.present || !sameMAC(s.cfg.MAC, tc.MAC) || !slices.Equal(s.cfg.AllAddresses(), tc.AllAddresses())
		s.cfg, s.present = tc, true
		if resolve {
			d.res.resolve(s)
		}
	}
	want := map[serviceID]bool{}
	for _, sc := range cfg.Services {
		want[idOf(sc)] = true
	}
	for id, s := range d.svcs {
		if !want[id] {
			delete(d.svcs, id)
			d.log.Info("service removed: its established flows stay on their TMs until they end", "service", s.name)
		}
	}
	for _, sc := range cfg.Services {
		id := idOf(sc)
		s, ok := d.svcs[id]
		if !ok {
			idx, err := d.allocService(cfg.Selection.MaxServices)
			if err != nil {
				return fmt.Errorf("service %s: %w", sc.Name, err)
			}
			s = &svcSlot{id: id, index: idx}
			d.svcs[id] = s
		}
		s.name = sc.Name
	}
	return nil
}

// clearTM removes every flow and second key of TM index idx.
func (d *Daemon) clearTM(idx uint32) error {
	if _, err := d.dp.DeleteFlowsWhere(func(_ datapath.FlowKey, f datapath.Flow) bool { return uint32(f.Tm) == idx }, 0); err != nil {
		return fmt.Errorf("clear flows of TM index %d: %w", idx, err)
	}
	if _, err := d.dp.DeleteSecondKeysWhere(func(_ datapath.SecondKey, v datapath.Second) bool { return uint32(v.Tm) == idx }, 0); err != nil {
		return fmt.Errorf("clear second keys of TM index %d: %w", idx, err)
	}
	if _, err := d.dp.DeleteHalfOpenWhere(func(_ datapath.FlowKey, f datapath.Flow) bool { return uint32(f.Tm) == idx }, 0); err != nil {
		return fmt.Errorf("clear half-open flows of TM index %d: %w", idx, err)
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
	for _, id := range slices.Sorted(maps.Keys(d.tms)) {
		s := d.tms[id]
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
		if s.index < limit {
			used[s.index] = true
		}
	}
	for i, u := range used {
		if !u {
			return uint32(i), nil
		}
	}
	return 0, fmt.Errorf("no free service index (selection.max_services is %d)", limit)
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
