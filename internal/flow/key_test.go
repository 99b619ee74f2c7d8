package flow

import (
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow/flowtest"
)

func TestMakeKeyRoundTrip(t *testing.T) {
	for _, c := range []struct {
		src, dst     string
		sport, dport uint16
		proto        uint8
		vlan         uint16
		want         string
	}{
		{"10.0.1.11", "10.0.0.100", 40000, 80, ProtoTCP, 0, "tcp 10.0.1.11:40000 -> 10.0.0.100:80"},
		{"fd00:1::11", "fd00:100::100", 5353, 53, ProtoUDP, 7, "udp [fd00:1::11]:5353 -> [fd00:100::100]:53 vlan 7"},
		{"::ffff:10.0.1.11", "::ffff:10.0.0.100", 1, 2, ProtoTCP, 0, "tcp 10.0.1.11:1 -> 10.0.0.100:2"},
	} {
		k := MakeKey(netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst), c.sport, c.dport, c.proto, c.vlan)
		if got := String(k); got != c.want {
			t.Errorf("String = %q, want %q", got, c.want)
		}
		if SrcPort(k) != c.sport || DstPort(k) != c.dport {
			t.Errorf("ports %d %d, want %d %d", SrcPort(k), DstPort(k), c.sport, c.dport)
		}
		r := Reverse(k)
		if Src(r) != Dst(k) || DstPort(r) != c.sport || Reverse(r) != k {
			t.Errorf("Reverse(%s) = %s", String(k), String(r))
		}
	}
}

// TestKeyFromWire checks that the model reads ports and addresses from the
// wire the way the XDP program does: ports keep network byte order in the
// key, so MakeKey (host-order ports) must produce the same key.
func TestKeyFromWire(t *testing.T) {
	m := NewModel(251, 2, 0)
	vip := netip.MustParseAddr("10.0.0.100")
	client := netip.MustParseAddr("10.0.1.11")
	m.Services[ServiceKey(vip, 80, ProtoTCP)] = datapath.Service{Index: 0}
	m.VIPs[AddrKey(vip)] = 1
	m.TMs[3] = datapath.TM{Mac: [6]uint8{2, 0, 0, 0, 0, 3}, Ifindex: 1, Flags: datapath.TMReady}
	for i := range m.RingSize {
		m.Rings[i] = 3
	}
	// An ACK (a mid-stream packet): its entry goes to the flow table, not
	// the half-open one.
	for _, vlans := range [][]uint16{nil, {7}, {100, 7}} {
		pkt := flowtest.Packet{Src: client, Dst: vip, Proto: ProtoTCP, SrcPort: 40000, DstPort: 80, TCPFlags: flowtest.ACK, VLANs: vlans, IPv4Options: 8}.Bytes()
		v, out := m.Process(pkt, 1)
		if v != datapath.TX {
			t.Fatalf("vlans %v: verdict %v, want TX", vlans, v)
		}
		if out[5] != 3 {
			t.Errorf("destination MAC %x, want the TM's", out[:6])
		}
		var vlan uint16
		if len(vlans) > 0 {
			vlan = vlans[len(vlans)-1]
		}
		want := MakeKey(client, vip, 40000, 80, ProtoTCP, vlan)
		if _, ok := m.Flows[want]; !ok {
			t.Errorf("vlans %v: flow %s not in the table (%d entries)", vlans, String(want), len(m.Flows))
		}
	}
}

// TestHashKnownValues pins the hash: distributors of one cluster must agree,
// and sy_hash_key in bpf/switchyard.h must stay equal (the differential test
// checks that).
func TestHashKnownValues(t *testing.T) {
	k := MakeKey(netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.0.100"), 40000, 80, ProtoTCP, 0)
	a, b := Hash(k, 0), Hash(k, 1)
	if a == b {
		t.Errorf("seed does not change the hash")
	}
	k2 := k
	k2.Sport++
	if Hash(k2, 0) == a {
		t.Errorf("port does not change the hash")
	}
	// Spread: 65537 slots, 100k keys: no slot should be hit more than ~20 times.
	counts := make([]int, 65537)
	for i := range 100000 {
		kk := MakeKey(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), netip.MustParseAddr("10.0.0.100"), uint16(i), 80, ProtoTCP, 0)
		counts[Hash(kk, 0)%65537]++
	}
	for i, c := range counts {
		if c > 20 {
			t.Fatalf("slot %d hit %d times: the hash clusters", i, c)
		}
	}
}

// FuzzModel feeds arbitrary frames to the model: it must never panic and
// must always return a valid verdict with an output of the input's length.
func FuzzModel(f *testing.F) {
	vip := netip.MustParseAddr("10.0.0.100")
	f.Add(flowtest.Packet{Src: netip.MustParseAddr("10.0.1.11"), Dst: vip, Proto: ProtoTCP, SrcPort: 1, DstPort: 80}.Bytes())
	f.Add(flowtest.Packet{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"), Proto: ProtoUDP, IPv6Ext: []uint8{0, 43}}.Bytes())
	f.Add([]byte{})
	m := NewModel(13, 1, 0)
	m.VIPs[AddrKey(vip)] = 1
	m.Services[ServiceKey(vip, 0, ProtoTCP)] = datapath.Service{}
	m.TMs[0] = datapath.TM{Flags: datapath.TMReady, Ifindex: 1}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		v, out := m.Process(pkt, 1)
		if v > datapath.Redirect {
			t.Fatalf("verdict %v", v)
		}
		if len(out) != len(pkt) {
			t.Fatalf("output %d bytes, input %d", len(out), len(pkt))
		}
	})
}
