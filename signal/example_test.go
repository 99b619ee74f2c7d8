package signal_test

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/switchyard/switchyard/signal"
)

// A TM pins a client's flow to itself for ten minutes and asks the
// distributors to mirror it to their peers.
func ExampleMessage_Marshal() {
	m := signal.Message{Ops: []signal.Op{
		signal.Memorize{
			Key: signal.Key{
				Src: netip.MustParseAddr("192.0.2.10"), SrcPort: 40000, // client
				Dst: netip.MustParseAddr("198.51.100.1"), DstPort: 80, // VIP
				Proto: 6,
			},
			// TM left zero: "the sender".
			Mirror:  true,
			Timeout: 10 * time.Minute,
		},
	}}
	b, err := m.Marshal()
	if err != nil {
		panic(err)
	}
	fmt.Println(len(b), hex.EncodeToString(b[:8]), hex.EncodeToString(b[8:10])) // header, TLV header
	// Output: 58 0101003200000000 0130
}

func ExampleUnmarshal() {
	b, _ := signal.Message{Ops: []signal.Op{signal.Age{
		Key:     signal.Key{Src: netip.MustParseAddr("2001:db8::10"), Dst: netip.MustParseAddr("2001:db8:1::1"), SrcPort: 5353, DstPort: 53, Proto: 17},
		Timeout: 0, // expire now
	}}}.Marshal()
	m, rest, err := signal.Unmarshal(b)
	fmt.Printf("%+v %d %v\n", m.Ops[0], len(rest), err)

	b[0] = 2 // an unknown version
	_, _, err = signal.Unmarshal(b)
	fmt.Println(signal.ReasonOf(err), err)
	// Output:
	// {Key:{Src:2001:db8::10 Dst:2001:db8:1::1 SrcPort:5353 DstPort:53 Proto:17 VLAN:0} Timeout:0s} 0 <nil>
	// version signal: refused (version) at byte 0
}

// An FTP TM relates the data connection it expects to the control
// connection: the next new flow from the client to the VIP's port 2020
// goes to the same TM.
func ExampleRelate() {
	client, vip := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.1")
	m := signal.Message{Ops: []signal.Op{signal.Relate{
		Parent: signal.Key{Src: client, Dst: vip, SrcPort: 40000, DstPort: 21, Proto: 6},
		Second: signal.Key{Src: client, Dst: vip, DstPort: 2020, Proto: 6},
		// must be one of the masks the distributor is configured with
		Mask:    signal.FieldSrc | signal.FieldDst | signal.FieldDstPort | signal.FieldProto,
		Timeout: 30 * time.Second,
	}}}
	b, err := m.Marshal()
	fmt.Println(len(b), err)
	// Output: 98 <nil>
}

// The frame a TM sends to the distributor when no packet of the flow is
// going out.
func ExampleFrame() {
	dist := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	tm := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	f, _ := signal.Frame(dist, tm, signal.Message{Ops: []signal.Op{signal.Forget{Key: signal.Key{
		Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 40000, DstPort: 80, Proto: 6,
	}}}})
	fmt.Println(hex.EncodeToString(f[:12]), hex.EncodeToString(f[12:14]), len(f))
	// Output: 020000000001020000000002 88b5 64
}

// A TM's egress path inserts the signal into the packet it forwards, so
// the signal reaches the distributor with the packet it concerns.
func ExampleShim() {
	pkt, _ := hex.DecodeString("020000000001020000000002" + "0800" + "45000014")
	key := signal.Key{Src: netip.MustParseAddr("203.0.113.5"), Dst: netip.MustParseAddr("192.0.2.77"), SrcPort: 80, DstPort: 51000, Proto: 6}
	s, _ := signal.Shim(pkt, signal.Message{Ops: []signal.Op{signal.Memorize{Key: key}}})
	m, orig, err := signal.Unshim(s)
	fmt.Println(len(pkt), len(s), len(m.Ops), hex.EncodeToString(orig) == hex.EncodeToString(pkt), err)
	// Output: 18 78 1 true <nil>
}

// Sending frames needs CAP_NET_RAW and an interface on the distributor's
// segment.
func ExampleNewFrameSender() {
	dist, _ := net.ParseMAC("02:00:00:00:00:01") // or the signal multicast MAC
	s, err := signal.NewFrameSender("eth1", dist)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	err = s.Send(signal.Message{Ops: []signal.Op{signal.Forget{Key: signal.Key{
		Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 40000, DstPort: 80, Proto: 6,
	}}}})
	if err != nil {
		fmt.Println(err)
	}
}

// A TM on another segment sends authenticated control datagrams.
func ExampleNewUDPSender() {
	key := []byte("32 random bytes, shared with it!") // from the distributor's config
	s, err := signal.NewUDPSender(netip.MustParseAddrPort("192.0.2.1:7946"), "tm-east-1", key)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	_ = s.Send(signal.Message{Ops: []signal.Op{signal.Age{Key: signal.Key{
		Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 40000, DstPort: 80, Proto: 6,
	}, Timeout: 5 * time.Second}}})
}

// The receiving side: verify, refuse replays, apply.
func ExampleOpenUDP() {
	keys := map[string][]byte{"tm-east-1": []byte("32 random bytes, shared with it!")}
	windows := map[string]*signal.ReplayWindow{"tm-east-1": {}}
	m := signal.Message{Ops: []signal.Op{signal.Forget{Key: signal.Key{
		Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 40000, DstPort: 80, Proto: 6,
	}}}}
	d, _ := signal.SealUDP("tm-east-1", keys["tm-east-1"], 1000, m)

	for i := 0; i < 2; i++ { // the second one is a replay
		id, seq, got, err := signal.OpenUDP(d, func(id string) ([]byte, bool) { k, ok := keys[id]; return k, ok })
		if err != nil {
			fmt.Println("refused:", signal.ReasonOf(err))
			continue
		}
		if !windows[id].Accept(seq) {
			fmt.Println("refused: replay")
			continue
		}
		fmt.Println("apply", len(got.Ops), "op(s) from", id)
	}
	// Output:
	// apply 1 op(s) from tm-east-1
	// refused: replay
}

func ExampleReplayWindow() {
	var w signal.ReplayWindow
	for _, seq := range []uint64{100, 102, 101, 101, 200, 130, 137, 137} {
		fmt.Print(w.Accept(seq), " ")
	}
	fmt.Println()
	// Output: true true true false true false true false
}
