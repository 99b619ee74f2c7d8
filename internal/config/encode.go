package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Marshal writes c as YAML in the form Parse reads: keys from the structs'
// yaml tags, addresses and MACs as text, signal keys as hex. Zero values are
// left out (they mean "default" to Parse), so a Config that Parse returned
// marshals to a file that parses back to the same Config.
func (c *Config) Marshal() ([]byte, error) {
	n, err := encode(reflect.ValueOf(c).Elem())
	if err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	if n == nil {
		n = &yaml.Node{Kind: yaml.MappingNode}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	return b.Bytes(), nil
}

// WriteFile writes c, marshalled, to path with mode 0600 (a config may hold
// signal keys).
func (c *Config) WriteFile(path string) error {
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

func scalar(tag, v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v}
}

// encode returns the node for v, or nil for a zero value that Marshal leaves
// out.
func encode(v reflect.Value) (*yaml.Node, error) {
	switch t := v.Type(); {
	case t == addrType:
		a := v.Interface().(netip.Addr)
		if !a.IsValid() {
			return nil, nil
		}
		return scalar("!!str", a.String()), nil
	case t == macType:
		if v.IsNil() {
			return nil, nil
		}
		return scalar("!!str", v.Interface().(net.HardwareAddr).String()), nil
	case t == bytesType:
		if v.IsNil() {
			return nil, nil
		}
		return scalar("!!str", hex.EncodeToString(v.Bytes())), nil
	case t.Kind() == reflect.String:
		if v.String() == "" {
			return nil, nil
		}
		return scalar("!!str", v.String()), nil
	case t.Kind() == reflect.Uint16 || t.Kind() == reflect.Uint32:
		if v.Uint() == 0 {
			return nil, nil
		}
		return scalar("!!int", strconv.FormatUint(v.Uint(), 10)), nil
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			return nil, nil
		}
		n, err := encode(v.Elem())
		if n == nil && err == nil {
			n = &yaml.Node{Kind: yaml.MappingNode}
		}
		return n, err
	case t.Kind() == reflect.Slice:
		if v.IsNil() {
			return nil, nil
		}
		n := &yaml.Node{Kind: yaml.SequenceNode}
		// Lists of scalars, short in practice, read best on one line.
		if k := t.Elem().Kind(); k == reflect.String || t.Elem() == addrType {
			n.Style = yaml.FlowStyle
		}
		if t.Elem().Kind() == reflect.Slice {
			n.Style = 0
		}
		for i := 0; i < v.Len(); i++ {
			it, err := encode(v.Index(i))
			if err != nil {
				return nil, err
			}
			if it == nil {
				// A zero item still takes its place in the list.
				it = zeroNode(t.Elem())
			}
			n.Content = append(n.Content, it)
		}
		return n, nil
	case t.Kind() == reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		for i := 0; i < t.NumField(); i++ {
			k := yamlKey(t.Field(i))
			if k == "" {
				continue
			}
			fn, err := encode(v.Field(i))
			if err != nil {
				return nil, err
			}
			if fn != nil {
				n.Content = append(n.Content, scalar("!!str", k), fn)
			}
		}
		if len(n.Content) == 0 {
			return nil, nil
		}
		return n, nil
	}
	return nil, fmt.Errorf("cannot encode %s", v.Type())
}

// zeroNode is the node of a zero list item.
func zeroNode(t reflect.Type) *yaml.Node {
	switch t.Kind() {
	case reflect.Struct:
		return &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
	case reflect.Slice:
		return &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	case reflect.Uint16, reflect.Uint32:
		return scalar("!!int", "0")
	}
	return scalar("!!str", "")
}

// RestartNeeded returns an error for each difference between cur and next
// that a reload cannot make, because it sizes or shapes the loaded program
// or what the daemon opened at start (interfaces, sockets), or nil if next
// can be applied by a reload. Everything else (traffic managers, services,
// timeouts, second-key masks, learning, the signal MAC) reloads.
func RestartNeeded(cur, next *Config) error {
	var errs []error
	for _, f := range []struct {
		changed bool
		msg     string
	}{
		{next.Distributor.ID != cur.Distributor.ID, "distributor.id changed: restart to change it"},
		{!slices.Equal(next.Distributor.Interfaces, cur.Distributor.Interfaces), "distributor.interfaces changed: restart to change them"},
		{next.Distributor.API != cur.Distributor.API, "distributor.api changed: restart to change it"},
		{next.Distributor.APITokenFile != cur.Distributor.APITokenFile, "distributor.api_token_file changed: restart to change it"},
		{next.Distributor.XDPMode != cur.Distributor.XDPMode, "distributor.xdp_mode changed: restart to change it"},
		{next.Distributor.StateDir != cur.Distributor.StateDir, "distributor.state_dir changed: restart to move the state directory"},
		{next.Distributor.PinDir != cur.Distributor.PinDir, "distributor.pin_dir changed: restart to move the pinned data path"},
		{next.FlowTable != cur.FlowTable, "flow_table changed: restart to resize the flow table"},
		{next.Selection != cur.Selection, "selection changed: restart to resize the Maglev rings"},
		{next.SecondKeys.MaxEntries != cur.SecondKeys.MaxEntries, "second_keys.max_entries changed: restart to resize the second-key table"},
		{next.Signals.UDPListen != cur.Signals.UDPListen, "signals.udp_listen changed: restart to move the UDP signal transport"},
		{!peersEqual(next.Peers, cur.Peers), "peers changed: restart to change the peer protocol"},
		{!bgpEqualForRestart(next.BGP, cur.BGP), "bgp changed (other than announce_delay_ms, drain_deadline): restart to change the BGP speaker"},
	} {
		if f.changed {
			errs = append(errs, errors.New(f.msg))
		}
	}
	return errors.Join(errs...)
}

func peersEqual(a, b Peers) bool {
	return a.ID == b.ID && a.Listen == b.Listen && a.Mirror == b.Mirror &&
		slices.Equal(a.Addresses, b.Addresses) && bytes.Equal(a.Key, b.Key)
}
