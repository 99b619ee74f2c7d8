package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Keys of each mapping, in the order they are listed in errors.
var (
	topKeys         = []string{"distributor", "flow_table", "selection", "traffic_managers", "services", "timeouts", "second_keys", "learning", "signals"}
	distributorKeys = []string{"id", "interfaces", "api", "xdp_mode"}
	interfaceKeys   = []string{"name", "role"}
	flowTableKeys   = []string{"max_flows"}
	selectionKeys   = []string{"table_size", "max_services"}
	tmKeys          = []string{"id", "address", "weight", "state", "mac", "signal_key"}
	serviceKeys     = []string{"name", "vip", "port", "protocol", "traffic_managers", "persistence"}
	persistenceKeys = []string{"timeout", "mask"}
	timeoutsKeys    = []string{"tcp", "tcp_closing", "udp", "other", "second_key"}
	secondKeysKeys  = []string{"masks", "max_entries"}
	learningKeys    = []string{"snat_addresses"}
	signalsKeys     = []string{"multicast_mac", "udp_listen"}
)

// offByOne are YAML parser errors whose line go.yaml.in/yaml/v3 reports 0-based.
var offByOne = []string{"did not find expected", "found a tab character that violates indentation"}

var yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// parseYAML parses data into its root node, which must be a mapping. It never
// panics.
func parseYAML(data []byte, source string) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, &Error{Source: source, Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Source: source, Msg: "empty config (expected a mapping with keys " + strings.Join(topKeys, ", ") + ")"}
		}
		return nil, yamlError(err, source)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &Error{Source: source, Line: next.Line, Msg: "a second YAML document (expected exactly one document)"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err, source)
	}
	root = &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, &Error{Source: source, Msg: "empty config (expected a mapping with keys " + strings.Join(topKeys, ", ") + ")"}
		}
		root = root.Content[0]
	}
	root = resolve(root)
	if isNull(root) {
		return nil, &Error{Source: source, Line: root.Line, Msg: "empty config (expected a mapping with keys " + strings.Join(topKeys, ", ") + ")"}
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Source: source, Line: root.Line, Msg: fmt.Sprintf("the document is %s (expected a mapping with keys %s)", describe(root), strings.Join(topKeys, ", "))}
	}
	return root, nil
}

func yamlError(err error, source string) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		// The YAML parser reports the line of these errors 0-based.
		for _, p := range offByOne {
			if strings.HasPrefix(m[2], p) {
				line++
				break
			}
		}
		return &Error{Source: source, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{Source: source, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe says what a node is, for "got X (expected Y)" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int":
			return "the integer " + n.Value
		case "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "null"
		}
		return fmt.Sprintf("%q tagged %s", n.Value, n.Tag)
	case yaml.AliasNode:
		return "an alias"
	}
	return "an unexpected YAML node"
}

// decoder turns the YAML tree into a Config, applying defaults for omitted
// keys. It records the line of every path it sees, and the paths it reported
// errors for, so that validation neither repeats nor cascades from them.
type decoder struct {
	src   string
	errs  []*Error
	lines map[string]int
	bad   map[string]bool
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{Source: d.src, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	d.bad[path] = true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// mapping checks that n is a mapping whose keys are all in allowed, without
// duplicates, and returns its non-null values by key.
func (d *decoder) mapping(n *yaml.Node, path string, allowed []string) map[string]*yaml.Node {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "got %s (expected a mapping with keys %s)", describe(n), strings.Join(allowed, ", "))
		return nil
	}
	where := "the top level"
	if path != "" {
		where = path
	}
	out := map[string]*yaml.Node{}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key is %s (expected one of: %s)", describe(k), strings.Join(allowed, ", "))
			continue
		}
		key := k.Value
		kpath := join(path, key)
		if !contains(allowed, key) {
			d.errs = append(d.errs, &Error{Source: d.src, Line: k.Line, Path: kpath, bare: true,
				Msg: fmt.Sprintf("unknown key %q in %s; expected one of: %s", key, where, strings.Join(allowed, ", "))})
			d.bad[kpath] = true
			continue
		}
		if first, dup := seen[key]; dup {
			d.errorf(k, kpath, "duplicate key %q (first at line %d; expected each key once)", key, first)
			continue
		}
		seen[key] = k.Line
		d.lines[kpath] = k.Line
		if v = resolve(v); !isNull(v) {
			out[key] = v
		}
	}
	return out
}

