package distributor

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// loopbackTMs points the health probes of TM address 10.1.0.N at
// 127.0.0.N, where the test's listeners play the TMs' services: the
// probes are real TCP connections, the data path is the model.
func loopbackTMs(t *testing.T) {
	t.Helper()
	old := probeAddr
	probeAddr = func(tm config.TrafficManager, _ netip.Addr) netip.Addr {
		a := tm.AllAddresses()[0].As4()
		return netip.AddrFrom4([4]byte{127, 0, 0, a[3]})
	}
	t.Cleanup(func() { probeAddr = old })
}

// tmService is a TCP listener standing for a TM's service on 127.0.0.N.
type tmService struct {
	addr string
	l    net.Listener
}

func (s *tmService) start(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.l = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (s *tmService) stop() {
	if s.l != nil {
		s.l.Close()
		s.l = nil
	}
}

// freePort finds a port free on 127.0.0.11..14.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.11:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		free := true
		for i := 12; i <= 14; i++ {
			if l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i, port)); err != nil {
				free = false
			} else {
				l2.Close()
			}
		}
		if free {
			return port
		}
	}
	t.Fatal("no port free on 127.0.0.11..14")
	return 0
}

// ringNow is the set of TM indexes in service svc's ring, read under the
// daemon's lock (probe goroutines write the ring).
func (h *harness) ringNow(svc uint32) []uint32 {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	var out []uint32
	for idx := range h.ringTMs(svc) {
		if idx != datapath.NoTM {
			out = append(out, idx)
		}
	}
	slices.Sort(out)
	return out
}

func (h *harness) waitRing(t *testing.T, what string, svc uint32, want ...uint32) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.ringNow(svc)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: ring holds TMs %v, want %v", what, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) flowTM(k datapath.FlowKey) (uint16, bool) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	f, err := h.m.LookupFlow(k)
	return f.Tm, err == nil
}

func (h *harness) svcStats(t *testing.T, name string) api.ServiceStats {
	t.Helper()
	st, err := h.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stats for service %s", name)
	return api.ServiceStats{}
}

// TestHealthRing: a TM whose service stops leaves the ring within
// fall × interval and keeps its established flows; it comes back after
// rise good probes; when the whole pool is down the fallback pool takes
// new flows; the state shows in Stats.
func TestHealthRing(t *testing.T) {
	loopbackTMs(t)
	port := freePort(t)
	svcs := map[int]*tmService{}
	for i := 1; i <= 4; i++ {
		svcs[i] = &tmService{addr: fmt.Sprintf("127.0.0.%d:%d", 10+i, port)}
		svcs[i].start(t)
		defer svcs[i].stop()
	}
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n  - {id: tm3, address: 10.1.0.13}\n  - {id: tm4, address: 10.1.0.14}\n"
	web := fmt.Sprintf("  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3], fallback_traffic_managers: [tm4],\n"+
		"     health: {type: tcp, port: %d, interval_ms: 30, timeout_ms: 30, rise: 2, fall: 2, on_unhealthy: %%s}}\n", port)
	h := newHarness(t, tms, fmt.Sprintf(web, "keep"), "")
	defer h.d.Close(false)
	i1, i2, i3, i4 := h.index(t, "tm1"), h.index(t, "tm2"), h.index(t, "tm3"), h.index(t, "tm4")
	svc := h.d.svcs[serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}].index
	h.waitRing(t, "all healthy", svc, i1, i2, i3)

	// An established flow on each TM, as the data path would have written it.
	est := map[uint32]datapath.FlowKey{}
	h.d.mu.Lock()
	for n, idx := range []uint32{i1, i2, i3} {
		k := key(fmt.Sprintf("10.9.0.%d", n+1), 40000)
		est[idx] = k
		if err := h.m.PutFlow(k, datapath.Flow{LastSeen: h.now, Tm: uint16(idx), Svc: uint16(svc), Flags: datapath.FlowSelected}); err != nil {
			t.Fatal(err)
		}
	}
	h.d.mu.Unlock()

	start := time.Now()
	svcs[1].stop()
	h.waitRing(t, "tm1's service stopped", svc, i2, i3)
	t.Logf("tm1 left the ring %v after its service stopped (fall 2 × interval 30ms)", time.Since(start).Round(time.Millisecond))
	if tm, ok := h.flowTM(est[i1]); !ok || uint32(tm) != i1 {
		t.Fatalf("tm1's established flow: on %d (present %v), want kept on %d", tm, ok, i1)
	}
	st := h.svcStats(t, "web")
	if len(st.Health) != 4 || st.Health[0].TM != "tm1" || st.Health[0].Healthy || st.Health[0].Changes != 1 ||
		!strings.Contains(st.Health[0].LastError, "refused") || !st.Health[1].Healthy || st.Fallback {
		t.Fatalf("stats after tm1 fell: %+v", st)
	}
	if !slices.Equal(st.Eligible, []string{"tm2", "tm3"}) {
		t.Fatalf("eligible %v, want [tm2 tm3]", st.Eligible)
	}

	svcs[1].start(t)
	h.waitRing(t, "tm1's service back", svc, i1, i2, i3)

	// The whole pool down: the fallback pool; tm4 is checked too.
	for i := 1; i <= 3; i++ {
		svcs[i].stop()
	}
	h.waitRing(t, "pool down", svc, i4)
	if st := h.svcStats(t, "web"); !st.Fallback || !slices.Equal(st.Eligible, []string{"tm4"}) {
		t.Fatalf("pool down: fallback %v eligible %v, want true [tm4]", st.Fallback, st.Eligible)
	}
	for idx, k := range est {
		if tm, ok := h.flowTM(k); !ok || uint32(tm) != idx {
			t.Fatalf("established flow of TM %d: on %d (present %v)", idx, tm, ok)
		}
	}
	// The fallback down too: an empty ring (new flows are dropped as no_tm).
	svcs[4].stop()
	h.waitRing(t, "everything down", svc)
	svcs[2].start(t)
	h.waitRing(t, "tm2 back", svc, i2)
}

