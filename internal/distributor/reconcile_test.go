package distributor

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
)

// These tests run the daemon's reconcile logic against the Go model as the
// data-path seam: no root, no netlink, no BPF.

const (
	testRing     = 1021
	testServices = 8
	extIfindex   = 1
	intIfindex   = 2
)

var (
	testIfaces = []iface{
		{name: "ext0", role: config.RoleExternal, index: extIfindex, mac: net.HardwareAddr{2, 0xee, 0, 0, 0, 1}},
		{name: "int0", role: config.RoleInternal, index: intIfindex, mac: net.HardwareAddr{2, 0xee, 0, 0, 0, 2}},
	}
	testVIP = netip.MustParseAddr("10.0.0.100")
)

// fakeResolver resolves the TMs it knows (by id) behind int0, like a
// neighbour table with fixed entries; the others stay unresolved.
type fakeResolver struct {
	macs    map[string]net.HardwareAddr
	noRoute map[string]bool // TM ids without a route, static MAC or not
}

func (r *fakeResolver) resolve(s *tmSlot) {
	if r.noRoute[s.cfg.ID] {
		s.ifindex, s.reason = 0, "no route in the test"
		return
	}
	mac := s.cfg.MAC
	if mac == nil {
		mac = r.macs[s.cfg.ID]
	}
	if mac == nil {
		s.ifindex, s.reason = 0, "not in the test's neighbour table"
		return
	}
	s.mac, s.ifindex, s.srcMAC, s.reason = mac, intIfindex, testIfaces[1].mac, ""
}

func tmMAC(i int) net.HardwareAddr { return net.HardwareAddr{2, 0xaa, 0, 0, 0, byte(i)} }

// checked is the model as the seam, checking after every write that no
// reachable ring slot points at a TM the data path would not forward to
// (drop_tm_not_ready for a new flow). It records the writes for messages.
type checked struct {
	*flow.Model
	t      *testing.T
	writes []string
}

func (c *checked) after(what string) error {
	c.writes = append(c.writes, what)
	for sk, svc := range c.Services {
		ring := c.Rings[svc.Index*c.RingSize : (svc.Index+1)*c.RingSize]
		for slot, idx := range ring {
			if idx == datapath.NoTM {
				continue
			}
			if idx >= uint32(len(c.TMs)) || !usable(c.TMs[idx]) {
				c.t.Errorf("after write %d (%s): service %s ring slot %d points at TM %d (flags %#x), which is not usable\nwrites: %s",
					len(c.writes), what, flow.Dst(datapath.FlowKey{Dst: sk.Addr, Family: sk.Family}), slot, idx, c.TMs[min(idx, uint32(len(c.TMs)-1))].Flags,
					strings.Join(c.writes, "; "))
				return nil
			}
		}
	}
	return nil
}

func (c *checked) SetTM(idx uint32, tm datapath.TM) error {
	if err := c.Model.SetTM(idx, tm); err != nil {
		return err
	}
	return c.after(fmt.Sprintf("SetTM %d flags %#x", idx, tm.Flags))
}

func (c *checked) WriteRing(svc uint32, table, slots []uint32) error {
	if err := c.Model.WriteRing(svc, table, slots); err != nil {
		return err
	}
	return c.after(fmt.Sprintf("WriteRing %d (%d slots)", svc, len(slots)))
}

func (c *checked) SetService(k datapath.ServiceKey, s datapath.Service) error {
	if err := c.Model.SetService(k, s); err != nil {
		return err
	}
	return c.after(fmt.Sprintf("SetService index %d", s.Index))
}

func (c *checked) DeleteService(k datapath.ServiceKey) error {
	if err := c.Model.DeleteService(k); err != nil {
		return err
	}
	return c.after("DeleteService")
}

// harness is a daemon over a checked model.
type harness struct {
	d     *Daemon
	m     *checked
	res   *fakeResolver
	path  string
	now   uint32
	extra string // appended to every config
}

