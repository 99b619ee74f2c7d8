// Package api is the distributor's local admin API: JSON over HTTP on a unix
// socket (owner-only) or a loopback address, its client, and the Prometheus
// metrics.
package api

import "net/netip"

// Status describes the running daemon.
type Status struct {
	ID              string      `json:"id"`
	ConfigPath      string      `json:"config_path"`
	LoadedAt        string      `json:"loaded_at"`
	Reloads         int         `json:"reloads"`
	LastReloadError string      `json:"last_reload_error,omitempty"`
	Interfaces      []Interface `json:"interfaces"`
}

// Interface is an interface the XDP program runs on.
type Interface struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	Index int    `json:"ifindex"`
	Mode  string `json:"mode"`
}

// Stats are the distributor's counters.
type Stats struct {
	ID              string         `json:"id"`
	Services        []ServiceStats `json:"services"`
	TrafficManagers []TMStats      `json:"traffic_managers"`
	Counters        []Counter      `json:"counters"`
	FlowEntries     uint64         `json:"flow_entries"`
	FlowCapacity    uint32         `json:"flow_capacity"`
	// HalfOpenEntries are the half-open TCP entries (a SYN, no ACK yet),
	// kept apart from the flow table; HalfOpenCapacity is its share of
	// FlowCapacity.
	HalfOpenEntries  uint64 `json:"half_open_entries"`
	HalfOpenCapacity uint32 `json:"half_open_capacity"`
	// FlowsByState counts flow-table entries by TCP phase (none, syn,
	// established, fin, closed, reset) or udp / other; FlowsByOrigin by
	// origin (selected, memorized, learned, second-key, mirror, peer).
	FlowsByState  map[string]uint64 `json:"flows_by_state,omitempty"`
	FlowsByOrigin map[string]uint64 `json:"flows_by_origin,omitempty"`
	// Aged counts entries the sweeper removed, by reason (the phase or
	// protocol whose timeout ran out, "related" for a related entry whose
	// parent ended, "half_open" for the half-open table).
	Aged map[string]uint64 `json:"aged,omitempty"`
	// LastSweep is the cost of the last sweep.
	LastSweep *SweepStats `json:"last_sweep,omitempty"`
	// FlowsCountedAt is when the active-flow counts were last computed (the
	// flow table is walked at most every few seconds).
	FlowsCountedAt string `json:"flows_counted_at"`
	// UDPSignals count the UDP signal transport's messages and ops: applied
	// (udp_sig_*) and refused by reason (udp_refused_*, udp_sig_refused_*).
	UDPSignals map[string]uint64 `json:"udp_signals,omitempty"`
	// Peers are the peer distributors flows are mirrored to and from
	// (docs/mirror.md); Mirror the protocol's counters by name.
	Peers  []PeerStats       `json:"peers,omitempty"`
	Mirror map[string]uint64 `json:"mirror,omitempty"`
}

// PeerStats is one peer distributor as `switchyard peers` shows it.
type PeerStats struct {
	Addr string `json:"addr"`
	ID   uint32 `json:"id"`
	// State: unknown (never heard), syncing, synced, silent.
	State     string `json:"state"`
	LastHeard string `json:"last_heard,omitempty"`
	// Lag: the peer's datagrams not received yet, by its last heartbeat.
	Lag      uint64 `json:"lag_datagrams"`
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Missing  uint64 `json:"missing"`
	Resyncs  uint64 `json:"resyncs"`
}

