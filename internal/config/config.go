// Package config defines the distributor's YAML configuration: its schema,
// defaults and validation.
//
// The Config structs are the schema: their yaml tags name the keys, their
// field types say how values decode (decode.go walks the YAML tree along
// them), the leaves table says what each field expects, setDefaults holds
// every default, and RestartNeeded the keys a reload may not change. Marshal
// writes a Config back in the form Parse reads.
//
// Parse and Load decode through yaml.Node so that every error carries the
// line it is about. All problems found in a file are reported at once (up
// to MaxErrors): the returned error is either a single *Error or an
// errors.Join of several, one per line; use errors.As to get at the first
// *Error, or Errors to get all of them. Input is bounded (MaxFileSize,
// MaxNodes), so that no file can exhaust the daemon that reloads it.
//
// The operator's reference for the file format is docs/config.md.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"

	"github.com/switchyard/switchyard/internal/datapath"
	"go.yaml.in/yaml/v3"
)

// Defaults and limits.
const (
	DefaultMaxFlows    = 1000000
	MinMaxFlows        = 1024
	MaxMaxFlows        = 100000000
	MinRingSize        = 1021
	MaxRingSize        = 1000003
	DefaultMaxServices = 64
	MaxMaxServices     = 1024
	DefaultWeight      = 1
	MaxWeight          = 1000
	// MaxTrafficManagers is the largest number of traffic managers a
	// distributor can address (a TM index fits in a byte).
	MaxTrafficManagers = 255
	// MaxTMAddresses is the longest traffic_managers[].addresses list.
	MaxTMAddresses = 4

	// Idle timeouts, in seconds.
	DefaultTCPTimeout       = 900
	DefaultTCPSynTimeout    = 30
	DefaultTCPFinTimeout    = 120
	DefaultTCPCloseTimeout  = 10
	DefaultUDPTimeout       = 300
	DefaultOtherTimeout     = 60
	DefaultSecondKeyTimeout = 300
	MinTimeout              = 1
	MaxTimeout              = 604800 // a week

	// Second-key tables.
	DefaultSecondKeyMaxEntries = 65536
	MaxSecondKeyMaxEntries     = 10000000
	// MaxSecondKeyMasks is SY_MAX_MASKS of bpf/switchyard.h.
	MaxSecondKeyMasks = 6

	// MaxPersistenceTimeout is the largest services[].persistence.timeout, in
	// seconds (a day).
	MaxPersistenceTimeout = 86400

	// MinSignalKeyLen is the shortest traffic_managers[].signal_key, in bytes.
	MinSignalKeyLen = 16

	// DefaultSignalMulticastMAC is the default signals.multicast_mac.
	DefaultSignalMulticastMAC = "03:53:59:47:00:01"
)

// Field names of second-key masks (second_keys.masks,
// services[].persistence.mask).
const (
	FieldVLAN  = "vlan"
	FieldProto = "proto"
	FieldSrc   = "src"
	FieldDst   = "dst"
	FieldSport = "sport"
	FieldDport = "dport"
)

// fieldNames are the mask fields, in the order of their bits.
var fieldNames = []string{FieldVLAN, FieldProto, FieldSrc, FieldDst, FieldSport, FieldDport}

// fieldBits are the values of enum sy_field in bpf/switchyard.h.
var fieldBits = map[string]uint32{
	FieldVLAN:  0x1,
	FieldProto: 0x2,
	FieldSrc:   0x4,
	FieldDst:   0x8,
	FieldSport: 0x10,
	FieldDport: 0x20,
}

// MaskBits returns the bits of a second-key mask: the OR of its fields' bits
// (vlan=0x1, proto=0x2, src=0x4, dst=0x8, sport=0x10, dport=0x20: the values of
// enum sy_field in bpf/switchyard.h). Unknown field names add no bit; a
// validated configuration has none.
func MaskBits(fields []string) uint32 {
	var bits uint32
	for _, f := range fields {
		bits |= fieldBits[f]
	}
	return bits
}

// DefaultSecondKeyMasks returns (a fresh copy of) the default
// second_keys.masks: [proto, src, dst, dport], [proto, dst, dport],
// [proto, src, dst], [src].
func DefaultSecondKeyMasks() [][]string {
	return [][]string{
		{FieldProto, FieldSrc, FieldDst, FieldDport},
		{FieldProto, FieldDst, FieldDport},
		{FieldProto, FieldSrc, FieldDst},
		{FieldSrc},
	}
}

// DefaultPersistenceMask returns (a fresh copy of) the default
// services[].persistence.mask: [proto, src, dst, dport].
func DefaultPersistenceMask() []string {
	return []string{FieldProto, FieldSrc, FieldDst, FieldDport}
}

// DefaultMulticastMAC returns (a fresh copy of) DefaultSignalMulticastMAC.
func DefaultMulticastMAC() net.HardwareAddr {
	return net.HardwareAddr{0x03, 0x53, 0x59, 0x47, 0x00, 0x01}
}

// Interface roles.
const (
	RoleExternal = "external" // faces the clients (and the router)
	RoleInternal = "internal" // faces the traffic managers
)