// sequence checks that n is a list and returns its items, recording the line
// of each.
func (d *decoder) sequence(n *yaml.Node, path, expected string) ([]*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "got %s (expected %s)", describe(n), expected)
		return nil, false
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		d.lines[index(path, i)] = it.Line
		items[i] = resolve(it)
	}
	return items, true
}

// str decodes a string. Plain integers and numbers are taken as their text
// (an id may be "1"); booleans, null, lists and mappings are errors.
func (d *decoder) str(n *yaml.Node, path, expected string) (string, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float":
			return n.Value, true
		}
	}
	d.errorf(n, path, "got %s (expected %s)", describe(n), expected)
	return "", false
}

// uint decodes an integer in lo..hi; expected describes the range.
func (d *decoder) uint(n *yaml.Node, path string, lo, hi uint64, expected string) (uint64, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				if i < 0 || uint64(i) < lo || uint64(i) > hi {
					d.errorf(n, path, "%s is out of range (expected %s)", n.Value, expected)
					return 0, false
				}
				return uint64(i), true
			}
			d.errorf(n, path, "%s is out of range (expected %s)", n.Value, expected)
			return 0, false
		case "!!float":
			if strings.Trim(n.Value, "+0123456789_") == "" {
				// An integer too large for YAML's integer type.
				d.errorf(n, path, "%s is out of range (expected %s)", n.Value, expected)
				return 0, false
			}
			d.errorf(n, path, "%s is not an integer (expected %s)", n.Value, expected)
			return 0, false
		}
	}
	d.errorf(n, path, "got %s (expected an integer, %s)", describe(n), expected)
	return 0, false
}

func (d *decoder) addr(n *yaml.Node, path, expected string) (netip.Addr, bool) {
	s, ok := d.str(n, path, expected)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.errorf(n, path, "%q is not an IP address (expected %s)", s, expected)
		return netip.Addr{}, false
	}
	return a, true
}

