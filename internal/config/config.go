// Package config defines the distributor's YAML configuration: its schema,
// defaults and validation.
//
// Parse and Load decode the YAML through yaml.Node so that every error carries
// the line it is about. All problems found in a file are reported at once: the
// returned error is either a single *Error or an errors.Join of several, one
// per line; use errors.As to get at the first *Error, or Errors to get all of
// them.
//
// The operator's reference for the file format is docs/config.md.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// Defaults and limits.
const (
	DefaultMaxFlows    = 1000000
	MinMaxFlows        = 1024
	MaxMaxFlows        = 100000000
	DefaultTableSize   = 65537
	MinTableSize       = 1021
	MaxTableSize       = 1000003
	DefaultMaxServices = 64
	MaxMaxServices     = 1024
	DefaultWeight      = 1
	MaxWeight          = 1000
	// MaxTrafficManagers is the largest number of traffic managers a
	// distributor can address (a TM index fits in a byte).
	MaxTrafficManagers = 255
)

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
}

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
	// XDPMode is "auto" (default: native, falling back to generic with a log
	// line), "native" or "generic".
	XDPMode string `yaml:"xdp_mode"`
}

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

// Selection configures the selection of a TM for new flows.
type Selection struct {
	// TableSize is the size of each service's Maglev lookup table: a prime in
	// 1021..1000003, default 65537.
	TableSize uint32 `yaml:"table_size"`
	// MaxServices is the largest number of services; default 64, 1..1024.
	MaxServices uint32 `yaml:"max_services"`
}

// TrafficManager is a host that flows are distributed to.
type TrafficManager struct {
	// ID names the TM: unique, 1..32 characters of a-z, 0-9, '-', '_'.
	// Required.
	ID string `yaml:"id"`
	// Address is the TM's IPv4 or IPv6 unicast address. Required.
	Address netip.Addr `yaml:"address"`
	// Weight is the TM's static share of new flows relative to the other TMs
	// of a service; default 1, 1..1000.
	Weight uint32 `yaml:"weight"`
	// State is "active" (default), "draining" or "disabled"; see the State*
	// constants.
	State string `yaml:"state"`
	// MAC, if set, is the TM's static MAC address; neighbour resolution is
	// then skipped for this TM.
	MAC net.HardwareAddr `yaml:"mac"`
}

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

// Load reads and parses the configuration file at path; see Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes a YAML configuration, applies the defaults of omitted keys and
// validates the result. source names the data in errors (usually its file
// name). On error it returns a nil Config and every problem found.
func Parse(data []byte, source string) (*Config, error) {
	root, perr := parseYAML(data, source)
	if perr != nil {
		return nil, perr
	}
	d := &decoder{src: source, lines: map[string]int{"": root.Line}, bad: map[string]bool{}}
	c := d.config(root)
	v := &validator{src: source, lines: d.lines, bad: d.bad}
	v.config(c)
	errs := append(d.errs, v.errs...)
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, joinErrors(errs)
	}
	return c, nil
}

// Validate checks a complete configuration (with defaults applied: see
// ApplyDefaults) and returns every problem found, or nil. Errors from
// Validate carry paths but no lines; Parse validates with lines.
func (c *Config) Validate() error {
	v := &validator{}
	v.config(c)
	return joinErrors(v.errs)
}

// ApplyDefaults sets every zero-valued optional field of c to its default.
// Parse does this itself, only for omitted keys (an explicit 0 weight is an
// error, not a request for the default); ApplyDefaults is for configurations
// built in Go.
func (c *Config) ApplyDefaults() {
	if c.Distributor.API == "" && c.Distributor.ID != "" {
		c.Distributor.API = DefaultAPI(c.Distributor.ID)
	}
	if c.Distributor.XDPMode == "" {
		c.Distributor.XDPMode = XDPModeAuto
	}
	if c.FlowTable.MaxFlows == 0 {
		c.FlowTable.MaxFlows = DefaultMaxFlows
	}
	if c.Selection.TableSize == 0 {
		c.Selection.TableSize = DefaultTableSize
	}
	if c.Selection.MaxServices == 0 {
		c.Selection.MaxServices = DefaultMaxServices
	}
	for i := range c.TrafficManagers {
		tm := &c.TrafficManagers[i]
		if tm.Weight == 0 {
			tm.Weight = DefaultWeight
		}
		if tm.State == "" {
			tm.State = StateActive
		}
	}
}

// DefaultAPI is the admin API address used when distributor.api is omitted.
func DefaultAPI(id string) string {
	return "unix:/run/switchyard/" + id + ".sock"
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
