package bgp

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// TestBFDSessions runs two BFD ends on loopback (127.0.0.1 and 127.0.0.2,
// port 3784 each): both come up; when one stops (AdminDown), the other
// goes down; when one goes silent (its socket closed without a word), the
// other detects it within its detection time.
func TestBFDSessions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a1, a2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	iv := 50 * time.Millisecond
	start := func(self, peer netip.Addr) *bfdEnd {
		b, err := startBFD(log, self, []netip.Addr{peer}, iv, 3)
		if err != nil {
			t.Fatalf("bfd on %s: %v", self, err)
		}
		return b
	}
	x := start(a1, a2)
	y := start(a2, a1)
	defer x.close()
	up := func(b *bfdEnd, n netip.Addr) bool { s, _ := b.state(n); return s == "up" }
	waitFor(t, "both sessions up", func() bool { return up(x, a2) && up(y, a1) })
	// Silent: y stops sending without AdminDown.
	y.stop()
	y.conn.Close()
	<-y.done
	waitFor(t, "x to detect y's silence", func() bool { s, _ := x.state(a2); return s == "down" })
	if _, downs := x.state(a2); downs != 1 {
		t.Fatalf("x counted %d downs", downs)
	}
	// y back; then a clean stop (AdminDown) takes x down too.
	y = start(a2, a1)
	waitFor(t, "both up again", func() bool { return up(x, a2) && up(y, a1) })
	y.close()
	waitFor(t, "x down after y's AdminDown", func() bool { s, _ := x.state(a2); return s == "down" })
}

// FuzzParseBFD: any bytes parse or are refused; what parses marshals back
// to a packet that parses the same.
func FuzzParseBFD(f *testing.F) {
	f.Add(bfdPacket{Version: 1, State: BFDUp, Multiplier: 3, MyDisc: 7, YourDisc: 9, DesiredTx: 100000, RequiredRx: 100000, Poll: true}.marshal())
	f.Add(bfdPacket{Version: 1, State: BFDDown, Multiplier: 3, MyDisc: 1}.marshal())
	f.Add([]byte{0x20, 0xc4, 3, 24})
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseBFD(b)
		if err != nil {
			return
		}
		q, err := parseBFD(p.marshal())
		if err != nil {
			t.Fatalf("marshal of %+v does not parse: %v", p, err)
		}
		q.Demand = p.Demand // not sent by this end
		if q != p {
			t.Fatalf("round trip %+v → %+v", p, q)
		}
	})
}