const baseConfig = `distributor:
  id: d1
  interfaces:
    - {name: ext0, role: external}
    - {name: int0, role: internal}
selection: {ring_size: 1021, max_services: 8}
`

func (h *harness) config(t *testing.T, tms, services string) string {
	t.Helper()
	y := baseConfig + "traffic_managers:\n" + tms + "services:\n" + services + h.extra
	if err := os.WriteFile(h.path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return y
}

func newHarness(t *testing.T, tms, services, extra string) *harness {
	t.Helper()
	h := &harness{
		res:   &fakeResolver{macs: map[string]net.HardwareAddr{}},
		path:  filepath.Join(t.TempDir(), "switchyard.yaml"),
		now:   1000,
		extra: extra,
	}
	for i := range 8 {
		h.res.macs[fmt.Sprintf("tm%d", i)] = tmMAC(i)
	}
	h.m = &checked{Model: flow.NewModel(testRing, testServices, 0), t: t}
	cfg, err := config.Parse([]byte(h.config(t, tms, services)), h.path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h.d, err = newDaemon(log, h.path, cfg, h.m, h.res, testIfaces, func() uint32 { return h.now })
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) reload(t *testing.T, tms, services string) {
	t.Helper()
	h.config(t, tms, services)
	if err := h.d.Reload(); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) index(t *testing.T, id string) uint32 {
	t.Helper()
	s, ok := h.d.tms[id]
	if !ok {
		t.Fatalf("no slot for TM %s", id)
	}
	return s.index
}

// ringTMs counts the slots of service index svc by TM index.
func (h *harness) ringTMs(svc uint32) map[uint32]int {
	out := map[uint32]int{}
	for _, idx := range h.m.Rings[svc*testRing : (svc+1)*testRing] {
		out[idx]++
	}
	return out
}

func (h *harness) wantRing(t *testing.T, svc uint32, want ...uint32) {
	t.Helper()
	got := h.ringTMs(svc)
	var keys []uint32
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("ring of service %d holds TMs %v (%v), want %v", svc, keys, got, want)
	}
}

func key(src string, sport uint16) datapath.FlowKey {
	return flow.MakeKey(netip.MustParseAddr(src), testVIP, sport, 80, flow.ProtoTCP, 0)
}

const persistMask = datapath.FieldProto | datapath.FieldSrc | datapath.FieldDst | datapath.FieldDstPort

// TestReload adds, drains, disables and removes TMs by reload and checks
// the data path after each: ring contents, stable indexes, flows kept,
// persistence pruned, and (the checked seam) no ring slot ever pointing at
// an unusable TM.
func TestReload(t *testing.T) {
	const web = "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [%s], persistence: {timeout: 60}}\n"
	tms := func(lines ...string) string { return "  - " + strings.Join(lines, "\n  - ") + "\n" }
	h := newHarness(t, tms("{id: tm1, address: 10.1.0.11}", "{id: tm2, address: 10.1.0.12}"), fmt.Sprintf(web, "tm1, tm2"), "")
	i1, i2 := h.index(t, "tm1"), h.index(t, "tm2")
	if i1 == i2 {
		t.Fatalf("tm1 and tm2 share index %d", i1)
	}
	svc := h.d.svcs[serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}].index
	h.wantRing(t, svc, i1, i2)
	if e := h.m.TMs[i1]; e.Flags != datapath.TMReady || [6]uint8(tmMAC(1)) != e.Mac || e.Ifindex != intIfindex {
		t.Fatalf("tm1's entry: %+v", e)
	}
	if n := h.m.VIPs[flow.AddrKey(testVIP)]; n != 1 {
		t.Fatalf("VIP count %d, want 1", n)
	}

	// Established flows and persistence keys on both TMs, as the data path
	// would have written them; one RELATE key on tm2.
	var flows []datapath.FlowKey
	for i := range 20 {
		k := key(fmt.Sprintf("10.9.0.%d", i+1), 40000)
		tm := i1
		if i%2 == 1 {
			tm = i2
		}
		flows = append(flows, k)
		if err := h.m.PutFlow(k, datapath.Flow{LastSeen: h.now, Tm: uint16(tm), Svc: uint16(svc), Flags: datapath.FlowSelected}); err != nil {
			t.Fatal(err)
		}
		sk := datapath.SecondKey{Key: flow.MaskKey(k, persistMask), Mask: persistMask}
		if err := h.m.PutSecondKey(sk, datapath.Second{LastSeen: h.now, Tm: uint16(tm), Svc: uint16(svc)}); err != nil {
			t.Fatal(err)
		}
	}
	relate := datapath.SecondKey{Key: flow.MaskKey(key("10.9.1.1", 1), persistMask), Mask: persistMask}
	if err := h.m.PutSecondKey(relate, datapath.Second{Tm: uint16(i2), Svc: datapath.SvcNone}); err != nil {
		t.Fatal(err)
	}
	wantFlows := func(step string) {
		t.Helper()
		for _, k := range flows {
			if _, ok := h.m.Flows[k]; !ok {
				t.Fatalf("%s: flow %s was removed", step, flow.String(k))
			}
		}
	}
	persistOn := func(tm uint32) int {
		n := 0
		for _, v := range h.m.SecondKeys {
			if v.Svc != datapath.SvcNone && uint32(v.Tm) == tm {
				n++
			}
		}
		return n
	}

	// Add tm3: a fresh index, in the ring; nothing else moves.
	h.reload(t, tms("{id: tm1, address: 10.1.0.11}", "{id: tm2, address: 10.1.0.12}", "{id: tm3, address: 10.1.0.13}"), fmt.Sprintf(web, "tm1, tm2, tm3"))
	i3 := h.index(t, "tm3")
	if h.index(t, "tm1") != i1 || h.index(t, "tm2") != i2 || i3 == i1 || i3 == i2 {
		t.Fatalf("indexes after adding tm3: tm1 %d tm2 %d tm3 %d (were %d, %d)", h.index(t, "tm1"), h.index(t, "tm2"), i3, i1, i2)
	}
	h.wantRing(t, svc, i1, i2, i3)
	wantFlows("add")
	if persistOn(i1) != 10 || persistOn(i2) != 10 {
		t.Fatalf("add: persistence keys pruned: tm1 %d, tm2 %d", persistOn(i1), persistOn(i2))
	}

	// Drain tm2: out of the ring, still forwarding its flows; its
	// persistence keys go, its RELATE key stays.
	h.reload(t, tms("{id: tm1, address: 10.1.0.11}", "{id: tm2, address: 10.1.0.12, state: draining}", "{id: tm3, address: 10.1.0.13}"), fmt.Sprintf(web, "tm1, tm2, tm3"))
	h.wantRing(t, svc, i1, i3)
	if e := h.m.TMs[i2]; e.Flags != datapath.TMReady|datapath.TMDraining {
		t.Fatalf("drained tm2's flags %#x", e.Flags)
	}
	wantFlows("drain")
	if persistOn(i2) != 0 || persistOn(i1) != 10 {
		t.Fatalf("drain: persistence keys: tm1 %d (want 10), tm2 %d (want 0)", persistOn(i1), persistOn(i2))
	}
	if _, ok := h.m.SecondKeys[relate]; !ok {
		t.Fatal("drain: tm2's RELATE key was pruned")
	}
	// A flow of the drained TM still goes to it.
	pkt := flowtest.Packet{Src: netip.MustParseAddr("10.9.0.2"), Dst: testVIP, Proto: flow.ProtoTCP, SrcPort: 40000, DstPort: 80, TCPFlags: flowtest.ACK}
	if v, _ := h.m.Process(pkt.Bytes(), extIfindex); v != datapath.Redirect || uint32(h.m.Flows[flows[1]].Tm) != i2 {
		t.Fatalf("drain: a drained TM's flow got %v, TM %d", v, h.m.Flows[flows[1]].Tm)
	}

	// Disable tm1: out of the ring and disabled; its flows stay in the
	// table and are re-selected when they next send.
	h.reload(t, tms("{id: tm1, address: 10.1.0.11, state: disabled}", "{id: tm2, address: 10.1.0.12, state: draining}", "{id: tm3, address: 10.1.0.13}"), fmt.Sprintf(web, "tm1, tm2, tm3"))
	h.wantRing(t, svc, i3)
	if e := h.m.TMs[i1]; e.Flags&datapath.TMDisabled == 0 {
		t.Fatalf("disabled tm1's flags %#x", e.Flags)
	}
	wantFlows("disable")
	if persistOn(i1) != 0 {
		t.Fatalf("disable: %d persistence keys left on tm1", persistOn(i1))
	}
	pkt.Src = netip.MustParseAddr("10.9.0.1")
	if v, _ := h.m.Process(pkt.Bytes(), extIfindex); v != datapath.Redirect || uint32(h.m.Flows[flows[0]].Tm) != i3 {
		t.Fatalf("disable: tm1's flow got %v, now on TM %d, want re-selected to tm3 (%d)", v, h.m.Flows[flows[0]].Tm, i3)
	}

	// Remove tm3 (and tm1): the ring empties before tm3 is disabled (the
	// checked seam fails the test otherwise); indexes are not reused while
	// fresh ones are left.
	h.reload(t, tms("{id: tm2, address: 10.1.0.12}", "{id: tm4, address: 10.1.0.14}"), fmt.Sprintf(web, "tm2, tm4"))
	i4 := h.index(t, "tm4")
	wantFlows("remove")
	if h.index(t, "tm2") != i2 {
		t.Fatalf("tm2 moved from index %d to %d", i2, h.index(t, "tm2"))
	}
	if i4 == i1 || i4 == i2 || i4 == i3 {
		t.Fatalf("tm4 got index %d, in use or retired (%d %d %d)", i4, i1, i2, i3)
	}
	h.wantRing(t, svc, i2, i4)
	for _, i := range []uint32{i1, i3} {
		if e := h.m.TMs[i]; e.Flags&datapath.TMDisabled == 0 {
			t.Fatalf("removed TM index %d has flags %#x", i, e.Flags)
		}
	}
	if _, ok := h.m.TMByMAC[[6]uint8(tmMAC(3))]; ok {
		t.Fatal("removed tm3 may still signal")
	}
	if _, ok := h.m.TMByMAC[[6]uint8(tmMAC(4))]; !ok {
		t.Fatal("new tm4 may not signal")
	}
	if len(h.m.writes) == 0 {
		t.Fatal("no writes recorded")
	}
}