func (d *decoder) config(root *yaml.Node) *Config {
	c := &Config{
		Distributor: Distributor{XDPMode: XDPModeAuto},
		FlowTable:   FlowTable{MaxFlows: DefaultMaxFlows},
		Selection:   Selection{TableSize: DefaultTableSize, MaxServices: DefaultMaxServices},
		Timeouts:    DefaultTimeouts(),
		SecondKeys:  SecondKeys{Masks: DefaultSecondKeyMasks(), MaxEntries: DefaultSecondKeyMaxEntries},
		Signals:     Signals{MulticastMAC: DefaultMulticastMAC()},
	}
	m := d.mapping(root, "", topKeys)
	if n := m["distributor"]; n != nil {
		d.distributor(n, &c.Distributor)
	} else {
		d.errorf(root, "distributor", "missing (expected a mapping with keys %s)", strings.Join(distributorKeys, ", "))
	}
	if n := m["flow_table"]; n != nil {
		fm := d.mapping(n, "flow_table", flowTableKeys)
		if n := fm["max_flows"]; n != nil {
			v, _ := d.uint(n, "flow_table.max_flows", MinMaxFlows, MaxMaxFlows, maxFlowsExpected)
			c.FlowTable.MaxFlows = uint32(v)
		}
	}
	if n := m["selection"]; n != nil {
		sm := d.mapping(n, "selection", selectionKeys)
		if n := sm["table_size"]; n != nil {
			v, _ := d.uint(n, "selection.table_size", 0, 1<<32-1, tableSizeExpected)
			c.Selection.TableSize = uint32(v)
		}
		if n := sm["max_services"]; n != nil {
			v, _ := d.uint(n, "selection.max_services", 1, MaxMaxServices, maxServicesExpected)
			c.Selection.MaxServices = uint32(v)
		}
	}
	if n := m["traffic_managers"]; n != nil {
		items, _ := d.sequence(n, "traffic_managers", "a list of traffic managers")
		c.TrafficManagers = make([]TrafficManager, len(items))
		for i, it := range items {
			c.TrafficManagers[i] = d.trafficManager(it, index("traffic_managers", i))
		}
	}
	if n := m["services"]; n != nil {
		items, _ := d.sequence(n, "services", "a list of services")
		c.Services = make([]Service, len(items))
		for i, it := range items {
			c.Services[i] = d.service(it, index("services", i))
		}
	}
	if n := m["timeouts"]; n != nil {
		tm := d.mapping(n, "timeouts", timeoutsKeys)
		t := &c.Timeouts
		for _, f := range []struct {
			key string
			v   *uint32
		}{{"tcp", &t.TCP}, {"tcp_closing", &t.TCPClosing}, {"udp", &t.UDP}, {"other", &t.Other}, {"second_key", &t.SecondKey}} {
			if n := tm[f.key]; n != nil {
				v, _ := d.uint(n, "timeouts."+f.key, MinTimeout, MaxTimeout, timeoutExpected)
				*f.v = uint32(v)
			}
		}
	}
	if n := m["second_keys"]; n != nil {
		sm := d.mapping(n, "second_keys", secondKeysKeys)
		if n := sm["masks"]; n != nil {
			const p = "second_keys.masks"
			items, ok := d.sequence(n, p, masksExpected)
			if ok {
				c.SecondKeys.Masks = make([][]string, len(items))
			}
			for i, it := range items {
				c.SecondKeys.Masks[i] = d.mask(it, index(p, i))
			}
		}
		if n := sm["max_entries"]; n != nil {
			v, _ := d.uint(n, "second_keys.max_entries", 1, MaxSecondKeyMaxEntries, maxEntriesExpected)
			c.SecondKeys.MaxEntries = uint32(v)
		}
	}
	if n := m["learning"]; n != nil {
		lm := d.mapping(n, "learning", learningKeys)
		if n := lm["snat_addresses"]; n != nil {
			const p = "learning.snat_addresses"
			items, ok := d.sequence(n, p, snatListExpected)
			if ok {
				c.Learning.SNATAddresses = make([]netip.Addr, len(items))
			}
			for i, it := range items {
				c.Learning.SNATAddresses[i], _ = d.addr(it, index(p, i), snatExpected)
			}
		}
	}
	if n := m["signals"]; n != nil {
		sm := d.mapping(n, "signals", signalsKeys)
		if n := sm["multicast_mac"]; n != nil {
			const p = "signals.multicast_mac"
			c.Signals.MulticastMAC = nil
			if s, ok := d.str(n, p, multicastMACExpected); ok {
				hw, err := net.ParseMAC(s)
				if err != nil || len(hw) != 6 {
					d.errorf(n, p, "%q is not a MAC address (expected %s)", s, multicastMACExpected)
				} else {
					c.Signals.MulticastMAC = hw
				}
			}
		}
		if n := sm["udp_listen"]; n != nil {
			c.Signals.UDPListen, _ = d.str(n, "signals.udp_listen", udpListenExpected)
		}
	}
	return c
}

// mask decodes a second-key mask: a list of field names, checked by the
// validator. A mask that is not a list decodes as nil.
func (d *decoder) mask(n *yaml.Node, path string) []string {
	items, ok := d.sequence(n, path, maskExpected)
	if !ok {
		return nil
	}
	fields := make([]string, len(items))
	for i, it := range items {
		fields[i], _ = d.str(it, index(path, i), fieldExpected)
	}
	return fields
}