// XDP attach modes.
const (
	XDPModeAuto    = "auto" // native, falling back to generic with a log line
	XDPModeNative  = "native"
	XDPModeGeneric = "generic"
)

// Traffic manager states.
const (
	// StateActive: the TM keeps its flows and gets new ones.
	StateActive = "active"
	// StateDraining: the TM keeps its flows until they end and gets no new ones.
	StateDraining = "draining"
	// StateDisabled: the TM gets no new flows and its existing flows are
	// re-selected to other TMs.
	StateDisabled = "disabled"
)

// Protocols.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// Config is a whole distributor configuration.
type Config struct {
	Distributor     Distributor      `yaml:"distributor"`
	FlowTable       FlowTable        `yaml:"flow_table"`
	Selection       Selection        `yaml:"selection"`
	TrafficManagers []TrafficManager `yaml:"traffic_managers"`
	Services        []Service        `yaml:"services"`
	Timeouts        Timeouts         `yaml:"timeouts"`
	SecondKeys      SecondKeys       `yaml:"second_keys"`
	Learning        Learning         `yaml:"learning"`
	Signals         Signals          `yaml:"signals"`
	Peers           Peers            `yaml:"peers"`
	BGP             BGP              `yaml:"bgp"`
}

// Peers configures mirroring flow entries to peer distributors
// (internal/mirror, docs/mirror.md). Without addresses it is off.
type Peers struct {
	// ID is this distributor's number among its peers: 1..4294967295,
	// unique among them. Required with addresses.
	ID uint32 `yaml:"id"`
	// Listen is the address:port the peer protocol binds (UDP). Required
	// with addresses.
	Listen string `yaml:"listen"`
	// Addresses are the other distributors' listen addresses, at most
	// MaxPeers.
	Addresses []string `yaml:"addresses"`
	// Key is the HMAC-SHA256 key all peers share, at least MinSignalKeyLen
	// bytes written in hex. Required with addresses.
	Key []byte `yaml:"key"`
	// Mirror is what is mirrored: "all" (default), "signalled" (only the
	// flows a TM asked to mirror with its MIRROR signal) or "older" (a flow
	// once it has lived MinAge seconds, and at once if a TM asked).
	Mirror string `yaml:"mirror"`
	// MinAge is, with mirror: older, how long a flow must have lived (in
	// seconds since it was made, 1..MaxPeerMinAge) before it is mirrored.
	// Required with older; refused with the other modes.
	MinAge uint32 `yaml:"min_age"`
}

// MaxPeerMinAge bounds peers.min_age (seconds).
const MaxPeerMinAge = 86400

// MaxPeers bounds peers.addresses.
const MaxPeers = 16

// Distributor describes this distributor and its interfaces.
type Distributor struct {
	// ID names this distributor: 1..32 characters of a-z, 0-9, '-', '_'.
	// Required.
	ID string `yaml:"id"`
	// Interfaces the XDP program attaches to. Required: at least one, and at
	// least one with role external.
	Interfaces []Interface `yaml:"interfaces"`
	// API is the admin API listen address: "unix:/path" or a loopback TCP
	// address "127.0.0.1:PORT" / "[::1]:PORT". The admin API is local-only:
	// other TCP addresses are refused. Default "unix:/run/switchyard/<id>.sock".
	API string `yaml:"api"`
	// APITokenFile is the file holding the admin API's bearer token: an
	// absolute path. Required when API is a TCP address; optional with a
	// unix socket (the socket is mode 0600: the file system guards it). Load
	// checks that it is a regular file, not readable or writable by group or
	// others, of 1..4096 bytes; see api.ReadTokenFile.
	APITokenFile string `yaml:"api_token_file"`
	// XDPMode is "auto" (default: native, falling back to generic with a log
	// line), "native" or "generic".
	XDPMode string `yaml:"xdp_mode"`
	// StateDir is where the daemon keeps state that must outlive a restart:
	// today the UDP control transport's replay state (<id>.replay), so that
	// a datagram accepted before a restart is refused after it. An absolute
	// path; default DefaultStateDir. Created (mode 0700) when UDP control is
	// on.
	StateDir string `yaml:"state_dir"`
	// PinDir is the bpffs directory where the data path (program links and
	// maps) is pinned, so that it outlives the daemon: a restarted daemon
	// adopts it (docs/operations.md, "Restart"). An absolute path under a
	// bpffs mount; default DefaultPinRoot/<id>.
	PinDir string `yaml:"pin_dir"`
	// Zone is this distributor's zone (site, rack): services with policy
	// topology prefer the TMs tagged with it. Optional, an id's characters.
	Zone string `yaml:"zone"`
}

// DefaultPinRoot holds each distributor's pin directory when
// distributor.pin_dir is omitted: DefaultPinRoot/<id>.
const DefaultPinRoot = "/sys/fs/bpf/switchyard"

// DefaultStateDir is distributor.state_dir when it is omitted.
const DefaultStateDir = "/var/lib/switchyard"

