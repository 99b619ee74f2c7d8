package distributor

import (
	"net/netip"
	"time"

	"testing"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

func TestIdleTimeout(t *testing.T) {
	to := config.DefaultTimeouts()
	tcp := datapath.FlowKey{Proto: flow.ProtoTCP}
	udp := datapath.FlowKey{Proto: flow.ProtoUDP}
	icmp := datapath.FlowKey{Proto: flow.ProtoICMP}
	for _, c := range []struct {
		k    datapath.FlowKey
		f    datapath.Flow
		want uint32
	}{
		{tcp, datapath.Flow{}, to.TCP},
		{tcp, datapath.Flow{TcpState: datapath.TCPSynSeen | datapath.TCPSeqFwd}, to.TCPSyn},
		{tcp, datapath.Flow{TcpState: datapath.TCPSynSeen | datapath.TCPEstablished}, to.TCP},
		{tcp, datapath.Flow{TcpState: datapath.TCPEstablished | datapath.TCPFinFwd}, to.TCPFin},
		{tcp, datapath.Flow{TcpState: datapath.TCPEstablished | datapath.TCPFinRev}, to.TCPFin},
		{tcp, datapath.Flow{TcpState: datapath.TCPFinFwd | datapath.TCPFinRev}, to.TCPClose},
		{tcp, datapath.Flow{TcpState: datapath.TCPEstablished | datapath.TCPReset}, to.TCPClose},
		// A signalled timeout replaces a live connection's, caps an ended one's.
		{tcp, datapath.Flow{Timeout: 3600, TcpState: datapath.TCPEstablished}, 3600},
		{tcp, datapath.Flow{Timeout: 3600, TcpState: datapath.TCPReset}, to.TCPClose},
		{tcp, datapath.Flow{Timeout: 7, TcpState: datapath.TCPFinFwd}, 7},
		{udp, datapath.Flow{}, to.UDP},
		{icmp, datapath.Flow{}, to.Other},
	} {
		if got := idleTimeout(to, c.k, c.f, false); got != c.want {
			t.Errorf("idleTimeout(proto %d, %+v) = %d, want %d", c.k.Proto, c.f, got, c.want)
		}
	}
	if got := idleTimeout(to, tcp, datapath.Flow{TcpState: datapath.TCPEstablished}, true); got != to.TCPClose {
		t.Errorf("a related flow whose parent ended: timeout %d, want the close timeout %d", got, to.TCPClose)
	}
	if got := idleTimeout(to, udp, datapath.Flow{Timeout: 600}, true); got != to.TCPClose {
		t.Errorf("a related UDP flow with a signalled timeout whose parent ended: timeout %d, want %d", got, to.TCPClose)
	}
	if idle(100, 95, 5) || !idle(100, 94, 5) {
		t.Error("idle: an entry is idle only past its timeout")
	}
	if idle(100, 101, 0) {
		t.Error("idle: an entry seen after now (clock set concurrently) is not idle")
	}
}

func TestOrigins(t *testing.T) {
	got := origins(datapath.FlowMemorized | datapath.FlowMirror)
	if len(got) != 2 || got[0] != "memorized" || got[1] != "mirror" {
		t.Errorf("origins = %v", got)
	}
	if got := origins(0); got[0] != "unknown" {
		t.Errorf("origins(0) = %v", got)
	}
}

// TestSweepByState: each TCP phase goes after its own timeout, and a
// related second key whose parent ended or is gone — with the flow it made
// — goes after the close timeout, while one whose parent lives stays.
func TestSweepByState(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1]}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n", web,
		"timeouts: {tcp: 900, tcp_syn: 30, tcp_fin: 120, tcp_close: 10, second_key: 300}\n")
	h.now = 10000
	put := func(k datapath.FlowKey, st uint8, idle uint32) {
		if err := h.m.PutFlow(k, datapath.Flow{LastSeen: h.now - idle, TcpState: st}); err != nil {
			t.Fatal(err)
		}
	}
	synOld, synNew := key("10.9.0.1", 1), key("10.9.0.1", 2)
	put(synOld, datapath.TCPSynSeen|datapath.TCPSeqFwd, 31)
	put(synNew, datapath.TCPSynSeen|datapath.TCPSeqFwd, 30)
	estab := key("10.9.0.1", 3)
	put(estab, datapath.TCPSynSeen|datapath.TCPEstablished, 121)
	fin := key("10.9.0.1", 4)
	put(fin, datapath.TCPEstablished|datapath.TCPFinFwd, 121)
	rst := key("10.9.0.1", 5)
	put(rst, datapath.TCPEstablished|datapath.TCPReset, 11)

	// Parents: one reset (rst above), one live (estab), one gone.
	gone := key("10.9.0.1", 6)
	child := func(parent datapath.FlowKey, port uint16) (datapath.SecondKey, datapath.FlowKey) {
		ck := flow.MakeKey(netip.MustParseAddr("10.9.0.1"), testVIP, 0, port, flow.ProtoTCP, 0)
		mask := datapath.FieldProto | datapath.FieldSrc | datapath.FieldDst | datapath.FieldDstPort
		sk := datapath.SecondKey{Key: flow.MaskKey(ck, mask), Mask: mask}
		if err := h.m.PutSecondKey(sk, datapath.Second{LastSeen: h.now - 11, Timeout: 3600, Svc: datapath.SvcNone, Parent: parent}); err != nil {
			t.Fatal(err)
		}
		data := ck
		data.Sport = 7000
		if err := h.m.PutFlow(data, datapath.Flow{LastSeen: h.now - 11, Flags: datapath.FlowSecondKey, Mask: uint8(mask),
			TcpState: datapath.TCPEstablished}); err != nil {
			t.Fatal(err)
		}
		return sk, data
	}
	skRst, dataRst := child(rst, 2001)
	skGone, dataGone := child(gone, 2002)
	skLive, dataLive := child(estab, 2003)

	halfOld, halfNew := key("10.9.0.2", 1), key("10.9.0.2", 2)
	h.m.HalfOpen[halfOld] = datapath.Flow{LastSeen: h.now - 31, TcpState: datapath.TCPSynSeen | datapath.TCPSeqFwd}
	h.m.HalfOpen[halfNew] = datapath.Flow{LastSeen: h.now - 30, TcpState: datapath.TCPSynSeen | datapath.TCPSeqFwd}

	if _, _, err := h.d.sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.m.HalfOpen[halfOld]; ok {
		t.Error("a half-open entry idle past tcp_syn was kept")
	}
	if _, ok := h.m.HalfOpen[halfNew]; !ok {
		t.Error("a half-open entry idle exactly tcp_syn was swept")
	}
	st, err := h.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	wantAged := map[string]uint64{"syn": 1, "fin": 1, "reset": 1, "related": 2, "half_open": 1, "related_second_key": 2}
	for k, v := range wantAged {
		if st.Aged[k] != v {
			t.Errorf("aged[%s] = %d, want %d (all: %v)", k, st.Aged[k], v, st.Aged)
		}
	}
	if st.LastSweep == nil || st.LastSweep.Removed != 8 || st.LastSweep.Walked != 13 {
		t.Errorf("last sweep %+v, want 8 removed of 13 walked", st.LastSweep)
	}
	if st.HalfOpenEntries != 1 || st.FlowsByState["established"] != 2 {
		t.Errorf("half-open %d, by state %v: want 1 half-open and 2 established", st.HalfOpenEntries, st.FlowsByState)
	}
	for _, c := range []struct {
		name string
		k    datapath.FlowKey
		kept bool
	}{
		{"half-open idle 31 s", synOld, false}, {"half-open idle 30 s", synNew, true},
		{"established idle 121 s", estab, true}, {"after a FIN idle 121 s", fin, false},
		{"reset idle 11 s", rst, false},
		{"flow of a related key whose parent reset", dataRst, false},
		{"flow of a related key whose parent is gone", dataGone, false},
		{"flow of a related key whose parent lives", dataLive, true},
	} {
		if _, ok := h.m.Flows[c.k]; ok != c.kept {
			t.Errorf("%s: kept %v, want %v", c.name, ok, c.kept)
		}
	}
	for _, c := range []struct {
		name string
		k    datapath.SecondKey
		kept bool
	}{{"related key whose parent reset", skRst, false}, {"related key whose parent is gone", skGone, false},
		{"related key whose parent lives", skLive, true}} {
		if _, ok := h.m.SecondKeys[c.k]; ok != c.kept {
			t.Errorf("%s: kept %v, want %v", c.name, ok, c.kept)
		}
	}
}