// TestHealthReselect: with on_unhealthy: reselect, the flows of a TM that
// turns unhealthy are removed (their next packet selects again), and only
// that TM's flows of that service.
func TestHealthReselect(t *testing.T) {
	loopbackTMs(t)
	port := freePort(t)
	s1 := &tmService{addr: fmt.Sprintf("127.0.0.11:%d", port)}
	s2 := &tmService{addr: fmt.Sprintf("127.0.0.12:%d", port)}
	s1.start(t)
	s2.start(t)
	defer s1.stop()
	defer s2.stop()
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n"
	svcsYAML := fmt.Sprintf("  - {name: dns, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2],\n"+
		"     health: {type: tcp, port: %d, interval_ms: 30, timeout_ms: 30, rise: 1, fall: 1, on_unhealthy: reselect}}\n"+
		"  - {name: other, vip: 10.0.0.100, port: 81, protocol: tcp, traffic_managers: [tm1, tm2]}\n", port)
	h := newHarness(t, tms, svcsYAML, "")
	defer h.d.Close(false)
	i1, i2 := h.index(t, "tm1"), h.index(t, "tm2")
	dns := h.d.svcs[serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}].index
	other := h.d.svcs[serviceID{vip: testVIP, port: 81, proto: flow.ProtoTCP}].index
	h.waitRing(t, "healthy", dns, i1, i2)
	put := func(src string, tm, svc uint32) datapath.FlowKey {
		k := key(src, 40000)
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		if err := h.m.PutFlow(k, datapath.Flow{LastSeen: h.now, Tm: uint16(tm), Svc: uint16(svc), Flags: datapath.FlowSelected}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	a, b, c := put("10.9.0.1", i1, dns), put("10.9.0.2", i2, dns), put("10.9.0.3", i1, other)
	s1.stop()
	h.waitRing(t, "tm1 down", dns, i2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := h.flowTM(a); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tm1's flow of dns was not removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := h.flowTM(b); !ok {
		t.Fatal("tm2's flow of dns was removed")
	}
	if _, ok := h.flowTM(c); !ok {
		t.Fatal("tm1's flow of another service was removed")
	}
}

// slowHTTP serves HTTP on addr, answering after *delay.
func slowHTTP(t *testing.T, addr string, delay *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(delay.Load()))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

// ringShare is TM idx's share of service svc's ring, under the lock.
func (h *harness) ringShare(svc, idx uint32) float64 {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	n := h.ringTMs(svc)
	total := 0
	for i, c := range n {
		if i != datapath.NoTM {
			total += c
		}
	}
	return float64(n[idx]) / float64(total)
}

// TestFastestRTT: a TM whose health probes answer 30 ms late gets a small
// share of the ring (weights from damped RTTs), and its share comes back
// when it is fast again; established flows stay where they are.
func TestFastestRTT(t *testing.T) {
	loopbackTMs(t)
	port := freePort(t)
	var slow, fast atomic.Int64
	slowHTTP(t, fmt.Sprintf("127.0.0.11:%d", port), &slow)
	slowHTTP(t, fmt.Sprintf("127.0.0.12:%d", port), &fast)
	slowHTTP(t, fmt.Sprintf("127.0.0.13:%d", port), &fast)
	slow.Store(int64(30 * time.Millisecond))
	tms := "  - {id: tm1, address: 10.1.0.11}\n  - {id: tm2, address: 10.1.0.12}\n  - {id: tm3, address: 10.1.0.13}\n"
	web := fmt.Sprintf("  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1, tm2, tm3], policy: fastest-rtt,\n"+
		"     health: {type: http, port: %d, interval_ms: 50, timeout_ms: 50, rise: 1, fall: 3}}\n", port)
	h := newHarness(t, tms, web, "")
	defer h.d.Close(false)
	i1 := h.index(t, "tm1")
	svc := h.d.svcs[serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}].index
	k := key("10.9.0.1", 40000)
	h.d.mu.Lock()
	if err := h.m.PutFlow(k, datapath.Flow{LastSeen: h.now, Tm: uint16(i1), Svc: uint16(svc), Flags: datapath.FlowSelected}); err != nil {
		t.Fatal(err)
	}
	h.d.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for h.ringShare(svc, i1) > 0.1 {
		if time.Now().After(deadline) {
			t.Fatalf("the slow TM keeps %.3f of the ring", h.ringShare(svc, i1))
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.d.mu.Lock()
	weights := fmt.Sprint(h.d.svcs[serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}].weights)
	h.d.mu.Unlock()
	t.Logf("slow tm1: %.3f of the ring, weights %s", h.ringShare(svc, i1), weights)
	if tm, ok := h.flowTM(k); !ok || uint32(tm) != i1 {
		t.Fatalf("tm1's established flow moved to %d (present %v)", tm, ok)
	}
	slow.Store(0)
	deadline = time.Now().Add(20 * time.Second)
	for sh := h.ringShare(svc, i1); sh < 0.28 || sh > 0.39; sh = h.ringShare(svc, i1) {
		if time.Now().After(deadline) {
			t.Fatalf("tm1 fast again holds %.3f of the ring, want about 1/3", sh)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