func (d *decoder) distributor(n *yaml.Node, dist *Distributor) {
	m := d.mapping(n, "distributor", distributorKeys)
	if n := m["id"]; n != nil {
		dist.ID, _ = d.str(n, "distributor.id", idExpected)
	}
	if n := m["interfaces"]; n != nil {
		items, _ := d.sequence(n, "distributor.interfaces", interfacesExpected)
		dist.Interfaces = make([]Interface, len(items))
		for i, it := range items {
			p := index("distributor.interfaces", i)
			im := d.mapping(it, p, interfaceKeys)
			if n := im["name"]; n != nil {
				dist.Interfaces[i].Name, _ = d.str(n, p+".name", ifNameExpected)
			}
			if n := im["role"]; n != nil {
				dist.Interfaces[i].Role, _ = d.str(n, p+".role", roleExpected)
			}
		}
	}
	if n := m["api"]; n != nil {
		dist.API, _ = d.str(n, "distributor.api", apiExpected)
	} else if validID(dist.ID) {
		dist.API = DefaultAPI(dist.ID)
	} else {
		// No default without a valid id; the id's error says why.
		d.bad["distributor.api"] = true
	}
	if n := m["xdp_mode"]; n != nil {
		dist.XDPMode, _ = d.str(n, "distributor.xdp_mode", xdpModeExpected)
	}
}

func (d *decoder) trafficManager(n *yaml.Node, path string) TrafficManager {
	tm := TrafficManager{Weight: DefaultWeight, State: StateActive}
	m := d.mapping(n, path, tmKeys)
	if n := m["id"]; n != nil {
		tm.ID, _ = d.str(n, path+".id", idExpected)
	}
	if n := m["address"]; n != nil {
		tm.Address, _ = d.addr(n, path+".address", tmAddressExpected)
	}
	if n := m["weight"]; n != nil {
		v, _ := d.uint(n, path+".weight", 1, MaxWeight, weightExpected)
		tm.Weight = uint32(v)
	}
	if n := m["state"]; n != nil {
		tm.State, _ = d.str(n, path+".state", stateExpected)
	}
	if n := m["mac"]; n != nil {
		if s, ok := d.str(n, path+".mac", macExpected); ok {
			hw, err := net.ParseMAC(s)
			if err != nil || len(hw) != 6 {
				d.errorf(n, path+".mac", "%q is not a MAC address (expected %s)", s, macExpected)
			} else {
				tm.MAC = hw
			}
		}
	}
	if n := m["signal_key"]; n != nil {
		p := path + ".signal_key"
		if s, ok := d.str(n, p, signalKeyExpected); ok {
			// The key is a secret: errors do not quote it.
			key, err := hex.DecodeString(s)
			switch {
			case err != nil:
				d.errorf(n, p, "not a hex string (expected %s)", signalKeyExpected)
			case len(key) < MinSignalKeyLen:
				d.errorf(n, p, "the key is %d bytes long (expected %s)", len(key), signalKeyExpected)
			default:
				tm.SignalKey = key
			}
		}
	}
	return tm
}

func (d *decoder) service(n *yaml.Node, path string) Service {
	var s Service
	m := d.mapping(n, path, serviceKeys)
	if n := m["name"]; n != nil {
		s.Name, _ = d.str(n, path+".name", serviceNameExpected)
	}
	if n := m["vip"]; n != nil {
		s.VIP, _ = d.addr(n, path+".vip", vipExpected)
	}
	if n := m["port"]; n != nil {
		v, _ := d.uint(n, path+".port", 0, 65535, portExpected)
		s.Port = uint16(v)
	}
	if n := m["protocol"]; n != nil {
		s.Protocol, _ = d.str(n, path+".protocol", protocolExpected)
	}
	if n := m["traffic_managers"]; n != nil {
		p := path + ".traffic_managers"
		items, ok := d.sequence(n, p, poolExpected)
		if ok {
			s.TrafficManagers = make([]string, len(items))
		}
		for i, it := range items {
			s.TrafficManagers[i], _ = d.str(it, index(p, i), "a traffic manager id")
		}
	}
	if n := m["persistence"]; n != nil {
		p := path + ".persistence"
		s.Persistence = &Persistence{Mask: DefaultPersistenceMask()}
		pm := d.mapping(n, p, persistenceKeys)
		if n := pm["timeout"]; n != nil {
			v, _ := d.uint(n, p+".timeout", 1, MaxPersistenceTimeout, persistenceTimeoutExpected)
			s.Persistence.Timeout = uint32(v)
		}
		if n := pm["mask"]; n != nil {
			s.Persistence.Mask = d.mask(n, p+".mask")
		}
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sortErrors orders errors by line, keeping the order of discovery within a
// line; errors without a line come first.
func sortErrors(errs []*Error) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
}
