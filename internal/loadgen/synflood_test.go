package loadgen

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestSYNPacket: the forged segment's checksum verifies (summing it with
// the checksum in place gives 0xffff), and the fields are where TCP has them.
func TestSYNPacket(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.200.1.2:40000"), netip.MustParseAddrPort("10.0.0.100:8080")
	b := TCPPacket(src, dst, 0x01020304, 0x0a0b0c0d, TCPFlagFIN|TCPFlagACK)
	if len(b) != 40 || b[0] != 0x45 || b[9] != 6 {
		t.Fatalf("header % x", b[:20])
	}
	tcp := b[20:]
	if binary.BigEndian.Uint16(tcp) != 40000 || binary.BigEndian.Uint16(tcp[2:]) != 8080 ||
		binary.BigEndian.Uint32(tcp[4:]) != 0x01020304 || binary.BigEndian.Uint32(tcp[8:]) != 0x0a0b0c0d || tcp[13] != 0x11 {
		t.Fatalf("tcp % x", tcp)
	}
	// The checksum of a segment with its checksum in place is 0.
	if c := tcpChecksum(src.Addr().As4(), dst.Addr().As4(), tcp); c != 0 {
		t.Errorf("checksum does not verify: %#x", c)
	}
	tcp[4] ^= 1
	if c := tcpChecksum(src.Addr().As4(), dst.Addr().As4(), tcp); c == 0 {
		t.Error("a corrupted segment verifies")
	}
}

func TestRandomInPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := netip.MustParsePrefix("10.200.0.0/16")
	for range 1000 {
		if a := randomIn(r, p); !p.Contains(a) {
			t.Fatalf("%s not in %s", a, p)
		}
	}
}

func TestSYNFloodBounds(t *testing.T) {
	ctx := context.Background()
	for _, o := range []FloodOptions{
		{Dst: netip.MustParseAddrPort("10.0.0.1:80"), Sources: netip.MustParsePrefix("10.0.0.0/8")},
		{Dst: netip.MustParseAddrPort("10.0.0.1:80"), Sources: netip.MustParsePrefix("10.0.0.0/8"), Count: MaxFloodCount + 1},
		{Dst: netip.MustParseAddrPort("[fd00::1]:80"), Sources: netip.MustParsePrefix("10.0.0.0/8"), Count: 1},
	} {
		if _, err := SYNFlood(ctx, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
