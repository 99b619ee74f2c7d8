package datapath_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/flow/flowtest"
	"github.com/switchyard/switchyard/signal"
)

// FuzzDifferential feeds arbitrary frames to the XDP program (through
// BPF_PROG_TEST_RUN) and to the model, on an external and an internal
// interface: verdicts and output bytes must agree.
func FuzzDifferential(f *testing.F) {
	fx := newFixture(f)
	fx.standard(f)
	g := generator(7)
	so := signalOptions(g)
	for range 40 {
		f.Add(g.Next(), false)
		f.Add(g.Signal(so), true)
	}
	k := signal.Key{Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.0.100"), SrcPort: 1, DstPort: 80, Proto: 6}
	fr, err := signal.Frame(net.HardwareAddr(ourMAC[:]), net.HardwareAddr(tm0MAC[:]), signal.Message{Ops: []signal.Op{signal.Memorize{Key: k}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fr, true)
	f.Add(flowtest.Packet{Src: k.Src, Dst: k.Dst, Proto: 6, SrcPort: 1, DstPort: 80}.Bytes(), false)
	f.Fuzz(func(t *testing.T, pkt []byte, internal bool) {
		if len(pkt) < 14 || len(pkt) > 1500 {
			return // the kernel refuses these test runs; no driver delivers them
		}
		role := roleExternal
		if internal {
			role = roleInternal
		}
		fx.setRole(t, role)
		fx.check(t, 0, pkt)
	})
}
