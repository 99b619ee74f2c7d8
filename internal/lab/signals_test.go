package lab_test

import (
	"bufio"
	"bytes"
	"context"
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/selector"
	"github.com/switchyard/switchyard/internal/tm/echo"
	"github.com/switchyard/switchyard/signal"
)

func distMAC(e *lab.Env) net.HardwareAddr { return e.Topo.Distributors[0].Links["int0"].MAC }

// sendFrame sends a signal frame from TM host h to dst.
func sendFrame(t *testing.T, h *netlab.Host, dst net.HardwareAddr, ops ...signal.Op) {
	t.Helper()
	err := h.NS.Do(func() error {
		s, err := signal.NewFrameSender("eth0", dst)
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Send(signal.Message{Ops: ops})
	})
	if err != nil {
		t.Fatalf("send signal from %s: %v", h.Name, err)
	}
}

// sendRaw sends an Ethernet frame as is out of h's eth0.
func sendRaw(t *testing.T, h *netlab.Host, frame []byte) {
	t.Helper()
	err := h.NS.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6})
	})
	if err != nil {
		t.Fatalf("send raw frame from %s: %v", h.Name, err)
	}
}

// getFrom makes one HTTP request to target from a client namespace, from a
// given local port (0: any), and returns the TM id that answered.
func getFrom(h *netlab.Host, localPort int, target netip.AddrPort) (string, error) {
	var id string
	err := h.NS.Do(func() error {
		d := net.Dialer{
			Timeout:   3 * time.Second,
			LocalAddr: &net.TCPAddr{Port: localPort},
			Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				if err != nil {
					return err
				}
				return serr
			},
		}
		c, err := d.Dial("tcp", target.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		// Connection: close makes the TM close first, so the client's port
		// is free again at once (no TIME_WAIT here).
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		body, err := io.ReadAll(bufio.NewReader(c))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(body), "\r\n") {
			name, v, ok := strings.Cut(line, ": ")
			if ok && strings.EqualFold(name, echo.Header) {
				id = v
			}
		}
		if id == "" {
			return fmt.Errorf("no TM id in %q", body)
		}
		return nil
	})
	return id, err
}

func counter(t *testing.T, d *lab.Distributor, name string) uint64 {
	t.Helper()
	for _, c := range stats(t, d).Counters {
		if c.Name == name {
			return c.Packets
		}
	}
	t.Fatalf("no counter %q", name)
	return 0
}

// flowOf returns the distributor's entry for src → dst, if any.
func flowOf(t *testing.T, d *lab.Distributor, src, dst netip.AddrPort) (api.Flow, bool) {
	t.Helper()
	var found api.Flow
	ok := false
	err := d.API.Flows(context.Background(), api.FlowFilter{Addr: src.Addr()}, func(f api.Flow) error {
		if f.Src == src.String() && f.Dst == dst.String() {
			found, ok = f, true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found, ok
}

// policyTM predicts which TM the Maglev policy picks for a TCP key, for a
// pool of equally weighted TMs named tm1..tmN in config order.
func policyTM(t *testing.T, n int, src, dst netip.AddrPort) string {
	t.Helper()
	var backends []selector.Backend
	for i := range n {
		backends = append(backends, selector.Backend{Index: uint32(i), Name: fmt.Sprintf("tm%d", i+1), Weight: 1})
	}
	table, err := selector.Maglev(backends, datapath.DefaultRingSize)
	if err != nil {
		t.Fatal(err)
	}
	k := flow.MakeKey(src.Addr(), dst.Addr(), src.Port(), dst.Port(), flow.ProtoTCP, 0)
	return fmt.Sprintf("tm%d", table[flow.Hash(k, 0)%datapath.DefaultRingSize]+1)
}

// TestMemorizeAndForget: a TM memorizes a 5-tuple before its first packet
// arrives and gets that flow although the policy picks another TM; after
// FORGET the next flow on the key is selected afresh.
func TestMemorizeAndForget(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4})
	d := startDist(t, e, lab.ConfigOptions{})
	client := e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 33333)
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	policy := policyTM(t, 4, src, vip)
	var owner *netlab.Host
	for _, h := range e.Topo.TMs {
		if h.Name != policy {
			owner = h
			break
		}
	}
	t.Logf("policy picks %s; %s memorizes the flow", policy, owner.Name)

	key := signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: vip.Port(), Proto: flow.ProtoTCP}
	sendFrame(t, owner, distMAC(e), signal.Memorize{Key: key})
	waitFor(t, 5*time.Second, "the memorized entry", func() bool {
		f, ok := flowOf(t, d, src, vip)
		return ok && f.TM == owner.Name && f.Origin[0] == "memorized"
	})
	got, err := getFrom(client, int(src.Port()), vip)
	if err != nil {
		t.Fatal(err)
	}
	if got != owner.Name {
		t.Fatalf("memorized flow answered by %s, want %s", got, owner.Name)
	}

	sendFrame(t, owner, distMAC(e), signal.Forget{Key: key})
	waitFor(t, 5*time.Second, "the entry to be forgotten", func() bool {
		_, ok := flowOf(t, d, src, vip)
		return !ok
	})
	got, err = getFrom(client, int(src.Port()), vip)
	if err != nil {
		t.Fatal(err)
	}
	if got != policy {
		t.Fatalf("after FORGET answered by %s, want the policy's %s", got, policy)
	}
	if n := counter(t, d, "sig_memorize"); n != 1 {
		t.Errorf("sig_memorize = %d, want 1", n)
	}
}

