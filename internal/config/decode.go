package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits on what Load and Parse accept. They bound the memory and time a
// configuration file can cost, whoever wrote it: the daemon reloads on SIGHUP
// and must survive any file.
const (
	// MaxFileSize is the largest configuration file, in bytes (1 MiB: a
	// config with 255 TMs and 1024 services is about 200 KB).
	MaxFileSize = 1 << 20
	// MaxNodes is the largest number of YAML nodes a file may hold, counting
	// each use of an alias as a copy of what it names. 400,000 allows 1024
	// services that each name 255 TMs through an alias, and refuses alias
	// bombs ("billion laughs") before they are expanded.
	MaxNodes = 400_000
	// MaxErrors is the number of errors reported; the rest are counted.
	MaxErrors = 50
)

// offByOne are YAML parser errors whose line go.yaml.in/yaml/v3 reports 0-based.
var offByOne = []string{"did not find expected", "found a tab character that violates indentation"}

var yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// emptyMsg is the error for a file without a document.
func emptyMsg() string {
	return "empty config (expected a mapping with keys " + strings.Join(keysOf(configType), ", ") + ")"
}

// parseYAML parses data into its root node, which must not be empty, after
// checking that data is text and that its aliases do not expand past
// MaxNodes. It never panics.
func parseYAML(data []byte, source string) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, &Error{Source: source, Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	if len(data) > MaxFileSize {
		return nil, &Error{Source: source, Msg: fmt.Sprintf("the file is larger than %d bytes (expected at most %d bytes, MaxFileSize)", MaxFileSize, MaxFileSize)}
	}
	if e := checkText(data, source); e != nil {
		return nil, e
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Source: source, Msg: emptyMsg()}
		}
		return nil, yamlError(err, source)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &Error{Source: source, Line: next.Line, Msg: "a second YAML document (expected exactly one document)"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err, source)
	}
	if e := countNodes(&doc, source); e != nil {
		return nil, e
	}
	root = &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, &Error{Source: source, Msg: emptyMsg()}
		}
		root = root.Content[0]
	}
	root = resolve(root)
	if isNull(root) {
		return nil, &Error{Source: source, Line: root.Line, Msg: emptyMsg()}
	}
	return root, nil
}

// checkText refuses data that is not UTF-8 text or holds a control character
// YAML forbids, with the line of the first offending byte (the YAML parser's
// own errors for these carry no line).
func checkText(data []byte, source string) *Error {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return &Error{Source: source, Line: line, Msg: fmt.Sprintf("byte 0x%02x at offset %d is not UTF-8 (expected a UTF-8 text file)", data[i], i)}
		case r == '\n':
			line++
		case r == '\t' || r == '\r':
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 && r != 0x85 || r == 0xfffe || r == 0xffff:
			return &Error{Source: source, Line: line, Msg: fmt.Sprintf("control character %U at offset %d (expected printable text)", r, i)}
		}
		i += size
	}
	return nil
}

// countNodes counts the nodes of the tree under n, each alias counting as a
// copy of the node it names, and refuses trees above MaxNodes or with an
// alias inside the node it names. It stops counting at the limit, so an
// alias bomb costs at most MaxNodes steps.
func countNodes(n *yaml.Node, source string) *Error {
	count := 0
	open := map[*yaml.Node]bool{} // anchors being expanded: a cycle
	var walk func(n *yaml.Node) *Error
	walk = func(n *yaml.Node) *Error {
		count++
		if count > MaxNodes {
			return &Error{Source: source, Line: n.Line, Msg: fmt.Sprintf("more than %d YAML nodes, counting each use of an alias as a copy (expected at most %d, MaxNodes; is this an alias bomb?)", MaxNodes, MaxNodes)}
		}
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil {
				return &Error{Source: source, Line: n.Line, Msg: "an alias to nothing (expected an alias to an anchor)"}
			}
			if open[n.Alias] {
				return &Error{Source: source, Line: n.Line, Msg: fmt.Sprintf("the alias *%s is inside the node it names (expected an alias to a complete node)", n.Value)}
			}
			open[n.Alias] = true
			defer delete(open, n.Alias)
			return walk(n.Alias)
		}
		for _, c := range n.Content {
			if e := walk(c); e != nil {
				return e
			}
		}
		return nil
	}
	return walk(n)
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

