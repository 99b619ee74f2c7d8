package tm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/signal"
)

const protoTCP = 6

// ftpConn is one proxied FTP control connection.
//
// Passive mode (227/229 from the server): the TM listens on the VIP on a new
// port, RELATEs "this client to that VIP port" to itself (the parent is the
// control flow), rewrites the reply to the VIP and port, and connects the
// data connection it accepts to the server's data address from the SNAT
// address (the distributor learns that one from the SYN).
//
// Active mode (PORT/EPRT from the client, for the client's own address
// only): the TM listens on the SNAT address on a new port, MEMORIZEs the
// server's data connection (server:FTPActiveSourcePort → SNAT:port) to
// itself, rewrites the command to that address, and when the server
// connects, connects to the client from the VIP after MEMORIZing the
// client's replies (client → VIP:port) to itself.
type ftpConn struct {
	p              *proxy
	client, server net.Conn
	clientMu       sync.Mutex   // both directions write to the client
	pending        atomic.Int32 // data connections prepared and not yet accepted

	// activeMu guards activeReady: the channel of the last active-mode data
	// connection prepared, closed once the TM's connection to the client is
	// up (or has failed). The server connects to the TM before it replies
	// 150, but the TM connects to the client only after that: the 150 (and
	// so the 226 after it) must wait for that connection, or the client sees
	// the transfer end before its data connection arrives. A server uses the
	// last PORT/EPRT (or PASV) it was given, so a new one replaces it.
	activeMu    sync.Mutex
	activeReady chan struct{}
}

// maxFTPPending bounds the data connections one control connection may have
// prepared and not yet used: each holds a listening socket and a signal
// entry until it is used or times out, so a client sending PASV in a loop
// must not pile them up.
const maxFTPPending = 4

var errFTPPending = fmt.Errorf("more than %d data connections pending on one control connection", maxFTPPending)

func (p *proxy) serveFTP(c net.Conn) {
	s, b := p.connectPicked()
	if s == nil {
		_, _ = io.WriteString(c, "421 Service not available.\r\n")
		return
	}
	defer b.done()
	if !p.tm.track(s) {
		return
	}
	defer p.tm.untrack(s)
	f := &ftpConn{p: p, client: c, server: s}
	idle := newIdle(p.tm.cfg.IdleTimeout, c, s)
	defer idle.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.pump(idle.reader(s), f.fromServer, &p.c.bytesOut)
		closeWrite(c)
	}()
	f.pump(idle.reader(c), f.fromClient, &p.c.bytesIn)
	closeWrite(s)
	<-done
}

// pump reads lines from r and hands each complete one (with its line end)
// to handle, which writes it on. A line longer than maxFTPLine is passed
// through unchanged.
func (f *ftpConn) pump(r io.Reader, handle func(line string) error, count interface{ Add(uint64) uint64 }) {
	br := bufio.NewReaderSize(r, maxFTPLine)
	long := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			count.Add(uint64(len(line)))
			var werr error
			if long || errors.Is(err, bufio.ErrBufferFull) || err != nil {
				// Part of an over-long line, or the last bytes before the
				// end: not a command to look at.
				werr = handle("\x00" + string(line))
			} else {
				werr = handle(string(line))
			}
			if werr != nil {
				return
			}
		}
		long = errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !long {
			return
		}
	}
}

func (f *ftpConn) toClient(s string) error {
	f.clientMu.Lock()
	defer f.clientMu.Unlock()
	_, err := io.WriteString(f.client, s)
	return err
}

func (f *ftpConn) toServer(s string) error {
	_, err := io.WriteString(f.server, s)
	return err
}

// raw reports whether a line was marked as pass-through by pump.
func raw(line string) (string, bool) {
	if strings.HasPrefix(line, "\x00") {
		return line[1:], true
	}
	return line, false
}

func (f *ftpConn) fromClient(line string) error {
	line, isRaw := raw(line)
	if isRaw {
		return f.toServer(line)
	}
	cmd, arg := ftpCommand(line)
	if cmd != "PORT" && cmd != "EPRT" {
		return f.toServer(line)
	}
	var ca netip.AddrPort
	var err error
	if cmd == "PORT" {
		ca, err = parseHostPort(arg)
	} else {
		ca, err = parseEPRT(arg)
	}
	clientAddr := addrPort(f.client.RemoteAddr())
	if err == nil && ca.Addr().Unmap() != clientAddr.Addr().Unmap() {
		// FTP bounce: a data connection to a third host is never proxied.
		err = fmt.Errorf("%s for %s from client %s: only the client's own address is allowed", cmd, ca.Addr(), clientAddr.Addr())
	}
	if err == nil {
		var rewritten string
		if rewritten, err = f.active(cmd, ca); err == nil {
			return f.toServer(rewritten)
		}
	}
	f.p.c.ftpRefused.Add(1)
	f.p.tm.log.Warn("ftp: active mode refused", "client", clientAddr, "error", err)
	return f.toClient("500 Illegal " + cmd + " command.\r\n")
}

