package lab_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/signal"
)

// TestUDPReplayAcrossRestart: a UDP control datagram applied by a
// distributor is refused by the same distributor after a restart (it
// reads its replay state from distributor.state_dir), and a newer one is
// applied. Before, the restarted daemon applied the old datagram again.
func TestUDPReplayAcrossRestart(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1})
	ctl := netip.AddrPortFrom(e.Topo.Distributors[0].Links["int0"].Addr4.Addr(), 7901)
	opts := lab.ConfigOptions{SignalKeys: map[string]string{"tm1": "33333333333333333333333333333333"}, UDPListen: ctl.String()}
	key := bytes.Repeat([]byte{0x33}, 16)
	tm1 := e.Topo.TMs[0]
	src := netip.AddrPortFrom(e.Topo.Clients[0].Links["eth0"].Addr4.Addr(), 35100)
	vip := netip.AddrPortFrom(e.Topo.VIP4, 80)
	memorize := signal.Message{Ops: []signal.Op{signal.Memorize{Key: signal.Key{Src: src.Addr(), Dst: vip.Addr(),
		SrcPort: src.Port(), DstPort: vip.Port(), Proto: flow.ProtoTCP}}}}
	seal := func(seq uint64) []byte {
		b, err := signal.SealUDP("tm1", key, seq, memorize)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	send := func(b []byte) {
		t.Helper()
		err := tm1.NS.Do(func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ctl))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	d := startDist(t, e, opts)
	old := seal(1000)
	send(old)
	waitFor(t, 5*time.Second, "udp_sig_memorize", func() bool { return stats(t, d).UDPSignals["udp_sig_memorize"] == 1 })
	if err := d.Stop(); err != nil {
		t.Logf("stop: %v", err)
	}

	d = startDist(t, e, opts)
	if _, ok := flowOf(t, d, src, vip); ok {
		t.Fatal("the flow survived the restart: the test cannot tell a replay from it")
	}
	send(old)
	send(seal(999))
	waitFor(t, 5*time.Second, "udp_refused_replay", func() bool { return stats(t, d).UDPSignals["udp_refused_replay"] == 2 })
	if _, ok := flowOf(t, d, src, vip); ok {
		t.Fatal("a datagram accepted before the restart was applied again")
	}
	send(seal(1001))
	waitFor(t, 5*time.Second, "udp_sig_memorize", func() bool { return stats(t, d).UDPSignals["udp_sig_memorize"] == 1 })
	if fl, ok := flowOf(t, d, src, vip); !ok || fl.TM != "tm1" {
		t.Fatalf("after a new datagram: %+v, present %v", fl, ok)
	}
}
