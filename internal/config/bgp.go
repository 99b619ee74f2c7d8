package config

import (
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"strings"
)

// BGP configures announcing the VIPs to routers (internal/bgp, docs/bgp.md):
// each distributor is a BGP speaker that announces every VIP with an
// eligible TM, as an IPv4 /32 or IPv6 /128, to its neighbors, once its
// data path is attached, its TMs are ready and its peers' flows are in;
// it withdraws on drain, on shutdown, when a VIP has no eligible TM and
// when its data path is gone. Without neighbors it is off.
type BGP struct {
	// ASN is this distributor's autonomous system number, 1..4294967295.
	// Required with neighbors.
	ASN uint32 `yaml:"asn"`
	// RouterID is the BGP identifier, an IPv4 address. Required with
	// neighbors.
	RouterID netip.Addr `yaml:"router_id"`
	// ListenPort, if set, also accepts sessions on this TCP port; 0
	// (default): the distributor only dials its neighbors.
	ListenPort uint16 `yaml:"listen_port"`
	// NextHop is the next hop of the IPv4 VIPs: the distributor's address
	// on the router link. Omitted: the session's local address (what
	// eBGP sends anyway).
	NextHop netip.Addr `yaml:"next_hop"`
	// NextHop6 is the next hop of the IPv6 VIPs. Omitted: IPv6 VIPs are
	// not announced.
	NextHop6 netip.Addr `yaml:"next_hop6"`
	// HoldTime is the hold time offered to the neighbors in seconds,
	// 3..65535; default 3 (a silent neighbor is dropped after it).
	HoldTime uint32 `yaml:"hold_time"`
	// Keepalive is the keepalive interval in seconds, 1..hold_time/3;
	// default 1.
	Keepalive uint32 `yaml:"keepalive"`
	// AnnounceDelayMS delays the first announcement after the distributor
	// is ready, 0..600000 ms; default 0.
	AnnounceDelayMS uint32 `yaml:"announce_delay_ms"`
	// DrainDeadline bounds a graceful drain in seconds, 1..86400; default
	// 60. The drain ends earlier when no flow of the VIPs is left.
	DrainDeadline uint32 `yaml:"drain_deadline"`
	// BFDIntervalMS, if set, runs BFD (RFC 5880/5881) with every neighbor
	// at this interval in ms, 10..10000, so that the router notices this
	// distributor's death within BFDMultiplier intervals; 0 (default): off.
	BFDIntervalMS uint32 `yaml:"bfd_interval_ms"`
	// BFDMultiplier is BFD's detect multiplier, 2..255; default 3.
	BFDMultiplier uint32 `yaml:"bfd_multiplier"`
	// Communities are standard communities ("ASN:VALUE") put on every
	// announcement, at most MaxBGPCommunities.
	Communities []string `yaml:"communities"`
	// Neighbors are the routers, at most MaxBGPNeighbors.
	Neighbors []BGPNeighbor `yaml:"neighbors"`
}

// BGPNeighbor is one router the distributor peers with.
type BGPNeighbor struct {
	// Address is the router's address on the link. Required.
	Address netip.Addr `yaml:"address"`
	// ASN is the router's autonomous system number. Required.
	ASN uint32 `yaml:"asn"`
	// Port is the router's BGP port; default 179.
	Port uint16 `yaml:"port"`
	// Password, if set, turns on TCP MD5 signatures (RFC 2385) on the
	// session: 1..80 characters.
	Password string `yaml:"password"`
}

// Limits of the bgp section.
const (
	MaxBGPNeighbors   = 16
	MaxBGPCommunities = 16
	MaxBGPPassword    = 80 // TCP_MD5SIG_MAXKEYLEN
	DefaultBGPHold    = 3
	DefaultBGPKeep    = 1
	DefaultBGPDrain   = 60
)

// Enabled reports whether BGP is on: it has neighbors.
func (b BGP) Enabled() bool { return len(b.Neighbors) > 0 }