// server runs a TCP and UDP echo of the peer's address on a server host and
// counts peers.
type server struct {
	mu    sync.Mutex
	peers map[string]int
}

func startServer(t *testing.T, h *netlab.Host, port int) *server {
	t.Helper()
	s := &server{peers: map[string]int{}}
	var l net.Listener
	var pc net.PacketConn
	err := h.NS.Do(func() (err error) {
		if l, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); pc.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peers[c.RemoteAddr().String()]++
			s.mu.Unlock()
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "peer=%s\n", c.RemoteAddr())
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(fmt.Sprintf("peer=%s ", a)), buf[:n]...), a)
		}
	}()
	return s
}

// TestLearningSharedSNAT: every TM opens 200 connections from one shared
// SNAT address to a server behind the distributor; every reply must reach
// the TM that opened the connection.
func TestLearningSharedSNAT(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4, Servers: 1})
	d := startDist(t, e, lab.ConfigOptions{SNAT: true})
	srv := e.Topo.Servers[0]
	s := startServer(t, srv, 9000)
	target := netip.AddrPortFrom(srv.Links["eth0"].Addr4.Addr(), 9000)

	const perTM = 200
	var wg sync.WaitGroup
	errs := make(chan error, 4*perTM)
	okCount := make([]int, len(e.Topo.TMs))
	var mu sync.Mutex
	for i, h := range e.Topo.TMs {
		// TMs sharing an SNAT address must not pick the same source port
		// towards the same server: give each its own range, as an operator
		// would.
		lo := 20000 + i*2000
		if err := h.NS.Sysctl("net.ipv4.ip_local_port_range", fmt.Sprintf("%d %d", lo, lo+1999)); err != nil {
			t.Fatal(err)
		}
		for w := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range perTM / 10 {
					err := h.NS.Do(func() error {
						dl := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: e.Topo.SNAT4.AsSlice()}}
						c, err := dl.Dial("tcp", target.String())
						if err != nil {
							return err
						}
						defer c.Close()
						_ = c.SetDeadline(time.Now().Add(3 * time.Second))
						line, err := bufio.NewReader(c).ReadString('\n')
						if err != nil {
							return err
						}
						if want := "peer=" + c.LocalAddr().String() + "\n"; line != want {
							return fmt.Errorf("got %q, want %q", line, want)
						}
						return nil
					})
					if err != nil {
						errs <- fmt.Errorf("%s worker %d conn %d: %w", h.Name, w, j, err)
						continue
					}
					mu.Lock()
					okCount[i]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 5 {
			t.Error(err)
		}
		n++
	}
	for i, c := range okCount {
		if c != perTM {
			t.Errorf("%s: %d of %d connections answered", e.Topo.TMs[i].Name, c, perTM)
		}
	}
	s.mu.Lock()
	peers := len(s.peers)
	s.mu.Unlock()
	if peers != 4*perTM {
		t.Errorf("server saw %d connections, want %d", peers, 4*perTM)
	}
	if l := counter(t, d, "learned"); l < 4*perTM {
		t.Errorf("learned = %d, want at least %d", l, 4*perTM)
	}
	t.Logf("%d connections, %d misrouted or failed; learned %d", 4*perTM, n, counter(t, d, "learned"))

	// UDP too: the first datagram a TM sends teaches the distributor.
	for _, h := range e.Topo.TMs {
		err := h.NS.Do(func() error {
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: e.Topo.SNAT4.AsSlice()}, net.UDPAddrFromAddrPort(target))
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte(h.Name)); err != nil {
				return err
			}
			buf := make([]byte, 512)
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			if want := fmt.Sprintf("peer=%s %s", c.LocalAddr(), h.Name); string(buf[:n]) != want {
				return fmt.Errorf("got %q, want %q", buf[:n], want)
			}
			return nil
		})
		if err != nil {
			t.Errorf("UDP from %s: %v", h.Name, err)
		}
	}
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(be.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udpFrame builds an Ethernet/IPv4/UDP frame with a valid IP checksum.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.AddrPort, payload []byte) []byte {
	b := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0] = 0x45
	be.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	be.BigEndian.PutUint16(ip[4:], 4321)
	ip[8] = 64
	ip[9] = 17
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	be.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := make([]byte, 8)
	be.BigEndian.PutUint16(udp[0:], src.Port())
	be.BigEndian.PutUint16(udp[2:], dst.Port())
	be.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(append(append(b, ip...), udp...), payload...)
}