// Interface is a network interface of the distributor.
type Interface struct {
	// Name is the Linux interface name: 1..15 characters, no '/', ':' or
	// whitespace, unique within the distributor.
	Name string `yaml:"name"`
	// Role is "external" (clients) or "internal" (traffic managers).
	Role string `yaml:"role"`
}

// FlowTable sizes the flow table.
type FlowTable struct {
	// MaxFlows is the number of flow-table entries; default 1000000,
	// 1024..100000000.
	MaxFlows uint32 `yaml:"max_flows"`
}

// Timeouts are idle timeouts in seconds: a flow-table entry idle longer is
// removed by the sweeper. Each is 1..604800 (a week).
type Timeouts struct {
	// TCP: established TCP flows (and those a signal made); default 900.
	TCP uint32 `yaml:"tcp"`
	// TCPSyn: half-open TCP flows (a SYN, no ACK yet); default 30.
	TCPSyn uint32 `yaml:"tcp_syn"`
	// TCPFin: TCP flows after a valid FIN from one side; default 120.
	TCPFin uint32 `yaml:"tcp_fin"`
	// TCPClose: TCP flows after valid FINs from both sides or a valid RST;
	// default 10.
	TCPClose uint32 `yaml:"tcp_close"`
	// UDP: UDP flows; default 300.
	UDP uint32 `yaml:"udp"`
	// Other: flows of other protocols; default 60.
	Other uint32 `yaml:"other"`
	// SecondKey: second-key entries whose signal gave no timeout; default 300.
	SecondKey uint32 `yaml:"second_key"`
}

// SecondKeys configures the second-key tables (one per mask, checked in
// order): used by RELATE signals, source persistence and fallbacks.
type SecondKeys struct {
	// Masks are the second-key masks, most specific first; each a list of
	// field names from vlan, proto, src, dst, sport, dport (see the Field*
	// constants and MaskBits): at least one field, no duplicates within a
	// mask, no duplicate masks (the same set of fields in another order is
	// the same mask), 1..6 masks. Default: DefaultSecondKeyMasks().
	Masks [][]string `yaml:"masks"`
	// MaxEntries is the size of each second-key table; default 65536,
	// 1..10000000.
	MaxEntries uint32 `yaml:"max_entries"`
}

// Learning configures the flows the distributor learns from its TMs' own
// traffic.
type Learning struct {
	// SNATAddresses are source addresses the TMs share for server-side
	// connections: a SYN or first UDP packet a TM sends from one of them (or
	// from its own address) memorizes the reverse flow to that TM. Unicast,
	// no duplicates, not a VIP nor a TM address.
	SNATAddresses []netip.Addr `yaml:"snat_addresses"`
}

// Signals configures the signal transports.
type Signals struct {
	// MulticastMAC: signal frames sent to this MAC are accepted by every
	// distributor on the segment. Default DefaultSignalMulticastMAC; must be
	// a multicast MAC (lowest bit of the first octet set), not the broadcast
	// MAC.
	MulticastMAC net.HardwareAddr `yaml:"multicast_mac"`
	// UDPListen is the address:port of the authenticated UDP control
	// transport (netip.ParseAddrPort form, port 1..65535); empty = off.
	UDPListen string `yaml:"udp_listen"`
}

// Selection configures the selection of a TM for new flows.
type Selection struct {
	// RingSize is the size of each service's Maglev ring: a prime in
	// 1021..1000003, default 65537.
	RingSize uint32 `yaml:"ring_size"`
	// MaxServices is the largest number of services; default 64, 1..1024.
	MaxServices uint32 `yaml:"max_services"`
}

// TrafficManager is a host that flows are distributed to.
type TrafficManager struct {
	// ID names the TM: unique, 1..32 characters of a-z, 0-9, '-', '_'.
	// Required.
	ID string `yaml:"id"`
	// Address is the TM's IPv4 or IPv6 unicast address: the single-address
	// form. Exactly one of Address and Addresses is required.
	Address netip.Addr `yaml:"address"`
	// Addresses are the TM host's addresses on the internal segment, e.g.
	// one IPv4 and one IPv6: 1..MaxTMAddresses unicast addresses, unique
	// across all TMs, all of one host (one MAC, one interface). One TM,
	// one index, one MAC: its signals are accepted and learning applies
	// from each address.
	Addresses []netip.Addr `yaml:"addresses"`
	// Weight is the TM's static share of new flows relative to the other TMs
	// of a service; default 1, 1..1000.
	Weight uint32 `yaml:"weight"`
	// State is "active" (default), "draining" or "disabled"; see the State*
	// constants.
	State string `yaml:"state"`
	// MAC, if set, is the TM's static MAC address; neighbour resolution is
	// then skipped for this TM.
	MAC net.HardwareAddr `yaml:"mac"`
	// SignalKey is the HMAC-SHA256 key of this TM's UDP control messages,
	// written hex-encoded in the file, at least 16 bytes (32 hex digits).
	// Optional: a TM without one cannot use UDP control.
	SignalKey []byte `yaml:"signal_key"`
	// AgentStats is the address and port of the TM agent's read-only stats
	// listener (`switchyard agent --stats-listen`), which the distributor
	// polls for the load reports of policy ratio-dynamic; empty = none.
	AgentStats string `yaml:"agent_stats"`
	// Tags label the TM (its zone, rack, class): policy topology prefers
	// the TMs tagged with the distributor's zone. At most MaxTMTags, each
	// an id's characters.
	Tags []string `yaml:"tags"`
}

