package lab_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/signal"
)

// TestShimToMulticastMAC: a TM's packet whose shim is sent to the signal
// multicast MAC has its ops applied and reaches the server as it would
// without the shim. Before, the ops were applied and the packet was lost
// (the kernel forwards only frames addressed to the host).
//
// Generic XDP: there, as with a physical NIC's native XDP, the kernel
// classifies the frame after XDP rewrote its destination MAC. Native XDP on
// veth keeps the packet type the peer gave the frame (multicast), and the
// kernel still does not forward it; docs/signals.md says so.
func TestShimToMulticastMAC(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2, Servers: 1})
	d := startDist(t, e, lab.ConfigOptions{Mutate: func(c *config.Config) { c.Distributor.XDPMode = config.XDPModeGeneric }})
	tm1, srv := e.Topo.TMs[0], e.Topo.Servers[0]
	next := capture(t, srv, 9998)
	from := netip.AddrPortFrom(tm1.Links["eth0"].Addr4.Addr(), 5556)
	to := netip.AddrPortFrom(srv.Links["eth0"].Addr4.Addr(), 9998)
	sendRaw(t, tm1, udpFrame(distMAC(e), tm1.Links["eth0"].MAC, from, to, []byte("multicast shim test")))
	plain := next()

	src := netip.AddrPortFrom(e.Topo.Clients[0].Links["eth0"].Addr4.Addr(), 34568)
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	key := signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: vip.Port(), Proto: flow.ProtoTCP}
	shimmed, err := signal.Shim(udpFrame(config.DefaultMulticastMAC(), tm1.Links["eth0"].MAC, from, to, []byte("multicast shim test")),
		signal.Message{Ops: []signal.Op{signal.Memorize{Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, tm1, shimmed)
	if viaShim := next(); !bytes.Equal(plain, viaShim) {
		t.Fatalf("packet with a shim to the multicast MAC arrived as\n%x\nwithout:\n%x", viaShim, plain)
	}
	if n := counter(t, d, "sig_shim"); n != 1 {
		t.Fatalf("sig_shim = %d, want 1", n)
	}
	if fl, ok := flowOf(t, d, src, vip); !ok || fl.TM != "tm1" {
		t.Fatalf("memorized flow: %+v, present %v", fl, ok)
	}
}