// TestReusedIndexStartsClean exhausts the fresh TM indexes: a newcomer then
// takes a removed TM's index, and nothing of the old TM passes to it.
func TestReusedIndexStartsClean(t *testing.T) {
	const web = "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [%s], persistence: {timeout: 60}}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n", fmt.Sprintf(web, "tm1, tm2"), "")
	i2 := h.index(t, "tm2")
	k := key("10.9.0.1", 1)
	if err := h.m.PutFlow(k, datapath.Flow{Tm: uint16(i2), Flags: datapath.FlowSelected}); err != nil {
		t.Fatal(err)
	}
	sk := datapath.SecondKey{Key: flow.MaskKey(k, persistMask), Mask: persistMask}
	if err := h.m.PutSecondKey(sk, datapath.Second{Tm: uint16(i2), Svc: datapath.SvcNone}); err != nil {
		t.Fatal(err)
	}
	h.m.TMStats[i2] = datapath.Traffic{Packets: 7, Bytes: 700, NewFlows: 1}
	h.reload(t, "  - {id: tm1, address: 10.1.0.11}\n", fmt.Sprintf(web, "tm1"))
	if _, ok := h.m.Flows[k]; !ok {
		t.Fatal("removing tm2 removed its flow: it should stay until re-selected or swept")
	}
	// Pretend every fresh index was handed out.
	h.d.nextTM = uint32(datapath.MaxTMs)
	h.reload(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm5, address: 10.1.0.15}\n", fmt.Sprintf(web, "tm1, tm5"))
	if got := h.index(t, "tm5"); got != i2 {
		t.Fatalf("tm5 got index %d, want removed tm2's %d", got, i2)
	}
	if _, ok := h.d.tms["tm2"]; ok {
		t.Fatal("tm2's slot survived the reuse of its index")
	}
	if _, ok := h.m.Flows[k]; ok {
		t.Fatal("tm2's flow passed to tm5")
	}
	if _, ok := h.m.SecondKeys[sk]; ok {
		t.Fatal("tm2's second key passed to tm5")
	}
	if h.m.TMStats[i2] != (datapath.Traffic{}) {
		t.Fatalf("tm5 inherits tm2's counters %+v", h.m.TMStats[i2])
	}
	if e := h.m.TMs[i2]; e.Flags != datapath.TMReady || [6]uint8(tmMAC(5)) != e.Mac {
		t.Fatalf("reused index's entry %+v, want tm5 ready", e)
	}
	h.wantRing(t, 0, h.index(t, "tm1"), i2)
}