// resolve follows an alias to the node it names (countNodes has refused
// cycles).
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

// The schema is the Config struct: its yaml tags name the keys, its field
// types say how a value decodes, and leaves says what each field expects.

var (
	configType = reflect.TypeOf(Config{})
	addrType   = reflect.TypeOf(netip.Addr{})
	macType    = reflect.TypeOf(net.HardwareAddr{})
	bytesType  = reflect.TypeOf([]byte{})
)

// leaf is what a scalar field expects: the text of "(expected ...)" and, for
// integers, the range the decoder accepts (the validator checks the same
// ranges for configurations built in Go).
type leaf struct {
	expected string
	min, max uint64
}

// leaves are the scalar fields and lists of the schema by key path, list
// indices written "[]". TestLeavesCoverSchema checks that every field has one.
var leaves = map[string]leaf{
	"distributor.id":                 {expected: idExpected},
	"distributor.interfaces":         {expected: interfacesExpected},
	"distributor.interfaces[].name":  {expected: ifNameExpected},
	"distributor.interfaces[].role":  {expected: roleExpected},
	"distributor.api":                {expected: apiExpected},
	"distributor.api_token_file":     {expected: apiTokenFileExpected},
	"distributor.xdp_mode":           {expected: xdpModeExpected},
	"distributor.state_dir":          {expected: stateDirExpected},
	"distributor.pin_dir":            {expected: pinDirExpected},
	"flow_table.max_flows":           {expected: maxFlowsExpected, min: MinMaxFlows, max: MaxMaxFlows},
	"selection.ring_size":            {expected: ringSizeExpected, max: 1<<32 - 1},
	"selection.max_services":         {expected: maxServicesExpected, min: 1, max: MaxMaxServices},
	"traffic_managers":               {expected: "a list of traffic managers"},
	"traffic_managers[].id":          {expected: idExpected},
	"traffic_managers[].address":     {expected: tmAddressExpected},
	"traffic_managers[].addresses":   {expected: tmAddressesExpected},
	"traffic_managers[].addresses[]": {expected: tmAddressExpected},
	"traffic_managers[].weight":      {expected: weightExpected, min: 1, max: MaxWeight},
	"traffic_managers[].state":       {expected: stateExpected},
	"traffic_managers[].mac":         {expected: macExpected},
	"traffic_managers[].signal_key":  {expected: signalKeyExpected},
	"services":                       {expected: "a list of services"},
	"services[].name":                {expected: serviceNameExpected},
	"services[].vip":                 {expected: vipExpected},
	"services[].port":                {expected: portExpected, max: 65535},
	"services[].protocol":            {expected: protocolExpected},
	"services[].traffic_managers":    {expected: poolExpected},
	"services[].traffic_managers[]":  {expected: "a traffic manager id"},
	"services[].persistence.timeout": {expected: persistenceTimeoutExpected, min: 1, max: MaxPersistenceTimeout},
	"services[].persistence.mask":    {expected: maskExpected},
	"services[].persistence.mask[]":  {expected: fieldExpected},
	"services[].timeouts.tcp":        {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"services[].timeouts.tcp_syn":    {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"services[].timeouts.tcp_fin":    {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"services[].timeouts.tcp_close":  {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"services[].timeouts.udp":        {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.tcp":                   {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.tcp_syn":               {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.tcp_fin":               {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.tcp_close":             {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.udp":                   {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.other":                 {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"timeouts.second_key":            {expected: timeoutExpected, min: MinTimeout, max: MaxTimeout},
	"second_keys.masks":              {expected: masksExpected},
	"second_keys.masks[]":            {expected: maskExpected},
	"second_keys.masks[][]":          {expected: fieldExpected},
	"second_keys.max_entries":        {expected: maxEntriesExpected, min: 1, max: MaxSecondKeyMaxEntries},
	"learning.snat_addresses":        {expected: snatListExpected},
	"learning.snat_addresses[]":      {expected: snatExpected},
	"signals.multicast_mac":          {expected: multicastMACExpected},
	"signals.udp_listen":             {expected: udpListenExpected},
	"peers.id":                       {expected: peerIDExpected, min: 1, max: 1<<32 - 1},
	"peers.listen":                   {expected: peerAddrExpected},
	"peers.addresses":                {expected: "a list of peer addresses"},
	"peers.addresses[]":              {expected: peerAddrExpected},
	"peers.key":                      {expected: signalKeyExpected},
	"peers.mirror":                   {expected: peerMirrorExpected},
	"peers.min_age":                  {expected: peerMinAgeExpected, min: 1, max: MaxPeerMinAge},
}

var keyCache sync.Map // reflect.Type → []string

// keysOf returns the keys of a struct type, in field order: its yaml tags.
func keysOf(t reflect.Type) []string {
	if k, ok := keyCache.Load(t); ok {
		return k.([]string)
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if k := yamlKey(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	keyCache.Store(t, keys)
	return keys
}

// yamlKey is the key of a struct field: the name in its yaml tag.
func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// fieldByKey returns the index of the field of struct type t with the given key.
func fieldByKey(t reflect.Type, key string) (int, bool) {
	for i := 0; i < t.NumField(); i++ {
		if yamlKey(t.Field(i)) == key {
			return i, true
		}
	}
	return 0, false
}

// errList collects errors, keeping the MaxErrors first by line (and order
// of discovery within a line) and counting the rest. Adding is amortized
// O(log MaxErrors): however many errors a file has, it keeps few.
type errList struct {
	errs  []*Error
	total int
	// cutoff: once MaxErrors errors are kept, an error after this line
	// cannot be among the first; 0 until then.
	cutoff int
}

func (l *errList) add(e *Error) {
	l.total++
	l.errs = append(l.errs, e)
	if len(l.errs) >= 4*MaxErrors {
		sortErrors(l.errs)
		l.errs = l.errs[:MaxErrors]
		l.cutoff = l.errs[MaxErrors-1].Line
	}
}

// dropped reports whether an error at line will not be reported, and if so
// counts it: callers then skip formatting it.
func (l *errList) dropped(line int) bool {
	if l.cutoff > 0 && line > l.cutoff {
		l.total++
		return true
	}
	return false
}

// err returns nil, the only error, or an errors.Join of the first MaxErrors
// and, if there were more, one saying how many were left out.
func (l *errList) err(source string) error {
	sortErrors(l.errs)
	if len(l.errs) > MaxErrors {
		l.errs = l.errs[:MaxErrors]
	}
	errs := l.errs
	if more := l.total - len(errs); more > 0 {
		errs = append(errs[:len(errs):len(errs)], &Error{Source: source, Msg: fmt.Sprintf("and %d more errors (reporting the first %d, MaxErrors)", more, MaxErrors)})
	}
	return joinErrors(errs)
}

// decoder decodes the YAML tree into a Config, driven by the Config type.
// It records the line of every key and list item and which keys were given
// (for the defaults of the others), and the paths it reported errors for,
// so that validation neither repeats nor cascades from them.
type decoder struct {
	src   string
	errs  *errList
	lines map[string]int
	given map[string]bool
	marks
}

// marks are the paths with an error, and every ancestor of one.
type marks struct {
	bad   map[string]bool
	below map[string]bool // some descendant is bad
}

func (m *marks) mark(path string) {
	if m.bad == nil {
		m.bad, m.below = map[string]bool{}, map[string]bool{}
	}
	m.bad[path] = true
	for p := parent(path); p != "" && !m.below[p]; p = parent(p) {
		m.below[p] = true
	}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.mark(path)
	if !d.errs.dropped(line) {
		d.errs.add(&Error{Source: d.src, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// expected is what the field at schema path spath expects.
func expected(spath string) leaf {
	if l, ok := leaves[spath]; ok {
		return l
	}
	return leaf{expected: "a value of the documented form (see docs/config.md)"}
}

// value decodes n into v. path is the key path (services[1].vip); spath the
// same without indices (services[].vip), to look up leaves.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path, spath string) {
	n = resolve(n)
	exp := expected(spath)
	switch t := v.Type(); {
	case t == addrType:
		if s, ok := d.str(n, path, exp.expected); ok {
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.errorf(n, path, "%q is not an IP address (expected %s)", s, exp.expected)
				return
			}
			v.Set(reflect.ValueOf(a))
		}
	case t == macType:
		if s, ok := d.str(n, path, exp.expected); ok {
			hw, err := net.ParseMAC(s)
			if err != nil || len(hw) != 6 {
				d.errorf(n, path, "%q is not a MAC address (expected %s)", s, exp.expected)
				return
			}
			v.Set(reflect.ValueOf(hw))
		}
	case t == bytesType:
		if s, ok := d.str(n, path, exp.expected); ok {
			// The bytes are a key, a secret: errors do not quote it.
			key, err := hex.DecodeString(s)
			switch {
			case err != nil:
				d.errorf(n, path, "not a hex string (expected %s)", exp.expected)
			case len(key) < MinSignalKeyLen:
				d.errorf(n, path, "the key is %d bytes long (expected %s)", len(key), exp.expected)
			default:
				v.SetBytes(key)
			}
		}
	case t.Kind() == reflect.String:
		if s, ok := d.str(n, path, exp.expected); ok {
			v.SetString(s)
		}
	case t.Kind() == reflect.Uint16 || t.Kind() == reflect.Uint32:
		if u, ok := d.uint(n, path, exp); ok {
			v.SetUint(u)
		}
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		p := reflect.New(t.Elem())
		if d.mapping(n, p.Elem(), path, spath) {
			v.Set(p)
		}
	case t.Kind() == reflect.Struct:
		d.mapping(n, v, path, spath)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "got %s (expected %s)", describe(n), exp.expected)
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, it := range n.Content {
			p := index(path, i)
			d.lines[p] = it.Line
			d.value(it, s.Index(i), p, spath+"[]")
		}
		v.Set(s)
	default:
		// A field type the decoder does not know: a programming error that
		// TestLeavesCoverSchema catches.
		d.errorf(n, path, "cannot decode into %s (expected %s)", t, exp.expected)
	}
}

// mapping decodes a mapping into the struct v: every key must be a field's
// yaml tag, once. It reports whether n was a mapping.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path, spath string) bool {
	t := v.Type()
	keys := keysOf(t)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "got %s (expected a mapping with keys %s)", describe(n), strings.Join(keys, ", "))
		return false
	}
	where := "the top level"
	if path != "" {
		where = path
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key is %s (expected one of: %s)", describe(k), strings.Join(keys, ", "))
			continue
		}
		key := k.Value
		kpath := join(path, key)
		f, ok := fieldByKey(t, key)
		if !ok {
			d.errs.add(&Error{Source: d.src, Line: k.Line, Path: kpath, bare: true,
				Msg: fmt.Sprintf("unknown key %q in %s; expected one of: %s", key, where, strings.Join(keys, ", "))})
			d.mark(kpath)
			continue
		}
		if first, dup := seen[key]; dup {
			d.errorf(k, kpath, "duplicate key %q (first at line %d; expected each key once)", key, first)
			continue
		}
		seen[key] = k.Line
		d.lines[kpath] = k.Line
		if val = resolve(val); isNull(val) {
			continue
		}
		d.given[kpath] = true
		d.value(val, v.Field(f), kpath, join(spath, key))
	}
	return true
}

// str decodes a string. Plain integers and numbers are taken as their text
// (an id may be "1"); booleans, null, lists and mappings are errors.
func (d *decoder) str(n *yaml.Node, path, expected string) (string, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float":
			return n.Value, true
		}
	}
	d.errorf(n, path, "got %s (expected %s)", describe(n), expected)
	return "", false
}

// uint decodes an integer in l.min..l.max.
func (d *decoder) uint(n *yaml.Node, path string, l leaf) (uint64, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil || i < 0 || uint64(i) < l.min || uint64(i) > l.max {
				d.errorf(n, path, "%s is out of range (expected %s)", n.Value, l.expected)
				return 0, false
			}
			return uint64(i), true
		case "!!float":
			if strings.Trim(n.Value, "+0123456789_") == "" {
				// An integer too large for YAML's integer type.
				d.errorf(n, path, "%s is out of range (expected %s)", n.Value, l.expected)
				return 0, false
			}
			d.errorf(n, path, "%s is not an integer (expected %s)", n.Value, l.expected)
			return 0, false
		}
	}
	d.errorf(n, path, "got %s (expected an integer, %s)", describe(n), l.expected)
	return 0, false
}

// sortErrors orders errors by line, keeping the order of discovery within a
// line; errors without a line come first.
func sortErrors(errs []*Error) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
}

// policyLeaves are the leaves of the health and fallback keys of a service,
// kept apart from leaves so that the table's alignment is not rewritten.
var policyLeaves = map[string]leaf{
	"services[].health.type":                          {expected: healthTypeExpected},
	"services[].health.port":                          {expected: healthPortExpected, max: 65535},
	"services[].health.interval_ms":                   {expected: healthIntervalExpected, min: MinHealthIntervalMS, max: MaxHealthIntervalMS},
	"services[].health.timeout_ms":                    {expected: healthTimeoutExpected, min: MinHealthIntervalMS, max: MaxHealthIntervalMS},
	"services[].health.rise":                          {expected: riseFallExpected, min: 1, max: MaxHealthRiseFall},
	"services[].health.fall":                          {expected: riseFallExpected, min: 1, max: MaxHealthRiseFall},
	"services[].health.path":                          {expected: healthPathExpected},
	"services[].health.status":                        {expected: healthStatusExpected, max: 599},
	"services[].health.send":                          {expected: healthPayloadExpected},
	"services[].health.expect":                        {expected: healthPayloadExpected},
	"services[].health.on_unhealthy":                  {expected: onUnhealthyExpected},
	"services[].fallback_traffic_managers":            {expected: fallbackExpected},
	"services[].fallback_traffic_managers[]":          {expected: "a traffic manager id"},
	"services[].policy":                               {expected: policyExpected},
	"services[].min_eligible":                         {expected: minEligibleExpected, min: 1, max: MaxTrafficManagers},
	"services[].hash":                                 {expected: hashExpected},
	"traffic_managers[].agent_stats":                  {expected: agentStatsExpected},
	"traffic_managers[].tags":                         {expected: tagsExpected},
	"traffic_managers[].tags[]":                       {expected: "a tag of a-z, 0-9, '-', '_'"},
	"distributor.zone":                                {expected: zoneExpected},
	"services[].qos.dscp":                             {expected: qosExpected},
	"services[].qos.dscp[]":                           {expected: dscpExpected, max: 255},
	"services[].qos.tag":                              {expected: qosExpected},
	"services[].priority_groups":                      {expected: priorityGroupsExpected},
	"services[].priority_groups[].traffic_managers":   {expected: poolExpected},
	"services[].priority_groups[].traffic_managers[]": {expected: "a traffic manager id"},
	"services[].priority_groups[].min_eligible":       {expected: minEligibleExpected, min: 1, max: MaxTrafficManagers},
}

func init() { maps.Copy(leaves, policyLeaves) }
