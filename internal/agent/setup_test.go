package agent_test

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

func addrOnLo(t *testing.T, h *netlab.Host, a netip.Addr) bool {
	t.Helper()
	lo, err := h.NS.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.NS.Netlink().AddrList(lo, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range addrs {
		if x.IP.Equal(a.AsSlice()) {
			return true
		}
	}
	return false
}

func sysctl(t *testing.T, h *netlab.Host, path string) string {
	t.Helper()
	var v string
	err := h.NS.Do(func() error {
		b, err := os.ReadFile("/proc/sys/" + path)
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSetup: --setup adds what is missing and its undo removes only that;
// it is idempotent; conflicts are refused with what and where, before
// anything changes.
func TestSetup(t *testing.T) {
	topo := labtest.Topology(t, netlab.Spec{Clients: 1, TMs: 1})
	h := topo.TMs[0]
	gw := topo.Distributors[0].Links["int0"].Addr4.Addr()
	extra := netip.MustParseAddr("10.0.0.200")
	if err := h.NS.Sysctl("net.ipv4.conf.eth0.arp_ignore", "0"); err != nil {
		t.Fatal(err)
	}
	opts := agent.SetupOptions{Iface: "eth0", Addrs: []netip.Addr{topo.VIP4, topo.VIP6, extra}, Gateways: []netip.Addr{gw}}

	var undo1, undo2 func() error
	err := h.NS.Do(func() (err error) {
		if undo1, err = agent.Setup(opts); err != nil {
			return err
		}
		undo2, err = agent.Setup(opts) // again: nothing left to do
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !addrOnLo(t, h, extra) || sysctl(t, h, "net/ipv4/conf/eth0/arp_ignore") != "1" {
		t.Fatal("setup did not add the address or set arp_ignore")
	}
	if err := h.NS.Do(undo2); err != nil {
		t.Fatal(err)
	}
	if !addrOnLo(t, h, extra) {
		t.Fatal("the second setup's undo removed what the first added")
	}
	if err := h.NS.Do(undo1); err != nil {
		t.Fatal(err)
	}
	if addrOnLo(t, h, extra) || !addrOnLo(t, h, topo.VIP4) || sysctl(t, h, "net/ipv4/conf/eth0/arp_ignore") != "0" {
		t.Fatal("undo: want the added address gone, the existing VIP kept, arp_ignore restored to 0")
	}

	eth0 := h.Links["eth0"].Addr4.Addr()
	for _, c := range []struct {
		name string
		o    agent.SetupOptions
		want string
	}{
		{"address on eth0", agent.SetupOptions{Iface: "eth0", Addrs: []netip.Addr{extra, eth0}}, "already on eth0"},
		{"gateway is a VIP", agent.SetupOptions{Iface: "eth0", Addrs: []netip.Addr{extra, topo.VIP4}, Gateways: []netip.Addr{topo.VIP4}}, "would loop"},
		{"gateway off the segment", agent.SetupOptions{Iface: "eth0", Addrs: []netip.Addr{extra}, Gateways: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}, "not on a subnet of eth0"},
		{"another default route", agent.SetupOptions{Iface: "eth0", Addrs: []netip.Addr{extra}, Gateways: []netip.Addr{netip.MustParseAddr("10.1.0.99")}}, "already has a default route"},
		{"no such interface", agent.SetupOptions{Iface: "eth9", Addrs: []netip.Addr{extra}}, "interface eth9"},
	} {
		err := h.NS.Do(func() error {
			_, err := agent.Setup(c.o)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
		if addrOnLo(t, h, extra) {
			t.Fatalf("%s: refused, but the address was added", c.name)
		}
	}
}

func nftTables(t *testing.T, h *netlab.Host) []string {
	t.Helper()
	var names []string
	err := h.NS.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		ts, err := c.ListTables()
		for _, tb := range ts {
			names = append(names, tb.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestAgentCleanupOnExit: the agent binary with --setup puts what is
// missing in place and, on SIGTERM, removes what it added (an address, its
// nftables table, its socket) and keeps what was there before.
func TestAgentCleanupOnExit(t *testing.T) {
	labtest.Require(t)
	e, err := lab.NewEnv(context.Background(), netlab.Spec{Clients: 1, TMs: 1}, t.TempDir(), binary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := e.StartDistributor(context.Background(), e.Config(lab.ConfigOptions{SNAT: true})); err != nil {
		t.Fatal(err)
	}
	h := e.Topo.TMs[0]
	extra := netip.MustParseAddr("10.0.0.201")
	gw := e.Topo.Distributors[0].Links["int0"].Addr4.Addr()
	a, err := e.StartAgent(context.Background(), h, "--setup", "--gateway", gw.String(), "--vip", extra.String(), "--ftp-port", "21")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Kill)
	if !addrOnLo(t, h, extra) || !slices.Contains(nftTables(t, h), agent.NFTable) {
		t.Fatalf("running agent: want %v on lo and table %s (tables %v)", extra, agent.NFTable, nftTables(t, h))
	}
	if s, err := a.Stats(); err != nil || s.Shim == nil {
		t.Fatalf("stats %+v, %v: want the in-band program's counters", s, err)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.Output())
	}
	if addrOnLo(t, h, extra) {
		t.Error("the address --setup added is still on lo")
	}
	if !addrOnLo(t, h, e.Topo.VIP4) {
		t.Error("the VIP that was there before --setup is gone")
	}
	if slices.Contains(nftTables(t, h), agent.NFTable) {
		t.Error("the agent's nftables table is still there")
	}
	if _, err := os.Stat(a.Socket); !os.IsNotExist(err) {
		t.Errorf("socket %s still there: %v", a.Socket, err)
	}
}
