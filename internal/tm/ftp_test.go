package tm

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/signal"
)

// recorder is a Signaler that keeps what it was asked to send.
type recorder struct {
	mu  sync.Mutex
	ops []signal.Op
}

func (r *recorder) Send(m signal.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, m.Ops...)
	return nil
}

func (r *recorder) all() []signal.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]signal.Op(nil), r.ops...)
}

// fakeFTP is an FTP server's control side on loopback: PASV and EPSV answer
// with a data port that serves "data\n"; PORT and EPRT are echoed back in a
// 200 reply so the test sees what the TM sent.
func fakeFTP(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	data, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); data.Close() })
	go func() {
		for {
			c, err := data.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "data\n")
			c.Close()
		}
	}()
	dp := data.Addr().(*net.TCPAddr).AddrPort()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "220 fake\r\n")
				br := bufio.NewReader(c)
				var port netip.AddrPort
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					cmd, arg := ftpCommand(line)
					switch cmd {
					case "PASV":
						fmt.Fprintf(c, "227 Entering Passive Mode (%s).\r\n", formatHostPort(dp))
					case "EPSV":
						fmt.Fprintf(c, "229 Entering Extended Passive Mode (|||%d|)\r\n", dp.Port())
					case "PORT", "EPRT":
						fmt.Fprintf(c, "200 %s %s\r\n", cmd, arg)
						port, _ = parseHostPort(arg)
					case "RETR":
						// Active mode, as servers do it: connect, then 150,
						// then the data and 226 at once.
						dc, err := net.Dial("tcp4", port.String())
						if err != nil {
							fmt.Fprintf(c, "425 %v\r\n", err)
							continue
						}
						fmt.Fprint(c, "150 go\r\n")
						fmt.Fprint(dc, "active\n")
						dc.Close()
						fmt.Fprint(c, "226 done\r\n")
					default:
						fmt.Fprintf(c, "502 %s\r\n", cmd)
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// TestFTPMode: the FTP mode rewrites passive replies to its own address and
// RELATEs them, refuses PORT for a third host and a pile of unused data
// connections, and rewrites PORT to the SNAT address after MEMORIZing the
// server's data connection.
func TestFTPMode(t *testing.T) {
	srv := fakeFTP(t)
	ln := freePort(t, "tcp")
	rec := &recorder{}
	// slow delays the TM's socket calls, to widen the window in which a
	// reply could overtake a data connection.
	var slow atomic.Bool
	do := func(fn func() error) error {
		if slow.Load() {
			time.Sleep(100 * time.Millisecond)
		}
		return fn()
	}
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeFTP, Listen: ln, Servers: []netip.AddrPort{srv}}},
		Signal: rec, Source4: netip.MustParseAddr("127.0.0.1"), FTPDataTimeout: 2 * time.Second, Do: do})
	c, err := net.Dial("tcp4", ln.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	cmd := func(s string) string {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if s != "" {
			fmt.Fprintf(c, "%s\r\n", s)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", s, err)
		}
		return strings.TrimSpace(line)
	}
	if got := cmd(""); got != "220 fake" {
		t.Fatalf("greeting %q", got)
	}

	// Passive: the reply names the TM's listen address and a new port, and
	// the data connection reaches the server's data port.
	reply := cmd("PASV")
	ap, err := parse227(reply)
	if err != nil || ap.Addr() != ln.Addr() {
		t.Fatalf("PASV reply %q (%v): want the TM's address %s", reply, err, ln.Addr())
	}
	dc, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(dc)
	dc.Close()
	if string(b) != "data\n" {
		t.Fatalf("data connection read %q", b)
	}
	ops := rec.all()
	rel, ok := ops[0].(signal.Relate)
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if !ok || rel.Parent.Src != client.Addr() || rel.Parent.SrcPort != client.Port() || rel.Parent.DstPort != ln.Port() ||
		rel.Second.DstPort != ap.Port() || rel.Second.SrcPort != 0 || rel.Mask != signal.FieldProto|signal.FieldSrc|signal.FieldDst|signal.FieldDstPort {
		t.Fatalf("signal %+v: want a RELATE of the control connection to the data port %d", ops[0], ap.Port())
	}
	waitFor(t, "the passive data connection counted", func() bool { return tm.Stats().Total.FTPPassive == 1 })

	// EPSV: the same, with the port only.
	if reply := cmd("EPSV"); !strings.HasPrefix(reply, "229 ") {
		t.Fatalf("EPSV reply %q", reply)
	}

	// PORT for another host: refused, never sent to the server.
	if reply := cmd("PORT 127,0,0,2,4,1"); !strings.HasPrefix(reply, "500 ") {
		t.Fatalf("PORT for a third host answered %q, want 500", reply)
	}
	// PORT for the client: rewritten to the SNAT address after a MEMORIZE.
	reply = cmd("PORT 127,0,0,1,4,1")
	var sent netip.AddrPort
	if arg, ok := strings.CutPrefix(reply, "200 PORT "); ok {
		sent, err = parseHostPort(arg)
	}
	if err != nil || sent.Addr() != netip.MustParseAddr("127.0.0.1") || sent.Port() == 1025 {
		t.Fatalf("server got %q: want a PORT to the SNAT address on the TM's own port", reply)
	}
	ops = rec.all()
	mem, ok := ops[len(ops)-1].(signal.Memorize)
	if !ok || mem.Key.SrcPort != 20 || mem.Key.DstPort != sent.Port() || mem.Key.Src != srv.Addr() {
		t.Fatalf("last signal %+v: want a MEMORIZE of server:20 → SNAT:%d", ops[len(ops)-1], sent.Port())
	}

	// An active transfer: the 150 reaches the client only once the TM's
	// data connection to the client is up (a proxy that let it through at
	// once would let the 226 overtake the data connection).
	cl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if reply := cmd("PORT " + formatHostPort(cl.Addr().(*net.TCPAddr).AddrPort())); !strings.HasPrefix(reply, "200 ") {
		t.Fatalf("PORT answered %q", reply)
	}
	slow.Store(true)
	if reply := cmd("RETR f"); reply != "150 go" {
		t.Fatalf("RETR answered %q", reply)
	}
	slow.Store(false)
	_ = cl.(*net.TCPListener).SetDeadline(time.Now().Add(50 * time.Millisecond))
	adc, err := cl.Accept()
	if err != nil {
		t.Fatalf("150 arrived before the data connection: %v", err)
	}
	b, _ = io.ReadAll(adc)
	adc.Close()
	if string(b) != "active\n" {
		t.Fatalf("active data connection read %q", b)
	}
	if reply := cmd(""); reply != "226 done" {
		t.Fatalf("after the transfer: %q", reply)
	}
	waitFor(t, "the active data connection counted", func() bool { return tm.Stats().Total.FTPActive == 1 })

	// EPSV and the first PORT above left 2 data connections pending; 2 more
	// fill the limit, the next is refused.
	cmd("PASV")
	cmd("PASV")
	if reply := cmd("PASV"); !strings.HasPrefix(reply, "425 ") {
		t.Fatalf("PASV over the pending limit answered %q, want 425", reply)
	}
	// They time out and are counted; then PASV works again.
	waitFor(t, "pending data connections to time out", func() bool { return tm.Stats().Total.FTPTimeout >= 4 })
	if reply := cmd("PASV"); !strings.HasPrefix(reply, "227 ") {
		t.Fatalf("PASV after the timeouts answered %q", reply)
	}
	if st := tm.Stats().Total; st.FTPRefused != 2 || st.Signals < 5 {
		t.Fatalf("counters %+v: want 2 refusals (PORT, pending) and the signals", st)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T, ln net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	a, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// FuzzFTPControl feeds arbitrary client and server control streams through
// the FTP mode's line handling: nothing panics, every line reaches the
// other side or is answered, and every signal the TM sends is a TCP key
// of the control connection's addresses.
func FuzzFTPControl(f *testing.F) {
	for _, s := range [][2]string{
		{"USER a\r\nPASV\r\nRETR f\r\n", "220 x\r\n227 Entering Passive Mode (127,0,0,1,4,1).\r\n150 ok\r\n"},
		{"EPSV\r\nPORT 127,0,0,1,4,1\r\nEPRT |1|127.0.0.1|1025|\r\n", "229 (|||1025|)\r\n200 ok\r\n"},
		{"PORT 10,0,0,1,4,1\r\n" + strings.Repeat("A", 3000) + "\r\n", "227 \r\n229 (|||0|)\r\n"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	rec := &recorder{}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	tmLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	tmAddr := tmLn.Addr().(*net.TCPAddr).AddrPort()
	tmLn.Close()
	tm, err := Start(Config{ID: "fz", Proxies: []Proxy{{Mode: ModeFTP, Listen: tmAddr,
		Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}},
		Signal: rec, Source4: netip.MustParseAddr("127.0.0.1"), FTPDataTimeout: 20 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	defer tm.Close()
	p := tm.proxies[0]
	f.Fuzz(func(t *testing.T, fromClient, fromServer []byte) {
		if len(fromClient) > 16<<10 || len(fromServer) > 16<<10 {
			return
		}
		cl, clPeer := tcpPair(t, ln)
		sv, svPeer := tcpPair(t, ln)
		defer cl.Close()
		defer sv.Close()
		var toServer, toClient int64
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); toServer, _ = io.Copy(io.Discard, svPeer) }()
		go func() { defer wg.Done(); toClient, _ = io.Copy(io.Discard, clPeer) }()
		// cl and sv are the TM's ends; the peers stand for the client and
		// the server and only read.
		fc := &ftpConn{p: p, client: cl, server: sv}
		fc.pump(strings.NewReader(string(fromClient)), fc.fromClient, &p.c.bytesIn)
		fc.pump(strings.NewReader(string(fromServer)), fc.fromServer, &p.c.bytesOut)
		cl.Close()
		sv.Close()
		wg.Wait()
		if len(fromClient) > 0 && toServer == 0 && toClient == 0 {
			t.Fatalf("%d client bytes: nothing reached the server and nothing was answered", len(fromClient))
		}
		for _, op := range rec.all() {
			switch o := op.(type) {
			case signal.Relate:
				if o.Parent.Proto != protoTCP || o.Second.Proto != protoTCP || !o.Parent.Src.Is4() {
					t.Fatalf("RELATE %+v", o)
				}
			case signal.Memorize:
				if o.Key.Proto != protoTCP || o.Key.DstPort == 0 {
					t.Fatalf("MEMORIZE %+v", o)
				}
			}
		}
	})
}
