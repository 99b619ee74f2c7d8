package lab_test

// FTP through "plain" TMs: TM hosts that forward FTP with the kernel alone
// (nftables DNAT from the VIP to the server, SNAT to the shared SNAT
// address, the conntrack FTP helper with nf_nat_ftp), and the agent
// relating the helper's expectations. No proxy, no Switchyard-aware
// software: the simplest real TM the kernel's helper supports.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
)

// plainTMTable is the nftables table (family ip) of a plain FTP TM.
const plainTMTable = "plain_tm"

// plainFTPTM makes TM host h (the i-th) forward FTP from vip:21 to
// server:21 with the kernel: DNAT in prerouting, SNAT to snat (a source
// port range of its own, as tmHostPrep gives its sockets: TMs sharing the
// SNAT address must not open the same 5-tuple) in postrouting, and IPv4
// forwarding. The FTP helper itself is assigned by the agent
// (--ftp-port 21); nf_nat_ftp then rewrites the server's PASV/EPSV
// replies to the VIP, and the expected data connections follow their
// control connection's NAT.
func plainFTPTM(t *testing.T, h *netlab.Host, i int, vip, snat, server netip.Addr) {
	t.Helper()
	if err := h.NS.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	lo := uint16(20000 + i*10000)
	err := h.NS.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tb := c.AddTable(&nftables.Table{Name: plainTMTable, Family: nftables.TableFamilyIPv4})
		pre := c.AddChain(&nftables.Chain{Name: "pre", Table: tb, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
		post := c.AddChain(&nftables.Chain{Name: "post", Table: tb, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
		// tcp, to dst:21
		match := func(dst netip.Addr) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: dst.AsSlice()},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(21)},
			}
		}
		c.AddRule(&nftables.Rule{Table: tb, Chain: pre, Exprs: append(match(vip),
			&expr.Immediate{Register: 1, Data: server.AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(21)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		)})
		c.AddRule(&nftables.Rule{Table: tb, Chain: post, Exprs: append(match(server),
			&expr.Immediate{Register: 1, Data: snat.AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(lo)},
			&expr.Immediate{Register: 3, Data: binaryutil.BigEndian.PutUint16(lo + 9999)},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, RegProtoMax: 3, Specified: true},
		)})
		return c.Flush()
	})
	if err != nil {
		t.Fatalf("plain TM %s: nftables: %v", h.Name, err)
	}
}