// MaxTMTags bounds traffic_managers[].tags.
const MaxTMTags = 8

// Service is a VIP (address, port or all ports, protocol) with a pool of TMs.
type Service struct {
	// Name names the service: unique, 1..64 characters of A-Z, a-z, 0-9,
	// '.', '-', '_'. Required.
	Name string `yaml:"name"`
	// VIP is the service's virtual IPv4 or IPv6 address. Required.
	VIP netip.Addr `yaml:"vip"`
	// Port is the service's port, 1..65535; 0 (or omitted) means all ports
	// of the VIP for that protocol. A service on a specific port wins over an
	// all-ports service on the same VIP and protocol.
	Port uint16 `yaml:"port"`
	// Protocol is "tcp" or "udp". Required.
	Protocol string `yaml:"protocol"`
	// TrafficManagers is the service's pool: ids of traffic_managers entries,
	// at least one, no duplicates.
	TrafficManagers []string `yaml:"traffic_managers"`
	// Persistence, if set, keeps a client's new flows on the TM of its
	// previous ones; nil = none.
	Persistence *Persistence `yaml:"persistence"`
	// Timeouts, if set, override the global idle timeouts for the flows
	// this service selected; a zero (omitted) field keeps the global one.
	Timeouts *ServiceTimeouts `yaml:"timeouts"`
	// Health, if set, probes each TM of the pool (and of the fallback
	// pool) for this service; an unhealthy TM gets no new flows of it.
	// nil = no checks: a TM is eligible as soon as its MAC resolves.
	Health *Health `yaml:"health"`
	// FallbackTrafficManagers is the pool used while no TM of
	// TrafficManagers is eligible (all unhealthy, draining, disabled or
	// unresolved); empty = new flows of the service are then dropped
	// (counted as drop_no_tm). Ids of traffic_managers entries, no duplicates.
	FallbackTrafficManagers []string `yaml:"fallback_traffic_managers"`
	// MinEligible makes the pool and the fallback pool priority groups:
	// new flows go to the fallback pool while fewer than MinEligible TMs
	// of the pool are eligible and at least MinEligible of the fallback
	// pool are (or the pool has none). Default 1, 1..255.
	MinEligible uint32 `yaml:"min_eligible"`
	// PriorityGroups are more priority groups after the pool (and the
	// fallback pool, which they exclude): new flows go to the first group,
	// the pool first, with at least its MinEligible eligible TMs; with
	// none such, to the first group with any. At most MaxPriorityGroups.
	PriorityGroups []PriorityGroup `yaml:"priority_groups"`
	// QoS is the class of policy qos: new flows whose packet's DSCP is in
	// it prefer the pool's TMs tagged with its tag. Required with policy
	// qos, refused with any other.
	QoS *QoS `yaml:"qos"`
	// Policy is how a new flow's TM is chosen: "maglev" (default) or
	// "hash", the same thing under the name operators look for: a Maglev
	// ring indexed by the Hash of the flow, so that weights are static
	// ratios and only the flows of a TM that leaves or joins move;
	// "round-robin" or "weighted-round-robin": the ring read in turn (per
	// CPU), each TM once, or as often as its weight, per round;
	// "fastest-rtt"; "least-connections" or "weighted-least-connections":
	// of two TMs drawn by the flow's hash, the one with fewer active flows
	// (per unit of weight); "packet-rate" or "completion-rate": Maglev
	// with weights from the data path's per-TM packet rate (inversely) or
	// share of flows ending by FIN; "ratio-dynamic": Maglev with weights
	// from the load the TMs' agents report.
	Policy string `yaml:"policy"`
	// Hash is what the ring is indexed by: "5-tuple" (default), "src-ip",
	// "dst-ip", "src-ip-port", "port" (the destination port), "symmetric"
	// (the protocol and the larger port: the same for both directions of
	// a flow, and across a NAT that keeps the larger port) or
	// "symmetric-addr" (the larger port and the address that has it).
	Hash string `yaml:"hash"`
}

// PriorityGroup is one of a service's further priority groups
// (services[].priority_groups).
type PriorityGroup struct {
	// TrafficManagers are the group's TMs: ids of traffic_managers
	// entries, at least one, none in the pool or another group.
	TrafficManagers []string `yaml:"traffic_managers"`
	// MinEligible is how many of its TMs must be eligible for the group
	// to take new flows before a lower group; default 1, 1..255.
	MinEligible uint32 `yaml:"min_eligible"`
}

// QoS is a service's QoS class (services[].qos).
type QoS struct {
	// DSCP are the class's DSCP values, 0..63, at least one.
	DSCP []uint32 `yaml:"dscp"`
	// Tag is the tag (traffic_managers[].tags) of the class's preferred
	// TMs.
	Tag string `yaml:"tag"`
}

// MaxQoSServices bounds the services with policy qos: the data path's
// class rings (datapath.PolicyQoSRings).
const MaxQoSServices = 16

