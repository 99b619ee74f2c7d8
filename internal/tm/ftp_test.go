package tm

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
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
	tm := startTM(t, Config{Proxies: []Proxy{{Mode: ModeFTP, Listen: ln, Servers: []netip.AddrPort{srv}}},
		Signal: rec, Source4: netip.MustParseAddr("127.0.0.1"), FTPDataTimeout: 2 * time.Second})
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

	// EPSV and PORT above left 2 data connections pending; 2 more fill the
	// limit, the next is refused.
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
