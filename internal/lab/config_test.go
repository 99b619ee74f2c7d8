package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/netlab"
)

// fakeTopo is a topology described, not built: Config only reads names and
// addresses.
func fakeTopo(tms int) *netlab.Topology {
	t := &netlab.Topology{
		VIP4: netip.MustParseAddr("10.0.0.100"), VIP6: netip.MustParseAddr("fd00:100::100"),
		SNAT4: netip.MustParseAddr("10.1.255.1"), SNAT6: netip.MustParseAddr("fd00:1ff::1"),
	}
	for i := 1; i <= tms; i++ {
		t.TMs = append(t.TMs, &netlab.Host{Name: fmt.Sprintf("tm%d", i), Links: map[string]*netlab.Link{"eth0": {
			Addr4: netip.MustParsePrefix(fmt.Sprintf("10.1.0.%d/24", 10+i)),
			Addr6: netip.MustParsePrefix(fmt.Sprintf("fd00:10::%d/64", 10+i)),
		}}})
	}
	return t
}

// TestConfigOptions checks that every option reaches the config the daemon
// loads: Config's output parses, with the options' values.
func TestConfigOptions(t *testing.T) {
	topo := fakeTopo(3)
	key := strings.Repeat("ab", 16)
	src := Config(topo, ConfigOptions{
		ID: "d2", APIPath: "/run/x.sock", Pool: []string{"tm1", "tm2"},
		Weights: map[string]int{"tm2": 3}, States: map[string]string{"tm3": config.StateDraining},
		MaxFlows: 5000, HTTPPort: 8080, UDPPort: 53, IPv6: true, SNAT: true,
		SignalKeys: map[string]string{"tm1": key}, UDPListen: "10.1.0.2:7946",
		ExtraServices: []config.Service{{Name: "typed", VIP: topo.VIP4, Port: 21, Protocol: config.ProtocolTCP,
			TrafficManagers: []string{"tm3"}, Persistence: &config.Persistence{Timeout: 60}}},
		// As bench.go writes it.
		Extra:    fmt.Sprintf("  - {name: iperf, vip: %s, port: %d, protocol: tcp, traffic_managers: [%s]}\n", topo.VIP4, 5201, "tm1"),
		Timeouts: &config.Timeouts{UDP: 2, TCP: 600, TCPFin: 1, TCPClose: 1},
		Mutate:   func(c *config.Config) { c.Distributor.XDPMode = config.XDPModeGeneric },
	})
	c, err := config.Parse([]byte(src), "lab.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	d := c.Distributor
	if d.ID != "d2" || d.API != "unix:/run/x.sock" || d.XDPMode != "generic" || len(d.Interfaces) != 3 || c.FlowTable.MaxFlows != 5000 {
		t.Errorf("distributor %+v, flow table %+v", d, c.FlowTable)
	}
	if len(c.TrafficManagers) != 3 || c.TrafficManagers[1].Weight != 3 || c.TrafficManagers[0].Weight != 1 ||
		c.TrafficManagers[2].State != "draining" || fmt.Sprintf("%x", c.TrafficManagers[0].SignalKey) != key {
		t.Errorf("traffic managers %+v", c.TrafficManagers)
	}
	var names []string
	for _, s := range c.Services {
		names = append(names, fmt.Sprintf("%s %s:%d/%s %v", s.Name, s.VIP, s.Port, s.Protocol, s.TrafficManagers))
	}
	want := "web 10.0.0.100:8080/tcp [tm1 tm2]|echo 10.0.0.100:53/udp [tm1 tm2]|web6 fd00:100::100:8080/tcp [tm1 tm2]|echo6 fd00:100::100:53/udp [tm1 tm2]|typed 10.0.0.100:21/tcp [tm3]|iperf 10.0.0.100:5201/tcp [tm1]"
	if got := strings.Join(names, "|"); got != want {
		t.Errorf("services\n got %s\nwant %s", got, want)
	}
	if p := c.Services[4].Persistence; p == nil || p.Timeout != 60 {
		t.Errorf("persistence %+v", p)
	}
	if c.Timeouts != (config.Timeouts{UDP: 2, TCP: 600, TCPSyn: 30, TCPFin: 1, TCPClose: 1, Other: 60, SecondKey: 300}) {
		t.Errorf("timeouts %+v", c.Timeouts)
	}
	if fmt.Sprint(c.Learning.SNATAddresses) != "[10.1.255.1 fd00:1ff::1]" || c.Signals.UDPListen != "10.1.0.2:7946" {
		t.Errorf("learning %+v signals %+v", c.Learning, c.Signals)
	}

	// Defaults: every TM, the default ports, TMs by IPv6 address.
	c, err = config.Parse([]byte(Config(topo, ConfigOptions{APIPath: "/run/y.sock", TMAddr6: true})), "lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Distributor.ID != "d1" || len(c.TrafficManagers) != 3 || c.TrafficManagers[2].Address != netip.MustParseAddr("fd00:10::13") ||
		len(c.Services) != 2 || c.Services[0].Port != 80 || c.Services[1].Port != 5300 || len(c.Services[0].TrafficManagers) != 3 {
		t.Errorf("defaults: %+v", c)
	}

	// A bad Extra or an unknown TM is the caller's bug, said as such.
	if _, err := BuildConfig(topo, ConfigOptions{Extra: "  - {name: x, vip: nope}\n"}); err == nil || !strings.Contains(err.Error(), `ConfigOptions.Extra:1: services[0].vip: "nope" is not an IP address`) {
		t.Errorf("bad Extra: %v", err)
	}
	if _, err := BuildConfig(topo, ConfigOptions{TMs: []string{"tm9"}}); err == nil || !strings.Contains(err.Error(), `"tm9" is not a TM of the topology`) {
		t.Errorf("unknown TM: %v", err)
	}
}
