package agent

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// NFTable is the nftables table (family inet) the agent owns.
const NFTable = "switchyard_agent"

const ftpHelperObj = "ftp"

// Conntrack only tracks a namespace's packets once something there asks
// for it (nf_ct_netns_get): a rule that reads the conntrack state is enough.
// A host with NAT or stateful filtering has it on already; a plain TM host
// does not, and the agent would see nothing. So the agent installs its own
// table: a rule that loads the ct state in prerouting and output, and, for
// the ports given, assigns the kernel's FTP helper to new TCP connections
// to those ports (the helper is what creates the expectations the agent
// relates; inside a namespace helpers are never assigned automatically).
//
// EnableConntrack replaces a table of that name left by an earlier run and
// returns a function that removes it.
func EnableConntrack(ftpPorts []uint16) (undo func() error, err error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: NFTable, Family: nftables.TableFamilyINet}
	// Delete a leftover first (kill -9); a missing table is fine.
	c.DelTable(t)
	_ = c.Flush()

	c.AddTable(t)
	if len(ftpPorts) > 0 {
		c.AddObj(&nftables.NamedObj{
			Table: t, Name: ftpHelperObj, Type: nftables.ObjTypeCtHelper,
			Obj: &expr.CtHelper{Name: "ftp", L4Proto: unix.IPPROTO_TCP},
		})
	}
	for _, hook := range []struct {
		name string
		num  *nftables.ChainHook
	}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}} {
		ch := c.AddChain(&nftables.Chain{
			Name: hook.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook.num, Priority: nftables.ChainPriorityFilter,
		})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Counter{},
		}})
		for _, p := range ftpPorts {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
				&expr.Objref{Type: int(nftables.ObjTypeCtHelper), Name: ftpHelperObj},
			}})
		}
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables: install table inet %s: %w", NFTable, err)
	}
	return func() error {
		c, err := nftables.New()
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables: remove table inet %s: %w", NFTable, err)
		}
		return nil
	}, nil
}

// EnableFTPHold adds to the agent's table (EnableConntrack made it) the
// chains that queue FTP control packets to NFQUEUE num for HoldFTP, with
// bypass: with no agent bound to the queue, they pass. Replies from the
// control ports (227/229) are queued in postrouting after source NAT
// (priority 200: after srcnat, before the helper at conntrack's confirm),
// where they go VIP → client; commands to the control ports (PORT/EPRT)
// in prerouting before destination NAT (priority -150), where they go
// client → VIP: both as the distributor sees the control connection.
func EnableFTPHold(num uint16, ftpPorts []uint16) error {
	if len(ftpPorts) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: NFTable, Family: nftables.TableFamilyINet}
	pre, post := nftables.ChainPriority(-150), nftables.ChainPriority(200)
	for _, ch := range []struct {
		name string
		hook *nftables.ChainHook
		prio *nftables.ChainPriority
		off  uint32 // TCP port field matched: 0 source, 2 destination
	}{{"ftp_hold_pre", nftables.ChainHookPrerouting, &pre, 2}, {"ftp_hold_post", nftables.ChainHookPostrouting, &post, 0}} {
		chain := c.AddChain(&nftables.Chain{
			Name: ch.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: ch.hook, Priority: ch.prio,
		})
		for _, p := range ftpPorts {
			c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: ch.off, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
				&expr.Counter{},
				nfqueueTarget(num),
			}})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: add the FTP hold to table inet %s: %w", NFTable, err)
	}
	return nil
}

// nfqueueTarget is "queue num N bypass" as the xtables NFQUEUE target
// (revision 3, through nft_compat): kernels built without nft_queue
// (CONFIG_NFT_QUEUE off, as here) have it. struct xt_NFQ_info_v3:
// queuenum, queues_total, flags (NFQ_FLAG_BYPASS), in host byte order,
// padded to 8 bytes.
func nfqueueTarget(num uint16) *expr.Target {
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	binary.NativeEndian.PutUint16(info[4:], 1) // NFQ_FLAG_BYPASS
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}