// ftpConntrack counts the FTP data connections in host h's conntrack
// table: related ones have a master (a helper's expectation matched: the
// data connection reached its control connection's TM); unrelated ones
// are passive data connections (TCP to the VIP, not port 21) that
// something on the TM accepted without an expectation. (A data connection
// refused at a TM that expected nothing leaves no entry: the kernel drops
// an unreplied entry reset by its RST; the transfer fails instead.)
func ftpConntrack(t *testing.T, h *netlab.Host, vip netip.Addr) (related, unrelated int) {
	t.Helper()
	err := h.NS.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		if err != nil {
			return err
		}
		for _, f := range flows {
			o := f.TupleOrig
			switch {
			case o.Proto.Protocol != unix.IPPROTO_TCP:
			case f.TupleMaster.IP.SourceAddress.IsValid():
				related++
			case o.IP.DestinationAddress == vip && o.Proto.DestinationPort != 21:
				unrelated++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("conntrack on %s: %v", h.Name, err)
	}
	return
}

// TestFTPThroughPlainTMs: vsftpd behind 4 plain TMs (plainFTPTM) with the
// agent on each (--ftp-port 21). 100 transfers (EPSV, PASV, EPRT and PORT
// in turn, plainFTPTransfer), every file's checksum checked. A data
// connection at another TM than its control connection's finds no
// expectation there (passive: nothing listens on the VIP's data port,
// refused; active: the server's SYN to the SNAT address or the client's
// answers reach a TM that has no such connection), and the transfer
// fails. The client connects (passive) or sends RETR (active) as soon as
// it has the reply, as curl does: the agents' FTP hold (on by default) is
// what gets the RELATE to the distributor first, and every agent must
// have held at least one packet per transfer. The distributor's flow table must hold each data
// connection on its control connection's TM, and each TM's conntrack table
// as many related data connections as control connections of the
// transfers it carried, none unrelated.
func TestFTPThroughPlainTMs(t *testing.T) { plainFTPRun(t, true) }

// TestFTPThroughPlainTMsWithoutHold is the same with the agents' FTP hold
// off (--ftp-hold=false): a client that connects as soon as it has the
// reply must then, some of the time, reach another TM (the race the hold
// closes); the test fails if all 100 transfers land right.
func TestFTPThroughPlainTMsWithoutHold(t *testing.T) { plainFTPRun(t, false) }

func plainFTPRun(t *testing.T, hold bool) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 4, Servers: 1})
	all := []string{"tm1", "tm2", "tm3", "tm4"}
	d := startDist(t, e, lab.ConfigOptions{SNAT: true, ExtraServices: []config.Service{
		{Name: "ftp", VIP: e.Topo.VIP4, Port: 21, Protocol: config.ProtocolTCP, TrafficManagers: all},
		{Name: "ftp-data", VIP: e.Topo.VIP4, Protocol: config.ProtocolTCP, TrafficManagers: all},
	}, Mutate: func(c *config.Config) {
		// Active mode: the client's answers (client:port → VIP) are
		// steered by a RELATE with this mask, most specific first.
		c.SecondKeys.Masks = append([][]string{{"proto", "src", "sport", "dst"}}, config.DefaultSecondKeyMasks()...)
	}})
	root, sums := ftpFiles(t, 10)
	srvAddr := startVsftpd(t, e.Topo.Servers[0], root)
	agents := map[string]*lab.Agent{}
	for i, h := range e.Topo.TMs {
		tmHostPrep(t, e, i, h)
		plainFTPTM(t, h, i, e.Topo.VIP4, e.Topo.SNAT4, srvAddr)
		a, err := e.StartAgent(context.Background(), h, "--ftp-port", "21", fmt.Sprintf("--ftp-hold=%t", hold))
		if err != nil {
			t.Fatal(err)
		}
		agents[h.Name] = a
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent on %s:\n%s", h.Name, a.Output())
			}
			a.Kill()
		})
	}
	client := e.Topo.Clients[0]
	const transfers = 100
	failed := 0
	perTM := map[string]int{} // transfers per control connection's TM
	st := &plainFTPState{ports: map[int]string{}}
	for i := range transfers {
		tm, err := plainFTPTransfer(t, d, client, e.Topo.VIP4, i, sums, st)
		if err != nil {
			// Without the hold, failures are what the test looks for.
			report := t.Errorf
			if !hold {
				report = t.Logf
			}
			report("%v", err)
			if failed++; failed == 3 {
				// Each failure may cost a 10 s timeout: enough to judge.
				report("stopping after %d of %d transfers: 3 failed", i+1, transfers)
				break
			}
			continue
		}
		perTM[tm]++
	}
	var related, unrelated, used int
	var relates uint64
	var hs agent.FTPHoldStats
	for _, h := range e.Topo.TMs {
		r, u := ftpConntrack(t, h, e.Topo.VIP4)
		st, err := agents[h.Name].Stats()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TM %s: %d data connections related, %d unrelated; agent: %d relates, %d new flows, %d send errors", h.Name, r, u, st.Relates, st.New, st.SendErrors)
		if hold && r != perTM[h.Name] {
			t.Errorf("TM %s: %d related data connections in its conntrack, %d control connections of transfers there", h.Name, r, perTM[h.Name])
		}
		related += r
		unrelated += u
		relates += st.Relates
		hs.Held += st.FTPHold.Held
		hs.Related += st.FTPHold.Related
		hs.Deadline += st.FTPHold.Deadline
		hs.Passed += st.FTPHold.Passed
		if r > 0 {
			used++
		}
		if st.SendErrors != 0 {
			t.Errorf("agent on %s: %d send errors", h.Name, st.SendErrors)
		}
	}
	t.Logf("FTP hold (all agents): %d held, %d released by relate, %d by deadline, %d passed", hs.Held, hs.Related, hs.Deadline, hs.Passed)
	if !hold {
		if failed == 0 && unrelated == 0 {
			t.Fatalf("without the hold, all %d transfers landed on their control connection's TM: the test cannot see the race", transfers)
		}
		if hs.Held != 0 {
			t.Errorf("the hold is off, yet %d packets were held", hs.Held)
		}
		t.Logf("without the hold: %d transfers failed, %d data connections at another TM (the race)", failed, unrelated)
		return
	}
	if hs.Held < transfers || hs.Related+hs.Deadline != hs.Held || hs.Related == 0 {
		t.Errorf("FTP hold: %d held, %d released by relate, %d by deadline; want at least %d held, each released once", hs.Held, hs.Related, hs.Deadline, transfers)
	}
	if failed > 0 {
		var nonzero []string
		for _, c := range stats(t, d).Counters {
			if c.Packets != 0 {
				nonzero = append(nonzero, fmt.Sprintf("%s=%d", c.Name, c.Packets))
			}
		}
		t.Fatalf("%d of %d transfers failed; distributor: %s", failed, transfers, strings.Join(nonzero, " "))
	}
	if unrelated != 0 || related != transfers {
		t.Errorf("data connections: %d at their control connection's TM, %d at another; want %d and 0", related, unrelated, transfers)
	}
	if used < 2 {
		t.Errorf("data connections reached %d TMs: the test would not see one at the wrong TM", used)
	}
	if relates < transfers {
		t.Errorf("the agents related %d expectations, want at least %d", relates, transfers)
	}
	if k := counter(t, d, "fwd_second_key"); k < transfers/2 {
		t.Errorf("fwd_second_key = %d, want at least %d (one per passive data connection)", k, transfers/2)
	}
	t.Logf("%d passive ports asked again (related by another TM before)", st.reasked)
	t.Logf("%d transfers over %d TMs; sig_relate %d, fwd_second_key %d, sig_memorize %d, learned %d", transfers, used,
		counter(t, d, "sig_relate"), counter(t, d, "fwd_second_key"), counter(t, d, "sig_memorize"), counter(t, d, "learned"))
}