// MaxPriorityGroups bounds services[].priority_groups.
const MaxPriorityGroups = 16

// Groups are the service's priority groups in order: the pool (with
// MinEligible), the fallback pool (with MinEligible), then PriorityGroups.
func (s Service) Groups() []PriorityGroup {
	out := []PriorityGroup{{TrafficManagers: s.TrafficManagers, MinEligible: s.MinEligible}}
	if len(s.FallbackTrafficManagers) > 0 {
		out = append(out, PriorityGroup{TrafficManagers: s.FallbackTrafficManagers, MinEligible: s.MinEligible})
	}
	return append(out, s.PriorityGroups...)
}

// AllTrafficManagers are the ids of every TM the service may use: its
// groups' in order.
func (s Service) AllTrafficManagers() []string {
	var out []string
	for _, g := range s.Groups() {
		out = append(out, g.TrafficManagers...)
	}
	return out
}

// Selection policies (services[].policy).
const (
	PolicyMaglev = "maglev"
	PolicyHash   = "hash"
	// PolicyRoundRobin: new flows take the TMs in turn, weights ignored.
	PolicyRoundRobin = "round-robin"
	// PolicyWeightedRoundRobin: in turn, each TM as often as its weight.
	PolicyWeightedRoundRobin = "weighted-round-robin"
	// PolicyFastestRTT: Maglev with weights from the health probes' damped
	// round-trip times (health required).
	PolicyFastestRTT = "fastest-rtt"
	// PolicyLeastConnections: of two TMs drawn by the flow's hash, the one
	// with fewer active flows (counted by the data path), weights ignored.
	PolicyLeastConnections = "least-connections"
	// PolicyWeightedLeastConnections: the same, drawn by weight and with
	// the active flows divided by each TM's weight.
	PolicyWeightedLeastConnections = "weighted-least-connections"
	// PolicyPacketRate: Maglev with weights inversely proportional to each
	// TM's damped packet rate seen by the data path.
	PolicyPacketRate = "packet-rate"
	// PolicyCompletionRate: Maglev with weights proportional to each TM's
	// damped share of TCP flows that end by FIN (against reset or timeout).
	PolicyCompletionRate = "completion-rate"
	// PolicyRatioDynamic: Maglev with weights from the load the TMs'
	// agents report (CPU, active flows, new flows per second), polled at
	// traffic_managers[].agent_stats.
	PolicyRatioDynamic = "ratio-dynamic"
	// PolicyPriorityGroups: Maglev over the first priority group with
	// enough eligible TMs (priority_groups required); the groups apply to
	// every policy, this name says that they are the point.
	PolicyPriorityGroups = "priority-groups"
	// PolicyTopology: Maglev over the pool's TMs tagged with the
	// distributor's zone, spilling over to the rest of the pool (then the
	// further groups) when fewer than min_eligible of them are eligible.
	PolicyTopology = "topology"
	// PolicyHopMetric: Maglev over the pool's TMs with the lowest route
	// metric from the distributor, then the next metric, as priority
	// groups of min_eligible.
	PolicyHopMetric = "hop-metric"
	// PolicyQoS: Maglev; new flows of the QoS class (services[].qos: a
	// set of DSCPs) prefer the pool's TMs tagged with the class's tag,
	// spilling over to the whole pool when fewer than min_eligible of
	// them are eligible.
	PolicyQoS = "qos"
)

// IsMeasured reports whether policy weighs TMs by what the distributor
// measures each interval (packet-rate, completion-rate, ratio-dynamic).
func IsMeasured(policy string) bool {
	return policy == PolicyPacketRate || policy == PolicyCompletionRate || policy == PolicyRatioDynamic
}

// IsLeastConnections reports whether policy chooses by the data path's
// active-flow counters.
func IsLeastConnections(policy string) bool {
	return policy == PolicyLeastConnections || policy == PolicyWeightedLeastConnections
}

// IsRoundRobin reports whether policy reads the ring in turn rather than
// by hash.
func IsRoundRobin(policy string) bool {
	return policy == PolicyRoundRobin || policy == PolicyWeightedRoundRobin
}

// Hashes (services[].hash).
const (
	Hash5Tuple       = "5-tuple"
	HashSrcIP        = "src-ip"
	HashDstIP        = "dst-ip"
	HashSrcIPPort    = "src-ip-port"
	HashPort         = "port"
	HashSymmetric    = "symmetric"
	HashSymmetricAdr = "symmetric-addr"
)

// hashBits are the data path's sy_svc.hash values of the hashes.
var hashBits = map[string]uint32{
	Hash5Tuple:       0,
	HashSrcIP:        datapath.FieldSrc,
	HashDstIP:        datapath.FieldDst,
	HashSrcIPPort:    datapath.FieldSrc | datapath.FieldSrcPort,
	HashPort:         datapath.FieldDstPort,
	HashSymmetric:    datapath.HashSymPort,
	HashSymmetricAdr: datapath.HashSymAddr,
}

// HashBits returns the data path's value of a services[].hash (0, the
// whole key, for "5-tuple" or an unknown name; a validated configuration
// has none).
func HashBits(h string) uint32 { return hashBits[h] }