const (
	bgpASNExpected       = "an AS number, 1..4294967295"
	bgpRouterIDExpected  = "an IPv4 address, e.g. 10.0.1.1"
	bgpListenExpected    = "a TCP port 0..65535; 0 or omitted: do not listen, dial the neighbors"
	bgpNextHopExpected   = "an IPv4 unicast address: this distributor's address on the router link"
	bgpNextHop6Expected  = "an IPv6 unicast address: this distributor's address on the router link"
	bgpHoldExpected      = "3..65535 seconds"
	bgpKeepaliveExpected = "1..hold_time/3 seconds"
	bgpDelayExpected     = "0..600000 milliseconds"
	bgpDrainExpected     = "1..86400 seconds"
	bgpBFDExpected       = "0 (off) or 10..10000 milliseconds"
	bgpBFDMultExpected   = "2..255"
	bgpCommunityExpected = "a standard community ASN:VALUE, each 0..65535, e.g. 65001:100"
	bgpNeighborExpected  = "a unicast IPv4 or IPv6 address"
	bgpPortExpected      = "1..65535; default 179"
	bgpPasswordExpected  = "1..80 characters (TCP MD5)"
)

var bgpLeaves = map[string]leaf{
	"bgp.asn":                  {expected: bgpASNExpected, min: 1, max: 1<<32 - 1},
	"bgp.router_id":            {expected: bgpRouterIDExpected},
	"bgp.listen_port":          {expected: bgpListenExpected, max: 65535},
	"bgp.next_hop":             {expected: bgpNextHopExpected},
	"bgp.next_hop6":            {expected: bgpNextHop6Expected},
	"bgp.hold_time":            {expected: bgpHoldExpected, min: 3, max: 65535},
	"bgp.keepalive":            {expected: bgpKeepaliveExpected, min: 1, max: 21845},
	"bgp.announce_delay_ms":    {expected: bgpDelayExpected, max: 600000},
	"bgp.drain_deadline":       {expected: bgpDrainExpected, min: 1, max: 86400},
	"bgp.bfd_interval_ms":      {expected: bgpBFDExpected, max: 10000},
	"bgp.bfd_multiplier":       {expected: bgpBFDMultExpected, min: 2, max: 255},
	"bgp.communities":          {expected: "a list of communities"},
	"bgp.communities[]":        {expected: bgpCommunityExpected},
	"bgp.neighbors":            {expected: "a list of neighbors"},
	"bgp.neighbors[].address":  {expected: bgpNeighborExpected},
	"bgp.neighbors[].asn":      {expected: bgpASNExpected, min: 1, max: 1<<32 - 1},
	"bgp.neighbors[].port":     {expected: bgpPortExpected, min: 1, max: 65535},
	"bgp.neighbors[].password": {expected: bgpPasswordExpected},
}

func init() { maps.Copy(leaves, bgpLeaves) }

// bgpDefaults sets the bgp section's defaults (setDefaults).
func (c *Config) bgpDefaults(omitted func(path string, zero bool) bool) {
	b := &c.BGP
	num := func(path string, v *uint32, def uint32) {
		if omitted(path, *v == 0) {
			*v = def
		}
	}
	num("bgp.hold_time", &b.HoldTime, DefaultBGPHold)
	num("bgp.keepalive", &b.Keepalive, max(DefaultBGPKeep, b.HoldTime/3))
	num("bgp.drain_deadline", &b.DrainDeadline, DefaultBGPDrain)
	num("bgp.bfd_multiplier", &b.BFDMultiplier, 3)
	for i := range b.Neighbors {
		n := &b.Neighbors[i]
		if omitted(index("bgp.neighbors", i)+".port", n.Port == 0) {
			n.Port = 179
		}
	}
}

// ParseCommunity parses a standard community "ASN:VALUE".
func ParseCommunity(s string) (uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%q has no ':'", s)
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not ASN:VALUE with each part 0..65535", s)
	}
	return uint32(hi)<<16 | uint32(lo), nil
}