// plainFTPTransfer fetches file f<i mod len(sums)> from the VIP as a plain
// FTP client in client's namespace, with the data connection of
// ftpModes[i mod 4] (EPSV, PASV: the client connects to the VIP; EPRT,
// PORT: the server connects to the client through the TM), and checks: a
// PASV reply names the VIP (nf_nat_ftp rewrote it), the data arrives with
// its checksum, and the distributor's flow table holds the data
// connection (its client side) on the control connection's TM. It returns
// that TM.
//
// It opens (passive) or asks for (active: RETR) the data connection as
// soon as it has the reply, without waiting for anything: the agent's FTP
// hold must have sent the RELATE before the reply (or the PORT command)
// went on (docs/traffic-managers.md).
func plainFTPTransfer(t *testing.T, d *lab.Distributor, client *netlab.Host, vip netip.Addr, i int, sums []string, st *plainFTPState) (tm string, err error) {
	t.Helper()
	f := i % len(sums)
	var ctl net.Conn
	vip21 := netip.AddrPortFrom(vip, 21)
	if err := client.NS.Do(func() (err error) { ctl, err = net.DialTimeout("tcp4", vip21.String(), 5*time.Second); return err }); err != nil {
		return "", fmt.Errorf("transfer %d: control connection: %w", i, err)
	}
	defer ctl.Close()
	_ = ctl.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(ctl)
	cmd := func(line, want string) (string, error) {
		if line != "" {
			if _, err := fmt.Fprintf(ctl, "%s\r\n", line); err != nil {
				return "", err
			}
		}
		reply, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("transfer %d: %q: %w", i, line, err)
		}
		if !strings.HasPrefix(reply, want+" ") {
			return "", fmt.Errorf("transfer %d: %q answered %q, want %s", i, line, strings.TrimSpace(reply), want)
		}
		return strings.TrimSpace(reply), nil
	}
	for _, c := range [][2]string{{"", "220"}, {"USER anonymous", "230"}, {"TYPE I", "200"}} {
		if _, err := cmd(c[0], c[1]); err != nil {
			return "", err
		}
	}
	// The control connection's TM, from the distributor's flow table.
	cf, ok := flowOfSoon(t, d, netip.MustParseAddrPort(ctl.LocalAddr().String()), vip21)
	if !ok {
		return "", fmt.Errorf("transfer %d: no flow entry for the control connection", i)
	}
	ctlTM := cf.TM
	var data net.Conn
	// checkData looks the data connection up in the distributor's flow
	// table as soon as it is up (the agents forget it when it ends, and
	// a server may end it with a RST as soon as it sent the file): its
	// client side, client → VIP:port (passive) or client → VIP:20
	// (active: the client's answers), must be on the control
	// connection's TM.
	var dataErr error
	checkData := func() {
		src, dst := netip.MustParseAddrPort(data.LocalAddr().String()), netip.MustParseAddrPort(data.RemoteAddr().String())
		df, ok := flowOfSoon(t, d, src, dst)
		if !ok || df.TM != ctlTM {
			dataErr = fmt.Errorf("transfer %d: control flow on %q, data flow %s → %s on %q (found %v, origin %v)", i, ctlTM, src, dst, df.TM, ok, df.Origin)
		}
	}
	switch mode := ftpModes[i%len(ftpModes)].name; mode {
	case "EPSV", "PASV":
		var port int
		for try := 0; ; try++ {
			if mode == "EPSV" {
				reply, err := cmd("EPSV", "229")
				if err != nil {
					return "", err
				}
				if _, err := fmt.Sscanf(reply[strings.Index(reply, "(|||"):], "(|||%d|)", &port); err != nil {
					return "", fmt.Errorf("transfer %d: EPSV reply %q: %w", i, reply, err)
				}
			} else {
				reply, err := cmd("PASV", "227")
				if err != nil {
					return "", err
				}
				var h [4]byte
				var p1, p2 int
				if _, err := fmt.Sscanf(reply[strings.Index(reply, "("):], "(%d,%d,%d,%d,%d,%d)", &h[0], &h[1], &h[2], &h[3], &p1, &p2); err != nil {
					return "", fmt.Errorf("transfer %d: PASV reply %q: %w", i, reply, err)
				}
				if a := netip.AddrFrom4(h); a != vip {
					return "", fmt.Errorf("transfer %d: PASV reply names %s, want the VIP %s (nf_nat_ftp rewrites it)", i, a, vip)
				}
				port = p1<<8 | p2
			}
			// vsftpd picks its passive ports at random, and a second key
			// lives for the expectation's timeout (5 min): a port another
			// TM related for this client before is still that TM's, and
			// this TM's RELATE would be refused (foreign). One client
			// makes that likely over 50 transfers (a few per cent); a
			// client asks again, as it would after a failed connection.
			if prev, used := st.ports[port]; !used || prev == ctlTM {
				break
			}
			if try == 4 {
				return "", fmt.Errorf("transfer %d: 5 passive ports in a row were related by other TMs before", i)
			}
			st.reasked++
		}
		st.ports[port] = ctlTM
		dataAddr := netip.AddrPortFrom(vip, uint16(port))
		if err := client.NS.Do(func() (err error) { data, err = net.DialTimeout("tcp4", dataAddr.String(), 5*time.Second); return err }); err != nil {
			return "", fmt.Errorf("transfer %d: data connection to %s: %w", i, dataAddr, err)
		}
		defer data.Close()
		checkData()
		if _, err := cmd(fmt.Sprintf("RETR f%d", f), "150"); err != nil {
			return "", err
		}
	default: // EPRT, PORT: the server connects to the client through the TM
		caddr := client.Links["eth0"].Addr4.Addr()
		var ln net.Listener
		// One port per transfer, below the ephemeral range: a second key
		// (client:port → VIP) lives for the expectation's timeout, and a
		// port reused through another TM within it would have its RELATE
		// refused (foreign), as for passive ports above.
		cp := 12000 + i
		if err := client.NS.Do(func() (err error) {
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(caddr, uint16(cp)).String())
			return err
		}); err != nil {
			return "", fmt.Errorf("transfer %d: listen: %w", i, err)
		}
		defer ln.Close()
		line := fmt.Sprintf("EPRT |1|%s|%d|", caddr, cp)
		if mode == "PORT" {
			a := caddr.As4()
			line = fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], cp>>8, cp&0xff)
		}
		if _, err := cmd(line, "200"); err != nil {
			return "", err
		}
		if _, err := fmt.Fprintf(ctl, "RETR f%d\r\n", f); err != nil {
			return "", err
		}
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			_ = d.API.Flows(context.Background(), api.FlowFilter{}, func(fl api.Flow) error {
				if strings.HasSuffix(fl.Src, ":20") || strings.HasSuffix(fl.Dst, ":20") {
					t.Logf("a port-20 flow at the failure: %+v", fl)
				}
				return nil
			})
			return "", fmt.Errorf("transfer %d (%s, port %d): the server's data connection did not arrive: %w", i, mode, cp, err)
		}
		data = c
		defer data.Close()
		checkData()
		if _, err := cmd("", "150"); err != nil {
			return "", err
		}
	}
	_ = data.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(io.LimitReader(data, 1<<24))
	if err != nil {
		return "", fmt.Errorf("transfer %d: data: %w", i, err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != sums[f] {
		return "", fmt.Errorf("transfer %d (f%d): %d bytes, checksum %s, want %s", i, f, len(b), got[:12], sums[f][:12])
	}
	if _, err := cmd("", "226"); err != nil {
		return "", err
	}
	if dataErr != nil {
		return "", dataErr
	}
	return ctlTM, nil
}

// plainFTPState is what plainFTPTransfer remembers across transfers.
type plainFTPState struct {
	ports   map[int]string // passive port → the TM that related it
	reasked int            // passive ports asked again (used by another TM)
}

// flowOfSoon is flowOf, polled for up to 2 s: the API walks the flow table
// while the data path changes it, and a walk may miss an entry.
func flowOfSoon(t *testing.T, d *lab.Distributor, src, dst netip.AddrPort) (api.Flow, bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, ok := flowOf(t, d, src, dst)
		if ok || time.Now().After(deadline) {
			return f, ok
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFTPHoldBypass: forwarding never depends on the agent. With every
// agent killed (kill -9: its nftables table, with the chains that queue
// the FTP control packets, stays behind), FTP control connections through
// the plain TMs still get every reply, 227 and 229 included: the queue
// rule's bypass lets the packets pass when no agent is bound to the queue.
// (Their data connections are not checked: without an agent nothing
// relates them.)
func TestFTPHoldBypass(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 2, Servers: 1})
	all := []string{"tm1", "tm2"}
	startDist(t, e, lab.ConfigOptions{SNAT: true, ExtraServices: []config.Service{
		{Name: "ftp", VIP: e.Topo.VIP4, Port: 21, Protocol: config.ProtocolTCP, TrafficManagers: all},
	}})
	root, _ := ftpFiles(t, 1)
	srvAddr := startVsftpd(t, e.Topo.Servers[0], root)
	for i, h := range e.Topo.TMs {
		tmHostPrep(t, e, i, h)
		plainFTPTM(t, h, i, e.Topo.VIP4, e.Topo.SNAT4, srvAddr)
		a, err := e.StartAgent(context.Background(), h, "--ftp-port", "21")
		if err != nil {
			t.Fatal(err)
		}
		a.Kill()
		// The queueing chain is still there.
		if err := h.NS.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
			if err != nil {
				return err
			}
			for _, ch := range chains {
				if ch.Table.Name == agent.NFTable && ch.Name == "ftp_hold_post" {
					return nil
				}
			}
			return fmt.Errorf("no chain ftp_hold_post in table inet %s after kill -9", agent.NFTable)
		}); err != nil {
			t.Fatalf("TM %s: %v", h.Name, err)
		}
	}
	client := e.Topo.Clients[0]
	vip21 := netip.AddrPortFrom(e.Topo.VIP4, 21)
	for i := range 8 {
		var ctl net.Conn
		if err := client.NS.Do(func() (err error) { ctl, err = net.DialTimeout("tcp4", vip21.String(), 5*time.Second); return err }); err != nil {
			t.Fatalf("session %d: control connection: %v", i, err)
		}
		_ = ctl.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(ctl)
		for _, c := range [][2]string{{"", "220"}, {"USER anonymous", "230"}, {"EPSV", "229"}, {"PASV", "227"}, {"QUIT", "221"}} {
			if c[0] != "" {
				if _, err := fmt.Fprintf(ctl, "%s\r\n", c[0]); err != nil {
					t.Fatalf("session %d: %q: %v", i, c[0], err)
				}
			}
			reply, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(reply, c[1]+" ") {
				t.Fatalf("session %d: %q answered %q (%v), want %s", i, c[0], strings.TrimSpace(reply), err, c[1])
			}
		}
		ctl.Close()
	}
}