// TestSweepServiceTimeouts: a service's own timeouts apply to the flows it
// selected (they carry its index); other flows keep the global ones.
func TestSweepServiceTimeouts(t *testing.T) {
	web := "  - {name: web, vip: 10.0.0.100, port: 80, protocol: tcp, traffic_managers: [tm1], timeouts: {tcp: 50}}\n"
	h := newHarness(t, "  - {id: tm1, address: 10.1.0.11}\n", web, "timeouts: {tcp: 900}\n")
	h.now = 10000
	svc := uint16(h.d.svcs[serviceID{vip: testVIP, port: 80, proto: flow.ProtoTCP}].index)
	own, other := key("10.9.0.1", 1), key("10.9.0.1", 2)
	st := datapath.TCPSynSeen | datapath.TCPEstablished
	if err := h.m.PutFlow(own, datapath.Flow{LastSeen: h.now - 51, Svc: svc, Flags: datapath.FlowSelected, TcpState: st}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.PutFlow(other, datapath.Flow{LastSeen: h.now - 51, Svc: datapath.SvcNone, Flags: datapath.FlowMemorized, TcpState: st}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.d.sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.m.Flows[own]; ok {
		t.Error("the service's flow idle past the service's tcp timeout (50 s) was kept")
	}
	if _, ok := h.m.Flows[other]; !ok {
		t.Error("a memorized flow idle 51 s was swept: it has the global tcp timeout (900 s)")
	}
}

// TestPacer: a walk faster than the rate sleeps, per batch, until it is on
// the rate; one slower than the rate never sleeps. (A fake clock: no
// timing assertions.)
func TestPacer(t *testing.T) {
	now := time.Unix(1000, 0)
	var slept time.Duration
	p := &pacer{rate: 4096, start: now, now: func() time.Time { return now }, sleep: func(d time.Duration) { slept += d; now = now.Add(d) }}
	for range 3 * pacerBatch {
		p.tick() // no time passes: every batch is a second ahead
	}
	if slept != 3*time.Second {
		t.Errorf("slept %v for 3 batches at one batch a second, want 3s", slept)
	}
	slept = 0
	for range pacerBatch {
		now = now.Add(time.Millisecond) // 4 s for a batch: behind the rate
		p.tick()
	}
	if slept != 0 {
		t.Errorf("a walk slower than the rate slept %v", slept)
	}
}
