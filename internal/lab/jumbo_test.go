package lab_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// tcpInfo reads TCP_INFO of a TCP connection.
func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var gerr error
	if err := sc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return nil, err
	}
	return info, gerr
}

// TestJumboFramesEndToEnd: with a 9000-byte MTU on every link, the
// distributor attaches natively (the program takes multi-buffer frames)
// and a TCP stream crosses it in segments of more than 8,000 bytes: the
// client's MSS, the segment size the TM received (TCP_INFO rcv_mss: from
// the segments themselves) and the average size of the frames the
// distributor forwarded to the TM say so.
func TestJumboFramesEndToEnd(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1, MTU: 9000, Qdisc: "pfifo"})
	const port = 7000
	d := startDist(t, e, lab.ConfigOptions{
		Extra: fmt.Sprintf("  - {name: bulk, vip: %s, port: %d, protocol: tcp, traffic_managers: [tm1]}\n", e.Topo.VIP4, port),
	})
	dist := e.Topo.Distributors[0]
	ext, err := dist.NS.Netlink().LinkByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	if x := ext.Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != xdpAttachedDrv || ext.Attrs().MTU != 9000 {
		t.Fatalf("d1/ext0: MTU %d, XDP %+v; want 9000 and a native (driver) attachment", ext.Attrs().MTU, x)
	}

	// The TM's server: reads everything, then reports what TCP saw.
	tm := e.Topo.TMs[0]
	var ln net.Listener
	if err := tm.NS.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(e.Topo.VIP4, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type served struct {
		n    int64
		info *unix.TCPInfo
		err  error
	}
	done := make(chan served, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- served{err: err}
			return
		}
		defer c.Close()
		var s served
		s.n, s.err = io.Copy(io.Discard, c)
		if s.err == nil {
			s.info, s.err = tcpInfo(c)
		}
		done <- s
	}()

	var lo loadgen.Options
	e.ClientDialer(0, &lo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c net.Conn
	for {
		// The first SYNs may meet a TM MAC not resolved yet: retry.
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		c, err = lo.Dial(dctx, "tcp4", netip.AddrPortFrom(e.Topo.VIP4, port).String())
		dcancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("connect to the VIP: %v", err)
	}
	const total = 2000 * 8000 // 16 MB in 8,000-byte writes
	chunk := make([]byte, 8000)
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
	}
	cinfo, err := tcpInfo(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	var s served
	select {
	case s = <-done:
	case <-ctx.Done():
		t.Fatal("the TM did not finish reading")
	}
	if s.err != nil && !errors.Is(s.err, net.ErrClosed) {
		t.Fatalf("TM: %v", s.err)
	}
	if s.n != total {
		t.Fatalf("the TM read %d bytes, want %d", s.n, total)
	}
	t.Logf("client snd_mss %d, pmtu %d; TM rcv_mss %d", cinfo.Snd_mss, cinfo.Pmtu, s.info.Rcv_mss)
	if cinfo.Snd_mss < 8000 || s.info.Rcv_mss < 8000 {
		t.Errorf("segments under 8,000 bytes: client snd_mss %d, TM rcv_mss %d", cinfo.Snd_mss, s.info.Rcv_mss)
	}

	st, err := d.API.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pk, by uint64
	for _, tm := range st.TrafficManagers {
		pk, by = pk+tm.Packets, by+tm.Bytes
	}
	if pk == 0 {
		t.Fatal("the distributor forwarded nothing to the TM")
	}
	t.Logf("distributor → TM: %d packets, %d bytes, %d bytes per packet", pk, by, by/pk)
	if by < total || by/pk < 8000 {
		t.Errorf("the distributor forwarded %d bytes in %d packets (%d per packet): want the %d bytes in frames over 8,000 bytes", by, pk, by/pk, total)
	}
}

// xdpAttachedDrv is the kernel's XDP_ATTACHED_DRV (if_link.h): a
// native attachment.
const xdpAttachedDrv = 1
