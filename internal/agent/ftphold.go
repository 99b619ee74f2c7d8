package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/switchyard/switchyard/signal"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// The FTP hold: the kernel's FTP helper makes an expectation when a 227/229
// reply or a PORT/EPRT command passes it, and the agent hears of it about
// a millisecond later (an asynchronous netlink event); a client that
// connects at once would reach the distributor before the RELATE. So the
// agent's nftables table queues the FTP control packets (NFQUEUE, with
// bypass: no agent, no hold) and the agent reads the same lines the helper
// reads, sends the RELATE (and an active transfer's MEMORIZE) the helper's
// expectation will call for, and only then lets the packet go on.
//
// Why the agent reads the line instead of waiting for the expectation:
// the helper runs in conntrack's confirm step, the last hook of
// postrouting (priority INT_MAX), after every chain; a packet held in a
// chain has not made its expectation yet, and nothing after the helper can
// hold a packet (netdev egress has no queue). The expectation event that
// follows sends the same RELATE again (harmless: the same TM refreshes it).
// Where nf_nat_ftp has to pick another port (the one named is taken by
// another expectation on this host) the early RELATE names the wrong port
// and the late one is all there is, as before.

// FTPHoldDeadline bounds how long one packet is held for its signals.
const FTPHoldDeadline = 50 * time.Millisecond

// DefaultFTPQueue is the NFQUEUE number the agent binds by default.
const DefaultFTPQueue = 7321

// ftpHoldQueueLen is the kernel's queue length for the hold; beyond it
// packets pass unheld (NFQA_CFG_F_FAIL_OPEN).
const ftpHoldQueueLen = 1024

// ftpHoldSends bounds the hold's sends in flight (one per held packet; a
// send that outlives its deadline still holds its slot).
const ftpHoldSends = 64

// ftpExpectTimeout is the FTP helper's expectation timeout (its policy: 5 min).
const ftpExpectTimeout = 5 * time.Minute

// NFQUEUE netlink constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaPayload    = 10

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3
	nfqaCfgMask     = 4
	nfqaCfgFlags    = 5

	nfqnlCfgCmdBind = 1
	nfqnlCopyPacket = 2
	nfqaCfgFailOpen = 1

	nfAccept = 1
)

// FTPHoldStats are the hold's counters.
type FTPHoldStats struct {
	// Held: packets that carried a line making an expectation.
	Held uint64 `json:"held"`
	// Related: held packets let go after their signals were sent.
	Related uint64 `json:"released_by_relate"`
	// Deadline: held packets let go when FTPHoldDeadline passed first
	// (or the signals could not be sent).
	Deadline uint64 `json:"released_by_deadline"`
	// Passed: queued packets with nothing to hold (acks, other lines).
	Passed uint64 `json:"passed"`
}

// nfqueue is a bound NFQUEUE.
type nfqueue struct {
	c   *netlink.Conn
	num uint16
}

func openNFQueue(num uint16) (*nfqueue, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nfqueue %d: dial: %w", num, err)
	}
	q := &nfqueue{c: c, num: num}
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0xffff)
	params[4] = nfqnlCopyPacket
	for _, a := range [][]netfilter.Attribute{
		{{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdBind, 0, 0, 0}}},
		{{Type: nfqaCfgParams, Data: params}},
		{{Type: nfqaCfgQueueMax, Data: netfilter.Uint32Bytes(ftpHoldQueueLen)},
			{Type: nfqaCfgFlags, Data: netfilter.Uint32Bytes(nfqaCfgFailOpen)},
			{Type: nfqaCfgMask, Data: netfilter.Uint32Bytes(nfqaCfgFailOpen)}},
	} {
		m, err := netfilter.MarshalNetlink(netfilter.Header{
			SubsystemID: netfilter.NFSubsysQueue, MessageType: nfqnlMsgConfig,
			Family: netfilter.ProtoUnspec, ResourceID: num,
			Flags: netlink.Request | netlink.Acknowledge,
		}, a)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("nfqueue %d: config: %w", num, err)
		}
		if _, err := c.Execute(m); err != nil {
			c.Close()
			return nil, fmt.Errorf("nfqueue %d: config: %w", num, err)
		}
	}
	_ = c.SetReadBuffer(4 << 20)
	return q, nil
}

func (q *nfqueue) verdict(id uint32, v uint32) error {
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint32(hdr, v)
	binary.BigEndian.PutUint32(hdr[4:], id)
	m, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysQueue, MessageType: nfqnlMsgVerdict,
		Family: netfilter.ProtoUnspec, ResourceID: q.num, Flags: netlink.Request,
	}, []netfilter.Attribute{{Type: nfqaVerdictHdr, Data: hdr}})
	if err != nil {
		return err
	}
	_, err = q.c.Send(m)
	return err
}

// HoldFTP binds NFQUEUE num and holds the FTP control packets the agent's
// table queues there (EnableFTPHold) until their signals are sent, until
// ctx ends. Every packet gets its verdict (accept); the hold never drops.
func (a *Agent) HoldFTP(ctx context.Context, num uint16) error {
	q, err := openNFQueue(num)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		q.c.Close()
	}()
	ct, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("ftp hold: conntrack: %w", err)
	}
	defer ct.Close()
	for {
		msgs, err := q.c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				// The kernel could not hand us packets; they stay in
				// its queue or passed (fail-open). Go on.
				continue
			}
			return fmt.Errorf("ftp hold: nfqueue %d: %w", num, err)
		}
		for _, m := range msgs {
			h, attrs, err := netfilter.UnmarshalNetlink(m)
			if err != nil || h.SubsystemID != netfilter.NFSubsysQueue || h.MessageType != nfqnlMsgPacket {
				continue
			}
			var id uint32
			var payload []byte
			haveID := false
			for _, at := range attrs {
				switch at.Type {
				case nfqaPacketHdr:
					if len(at.Data) >= 4 {
						id, haveID = binary.BigEndian.Uint32(at.Data), true
					}
				case nfqaPayload:
					payload = at.Data
				}
			}
			if !haveID {
				continue
			}
			a.holdOne(ctx, ct, payload)
			if err := q.verdict(id, nfAccept); err != nil {
				return fmt.Errorf("ftp hold: verdict: %w", err)
			}
		}
	}
}

