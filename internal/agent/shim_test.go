package agent

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/switchyard/switchyard/signal"
)

// TestShimCounterFields: the Go counters follow enum sy_agent_counter.
func TestShimCounterFields(t *testing.T) {
	var c ShimCounters
	if n := len(c.fields()); n != int(shimSyAgentCounterSY_AC_MAX) {
		t.Fatalf("%d Go counters, %d in bpf/agent.c", n, shimSyAgentCounterSY_AC_MAX)
	}
}

// TestWireKeyOf: the pending table's key is the wire key, big-endian
// ports, as the program builds it from the packet.
func TestWireKeyOf(t *testing.T) {
	k, err := wireKeyOf(signal.Key{Src: netip.MustParseAddr("10.2.0.11"), Dst: netip.MustParseAddr("10.1.255.1"), SrcPort: 9000, DstPort: 20001, Proto: 6})
	if err != nil {
		t.Fatal(err)
	}
	sp := (*[2]byte)(unsafePointer(&k.Sport))
	if k.Family != 4 || k.Src[0] != 10 || k.Src[4] != 0 || sp[0] != 0x23 || sp[1] != 0x28 {
		t.Fatalf("wire key %+v", k)
	}
	if _, err := wireKeyOf(signal.Key{Src: netip.MustParseAddr("10.2.0.11"), Dst: netip.MustParseAddr("fd00::1")}); err == nil {
		t.Fatal("mixed families accepted")
	}
	// The message a Put stores is a shim message: a test of the encoder
	// the program relies on.
	b, err := signal.Shim(make([]byte, 14), signal.Message{Ops: []signal.Op{signal.Memorize{Key: signal.Key{Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.0.100"), SrcPort: 1, DstPort: 80, Proto: 6}}}})
	if err != nil {
		t.Fatal(err)
	}
	if msg := b[14 : len(b)-2]; len(msg) != 58 || msg[5] != 1 {
		t.Fatalf("shim message % x", msg)
	}
}

func unsafePointer(p *uint16) unsafe.Pointer { return unsafe.Pointer(p) }