// ServiceTimeouts are a service's own idle timeouts in seconds, 1..604800;
// 0 (omitted) keeps the global one (timeouts).
type ServiceTimeouts struct {
	TCP      uint32 `yaml:"tcp"`
	TCPSyn   uint32 `yaml:"tcp_syn"`
	TCPFin   uint32 `yaml:"tcp_fin"`
	TCPClose uint32 `yaml:"tcp_close"`
	UDP      uint32 `yaml:"udp"`
}

// Apply returns t with s's non-zero fields in place of t's (s may be nil).
func (s *ServiceTimeouts) Apply(t Timeouts) Timeouts {
	if s == nil {
		return t
	}
	for _, f := range []struct{ from, to *uint32 }{{&s.TCP, &t.TCP}, {&s.TCPSyn, &t.TCPSyn},
		{&s.TCPFin, &t.TCPFin}, {&s.TCPClose, &t.TCPClose}, {&s.UDP, &t.UDP}} {
		if *f.from != 0 {
			*f.to = *f.from
		}
	}
	return t
}

// Health check kinds (services[].health.type).
const (
	HealthTCP   = "tcp"
	HealthHTTP  = "http"
	HealthHTTPS = "https"
	HealthUDP   = "udp"
)

// What an unhealthy TM's established flows do (services[].health.on_unhealthy).
const (
	// OnUnhealthyKeep: established flows stay on the TM (stateful services).
	OnUnhealthyKeep = "keep"
	// OnUnhealthyReselect: established flows of the service are removed
	// from the flow table, so that their next packet selects a healthy TM
	// (stateless services).
	OnUnhealthyReselect = "reselect"
)

// Health-check defaults and limits.
const (
	DefaultHealthIntervalMS = 2000
	DefaultHealthTimeoutMS  = 1000
	DefaultHealthRise       = 2
	DefaultHealthFall       = 3
	MinHealthIntervalMS     = 10
	MaxHealthIntervalMS     = 3600000
	MaxHealthRiseFall       = 100
	MaxHealthPayload        = 512
	MaxHealthPath           = 256
)

// Health is a service's health check of its TMs, run from the
// distributor's network namespace against each TM's address (the first of
// the VIP's family, else the first).
type Health struct {
	// Type is "tcp" (a connection is accepted), "http" or "https" (a GET
	// answers with the expected status; the certificate is not verified)
	// or "udp" (a datagram gets an answer). Required.
	Type string `yaml:"type"`
	// Port is the TM's port to probe; default the service's port, required
	// for an all-ports service.
	Port uint16 `yaml:"port"`
	// IntervalMS is the time between probes, in milliseconds; default 2000,
	// 10..3600000.
	IntervalMS uint32 `yaml:"interval_ms"`
	// TimeoutMS bounds each probe, in milliseconds; default 1000, at least
	// 10 and at most interval_ms.
	TimeoutMS uint32 `yaml:"timeout_ms"`
	// Rise is how many successes in a row make an unhealthy TM healthy;
	// default 2, 1..100.
	Rise uint32 `yaml:"rise"`
	// Fall is how many failures in a row make a healthy TM unhealthy;
	// default 3, 1..100.
	Fall uint32 `yaml:"fall"`
	// Path is the HTTP(S) request path; default "/", must start with '/',
	// at most 256 bytes of printable ASCII without spaces.
	Path string `yaml:"path"`
	// Status is the HTTP(S) status expected, 100..599; 0 or omitted = any
	// 2xx or 3xx.
	Status uint16 `yaml:"status"`
	// Send is the UDP probe's payload, at most 512 bytes.
	Send string `yaml:"send"`
	// Expect is a substring the UDP answer must hold, at most 512 bytes;
	// empty = any answer.
	Expect string `yaml:"expect"`
	// OnUnhealthy is what the TM's established flows of this service do
	// when it turns unhealthy: "keep" (default) or "reselect".
	OnUnhealthy string `yaml:"on_unhealthy"`
}

// Persistence sends a client's new flows to the TM its previous one went to,
// while the client keeps coming within Timeout (like IPVS persistence
// templates).
type Persistence struct {
	// Timeout is in seconds, 1..86400. Required.
	Timeout uint32 `yaml:"timeout"`
	// Mask is the fields that identify "the same client": default
	// DefaultPersistenceMask() ([proto, src, dst, dport]); must be one of
	// second_keys.masks (as a set of fields).
	Mask []string `yaml:"mask"`
}

// Error is one problem in a configuration: where it is (Source, Line, Path),
// and what is wrong and what was expected (Msg).
type Error struct {
	Source string // file name given to Load or Parse; may be empty
	Line   int    // 1-based line in Source; 0 if unknown
	Path   string // e.g. "services[1].vip"; empty for the file as a whole
	Msg    string // e.g. `"10.0.0.300" is not an IP address (expected an IPv4 or IPv6 address)`

	// bare: Msg already names the place (unknown keys); Error() does not
	// prefix it with Path.
	bare bool
}