// capture receives the IPv4 packets to UDP port on h's eth0.
func capture(t *testing.T, h *netlab.Host, port uint16) (next func() []byte) {
	t.Helper()
	var fd int
	err := h.NS.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.Timeval{Sec: 3}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return func() []byte {
		buf := make([]byte, 2048)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("capture on %s: %v", h.Name, err)
			}
			p := buf[:n]
			if n >= 28 && p[9] == 17 && be.BigEndian.Uint16(p[22:]) == port {
				return append([]byte(nil), p...)
			}
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestShimIsTransparent: a TM sends a packet carrying a MEMORIZE for another
// flow in an in-band shim; the packet reaches its destination exactly as
// the same packet without the shim does, and the memorized flow takes
// effect.
func TestShimIsTransparent(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2, Servers: 1})
	d := startDist(t, e, lab.ConfigOptions{})
	tm1, srv := e.Topo.TMs[0], e.Topo.Servers[0]
	next := capture(t, srv, 9999)
	frame := udpFrame(distMAC(e), tm1.Links["eth0"].MAC,
		netip.AddrPortFrom(tm1.Links["eth0"].Addr4.Addr(), 5555),
		netip.AddrPortFrom(srv.Links["eth0"].Addr4.Addr(), 9999), []byte("switchyard shim test"))

	sendRaw(t, tm1, frame)
	plain := next()

	client := e.Topo.Clients[0]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 34567)
	vip := netip.AddrPortFrom(e.Topo.VIP4, lab.HTTPPort)
	key := signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: vip.Port(), Proto: flow.ProtoTCP}
	shimmed, err := signal.Shim(frame, signal.Message{Ops: []signal.Op{signal.Memorize{Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, tm1, shimmed)
	viaShim := next()
	if !bytes.Equal(plain, viaShim) {
		t.Fatalf("packet with a shim arrived as\n%x\nwithout:\n%x", viaShim, plain)
	}
	if n := counter(t, d, "sig_shim"); n != 1 {
		t.Fatalf("sig_shim = %d, want 1", n)
	}
	// The MEMORIZE in the shim took effect: tm1 gets the flow, whatever
	// the policy would say.
	for range 3 { // also after the flow closed and reopened on the same port
		got, err := getFrom(client, int(src.Port()), vip)
		if err != nil {
			t.Fatal(err)
		}
		if got != tm1.Name {
			t.Fatalf("memorized flow answered by %s, want %s", got, tm1.Name)
		}
	}
}

// TestRelateSteersRelatedConnections: a RELATE with a wildcard second key
// (any source port) sends the client's next connections to a port to the
// relating TM, whichever the policy would have chosen.
func TestRelateSteersRelatedConnections(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 2, Distributors: 1, TMs: 4})
	d := startDist(t, e, lab.ConfigOptions{ExtraServices: []config.Service{{Name: "data", VIP: e.Topo.VIP4, Port: 2121,
		Protocol: config.ProtocolTCP, TrafficManagers: []string{"tm1", "tm2", "tm3", "tm4"}}}})
	for _, h := range e.Topo.TMs {
		s := echo.New(h.Name)
		if err := h.NS.Do(func() error { return s.ListenHTTP(netip.AddrPortFrom(e.Topo.VIP4, 2121)) }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	c1, c2 := e.Topo.Clients[0], e.Topo.Clients[1]
	relating := e.Topo.TMs[2]
	vip80 := netip.AddrPortFrom(e.Topo.VIP4, 80)
	vip2121 := netip.AddrPortFrom(e.Topo.VIP4, 2121)
	c1addr := c1.Links["eth0"].Addr4.Addr()

	// The control connection: c1:40000 → VIP:80, on the relating TM.
	parent := signal.Key{Src: c1addr, Dst: vip80.Addr(), SrcPort: 40000, DstPort: 80, Proto: flow.ProtoTCP}
	sendFrame(t, relating, distMAC(e),
		signal.Memorize{Key: parent},
		signal.Relate{Parent: parent, Second: signal.Key{Src: c1addr, Dst: vip2121.Addr(), DstPort: 2121, Proto: flow.ProtoTCP},
			Mask: signal.FieldProto | signal.FieldSrc | signal.FieldDst | signal.FieldDstPort, Timeout: time.Minute})
	waitFor(t, 5*time.Second, "the RELATE", func() bool { return counter(t, d, "sig_relate") == 1 })

	others := map[string]int{}
	for i := range 20 {
		got, err := getFrom(c1, 0, vip2121)
		if err != nil {
			t.Fatal(err)
		}
		if got != relating.Name {
			t.Fatalf("related connection %d answered by %s, want %s", i, got, relating.Name)
		}
		// Another client is not related: the policy spreads it.
		got, err = getFrom(c2, 0, vip2121)
		if err != nil {
			t.Fatal(err)
		}
		others[got]++
	}
	if len(others) < 2 {
		t.Errorf("unrelated client's connections all went to %v: the test would not notice a broken RELATE", others)
	}
	if n := counter(t, d, "fwd_second_key"); n < 20 {
		t.Errorf("fwd_second_key = %d, want at least 20", n)
	}
	// switchyard flows shows where the related entries came from.
	var related int
	err := d.API.Flows(context.Background(), api.FlowFilter{Addr: c1addr}, func(f api.Flow) error {
		if strings.HasSuffix(f.Dst, ":2121") {
			if f.Origin[0] != "second-key" || !strings.Contains(f.Parent, ":40000 -> 10.0.0.100:80") {
				return fmt.Errorf("related entry %+v: want origin second-key and the parent", f)
			}
			related++
		}
		return nil
	})
	if err != nil || related == 0 {
		t.Fatalf("related entries: %d, %v", related, err)
	}
}

// TestSpoofedSignals: signals from a client, from an unknown MAC, and forged
// or replayed UDP control messages change nothing; good ones do.
func TestSpoofedSignals(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2})
	keys := map[string]string{"tm1": strings.Repeat("11", 32), "tm2": strings.Repeat("22", 32)}
	ctl := netip.AddrPortFrom(e.Topo.Distributors[0].Links["int0"].Addr4.Addr(), 7900)
	d := startDist(t, e, lab.ConfigOptions{SignalKeys: keys, UDPListen: ctl.String()})
	client, tm1, tm2 := e.Topo.Clients[0], e.Topo.TMs[0], e.Topo.TMs[1]
	src := netip.AddrPortFrom(client.Links["eth0"].Addr4.Addr(), 35000)
	vip := netip.AddrPortFrom(e.Topo.VIP4, 80)
	key := signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: 80, Proto: flow.ProtoTCP}
	memorize := signal.Message{Ops: []signal.Op{signal.Memorize{Key: key}}}

	// From a client, on the external interface.
	err := client.NS.Do(func() error {
		s, err := signal.NewFrameSender("eth0", e.Topo.Distributors[0].Links["ext0"].MAC)
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Send(memorize)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "sig_refused_external", func() bool { return counter(t, d, "sig_refused_external") == 1 })

	// From a TM's segment with a MAC no TM has.
	f, err := signal.Frame(distMAC(e), net.HardwareAddr{2, 0x66, 0x66, 0x66, 0x66, 0x66}, memorize)
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, tm1, f)
	waitFor(t, 5*time.Second, "sig_refused_unknown_mac", func() bool { return counter(t, d, "sig_refused_unknown_mac") == 1 })

	// UDP control: a wrong key, then tm2's key used by tm1's id.
	sendUDP := func(h *netlab.Host, id string, key []byte, seq uint64, m signal.Message) []byte {
		b, err := signal.SealUDP(id, key, seq, m)
		if err != nil {
			t.Fatal(err)
		}
		err = h.NS.Do(func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ctl))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key1 := bytes.Repeat([]byte{0x11}, 32)
	key2 := bytes.Repeat([]byte{0x22}, 32)
	sendUDP(tm1, "tm1", key2, 1, memorize)
	udpCount := func(name string) uint64 { return stats(t, d).UDPSignals[name] }
	waitFor(t, 5*time.Second, "udp_refused_auth", func() bool { return udpCount("udp_refused_auth") == 1 })
	if _, ok := flowOf(t, d, src, vip); ok {
		t.Fatal("a refused signal created the flow")
	}

	// A good one applies; its replay is refused.
	good := sendUDP(tm1, "tm1", key1, 100, memorize)
	waitFor(t, 5*time.Second, "udp_sig_memorize", func() bool { return udpCount("udp_sig_memorize") == 1 })
	if fl, ok := flowOf(t, d, src, vip); !ok || fl.TM != "tm1" {
		t.Fatalf("UDP MEMORIZE: entry %+v, present %v", fl, ok)
	}
	err = tm1.NS.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ctl))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(good)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "udp_refused_replay", func() bool { return udpCount("udp_refused_replay") == 1 })

	// tm2, authenticated, may not take tm1's flow.
	sendUDP(tm2, "tm2", key2, 1, memorize)
	waitFor(t, 5*time.Second, "udp_sig_refused_foreign_tm", func() bool { return udpCount("udp_sig_refused_foreign_tm") == 1 })
	if fl, _ := flowOf(t, d, src, vip); fl.TM != "tm1" {
		t.Fatalf("after tm2's attempt the flow is on %s", fl.TM)
	}
	// Nor by a signal frame.
	sendFrame(t, tm2, distMAC(e), signal.Memorize{Key: key})
	waitFor(t, 5*time.Second, "sig_refused_foreign_tm", func() bool { return counter(t, d, "sig_refused_foreign_tm") == 1 })
	if got, err := getFrom(client, int(src.Port()), vip); err != nil || got != "tm1" {
		t.Fatalf("the flow went to %s (%v), want tm1", got, err)
	}
}

