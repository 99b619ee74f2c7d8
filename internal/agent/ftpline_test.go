package agent

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/signal"
)

func TestParseFTP(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind int
		addr string
		port uint16
	}{
		{"227 Entering Passive Mode (10,2,0,11,156,64).\r\n", ftpPassive, "", 40000},
		{"229 Entering Extended Passive Mode (|||40001|)\r\n", ftpPassive, "", 40001},
		{"150 Here\r\n227 Entering Passive Mode (1,2,3,4,0,21)\r\n", ftpPassive, "", 21},
		{"PORT 10,3,0,11,46,224\r\n", ftpActive, "10.3.0.11", 12000},
		{"port 10,3,0,11,46,224\r\n", ftpActive, "10.3.0.11", 12000},
		{"EPRT |1|10.3.0.11|12001|\r\n", ftpActive, "10.3.0.11", 12001},
		{"EPRT |2|fd00::1|12002|\r\n", ftpActive, "fd00::1", 12002},
		{"EPRT !1!10.3.0.11!12003!\r\n", ftpActive, "10.3.0.11", 12003},
		// What the helper would not turn into an expectation.
		{"200 PORT command successful\r\n", ftpNone, "", 0},
		{"227 Entering Passive Mode (10,2,0,11,0,0)\r\n", ftpNone, "", 0},
		{"227 Entering Passive Mode (10,2,0,11,256,1)\r\n", ftpNone, "", 0},
		{"227 Entering Passive Mode 10,2,0,11,1,1\r\n", ftpNone, "", 0},
		{"229 Entering Extended Passive Mode (|||70000|)\r\n", ftpNone, "", 0},
		{"229 (||1|)\r\n", ftpNone, "", 0},
		{"EPRT |1|fd00::1|12002|\r\n", ftpNone, "", 0},
		{"EPRT |3|10.0.0.1|12002|\r\n", ftpNone, "", 0},
		{"PORT 1,2,3\r\n", ftpNone, "", 0},
		{"", ftpNone, "", 0},
	} {
		kind, addr, port := parseFTP([]byte(c.in))
		var want netip.Addr
		if c.addr != "" {
			want = netip.MustParseAddr(c.addr)
		}
		if kind != c.kind || addr != want || port != c.port {
			t.Errorf("parseFTP(%q) = %d %v %d, want %d %v %d", c.in, kind, addr, port, c.kind, want, c.port)
		}
	}
}

// ipv4TCP builds an IPv4 TCP packet carrying payload.
func ipv4TCP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 6
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	p[32] = 5 << 4
	copy(p[40:], payload)
	return p
}

func TestTCPPayload(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.3.0.11")
	p := ipv4TCP(src, dst, 21, 40000, []byte("227 x\r\n"))
	tu, pl, ok := tcpPayload(p)
	if !ok || tu != (Tuple{Src: src, Dst: dst, SrcPort: 21, DstPort: 40000, Proto: 6}) || string(pl) != "227 x\r\n" {
		t.Fatalf("tcpPayload = %+v %q %v", tu, pl, ok)
	}
	for n := range len(p) {
		if _, _, ok := tcpPayload(p[:n]); ok && n < 40 {
			t.Errorf("a packet cut to %d bytes parsed", n)
		}
	}
	frag := append([]byte(nil), p...)
	frag[6] = 0x20 // more fragments
	if _, _, ok := tcpPayload(frag); ok {
		t.Error("a fragment parsed")
	}
}

// FuzzFTPHoldParse feeds the hold's parsers arbitrary packets: they must
// not panic, and what they return must be in range.
func FuzzFTPHoldParse(f *testing.F) {
	src, dst := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.3.0.11")
	for _, s := range []string{"227 Entering Passive Mode (10,2,0,11,156,64)\r\n", "229 (|||1|)\r\n", "PORT 1,2,3,4,5,6\r\n", "EPRT |2|::1|7|\r\n"} {
		f.Add(ipv4TCP(src, dst, 21, 40000, []byte(s)))
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, pl, ok := tcpPayload(b); ok && len(pl) > len(b) {
			t.Fatalf("payload of %d bytes from a packet of %d", len(pl), len(b))
		}
		kind, addr, port := parseFTP(b)
		switch kind {
		case ftpNone:
			if port != 0 || addr.IsValid() {
				t.Fatalf("nothing found, yet port %d addr %v", port, addr)
			}
		case ftpPassive, ftpActive:
			if port == 0 || (kind == ftpActive) != addr.IsValid() {
				t.Fatalf("kind %d port %d addr %v", kind, port, addr)
			}
		default:
			t.Fatalf("kind %d", kind)
		}
	})
}

// slowSender takes delay to send each message.
type slowSender struct {
	delay time.Duration
	sent  atomic.Int32
}

func (s *slowSender) Send(signal.Message) error {
	time.Sleep(s.delay)
	s.sent.Add(1)
	return nil
}

// TestFTPHoldRelease: a held 227 is let go once its RELATE is sent, or at
// FTPHoldDeadline if sending takes longer; a packet without such a line
// passes unheld. (The hold's passive path needs no conntrack.)
func TestFTPHoldRelease(t *testing.T) {
	vip, client := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.3.0.11")
	reply := ipv4TCP(vip, client, 21, 40000, []byte("227 Entering Passive Mode (10,2,0,11,156,64).\r\n"))
	for _, c := range []struct {
		delay             time.Duration
		related, deadline uint64
	}{{0, 1, 0}, {10 * FTPHoldDeadline, 0, 1}} {
		s := &slowSender{delay: c.delay}
		a, err := New(Config{VIPs: []netip.Prefix{netip.PrefixFrom(vip, 32)}}, s)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a.holdOne(context.Background(), nil, reply)
		took := time.Since(start)
		a.holdOne(context.Background(), nil, ipv4TCP(vip, client, 21, 40000, []byte("200 ok\r\n")))
		st := a.Stats().FTPHold
		if st.Held != 1 || st.Related != c.related || st.Deadline != c.deadline || st.Passed != 1 {
			t.Errorf("send delay %v: %+v, want 1 held, %d by relate, %d by deadline, 1 passed", c.delay, st, c.related, c.deadline)
		}
		if c.deadline == 1 && took >= c.delay {
			t.Errorf("send delay %v: held %v, not released at the deadline", c.delay, took)
		}
		if c.related == 1 && s.sent.Load() != 1 {
			t.Errorf("released by relate, yet %d messages sent", s.sent.Load())
		}
	}
}