// Error formats e as "source:line: path: msg".
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Source != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.Source, e.Line)
	case e.Source != "":
		fmt.Fprintf(&b, "%s: ", e.Source)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" && !e.bare {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors returns every *Error in err (which Parse, Load and Validate return
// as a single *Error or an errors.Join of them), in order.
func Errors(err error) []*Error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		return []*Error{e}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, x := range j.Unwrap() {
			out = append(out, Errors(x)...)
		}
		return out
	}
	var e *Error
	if errors.As(err, &e) {
		return []*Error{e}
	}
	return nil
}

// joinErrors returns nil, the only error, or an errors.Join of errs.
func joinErrors(errs []*Error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	es := make([]error, len(errs))
	for i, e := range errs {
		es[i] = e
	}
	return errors.Join(es...)
}

// Load reads and parses the configuration file at path (see Parse), and
// checks the files it names (distributor.api_token_file). It reads at most
// MaxFileSize bytes and refuses anything but a regular file (a FIFO or
// /dev/zero would never end).
func Load(path string) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return parse(data, path, &validator{files: true})
}

// Check loads the file at path like Load and also checks the host, for
// `switchyard distributor --check`: every distributor.interfaces[].name must
// name an interface that exists, which linkExists (in practice
// netlink.LinkByName, in the distributor's network namespace) reports with
// a nil error. A missing interface is one more error with its line, among
// the others.
func Check(path string, linkExists func(name string) error) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return parse(data, path, &validator{files: true, links: linkExists})
}

// readConfig reads a regular file of at most MaxFileSize bytes.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{Source: path, Msg: fmt.Sprintf("not a regular file but %s (expected a YAML file)", describeMode(fi.Mode()))}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, &Error{Source: path, Msg: fmt.Sprintf("the file is larger than %d bytes (expected at most %d bytes, MaxFileSize)", MaxFileSize, MaxFileSize)}
	}
	return data, nil
}

// describeMode names the type of a file that is not regular.
func describeMode(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "a special file (" + m.Type().String() + ")"
}

// Parse decodes a YAML configuration, applies the defaults of omitted keys and
// validates the result. source names the data in errors (usually its file
// name). On error it returns a nil Config and every problem found (at most
// MaxErrors of them, then a count of the rest). Parse reads no files: Load
// also checks distributor.api_token_file.
func Parse(data []byte, source string) (*Config, error) {
	return parse(data, source, &validator{})
}

// parse decodes and validates data; v says what the validation also checks
// beyond the file (files, interfaces).
func parse(data []byte, source string, v *validator) (c *Config, err error) {
	// A bug here must not take down a running daemon that reloads a file:
	// it becomes an error (FuzzParse looks for such bugs).
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, &Error{Source: source, Msg: fmt.Sprintf("internal error while reading the config (please report it): %v", r)}
		}
	}()
	root, perr := parseYAML(data, source)
	if perr != nil {
		return nil, perr
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Source: source, Line: root.Line, Msg: fmt.Sprintf("the document is %s (expected a mapping with keys %s)", describe(root), strings.Join(keysOf(configType), ", "))}
	}
	errs := &errList{}
	d := &decoder{src: source, errs: errs, lines: map[string]int{"": root.Line}, given: map[string]bool{}}
	c = &Config{}
	d.mapping(root, reflect.ValueOf(c).Elem(), "", "")
	if !d.given["distributor"] && !d.bad["distributor"] {
		d.errorf(root, "distributor", "missing (expected a mapping with keys %s)", strings.Join(keysOf(reflect.TypeOf(Distributor{})), ", "))
	}
	c.setDefaults(func(path string, zero bool) bool { return !d.given[path] })
	v.src, v.lines, v.marks, v.errs = source, d.lines, d.marks, errs
	v.config(c)
	if errs.total > 0 {
		return nil, errs.err(source)
	}
	return c, nil
}

// ParseServices decodes a YAML list of services, the items of a config's
// services key, with the limits and decoding errors of Parse. It applies no
// defaults and does not validate the services (that needs the whole
// config): it is for tools and tests that add services to a Config built in
// Go, which they then validate or marshal.
func ParseServices(data []byte, source string) ([]Service, error) {
	root, perr := parseYAML(data, source)
	if perr != nil {
		return nil, perr
	}
	errs := &errList{}
	d := &decoder{src: source, errs: errs, lines: map[string]int{}, given: map[string]bool{}}
	var svcs []Service
	d.value(root, reflect.ValueOf(&svcs).Elem(), "services", "services")
	if errs.total > 0 {
		return nil, errs.err(source)
	}
	return svcs, nil
}

// Validate checks a complete configuration (with defaults applied: see
// ApplyDefaults) and returns every problem found, or nil. Errors from
// Validate carry paths but no lines; Parse validates with lines. Validate
// reads no files.
func (c *Config) Validate() error {
	v := &validator{errs: &errList{}}
	v.config(c)
	return v.errs.err("")
}

// ApplyDefaults sets every zero-valued optional field of c to its default.
// Parse applies the same defaults, only to omitted keys (an explicit 0 weight
// is an error, not a request for the default); ApplyDefaults is for
// configurations built in Go.
func (c *Config) ApplyDefaults() {
	c.setDefaults(func(_ string, zero bool) bool { return zero })
}