func (f *ftpConn) fromServer(line string) error {
	line, isRaw := raw(line)
	if !isRaw && len(line) >= 4 && line[3] == ' ' {
		switch {
		case line[:3] == "150" || line[:3] == "125":
			f.waitActive()
		case line[0] == '4' || line[0] == '5':
			// The transfer failed (the server could not connect, no such
			// file...): its data connection will not come.
			f.popActive()
		}
	}
	if isRaw || len(line) < 4 || (line[:4] != "227 " && line[:4] != "229 ") {
		return f.toClient(line)
	}
	srvCtl := addrPort(f.server.RemoteAddr())
	var data netip.AddrPort
	if line[:4] == "227 " {
		a, err := parse227(line)
		if err != nil {
			return f.refuseReply(line, err)
		}
		data = a
	} else {
		port, err := parse229(line)
		if err != nil {
			return f.refuseReply(line, err)
		}
		data = netip.AddrPortFrom(srvCtl.Addr(), port)
	}
	if data.Addr().Unmap() != srvCtl.Addr().Unmap() {
		// A server that names another host for its data (pasv_address behind
		// NAT): the TM connects where its own control connection goes.
		data = netip.AddrPortFrom(srvCtl.Addr(), data.Port())
	}
	vip := addrPort(f.client.LocalAddr())
	if line[:4] == "227 " && !vip.Addr().Unmap().Is4() {
		return f.refuseReply(line, errors.New("227 on an IPv6 control connection"))
	}
	port, err := f.passive(vip, data)
	if err != nil {
		return f.refuseReply(line, err)
	}
	if line[:4] == "227 " {
		return f.toClient("227 Entering Passive Mode (" + formatHostPort(netip.AddrPortFrom(vip.Addr(), port)) + ").\r\n")
	}
	return f.toClient(fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|).\r\n", port))
}

// waitActive waits until the prepared active-mode data connection reaches
// the client (or fails, or FTPDataTimeout plus DialTimeout pass), so
// that the transfer's replies never overtake it.
func (f *ftpConn) waitActive() {
	ch := f.popActive()
	if ch == nil {
		return
	}
	t := time.NewTimer(f.p.tm.cfg.FTPDataTimeout + f.p.tm.cfg.DialTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-f.p.tm.ctx.Done():
	}
}

// popActive forgets the prepared active-mode data connection and returns
// its channel (nil if none).
func (f *ftpConn) popActive() chan struct{} {
	f.activeMu.Lock()
	defer f.activeMu.Unlock()
	ch := f.activeReady
	f.activeReady = nil
	return ch
}

// refuseReply answers the client 425 instead of a passive reply the TM cannot
// serve, so that the client sees a clear failure rather than a hang.
func (f *ftpConn) refuseReply(line string, err error) error {
	f.p.c.ftpRefused.Add(1)
	f.p.tm.log.Warn("ftp: passive reply refused", "reply", trunc(strings.TrimSpace(line)), "error", err)
	return f.toClient("425 Can't open data connection.\r\n")
}

// passive prepares a passive data connection and returns the VIP port the
// client is to connect to.
func (f *ftpConn) passive(vip, srvData netip.AddrPort) (uint16, error) {
	t := f.p.tm
	if f.pending.Load() >= maxFTPPending {
		return 0, errFTPPending
	}
	var ln net.Listener
	err := t.cfg.Do(func() (err error) {
		ln, err = net.Listen(network("tcp", vip.Addr()), netip.AddrPortFrom(vip.Addr(), 0).String())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("listen on %s: %w", vip.Addr(), err)
	}
	port := addrPort(ln.Addr()).Port()
	f.popActive() // the server now uses this passive port, not a PORT given before
	client := addrPort(f.client.RemoteAddr())
	m := signal.Message{Ops: []signal.Op{signal.Relate{
		Parent:  signal.Key{Src: client.Addr().Unmap(), Dst: vip.Addr().Unmap(), SrcPort: client.Port(), DstPort: vip.Port(), Proto: protoTCP},
		Second:  signal.Key{Src: client.Addr().Unmap(), Dst: vip.Addr().Unmap(), DstPort: port, Proto: protoTCP},
		Mask:    signal.FieldProto | signal.FieldSrc | signal.FieldDst | signal.FieldDstPort,
		Timeout: t.cfg.FTPDataTimeout + 30*time.Second,
	}}}
	if err := t.send(&f.p.c, m); err != nil {
		ln.Close()
		return 0, err
	}
	f.acceptData(ln, client.Addr(), true, &f.p.c.ftpPassive, nil, func(dc net.Conn) (net.Conn, error) {
		return t.dialServer(t.ctx, srvData)
	})
	return port, nil
}

// active prepares an active data connection for the client's data address
// ca and returns the command to send the server instead.
func (f *ftpConn) active(cmd string, ca netip.AddrPort) (string, error) {
	t := f.p.tm
	if f.pending.Load() >= maxFTPPending {
		return "", errFTPPending
	}
	snat := addrPort(f.server.LocalAddr()).Addr()
	srv := addrPort(f.server.RemoteAddr()).Addr()
	var ln net.Listener
	err := t.cfg.Do(func() (err error) {
		ln, err = net.Listen(network("tcp", snat), netip.AddrPortFrom(snat, 0).String())
		return err
	})
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", snat, err)
	}
	port := addrPort(ln.Addr()).Port()
	m := signal.Message{Ops: []signal.Op{signal.Memorize{
		Key:     signal.Key{Src: srv.Unmap(), Dst: snat.Unmap(), SrcPort: t.cfg.FTPActiveSourcePort, DstPort: port, Proto: protoTCP},
		Timeout: t.cfg.FTPDataTimeout + 30*time.Second,
	}}}
	if err := t.send(&f.p.c, m); err != nil {
		ln.Close()
		return "", err
	}
	vip := addrPort(f.client.LocalAddr()).Addr()
	ready := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(ready) }) }
	f.activeMu.Lock()
	f.activeReady = ready
	f.activeMu.Unlock()
	f.acceptData(ln, srv, false, &f.p.c.ftpActive, done, func(net.Conn) (net.Conn, error) {
		defer done()
		return f.dialClient(vip, ca)
	})
	local := netip.AddrPortFrom(snat, port)
	if cmd == "PORT" && snat.Unmap().Is4() {
		return "PORT " + formatHostPort(local) + "\r\n", nil
	}
	return "EPRT " + formatEPRT(local) + "\r\n", nil
}