func (v *validator) bgp(b BGP) {
	if !b.Enabled() {
		return
	}
	if b.ASN == 0 {
		v.errorf("bgp.asn", "missing (expected %s)", bgpASNExpected)
	}
	if !b.RouterID.Is4() || b.RouterID.IsUnspecified() {
		v.errorf("bgp.router_id", "%s (expected %s)", describeAddr(b.RouterID), bgpRouterIDExpected)
	}
	if b.NextHop.IsValid() && (!b.NextHop.Unmap().Is4() || !unicast(b.NextHop)) {
		v.errorf("bgp.next_hop", "%s (expected %s)", b.NextHop, bgpNextHopExpected)
	}
	if b.NextHop6.IsValid() && (!b.NextHop6.Is6() || b.NextHop6.Is4In6() || !unicast(b.NextHop6)) {
		v.errorf("bgp.next_hop6", "%s (expected %s)", b.NextHop6, bgpNextHop6Expected)
	}
	if b.HoldTime < 3 || b.HoldTime > 65535 {
		v.errorf("bgp.hold_time", "%d (expected %s)", b.HoldTime, bgpHoldExpected)
	} else if b.Keepalive < 1 || b.Keepalive > b.HoldTime/3 {
		v.errorf("bgp.keepalive", "%d with hold_time %d (expected %s)", b.Keepalive, b.HoldTime, bgpKeepaliveExpected)
	}
	if b.AnnounceDelayMS > 600000 {
		v.errorf("bgp.announce_delay_ms", "%d (expected %s)", b.AnnounceDelayMS, bgpDelayExpected)
	}
	if b.DrainDeadline < 1 || b.DrainDeadline > 86400 {
		v.errorf("bgp.drain_deadline", "%d (expected %s)", b.DrainDeadline, bgpDrainExpected)
	}
	if n := b.BFDIntervalMS; n != 0 && (n < 10 || n > 10000) {
		v.errorf("bgp.bfd_interval_ms", "%d (expected %s)", n, bgpBFDExpected)
	}
	if n := b.BFDMultiplier; n < 2 || n > 255 {
		v.errorf("bgp.bfd_multiplier", "%d (expected %s)", n, bgpBFDMultExpected)
	}
	if len(b.Communities) > MaxBGPCommunities {
		v.errorf("bgp.communities", "%d communities, at most %d", len(b.Communities), MaxBGPCommunities)
	}
	for i, c := range b.Communities {
		if _, err := ParseCommunity(c); err != nil {
			v.errorf(index("bgp.communities", i), "%v (expected %s)", err, bgpCommunityExpected)
		}
	}
	if len(b.Neighbors) > MaxBGPNeighbors {
		v.errorf("bgp.neighbors", "%d neighbors, at most %d", len(b.Neighbors), MaxBGPNeighbors)
	}
	seen := map[netip.Addr]int{}
	for i, n := range b.Neighbors {
		p := index("bgp.neighbors", i)
		// A loopback neighbor is a router on this host (a local bird or
		// FRR that redistributes the VIPs).
		if !n.Address.IsValid() || !unicast(n.Address) && !n.Address.IsLoopback() {
			v.errorf(p+".address", "%s (expected %s)", describeAddr(n.Address), bgpNeighborExpected)
		} else if j, ok := seen[n.Address.Unmap()]; ok {
			v.errorf(p+".address", "%s is also bgp.neighbors[%d] (expected each neighbor once)", n.Address, j)
		} else {
			seen[n.Address.Unmap()] = i
		}
		if n.ASN == 0 {
			v.errorf(p+".asn", "missing (expected %s)", bgpASNExpected)
		}
		if n.Port == 0 {
			v.errorf(p+".port", "0 (expected %s)", bgpPortExpected)
		}
		if len(n.Password) > MaxBGPPassword {
			// The password is a secret: its length only.
			v.errorf(p+".password", "%d characters (expected %s)", len(n.Password), bgpPasswordExpected)
		}
	}
}

func unicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

func describeAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "missing"
	}
	return a.String()
}

func bgpEqualForRestart(a, b BGP) bool {
	// A reload may change announce_delay_ms and drain_deadline; the rest
	// shapes the speaker and its sessions.
	a.AnnounceDelayMS, b.AnnounceDelayMS = 0, 0
	a.DrainDeadline, b.DrainDeadline = 0, 0
	if len(a.Communities) != len(b.Communities) || len(a.Neighbors) != len(b.Neighbors) {
		return false
	}
	for i := range a.Communities {
		if a.Communities[i] != b.Communities[i] {
			return false
		}
	}
	for i := range a.Neighbors {
		if a.Neighbors[i] != b.Neighbors[i] {
			return false
		}
	}
	return a.ASN == b.ASN && a.RouterID == b.RouterID && a.ListenPort == b.ListenPort &&
		a.NextHop == b.NextHop && a.NextHop6 == b.NextHop6 && a.HoldTime == b.HoldTime && a.Keepalive == b.Keepalive &&
		a.BFDIntervalMS == b.BFDIntervalMS && a.BFDMultiplier == b.BFDMultiplier
}