// setDefaults is the one place that knows the defaults. omitted reports
// whether the field at a key path (zero: whether it holds its zero value)
// was left out and takes its default.
func (c *Config) setDefaults(omitted func(path string, zero bool) bool) {
	str := func(path string, v *string, def string) {
		if omitted(path, *v == "") {
			*v = def
		}
	}
	num := func(path string, v *uint32, def uint32) {
		if omitted(path, *v == 0) {
			*v = def
		}
	}
	// The default API socket is named after the id; without a valid id there
	// is none (the id's error says why).
	if validID(c.Distributor.ID) {
		str("distributor.api", &c.Distributor.API, DefaultAPI(c.Distributor.ID))
	}
	str("distributor.xdp_mode", &c.Distributor.XDPMode, XDPModeAuto)
	str("distributor.state_dir", &c.Distributor.StateDir, DefaultStateDir)
	str("peers.mirror", &c.Peers.Mirror, "all")
	num("flow_table.max_flows", &c.FlowTable.MaxFlows, DefaultMaxFlows)
	num("selection.ring_size", &c.Selection.RingSize, datapath.DefaultRingSize)
	num("selection.max_services", &c.Selection.MaxServices, DefaultMaxServices)
	for i := range c.TrafficManagers {
		tm, p := &c.TrafficManagers[i], index("traffic_managers", i)
		num(p+".weight", &tm.Weight, DefaultWeight)
		str(p+".state", &tm.State, StateActive)
	}
	for i := range c.Services {
		if p := c.Services[i].Persistence; p != nil && omitted(index("services", i)+".persistence.mask", p.Mask == nil) {
			p.Mask = DefaultPersistenceMask()
		}
		str(index("services", i)+".policy", &c.Services[i].Policy, PolicyMaglev)
		num(index("services", i)+".min_eligible", &c.Services[i].MinEligible, 1)
		for j := range c.Services[i].PriorityGroups {
			num(index(index("services", i)+".priority_groups", j)+".min_eligible", &c.Services[i].PriorityGroups[j].MinEligible, 1)
		}
		str(index("services", i)+".hash", &c.Services[i].Hash, Hash5Tuple)
		if h, p := c.Services[i].Health, index("services", i)+".health"; h != nil {
			num(p+".interval_ms", &h.IntervalMS, DefaultHealthIntervalMS)
			num(p+".timeout_ms", &h.TimeoutMS, min(DefaultHealthTimeoutMS, h.IntervalMS))
			num(p+".rise", &h.Rise, DefaultHealthRise)
			num(p+".fall", &h.Fall, DefaultHealthFall)
			str(p+".on_unhealthy", &h.OnUnhealthy, OnUnhealthyKeep)
			if h.Type == HealthHTTP || h.Type == HealthHTTPS {
				str(p+".path", &h.Path, "/")
			}
			if omitted(p+".port", h.Port == 0) {
				h.Port = c.Services[i].Port
			}
		}
	}
	t := &c.Timeouts
	num("timeouts.tcp", &t.TCP, DefaultTCPTimeout)
	num("timeouts.tcp_syn", &t.TCPSyn, DefaultTCPSynTimeout)
	num("timeouts.tcp_fin", &t.TCPFin, DefaultTCPFinTimeout)
	num("timeouts.tcp_close", &t.TCPClose, DefaultTCPCloseTimeout)
	num("timeouts.udp", &t.UDP, DefaultUDPTimeout)
	num("timeouts.other", &t.Other, DefaultOtherTimeout)
	num("timeouts.second_key", &t.SecondKey, DefaultSecondKeyTimeout)
	if omitted("second_keys.masks", c.SecondKeys.Masks == nil) {
		c.SecondKeys.Masks = DefaultSecondKeyMasks()
	}
	num("second_keys.max_entries", &c.SecondKeys.MaxEntries, DefaultSecondKeyMaxEntries)
	if omitted("signals.multicast_mac", c.Signals.MulticastMAC == nil) {
		c.Signals.MulticastMAC = DefaultMulticastMAC()
	}
	c.bgpDefaults(omitted)
}

// DefaultTimeouts returns the default timeouts.
func DefaultTimeouts() Timeouts {
	var c Config
	c.ApplyDefaults()
	return c.Timeouts
}

// DefaultAPI is the admin API address used when distributor.api is omitted.
func DefaultAPI(id string) string {
	return "unix:/run/switchyard/" + id + ".sock"
}

// AllAddresses returns the TM's addresses: Addresses, or Address alone
// (the single-address form), in config order.
func (t TrafficManager) AllAddresses() []netip.Addr {
	if len(t.Addresses) > 0 {
		return t.Addresses
	}
	if t.Address.IsValid() {
		return []netip.Addr{t.Address}
	}
	return nil
}

// TM returns the traffic manager with the given id.
func (c *Config) TM(id string) (TrafficManager, bool) {
	for _, tm := range c.TrafficManagers {
		if tm.ID == id {
			return tm, true
		}
	}
	return TrafficManager{}, false
}