// dialClient connects from the VIP to the client's data address. The local
// port is bound before the SYN leaves so that the client's replies (client →
// VIP:port) can be memorized to this TM first: the distributor would
// otherwise not know where they belong.
func (f *ftpConn) dialClient(vip netip.Addr, ca netip.AddrPort) (net.Conn, error) {
	t := f.p.tm
	d := net.Dialer{Timeout: t.cfg.DialTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var port int
		var err error
		cerr := rc.Control(func(fd uintptr) {
			var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: vip.Unmap().As4()}
			if !vip.Unmap().Is4() {
				sa = &unix.SockaddrInet6{Addr: vip.As16()}
			}
			if err = unix.Bind(int(fd), sa); err != nil {
				return
			}
			var got unix.Sockaddr
			if got, err = unix.Getsockname(int(fd)); err != nil {
				return
			}
			switch g := got.(type) {
			case *unix.SockaddrInet4:
				port = g.Port
			case *unix.SockaddrInet6:
				port = g.Port
			}
		})
		if err = errors.Join(cerr, err); err != nil {
			return fmt.Errorf("bind %s: %w", vip, err)
		}
		return t.send(&f.p.c, signal.Message{Ops: []signal.Op{signal.Memorize{
			Key:     signal.Key{Src: ca.Addr().Unmap(), Dst: vip.Unmap(), SrcPort: ca.Port(), DstPort: uint16(port), Proto: protoTCP},
			Timeout: t.cfg.FTPDataTimeout + 30*time.Second,
		}}})
	}}
	var c net.Conn
	err := t.cfg.Do(func() (err error) {
		c, err = d.DialContext(t.ctx, network("tcp", ca.Addr()), ca.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to client %s: %w", ca, err)
	}
	return c, nil
}

// acceptData waits (at most FTPDataTimeout) for one data connection from
// peer (the client in passive mode, the server in active mode) on ln,
// connects its other side with connect, and splices the two; end, if set,
// runs when it is over.
// Connections from other addresses are refused and counted.
func (f *ftpConn) acceptData(ln net.Listener, peer netip.Addr, peerIsClient bool, count interface{ Add(uint64) uint64 },
	end func(), connect func(net.Conn) (net.Conn, error)) {
	p, t := f.p, f.p.tm
	t.connWG.Add(1)
	f.pending.Add(1)
	go func() {
		defer t.connWG.Done()
		if end != nil {
			defer end()
		}
		defer ln.Close()
		accepted := false
		defer func() {
			if !accepted {
				f.pending.Add(-1)
			}
		}()
		ctx, cancel := context.WithTimeout(t.ctx, t.cfg.FTPDataTimeout)
		defer cancel()
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
		var dc net.Conn
		for dc == nil {
			c, err := ln.Accept()
			if err != nil {
				if t.ctx.Err() == nil {
					p.c.ftpTimeout.Add(1)
					t.log.Warn("ftp: no data connection", "from", peer, "timeout", t.cfg.FTPDataTimeout)
				}
				return
			}
			if addrPort(c.RemoteAddr()).Addr().Unmap() != peer.Unmap() {
				p.c.ftpRefused.Add(1)
				t.log.Warn("ftp: data connection from the wrong address", "from", c.RemoteAddr(), "want", peer)
				c.Close()
				continue
			}
			dc = c
		}
		ln.Close()
		accepted = true
		f.pending.Add(-1)
		if !t.track(dc) {
			return
		}
		defer t.untrack(dc)
		other, err := connect(dc)
		if err != nil {
			p.c.dialFailed.Add(1)
			t.log.Warn("ftp: data connection", "error", err)
			return
		}
		if !t.track(other) {
			return
		}
		defer t.untrack(other)
		count.Add(1)
		if peerIsClient {
			p.splice(dc, other)
		} else {
			p.splice(other, dc)
		}
	}()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