// holdOne sends the signals of one queued packet, within FTPHoldDeadline.
func (a *Agent) holdOne(ctx context.Context, ct *conntrack.Conn, pkt []byte) {
	e, ok := a.ftpExpectation(ct, pkt)
	if !ok {
		a.holdPassed.Add(1)
		return
	}
	r, ok := a.RelateOf(e)
	if !ok {
		a.holdPassed.Add(1)
		return
	}
	a.holdHeld.Add(1)
	ops := make([]signal.Op, 0, 2)
	if k, ok := a.InboundKeyOf(e); ok {
		ops = append(ops, a.memorize(k))
	}
	ops = append(ops, r)
	// A send outlives its deadline in its goroutine; a stuck sender must
	// not pile them up: beyond ftpHoldSends outstanding, release at once.
	select {
	case a.holdSends <- struct{}{}:
	default:
		a.holdDeadline.Add(1)
		return
	}
	done := make(chan error, 1)
	go func() {
		done <- a.sendOps(ops)
		<-a.holdSends
	}()
	t := time.NewTimer(FTPHoldDeadline)
	defer t.Stop()
	select {
	case err := <-done:
		if err == nil {
			a.holdRelated.Add(1)
			return
		}
		a.log.Warn("agent: ftp hold: signals not sent", "err", err)
	case <-t.C:
	case <-ctx.Done():
	}
	a.holdDeadline.Add(1)
}

// ftpExpectation reads an IPv4 or IPv6 TCP packet (as NFQUEUE gives it,
// from the IP header) and returns the expectation the FTP helper will
// make of it. Passive replies are held after source NAT (postrouting):
// the packet goes VIP:21 → client. Active commands are held before
// destination NAT (prerouting): client → VIP:21, the master's original
// tuple; its reply tuple (where the TM NATs it) comes from conntrack.
func (a *Agent) ftpExpectation(ct *conntrack.Conn, pkt []byte) (Expectation, bool) {
	t, payload, ok := tcpPayload(pkt)
	if !ok || len(payload) == 0 {
		return Expectation{}, false
	}
	kind, addr, port := parseFTP(payload)
	switch kind {
	case ftpPassive:
		client, vip := t.Dst, t.Src
		return Expectation{
			Master:  t.reverse(),
			Tuple:   Tuple{Src: client, Dst: vip, DstPort: port, Proto: 6},
			Mask:    Tuple{Src: client, Dst: vip, DstPort: 0xffff, Proto: 6},
			Timeout: ftpExpectTimeout, Helper: "ftp",
		}, true
	case ftpActive:
		f, err := ct.Get(conntrack.NewFlow(6, 0, t.Src, t.Dst, t.SrcPort, t.DstPort, 0, 0))
		if err != nil {
			return Expectation{}, false
		}
		reply := tupleOf(f.TupleReply)
		e := Expectation{Master: t, Timeout: ftpExpectTimeout, Helper: "ftp"}
		if reply.Dst != t.Src.Unmap() && reply.Dst != t.Src {
			// The TM NATs the control connection (nf_nat_ftp): the
			// expected connection comes from the server to the NAT
			// address, at the port named if it is free there (the
			// helper tries it first).
			e.Tuple = Tuple{Src: reply.Src, Dst: reply.Dst, DstPort: port, Proto: 6}
			e.NATPort = port
			if addr != t.Src {
				e.NATAddr = addr
			}
		} else {
			e.Tuple = Tuple{Src: reply.Src, Dst: addr, DstPort: port, Proto: 6}
		}
		e.Mask = Tuple{Src: e.Tuple.Src, Dst: e.Tuple.Dst, DstPort: 0xffff, Proto: 6}
		return e, true
	}
	return Expectation{}, false
}

// tcpPayload parses an IPv4 (with options) or IPv6 (no extension headers:
// FTP control packets carry none) TCP packet.
func tcpPayload(p []byte) (Tuple, []byte, bool) {
	if len(p) < 1 {
		return Tuple{}, nil, false
	}
	var t Tuple
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return Tuple{}, nil, false
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:]))
		if ihl < 20 || total < ihl || total > len(p) || p[9] != 6 || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return Tuple{}, nil, false
		}
		t.Src = netip.AddrFrom4([4]byte(p[12:16]))
		t.Dst = netip.AddrFrom4([4]byte(p[16:20]))
		l4 = p[ihl:total]
	case 6:
		if len(p) < 40 || p[6] != 6 {
			return Tuple{}, nil, false
		}
		plen := int(binary.BigEndian.Uint16(p[4:]))
		if 40+plen > len(p) {
			return Tuple{}, nil, false
		}
		t.Src = netip.AddrFrom16([16]byte(p[8:24]))
		t.Dst = netip.AddrFrom16([16]byte(p[24:40]))
		l4 = p[40 : 40+plen]
	default:
		return Tuple{}, nil, false
	}
	if len(l4) < 20 {
		return Tuple{}, nil, false
	}
	off := int(l4[12]>>4) * 4
	if off < 20 || off > len(l4) {
		return Tuple{}, nil, false
	}
	t.SrcPort = binary.BigEndian.Uint16(l4)
	t.DstPort = binary.BigEndian.Uint16(l4[2:])
	t.Proto = 6
	return t, l4[off:], true
}
