package flowtest

import (
	"net"
	"time"

	"github.com/switchyard/switchyard/signal"
)

// SignalOptions say what the generator may put in signals.
type SignalOptions struct {
	DstMACs [][6]byte      // the distributor's MAC, the multicast MAC, a stranger's
	SrcMACs [][6]byte      // TMs' MACs and unknown ones
	Masks   []signal.Field // masks RELATE may use (add unconfigured ones to test refusal)
	TMs     []uint16       // values for the tm field besides Self
	Packet  func() []byte  // a frame to carry a shim
}

func (g *Generator) key() signal.Key {
	r := g.R
	v4 := r.IntN(2) == 0
	k := signal.Key{
		Src:     g.addr(g.Clients, v4),
		SrcPort: uint16(1024 + r.IntN(8)),
		DstPort: pick(r, g.Ports),
		Proto:   pick(r, []uint8{6, 17}),
	}
	if r.IntN(4) == 0 {
		k.Dst = g.addr(g.Others, v4)
	} else {
		k.Dst = g.addr(g.VIPs, v4)
	}
	if r.IntN(8) == 0 {
		k.VLAN = uint16(r.IntN(4096))
	}
	if r.IntN(6) == 0 { // the reverse of a flow: what learning and TMs' own flows look like
		k.Src, k.Dst, k.SrcPort, k.DstPort = k.Dst, k.Src, k.DstPort, k.SrcPort
	}
	return k
}

func (g *Generator) op(o SignalOptions) signal.Op {
	r := g.R
	tm := uint16(0)
	if r.IntN(5) == 0 && len(o.TMs) > 0 {
		tm = pick(r, o.TMs)
	}
	timeout := time.Duration(r.IntN(3)) * 100 * time.Second
	switch r.IntN(6) {
	case 0, 1:
		return signal.Memorize{Key: g.key(), TM: tm, Mirror: r.IntN(3) == 0, Timeout: timeout}
	case 2:
		return signal.Forget{Key: g.key()}
	case 3:
		return signal.Mirror{Key: g.key()}
	case 4:
		return signal.Age{Key: g.key(), Timeout: timeout}
	}
	second := g.key()
	if r.IntN(2) == 0 {
		second.SrcPort = 0
	}
	return signal.Relate{Parent: g.key(), Second: second, Mask: pick(r, o.Masks), TM: tm, Timeout: timeout}
}

// Signal returns a random signal frame or shimmed packet; about a third are
// damaged (bad version, count, length, op, truncated, a corrupted byte).
func (g *Generator) Signal(o SignalOptions) []byte {
	r := g.R
	var m signal.Message
	for range 1 + r.IntN(4) {
		m.Ops = append(m.Ops, g.op(o))
	}
	dst, src := pick(r, o.DstMACs), pick(r, o.SrcMACs)
	var b []byte
	var err error
	if r.IntN(3) == 0 && o.Packet != nil {
		pkt := o.Packet()
		copy(pkt[0:6], dst[:])
		copy(pkt[6:12], src[:])
		b, err = signal.Shim(pkt, m)
	} else {
		b, err = signal.Frame(net.HardwareAddr(dst[:]), net.HardwareAddr(src[:]), m)
	}
	if err != nil {
		panic(err) // the generator only makes valid messages before damaging them
	}
	switch n := r.IntN(30); {
	case n == 0:
		b[14] = 2 // version
	case n == 1:
		b[15] = 9 // count
	case n == 2:
		b[15] = 0
	case n == 3:
		b[17]++ // length
	case n == 4:
		b[22] = 77 // op
	case n == 5:
		b[23]-- // TLV length
	case n < 8:
		b = b[:14+r.IntN(len(b)-14)]
	case n < 11:
		i := 14 + r.IntN(len(b)-14)
		b[i] = byte(r.IntN(256))
	}
	return b
}