// TestUnresolvedTMLeavesRingFirst: a TM whose MAC is lost leaves the ring
// before its entry stops being ready; when it comes back it is ready before
// the ring points at it (the checked seam checks both after each write).
func TestUnresolvedTMLeavesRingFirst(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2]}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n", web, "")
	i1, i2 := h.index(t, "tm1"), h.index(t, "tm2")
	resolve := func() {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		if !h.d.resolveAll() {
			t.Fatal("resolveAll saw no change")
		}
		if err := h.d.apply(h.d.cfg); err != nil {
			t.Fatal(err)
		}
	}
	delete(h.res.macs, "tm2")
	h.d.tms["tm2"].mac = nil // the fake forgets; netResolver would keep a learned MAC but lose the route
	resolve()
	h.wantRing(t, 0, i1)
	if h.m.TMs[i2].Flags&datapath.TMReady != 0 {
		t.Fatalf("unresolved tm2 is still ready: %#x", h.m.TMs[i2].Flags)
	}
	h.res.macs["tm2"] = tmMAC(2)
	resolve()
	h.wantRing(t, 0, i1, i2)
}

// TestDesired checks the pure config → data-path state function.
func TestDesired(t *testing.T) {
	y := baseConfig + `traffic_managers:
  - {id: tm1, address: 10.1.0.11, weight: 3}
  - {id: tm2, address: 10.1.0.12, state: draining}
  - {id: tm3, address: 10.1.0.13, state: disabled}
  - {id: tm4, address: 10.1.0.14}
  - {id: tm5, address: 10.1.0.15, mac: "02:aa:00:00:00:01"}
services:
  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3, tm4]}
  - {name: dns, vip: 10.0.0.100, protocol: udp, traffic_managers: [tm1]}
learning: {snat_addresses: [10.1.0.50]}
`
	cfg, err := config.Parse([]byte(y), "desired.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// tm4 is unresolved; tm5 shares tm1's MAC.
	tms := map[string]*tmSlot{}
	for i, tc := range cfg.TrafficManagers {
		s := &tmSlot{index: uint32(10 + i), cfg: tc, present: true}
		if tc.ID != "tm4" {
			s.mac, s.ifindex, s.srcMAC = tmMAC(i+1), intIfindex, testIfaces[1].mac
		}
		tms[tc.ID] = s
	}
	tms["tm5"].mac = tmMAC(1)
	tms["gone"] = &tmSlot{index: 3, present: false, mac: tmMAC(9), ifindex: intIfindex}
	svcs := map[serviceID]*svcSlot{}
	for i, sc := range cfg.Services {
		svcs[idOf(sc)] = &svcSlot{id: idOf(sc), name: sc.Name, index: uint32(i)}
	}
	st, err := desired(cfg, tms, svcs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := desired(cfg, tms, svcs)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(st) {
		t.Fatal("desired is not a function of its arguments")
	}
	flags := map[string]uint32{
		"tm1": datapath.TMReady, "tm2": datapath.TMReady | datapath.TMDraining, "tm3": datapath.TMReady | datapath.TMDisabled,
		"tm4": 0, "tm5": datapath.TMReady, "gone": datapath.TMReady | datapath.TMDisabled,
	}
	for id, f := range flags {
		if got := st.TMs[tms[id].index].Flags; got != f {
			t.Errorf("%s: flags %#x, want %#x", id, got, f)
		}
	}
	// Only tm1 is eligible for web (tm2 drains, tm3 is disabled, tm4 is
	// unresolved).
	if p := st.Pools[0]; !slices.Equal(p, []uint32{10}) {
		t.Errorf("web's pool %v, want [10]", p)
	}
	for slot, idx := range st.Rings[0] {
		if idx != 10 {
			t.Fatalf("web's ring slot %d holds %d", slot, idx)
		}
	}
	if n := st.VIPs[flow.AddrKey(testVIP)]; n != 2 {
		t.Errorf("VIP count %d, want 2", n)
	}
	if len(st.Services) != 2 {
		t.Errorf("%d services, want 2", len(st.Services))
	}
	// tm1 and tm5 share a MAC: neither signals; tm3 (disabled) and the
	// removed TM neither.
	if _, ok := st.Senders[[6]uint8(tmMAC(1))]; ok {
		t.Error("a MAC two TMs share may signal")
	}
	if ids := st.SharedMACs[[6]uint8(tmMAC(1))]; !slices.Equal(ids, []string{"tm1", "tm5"}) {
		t.Errorf("shared MAC owners %v", ids)
	}
	if idx, ok := st.Senders[[6]uint8(tmMAC(2))]; !ok || idx != 11 {
		t.Errorf("draining tm2 may not signal (%d %v)", idx, ok)
	}
	for _, mac := range []net.HardwareAddr{tmMAC(3), tmMAC(9)} {
		if _, ok := st.Senders[[6]uint8(mac)]; ok {
			t.Errorf("MAC %s (disabled or removed TM) may signal", mac)
		}
	}
	if o := st.LearnSrcs[flow.AddrKey(netip.MustParseAddr("10.1.0.50"))]; o != datapath.TMAny {
		t.Errorf("SNAT address owner %d", o)
	}
	if _, ok := st.LearnSrcs[flow.AddrKey(netip.MustParseAddr("10.1.0.13"))]; ok {
		t.Error("disabled tm3's address is a learning source")
	}
	if len(st.Masks) == 0 || st.Settings.SignalMcast == ([6]uint8{}) {
		t.Errorf("masks %v, settings %+v: defaults missing", st.Masks, st.Settings)
	}
}

// TestTMWithTwoAddresses: a TM host with an IPv4 and an IPv6 address is
// one TM: one index, its MAC a sender (before, two entries sharing the MAC
// were both refused), a learning source for each address; dropping an
// address drops its learning source.
func TestTMWithTwoAddresses(t *testing.T) {
	two := "  - {id: tm1, addresses: [10.1.0.11, \"fd00:1::11\"]}\n  - {id: tm2, address: 10.1.0.12}\n"
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2]}\n"
	h := newHarness(t, two, web, "")
	i1 := h.index(t, "tm1")
	if idx, ok := h.m.TMByMAC[[6]uint8(tmMAC(1))]; !ok || idx != i1 {
		t.Fatalf("tm1's MAC is a sender of %d (%v), want %d", idx, ok, i1)
	}
	for _, a := range []string{"10.1.0.11", "fd00:1::11"} {
		if o, ok := h.m.LearnSrcs[flow.AddrKey(netip.MustParseAddr(a))]; !ok || o != i1 {
			t.Errorf("learning source %s: owner %d (%v), want tm1 (%d)", a, o, ok, i1)
		}
	}
	if st, err := h.d.Stats(); err != nil || fmt.Sprint(st.TrafficManagers[0].Addresses) != "[10.1.0.11 fd00:1::11]" {
		t.Errorf("stats: %+v, %v", st.TrafficManagers, err)
	}
	h.reload(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n", web)
	if _, ok := h.m.LearnSrcs[flow.AddrKey(netip.MustParseAddr("fd00:1::11"))]; ok {
		t.Error("a removed address is still a learning source")
	}
	if h.index(t, "tm1") != i1 {
		t.Error("tm1 changed index when it lost an address")
	}
}

// TestStaticMACSenderBeforeReady: a TM with a static MAC whose route is
// not resolved yet is a sender (XDP then refuses its signals as not ready,
// sig_refused_not_ready, rather than as an unknown MAC) but not usable.
func TestStaticMACSenderBeforeReady(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm9]}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n", web[:len(web)-len(", tm9]}\n")]+"]}\n", "")
	h.res.noRoute = map[string]bool{"tm9": true}
	h.reload(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm9, address: 10.1.0.19, mac: \"02:bb:00:00:00:09\"}\n", web)
	s := h.d.tms["tm9"]
	if s.ready() {
		t.Fatal("the test needs tm9 unresolved")
	}
	if idx, ok := h.m.TMByMAC[[6]uint8{2, 0xbb, 0, 0, 0, 9}]; !ok || idx != s.index {
		t.Fatalf("tm9's static MAC: sender %d (%v), want %d", idx, ok, s.index)
	}
	if h.m.TMs[s.index].Flags&datapath.TMReady != 0 {
		t.Fatal("unresolved tm9 is ready in the data path")
	}
}

