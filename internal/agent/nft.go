package agent

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
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