// ServiceStats are one service's counters.
type ServiceStats struct {
	Name     string `json:"name"`
	VIP      string `json:"vip"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	// Policy is the service's selection policy (services[].policy).
	Policy      string   `json:"policy,omitempty"`
	Index       uint32   `json:"index"`
	Eligible    []string `json:"eligible"`
	Packets     uint64   `json:"packets"`
	Bytes       uint64   `json:"bytes"`
	NewFlows    uint64   `json:"new_flows"`
	ActiveFlows uint64   `json:"active_flows"`
	// Health is the state of each checked TM (services[].health), by TM id.
	Health []HealthState `json:"health,omitempty"`
	// Fallback is true while new flows go to the fallback pool.
	Fallback bool `json:"fallback,omitempty"`
}

// HealthState is one TM's health for one service.
type HealthState struct {
	TM      string `json:"tm"`
	Healthy bool   `json:"healthy"`
	// Checked is false until the first probe has completed (TMs start
	// healthy).
	Checked   bool   `json:"checked"`
	LastError string `json:"last_error,omitempty"`
	// RTTSeconds is the last successful probe's time to answer.
	RTTSeconds float64 `json:"rtt_seconds"`
	// Changes counts transitions between healthy and unhealthy.
	Changes uint64 `json:"changes"`
	// Since is when the health last changed (RFC 3339).
	Since string `json:"since"`
}

// TMStats are one traffic manager's counters and state.
type TMStats struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	Index       uint32 `json:"index"`
	State       string `json:"state"` // active, draining, disabled, removed
	Weight      uint32 `json:"weight"`
	MAC         string `json:"mac,omitempty"`
	Ready       bool   `json:"ready"`
	Reason      string `json:"reason,omitempty"`
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	NewFlows    uint64 `json:"new_flows"`
	ActiveFlows uint64 `json:"active_flows"`

	// Addresses are all of the TM's addresses (traffic_managers[].address
	// or .addresses); Address is the first.
	Addresses []string `json:"addresses"`
}

// Counter is a global verdict or drop counter.
type Counter struct {
	Name    string `json:"name"`
	Drop    bool   `json:"drop"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Flow is one flow-table entry.
type Flow struct {
	Proto   string `json:"proto"`
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	VLAN    uint16 `json:"vlan,omitempty"`
	TM      string `json:"tm"`
	TMIndex uint16 `json:"tm_index"`
	Service string `json:"service,omitempty"`
	// Origin says where the entry came from: selected, memorized, learned,
	// second-key; mirror when a TM asked for it to be mirrored.
	Origin []string `json:"origin"`
	// Parent is, for an entry made by a second key, the flow that related
	// it ("persistence" for a service's persistence key).
	Parent      string  `json:"parent,omitempty"`
	IdleSeconds float64 `json:"idle_seconds"`
	// TimeoutSeconds is the entry's own idle timeout (0: the default).
	TimeoutSeconds uint16 `json:"timeout_seconds,omitempty"`
	TCPState       string `json:"tcp_state,omitempty"`
}

// FlowEvent is one flow event (GET /v1/flows/events, `switchyard flows
// --follow`): a flow entered the flow table (new), its TCP state moved
// (state), its entry was refused (refused: table full), a FORGET removed it
// (forgotten), or the sweeper removed it (expired, with the reason). "lost" tells how many events this
// follower lost (it did not keep up, or a sweep expired too many).
type FlowEvent struct {
	Type     string   `json:"type"`
	Time     uint32   `json:"time,omitempty"` // the data path's clock, seconds
	Proto    string   `json:"proto,omitempty"`
	Src      string   `json:"src,omitempty"`
	Dst      string   `json:"dst,omitempty"`
	VLAN     uint16   `json:"vlan,omitempty"`
	TM       string   `json:"tm,omitempty"`
	TMIndex  uint16   `json:"tm_index,omitempty"`
	Origin   []string `json:"origin,omitempty"`
	TCPState string   `json:"tcp_state,omitempty"`
	Reason   string   `json:"reason,omitempty"`
	Lost     uint64   `json:"lost,omitempty"`
}

// SweepStats is one sweep's cost: entries walked and removed, and time.
type SweepStats struct {
	At      string  `json:"at"`
	Seconds float64 `json:"seconds"`
	Walked  uint64  `json:"walked"`
	Removed uint64  `json:"removed"`
}

// FlowFilter selects flows; zero fields match everything.
type FlowFilter struct {
	Service string
	TM      string
	Addr    netip.Addr // source or destination
	Limit   int
}