// TestMulticastSignalReachesEveryDistributor: one signal frame to the
// signal multicast MAC is applied by every distributor on the segment.
func TestMulticastSignalReachesEveryDistributor(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 2, TMs: 2})
	var ds []*lab.Distributor
	for i, h := range e.Topo.Distributors {
		cfg := e.Config(lab.ConfigOptions{ID: h.Name, APIPath: lab.APIPath(e.Dir, h)})
		d, err := e.StartDistributorOn(context.Background(), h, cfg)
		if err != nil {
			t.Fatalf("distributor %d: %v", i+1, err)
		}
		ds = append(ds, d)
	}
	src := netip.AddrPortFrom(e.Topo.Clients[0].Links["eth0"].Addr4.Addr(), 36000)
	vip := netip.AddrPortFrom(e.Topo.VIP4, 80)
	key := signal.Key{Src: src.Addr(), Dst: vip.Addr(), SrcPort: src.Port(), DstPort: 80, Proto: flow.ProtoTCP}
	sendFrame(t, e.Topo.TMs[1], net.HardwareAddr{0x03, 0x53, 0x59, 0x47, 0x00, 0x01}, signal.Memorize{Key: key})
	for _, d := range ds {
		waitFor(t, 5*time.Second, "the memorized entry on "+d.Host.Name, func() bool {
			f, ok := flowOf(t, d, src, vip)
			return ok && f.TM == "tm2"
		})
	}
}