// TestSecondApplyWritesNothing: applying the same config again writes
// nothing (the diff against the written state is empty).
func TestSecondApplyWritesNothing(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2]}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n", web, "")
	n := len(h.m.writes)
	h.reload(t, "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n", web)
	if len(h.m.writes) != n {
		t.Fatalf("reloading the same config wrote %v", h.m.writes[n:])
	}
}

// TestSweep removes idle entries by the daemon's clock and keeps the rest.
func TestSweep(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1]}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n", web, "timeouts: {tcp: 100, second_key: 50}\n")
	h.now = 10000
	idle, fresh := key("10.9.0.1", 1), key("10.9.0.2", 1)
	_ = h.m.PutFlow(idle, datapath.Flow{LastSeen: h.now - 101})
	_ = h.m.PutFlow(fresh, datapath.Flow{LastSeen: h.now - 100})
	sIdle := datapath.SecondKey{Key: idle, Mask: datapath.FieldAll}
	sFresh := datapath.SecondKey{Key: fresh, Mask: datapath.FieldAll}
	_ = h.m.PutSecondKey(sIdle, datapath.Second{LastSeen: h.now - 51})
	_ = h.m.PutSecondKey(sFresh, datapath.Second{LastSeen: h.now - 51, Timeout: 60})
	nf, ns, err := h.d.sweep()
	if err != nil {
		t.Fatal(err)
	}
	if nf != 1 || ns != 1 {
		t.Fatalf("swept %d flows, %d second keys; want 1, 1", nf, ns)
	}
	if _, ok := h.m.Flows[fresh]; !ok {
		t.Error("a flow idle exactly its timeout was swept")
	}
	if _, ok := h.m.SecondKeys[sFresh]; !ok {
		t.Error("a second key within its own timeout was swept")
	}
}

// TestInterfaceWithoutMAC: an interface without an Ethernet address (lo) is
// refused with an error naming it, not a panic.
func TestInterfaceWithoutMAC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	cfg, err := config.Parse([]byte(baseConfig+"traffic_managers:\n  - {id: tm0, address: 10.1.0.10}\n"), path)
	if err != nil {
		t.Fatal(err)
	}
	ifaces := []iface{testIfaces[0], {name: "lo", role: config.RoleInternal, index: 1}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err = newDaemon(log, path, cfg, flow.NewModel(testRing, testServices, 0), &fakeResolver{}, ifaces, func() uint32 { return 1 })
	if err == nil || !strings.Contains(err.Error(), "interface lo (distributor.interfaces): no Ethernet address") {
		t.Fatalf("newDaemon with lo: err = %v, want a refusal naming lo", err)
	}
}
