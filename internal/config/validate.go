package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/switchyard/switchyard/internal/api"
)

// What each field expects, as said in errors.
const (
	idExpected           = "1..32 characters of a-z, 0-9, '-', '_'"
	interfacesExpected   = "a list of interfaces, at least one with role external"
	ifNameExpected       = "an interface name of 1..15 characters without '/', ':' or whitespace"
	roleExpected         = "external or internal"
	apiExpected          = "unix:/absolute/path, 127.0.0.1:PORT or [::1]:PORT"
	stateDirExpected     = "an absolute path of a directory for state kept across restarts, e.g. /var/lib/switchyard"
	pinDirExpected       = "an absolute path of a bpffs directory for the pinned data path, e.g. /sys/fs/bpf/switchyard/d1 (default: /sys/fs/bpf/switchyard/<id>)"
	apiTokenFileExpected = "an absolute path to a file of 1..4096 bytes holding the admin API token, mode 0600 or stricter (no group or other access)"
	xdpModeExpected      = "auto, native or generic"
	maxFlowsExpected     = "1024..100000000"
	ringSizeExpected     = "a prime in 1021..1000003; 65537 and 131071 are prime"
	maxServicesExpected  = "1..1024"
	tmAddressExpected    = "an IPv4 or IPv6 unicast address"
	tmAddressesExpected  = "a list of 1..4 IPv4 or IPv6 unicast addresses of the TM host, e.g. [10.1.0.11, fd00::11]"
	weightExpected       = "1..1000"
	stateExpected        = "active, draining or disabled"
	macExpected          = "a unicast MAC address of six hex octets, e.g. 02:00:00:00:00:01"
	serviceNameExpected  = "1..64 characters of A-Z, a-z, 0-9, '.', '-', '_'"
	vipExpected          = "an IPv4 or IPv6 address"
	portExpected         = "0..65535; 0 or omitted means all ports"
	protocolExpected     = "tcp or udp"
	poolExpected         = "a list of at least one traffic manager id"

	timeoutExpected            = "1..604800 seconds"
	fieldExpected              = "one of vlan, proto, src, dst, sport, dport"
	maskExpected               = "a list of at least one field from vlan, proto, src, dst, sport, dport, each at most once"
	masksExpected              = "a list of 1..6 masks, most specific first, each a list of fields from vlan, proto, src, dst, sport, dport"
	maxEntriesExpected         = "1..10000000"
	snatExpected               = "an IPv4 or IPv6 unicast address that is neither a VIP nor a traffic manager address"
	snatListExpected           = "a list of IPv4 or IPv6 unicast addresses"
	multicastMACExpected       = "a multicast MAC address of six hex octets, lowest bit of the first octet set, not ff:ff:ff:ff:ff:ff, e.g. 03:53:59:47:00:01"
	udpListenExpected          = "ADDRESS:PORT with a port in 1..65535, e.g. 10.1.0.2:7946 or [2001:db8::2]:7946; omit it to turn UDP control off"
	peerIDExpected             = "this distributor's number among its peers, 1..4294967295"
	peerAddrExpected           = "ADDRESS:PORT with a port in 1..65535, e.g. 10.3.0.1:7947"
	peerMirrorExpected         = "all, signalled or older"
	peerMinAgeExpected         = "seconds a flow must live before it is mirrored, 1..86400, with mirror: older"
	signalKeyExpected          = "a key of at least 16 bytes, written as at least 32 hex digits"
	agentStatsExpected         = "the agent's --stats-listen address, e.g. 10.1.0.11:7070"
	priorityGroupsExpected     = "a list of at most 16 groups, each {traffic_managers: [ids], min_eligible: N}"
	tagsExpected               = "a list of at most 8 tags of a-z, 0-9, '-', '_'"
	qosExpected                = "{dscp: [0..63, ...], tag: a TM tag}"
	dscpExpected               = "a DSCP value, 0..63"
	zoneExpected               = "this distributor's zone, a tag of the TMs: 1..32 characters of a-z, 0-9, '-', '_'"
	persistenceTimeoutExpected = "1..86400 seconds"
	healthTypeExpected         = "tcp, http, https or udp"
	healthPortExpected         = "1..65535; omitted means the service's port"
	healthIntervalExpected     = "10..3600000 milliseconds"
	healthTimeoutExpected      = "10..3600000 milliseconds, at most interval_ms"
	riseFallExpected           = "1..100 probes in a row"
	healthPathExpected         = "an HTTP path starting with '/', at most 256 bytes of printable ASCII without spaces"
	healthStatusExpected       = "an HTTP status 100..599; omitted means any 2xx or 3xx"
	healthPayloadExpected      = "at most 512 bytes"
	onUnhealthyExpected        = "keep or reselect"
	fallbackExpected           = "a list of traffic manager ids, used while no TM of the pool is eligible"
	policyExpected             = "maglev, hash, round-robin, weighted-round-robin, fastest-rtt, least-connections, weighted-least-connections, packet-rate, completion-rate, ratio-dynamic, priority-groups, topology, hop-metric or qos"
	hashExpected               = "5-tuple, src-ip, dst-ip, src-ip-port, port, symmetric or symmetric-addr"
	minEligibleExpected        = "1..255 eligible TMs of the pool below which the fallback pool takes over"
)

// validator checks a decoded Config. With lines (from Parse) its errors carry
// line numbers; paths marked bad already have a decoding error, and checks on
// them or under them are skipped. With files (from Load) it also checks the
// files the config names.
type validator struct {
	src   string
	lines map[string]int
	marks
	errs  *errList
	files bool
	// links, if set, reports whether a network interface exists.
	links func(name string) error
	// zone is distributor.zone, for the services' topology policy.
	zone string
}

func parent(path string) string {
	i := max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['))
	if i < 0 {
		return ""
	}
	return path[:i]
}

// suppressed reports whether path or one of its ancestors had a decoding error.
func (v *validator) suppressed(path string) bool {
	for p := path; ; p = parent(p) {
		if v.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// badUnder reports whether path or anything under it had a decoding error.
func (v *validator) badUnder(path string) bool {
	return v.suppressed(path) || v.below[path]
}

// line is the line of path, or of its nearest ancestor with one.
func (v *validator) line(path string) int {
	for p := path; ; p = parent(p) {
		if l, ok := v.lines[p]; ok {
			return l
		}
		if p == "" {
			return 0
		}
	}
}

func (v *validator) errorf(path, format string, args ...any) {
	if v.suppressed(path) {
		return
	}
	if line := v.line(path); !v.errs.dropped(line) {
		v.errs.add(&Error{Source: v.src, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
}

func (v *validator) config(c *Config) {
	v.distributor(&c.Distributor)

	if n := c.FlowTable.MaxFlows; n < MinMaxFlows || n > MaxMaxFlows {
		v.errorf("flow_table.max_flows", "%d is out of range (expected %s)", n, maxFlowsExpected)
	}
	if n := c.Selection.RingSize; n < MinRingSize || n > MaxRingSize {
		v.errorf("selection.ring_size", "%d is out of range (expected %s)", n, ringSizeExpected)
	} else if !isPrime(n) {
		v.errorf("selection.ring_size", "%d is not prime (expected %s)", n, ringSizeExpected)
	}
	maxServicesOK := true
	if n := c.Selection.MaxServices; n < 1 || n > MaxMaxServices {
		v.errorf("selection.max_services", "%d is out of range (expected %s)", n, maxServicesExpected)
		maxServicesOK = false
	}

	v.trafficManagers(c.TrafficManagers)

	if n := len(c.Services); maxServicesOK && !v.suppressed("selection.max_services") && n > int(c.Selection.MaxServices) {
		v.errorf("services", "%d services are more than selection.max_services allows (expected at most %d; raise selection.max_services)", n, c.Selection.MaxServices)
	}
	v.timeouts(c.Timeouts)
	masksOK := v.secondKeys(c.SecondKeys)
	v.zone = c.Distributor.Zone
	v.services(c.Services, c.TrafficManagers, c.SecondKeys.Masks, masksOK)
	v.learning(c.Learning, c.TrafficManagers, c.Services)
	v.signals(c.Signals)
	v.peers(c.Peers)
	v.bgp(c.BGP)
}

func (v *validator) timeouts(t Timeouts) {
	for _, f := range []struct {
		key string
		val uint32
	}{{"tcp", t.TCP}, {"tcp_syn", t.TCPSyn}, {"tcp_fin", t.TCPFin}, {"tcp_close", t.TCPClose}, {"udp", t.UDP}, {"other", t.Other}, {"second_key", t.SecondKey}} {
		if f.val < MinTimeout || f.val > MaxTimeout {
			v.errorf("timeouts."+f.key, "%d is out of range (expected %s)", f.val, timeoutExpected)
		}
	}
}

// mask checks a second-key mask and reports whether it is valid (and had no
// decoding error).
func (v *validator) mask(path string, fields []string) bool {
	switch {
	case fields == nil:
		v.errorf(path, "missing (expected %s)", maskExpected)
		return false
	case len(fields) == 0:
		v.errorf(path, "empty list (expected %s)", maskExpected)
		return false
	}
	ok := true
	seen := map[string]int{}
	for i, f := range fields {
		p := index(path, i)
		if _, known := fieldBits[f]; !known {
			v.errorf(p, "%q is not a field (expected %s)", f, fieldExpected)
			ok = false
			continue
		}
		if j, dup := seen[f]; dup {
			v.errorf(p, "%q is already in the mask at %s (expected each field once)", f, index(path, j))
			ok = false
			continue
		}
		seen[f] = i
	}
	return ok && !v.badUnder(path)
}

// formatMask writes a mask as in YAML flow style: [proto, src].
func formatMask(fields []string) string {
	return "[" + strings.Join(fields, ", ") + "]"
}

// secondKeys checks second_keys and reports whether its masks are all valid.
func (v *validator) secondKeys(sk SecondKeys) bool {
	const root = "second_keys.masks"
	ok := true
	switch {
	case sk.Masks == nil:
		v.errorf(root, "missing (expected %s)", masksExpected)
		ok = false
	case len(sk.Masks) == 0:
		v.errorf(root, "empty list (expected %s)", masksExpected)
		ok = false
	case len(sk.Masks) > MaxSecondKeyMasks:
		v.errorf(root, "%d masks are too many (expected at most %d)", len(sk.Masks), MaxSecondKeyMasks)
		ok = false
	}
	seen := map[uint32]int{}
	for i, m := range sk.Masks {
		p := index(root, i)
		if !v.mask(p, m) {
			ok = false
			continue
		}
		bits := MaskBits(m)
		if j, dup := seen[bits]; dup {
			v.errorf(p, "%s is the same mask as %s %s (expected each mask once; the order of fields does not matter)", formatMask(m), index(root, j), formatMask(sk.Masks[j]))
			ok = false
			continue
		}
		seen[bits] = i
	}
	if n := sk.MaxEntries; n < 1 || n > MaxSecondKeyMaxEntries {
		v.errorf("second_keys.max_entries", "%d is out of range (expected %s)", n, maxEntriesExpected)
	}
	return ok && !v.badUnder(root)
}

func (v *validator) persistence(path string, p *Persistence, masks [][]string, masksOK bool) {
	switch {
	case p.Timeout == 0:
		v.errorf(path+".timeout", "missing (expected %s)", persistenceTimeoutExpected)
	case p.Timeout > MaxPersistenceTimeout:
		v.errorf(path+".timeout", "%d is out of range (expected %s)", p.Timeout, persistenceTimeoutExpected)
	}
	mp := path + ".mask"
	if !v.mask(mp, p.Mask) || !masksOK {
		return
	}
	bits := MaskBits(p.Mask)
	configured := make([]string, len(masks))
	for i, m := range masks {
		if MaskBits(m) == bits {
			return
		}
		configured[i] = formatMask(m)
	}
	v.errorf(mp, "%s is not one of second_keys.masks (configured: %s; expected one of them, or add it to second_keys.masks)", formatMask(p.Mask), strings.Join(configured, ", "))
}

func (v *validator) learning(l Learning, tms []TrafficManager, svcs []Service) {
	const root = "learning.snat_addresses"
	vips := map[netip.Addr]int{}
	for i, s := range svcs {
		if _, ok := vips[s.VIP]; !ok && s.VIP.IsValid() {
			vips[s.VIP] = i
		}
	}
	tmAddr := tmAddrIndex(tms)
	seen := map[netip.Addr]int{}
	for i, a := range l.SNATAddresses {
		p := index(root, i)
		if msg := addrProblem(a); msg != "" {
			v.errorf(p, "%s (expected %s)", msg, snatExpected)
			continue
		}
		if j, ok := vips[a]; ok {
			v.errorf(p, "%s is the VIP of %s %q (expected %s)", a, index("services", j), svcs[j].Name, snatExpected)
			continue
		}
		if j, ok := tmAddr[a]; ok {
			v.errorf(p, "%s is the address of %s %q, which learning covers anyway (expected %s)", a, index("traffic_managers", j), tms[j].ID, snatExpected)
			continue
		}
		if j, dup := seen[a]; dup {
			v.errorf(p, "%s is already listed at %s (expected each address once)", a, index(root, j))
			continue
		}
		seen[a] = i
	}
}

func (v *validator) signals(s Signals) {
	const macPath = "signals.multicast_mac"
	switch mac := s.MulticastMAC; {
	case mac == nil:
		v.errorf(macPath, "missing (expected %s)", multicastMACExpected)
	case len(mac) != 6:
		v.errorf(macPath, "%q is not a MAC address (expected %s)", mac.String(), multicastMACExpected)
	case mac[0]&1 == 0:
		v.errorf(macPath, "%s is a unicast MAC address (expected %s)", mac, multicastMACExpected)
	case string(mac) == "\xff\xff\xff\xff\xff\xff":
		v.errorf(macPath, "%s is the broadcast MAC address (expected %s)", mac, multicastMACExpected)
	}
	if s.UDPListen != "" {
		const p = "signals.udp_listen"
		ap, err := netip.ParseAddrPort(s.UDPListen)
		switch {
		case err != nil:
			v.errorf(p, "%q is not an IP address with port (expected %s)", s.UDPListen, udpListenExpected)
		case ap.Port() == 0:
			v.errorf(p, "port 0 in %q (expected %s)", s.UDPListen, udpListenExpected)
		case ap.Addr().IsMulticast():
			v.errorf(p, "%s is a multicast address (expected %s)", ap.Addr(), udpListenExpected)
		}
	}
}

func (v *validator) distributor(d *Distributor) {
	if d.Zone != "" && !validID(d.Zone) {
		v.errorf("distributor.zone", "%q is not a valid zone (expected %s)", d.Zone, zoneExpected)
	}
	if d.ID == "" {
		v.errorf("distributor.id", "missing (expected %s)", idExpected)
	} else if !validID(d.ID) {
		v.errorf("distributor.id", "%q is not a valid id (expected %s)", d.ID, idExpected)
	}

	const ifs = "distributor.interfaces"
	if len(d.Interfaces) == 0 {
		v.errorf(ifs, "no interfaces (expected %s)", interfacesExpected)
	}
	names := map[string]int{}
	external, roleErr := false, false
	for i, it := range d.Interfaces {
		p := index(ifs, i)
		switch {
		case it.Name == "":
			v.errorf(p+".name", "missing (expected %s)", ifNameExpected)
		case !validIfName(it.Name):
			v.errorf(p+".name", "%q is not a valid interface name (expected %s)", it.Name, ifNameExpected)
		default:
			if j, dup := names[it.Name]; dup {
				v.errorf(p+".name", "%q is already used by %s (expected unique interface names)", it.Name, index(ifs, j))
			} else {
				names[it.Name] = i
				if v.links != nil {
					if err := v.links(it.Name); err != nil {
						v.errorf(p+".name", "no interface %q on this host: %v (expected an existing network interface of the distributor's network namespace)", it.Name, err)
					}
				}
			}
		}
		switch it.Role {
		case RoleExternal:
			external = true
		case RoleInternal:
		case "":
			v.errorf(p+".role", "missing (expected %s)", roleExpected)
			roleErr = true
		default:
			v.errorf(p+".role", "%q is not a valid role (expected %s)", it.Role, roleExpected)
			roleErr = true
		}
	}
	if len(d.Interfaces) > 0 && !external && !roleErr && !v.badUnder(ifs) {
		v.errorf(ifs, "no interface has role external (expected at least one)")
	}

	switch {
	case d.API == "" && validID(d.ID):
		v.errorf("distributor.api", "missing (expected %s)", apiExpected)
	case d.API == "":
		// No default without a valid id; the id's error says why.
	default:
		if msg := apiProblem(d.API); msg != "" {
			v.errorf("distributor.api", "%s", msg)
		}
	}
	v.apiTokenFile(d)

	switch {
	case d.StateDir == "":
		v.errorf("distributor.state_dir", "missing (expected %s)", stateDirExpected)
	case !filepath.IsAbs(d.StateDir) || filepath.Clean(d.StateDir) != d.StateDir || len(d.StateDir) > 4096:
		v.errorf("distributor.state_dir", "%q is not a clean absolute path (expected %s)", d.StateDir, stateDirExpected)
	}

	if d.PinDir != "" && (!filepath.IsAbs(d.PinDir) || filepath.Clean(d.PinDir) != d.PinDir || len(d.PinDir) > 4096 || d.PinDir == "/") {
		v.errorf("distributor.pin_dir", "%q is not a clean absolute path (expected %s)", d.PinDir, pinDirExpected)
	}

	switch d.XDPMode {
	case XDPModeAuto, XDPModeNative, XDPModeGeneric:
	case "":
		v.errorf("distributor.xdp_mode", "missing (expected %s)", xdpModeExpected)
	default:
		v.errorf("distributor.xdp_mode", "%q is not a valid XDP mode (expected %s)", d.XDPMode, xdpModeExpected)
	}
}

func (v *validator) trafficManagers(tms []TrafficManager) {
	const root = "traffic_managers"
	if len(tms) > MaxTrafficManagers {
		v.errorf(root, "%d traffic managers are too many (expected at most %d)", len(tms), MaxTrafficManagers)
	}
	ids := map[string]int{}
	addrs := map[netip.Addr]int{}
	macs := map[string]int{}
	for i, tm := range tms {
		p := index(root, i)
		switch {
		case tm.ID == "":
			v.errorf(p+".id", "missing (expected %s)", idExpected)
		case !validID(tm.ID):
			v.errorf(p+".id", "%q is not a valid id (expected %s)", tm.ID, idExpected)
		default:
			if j, dup := ids[tm.ID]; dup {
				v.errorf(p+".id", "%q is already used by %s (expected unique ids)", tm.ID, index(root, j))
			} else {
				ids[tm.ID] = i
			}
		}
		v.tmAddresses(tms, i, addrs)
		if tm.Weight < 1 || tm.Weight > MaxWeight {
			v.errorf(p+".weight", "%d is out of range (expected %s)", tm.Weight, weightExpected)
		}
		switch tm.State {
		case StateActive, StateDraining, StateDisabled:
		case "":
			v.errorf(p+".state", "missing (expected %s)", stateExpected)
		default:
			v.errorf(p+".state", "%q is not a valid state (expected %s)", tm.State, stateExpected)
		}
		if tm.MAC != nil {
			switch {
			case len(tm.MAC) != 6:
				v.errorf(p+".mac", "%q is not a MAC address (expected %s)", tm.MAC.String(), macExpected)
			case tm.MAC[0]&1 != 0:
				v.errorf(p+".mac", "%s is a multicast MAC address (expected %s)", tm.MAC, macExpected)
			case string(tm.MAC) == "\x00\x00\x00\x00\x00\x00":
				v.errorf(p+".mac", "%s is the zero MAC address (expected %s)", tm.MAC, macExpected)
			default:
				if j, dup := macs[string(tm.MAC)]; dup {
					v.errorf(p+".mac", "%s is already the MAC of %s %q (expected unique MAC addresses)", tm.MAC, index(root, j), tms[j].ID)
				} else {
					macs[string(tm.MAC)] = i
				}
			}
		}
		if tm.SignalKey != nil && len(tm.SignalKey) < MinSignalKeyLen {
			v.errorf(p+".signal_key", "the key is %d bytes long (expected %s)", len(tm.SignalKey), signalKeyExpected)
		}
		if len(tm.Tags) > MaxTMTags {
			v.errorf(p+".tags", "%d tags (expected %s)", len(tm.Tags), tagsExpected)
		}
		for j, tag := range tm.Tags {
			if !validID(tag) {
				v.errorf(index(p+".tags", j), "%q is not a valid tag (expected %s)", tag, idExpected)
			}
		}
		if tm.AgentStats != "" {
			ap, err := netip.ParseAddrPort(tm.AgentStats)
			switch {
			case err != nil:
				v.errorf(p+".agent_stats", "%q is not an IP address with port (expected %s)", tm.AgentStats, agentStatsExpected)
			case ap.Port() == 0:
				v.errorf(p+".agent_stats", "port 0 in %q (expected %s)", tm.AgentStats, agentStatsExpected)
			case !ap.Addr().IsGlobalUnicast() && !ap.Addr().IsLoopback() && !ap.Addr().IsPrivate():
				v.errorf(p+".agent_stats", "%s is not a unicast address (expected %s)", ap.Addr(), agentStatsExpected)
			}
		}
	}
}

type serviceKey struct {
	vip   netip.Addr
	port  uint16
	proto string
}

func (v *validator) services(svcs []Service, tms []TrafficManager, masks [][]string, masksOK bool) {
	const root = "services"
	qosServices := 0
	defined := make([]string, 0, len(tms))
	known := map[string]bool{}
	for _, tm := range tms {
		if tm.ID != "" && !known[tm.ID] {
			known[tm.ID] = true
			defined = append(defined, tm.ID)
		}
	}
	sort.Strings(defined)
	definedList := strings.Join(defined, ", ")
	if definedList == "" {
		definedList = "none"
	}
	tmAddr := tmAddrIndex(tms)

	// If a TM's id could not be decoded, a pool naming it is not in error.
	tmsBad := v.suppressed("traffic_managers")
	for i := range tms {
		tmsBad = tmsBad || v.suppressed(index("traffic_managers", i)+".id")
	}
	names := map[string]int{}
	keys := map[serviceKey]int{}
	for i, s := range svcs {
		p := index(root, i)
		switch {
		case s.Name == "":
			v.errorf(p+".name", "missing (expected %s)", serviceNameExpected)
		case !validServiceName(s.Name):
			v.errorf(p+".name", "%q is not a valid service name (expected %s)", s.Name, serviceNameExpected)
		default:
			if j, dup := names[s.Name]; dup {
				v.errorf(p+".name", "%q is already used by %s (expected unique names)", s.Name, index(root, j))
			} else {
				names[s.Name] = i
			}
		}
		vipOK := false
		if msg := addrProblem(s.VIP); msg != "" {
			v.errorf(p+".vip", "%s (expected %s)", msg, vipExpected)
		} else {
			vipOK = !v.suppressed(p + ".vip")
			if j, clash := tmAddr[s.VIP]; clash && !v.suppressed(tmAddrPath(tms[j], j, s.VIP)) {
				v.errorf(tmAddrPath(tms[j], j, s.VIP), "%s is also the VIP of %s %q (expected a traffic manager address that is not a VIP)", s.VIP, p, s.Name)
			}
		}
		protoOK := false
		switch s.Protocol {
		case ProtocolTCP, ProtocolUDP:
			protoOK = !v.suppressed(p + ".protocol")
		case "":
			v.errorf(p+".protocol", "missing (expected %s)", protocolExpected)
		default:
			v.errorf(p+".protocol", "%q is not a valid protocol (expected %s)", s.Protocol, protocolExpected)
		}
		if vipOK && protoOK && !v.suppressed(p+".port") {
			k := serviceKey{s.VIP, s.Port, s.Protocol}
			if j, dup := keys[k]; dup {
				v.errorf(p, "%s is already served by %s %q (expected each vip, port and protocol combination once)", describeKey(k), index(root, j), svcs[j].Name)
			} else {
				keys[k] = i
			}
		}

		pp := p + ".traffic_managers"
		switch {
		case s.TrafficManagers == nil:
			v.errorf(pp, "missing (expected %s)", poolExpected)
		case len(s.TrafficManagers) == 0:
			v.errorf(pp, "empty list (expected %s)", poolExpected)
		}
		seen := map[string]int{}
		for j, id := range s.TrafficManagers {
			ip := index(pp, j)
			if id == "" {
				v.errorf(ip, "missing (expected a traffic manager id, one of: %s)", definedList)
				continue
			}
			if !known[id] {
				if tmsBad {
					continue // traffic_managers has errors of its own
				}
				v.errorf(ip, "unknown traffic manager %q (defined: %s)", id, definedList)
				continue
			}
			if k, dup := seen[id]; dup {
				v.errorf(ip, "%q is already in the pool at %s (expected each traffic manager once)", id, index(pp, k))
				continue
			}
			seen[id] = j
		}
		if s.Persistence != nil {
			v.persistence(p+".persistence", s.Persistence, masks, masksOK)
		}
		v.fallback(p+".fallback_traffic_managers", s, known, definedList, tmsBad)
		v.priorityGroups(p+".priority_groups", s, known, definedList, tmsBad)
		if s.QoS != nil {
			v.qos(p+".qos", *s.QoS)
		}
		if s.Policy == PolicyQoS {
			if qosServices++; qosServices == MaxQoSServices+1 {
				v.errorf(p+".policy", "more than %d qos services (the data path's class rings)", MaxQoSServices)
			}
		}
		if s.MinEligible < 1 || s.MinEligible > MaxTrafficManagers {
			v.errorf(p+".min_eligible", "%d is out of range (expected %s)", s.MinEligible, minEligibleExpected)
		}
		switch {
		case s.Policy != PolicyMaglev && s.Policy != PolicyHash && !IsRoundRobin(s.Policy) && s.Policy != PolicyFastestRTT &&
			!IsLeastConnections(s.Policy) && !IsMeasured(s.Policy) && s.Policy != PolicyPriorityGroups &&
			s.Policy != PolicyTopology && s.Policy != PolicyHopMetric && s.Policy != PolicyQoS:
			v.errorf(p+".policy", "%q is not a selection policy (expected %s)", s.Policy, policyExpected)
		case s.Policy == PolicyQoS && s.QoS == nil:
			v.errorf(p+".policy", "qos needs its class: services[].qos (expected %s)", qosExpected)
		case s.Policy != PolicyQoS && s.QoS != nil:
			v.errorf(p+".qos", "a class of a %s service (expected qos only with policy qos)", s.Policy)
		case s.Policy == PolicyTopology && v.zone == "":
			v.errorf(p+".policy", "topology prefers the TMs tagged with the distributor's zone: distributor.zone is not set")
		case s.Policy == PolicyPriorityGroups && len(s.PriorityGroups) == 0:
			v.errorf(p+".policy", "priority-groups needs priority_groups (expected %s)", priorityGroupsExpected)
		case s.Policy == PolicyRatioDynamic && !anyAgentStats(s, tms):
			v.errorf(p+".policy", "ratio-dynamic weighs TMs by their agents' load reports: no traffic manager of the pool has agent_stats")
		case s.Policy == PolicyFastestRTT && s.Health == nil:
			v.errorf(p+".policy", "fastest-rtt weighs TMs by their health probes' round-trip times: the service needs health")
		}
		if _, ok := hashBits[s.Hash]; !ok {
			v.errorf(p+".hash", "%q is not a hash (expected %s)", s.Hash, hashExpected)
		} else if IsRoundRobin(s.Policy) && s.Hash != Hash5Tuple {
			v.errorf(p+".hash", "%q: a %s service hashes nothing (expected hash omitted)", s.Hash, s.Policy)
		}
		if s.Health != nil {
			v.health(p+".health", s)
		}
	}
}

func describeKey(k serviceKey) string {
	if k.port == 0 {
		return fmt.Sprintf("vip %s all ports/%s", k.vip, k.proto)
	}
	return fmt.Sprintf("vip %s port %d/%s", k.vip, k.port, k.proto)
}

// addrProblem says what is wrong with a as a VIP or TM address, or "".
func addrProblem(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "missing"
	case a.Zone() != "":
		return fmt.Sprintf("%s has an IPv6 zone", a)
	case a.Is4In6():
		return fmt.Sprintf("%s is an IPv4-mapped IPv6 address, write %s", a, a.Unmap())
	case a.IsUnspecified():
		return fmt.Sprintf("%s is the unspecified address", a)
	case a.IsMulticast():
		return fmt.Sprintf("%s is a multicast address", a)
	case a.IsLoopback():
		return fmt.Sprintf("%s is a loopback address", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Sprintf("%s is the broadcast address", a)
	}
	return ""
}

// apiProblem says what is wrong with an admin API address, or "".
func apiProblem(s string) string {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		switch {
		case !strings.HasPrefix(path, "/"):
			return fmt.Sprintf("%q does not name an absolute socket path (expected %s)", s, apiExpected)
		case strings.ContainsRune(path, 0):
			return fmt.Sprintf("%q contains a NUL byte (expected %s)", s, apiExpected)
		case len(path) > 107:
			return fmt.Sprintf("the socket path is %d bytes long (expected at most 107)", len(path))
		}
		return ""
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not a unix socket or an IP address with port (expected %s)", s, apiExpected)
	}
	if !ap.Addr().IsLoopback() || ap.Addr().Zone() != "" {
		return fmt.Sprintf("%s is not a loopback address (expected %s: the admin API is local-only)", ap.Addr(), apiExpected)
	}
	if ap.Port() == 0 {
		return fmt.Sprintf("port 0 in %q (expected a port in 1..65535)", s)
	}
	return ""
}

func validID(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func validServiceName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// validIfName follows the kernel's dev_valid_name.
func validIfName(s string) bool {
	if len(s) < 1 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint32(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// apiTokenFile checks distributor.api_token_file: required with a TCP admin
// API, an absolute path; with files, the file itself (see api.ReadTokenFile).
func (v *validator) apiTokenFile(d *Distributor) {
	const p = "distributor.api_token_file"
	tcp := d.API != "" && !strings.HasPrefix(d.API, "unix:") && apiProblem(d.API) == ""
	switch {
	case d.APITokenFile == "" && tcp && !v.suppressed("distributor.api"):
		// Said at the line of api: the key that makes the token necessary.
		v.errs.add(&Error{Source: v.src, Line: v.line("distributor.api"), Path: p,
			Msg: fmt.Sprintf("missing: the admin API listens on TCP %s, where any local user can connect (expected %s)", d.API, apiTokenFileExpected)})
	case d.APITokenFile == "":
	case !strings.HasPrefix(d.APITokenFile, "/") || strings.ContainsRune(d.APITokenFile, 0):
		v.errorf(p, "%q is not an absolute path (expected %s)", d.APITokenFile, apiTokenFileExpected)
	case v.files && !v.suppressed(p):
		if _, err := api.ReadTokenFile(d.APITokenFile); err != nil {
			v.errorf(p, "%v (expected %s)", err, apiTokenFileExpected)
		}
	}
}

// ValidID reports whether s is a valid distributor or TM id: 1..32
// characters of a-z, 0-9, '-', '_'.
func ValidID(s string) bool { return validID(s) }

// tmAddresses checks TM i's address or addresses: exactly one of the two
// forms, each address unicast and unique across all TMs (addrs: the
// addresses seen so far, by TM).
func (v *validator) tmAddresses(tms []TrafficManager, i int, addrs map[netip.Addr]int) {
	const root = "traffic_managers"
	tm, p := tms[i], index(root, i)
	type entry struct {
		path string
		a    netip.Addr
	}
	var list []entry
	switch {
	case tm.Address.IsValid() && tm.Addresses != nil:
		v.errorf(p+".addresses", "both address and addresses are set (expected one of them: address for one address, addresses for several)")
		return
	case tm.Addresses != nil:
		if len(tm.Addresses) == 0 || len(tm.Addresses) > MaxTMAddresses {
			v.errorf(p+".addresses", "%d addresses (expected %s)", len(tm.Addresses), tmAddressesExpected)
			return
		}
		for k, a := range tm.Addresses {
			list = append(list, entry{index(p+".addresses", k), a})
		}
	default:
		list = []entry{{p + ".address", tm.Address}}
	}
	for _, e := range list {
		if msg := addrProblem(e.a); msg != "" {
			if e.path == p+".address" && !e.a.IsValid() {
				v.errorf(e.path, "%s (expected %s; or addresses: %s)", msg, tmAddressExpected, tmAddressesExpected)
			} else {
				v.errorf(e.path, "%s (expected %s)", msg, tmAddressExpected)
			}
		} else if j, dup := addrs[e.a]; dup && j == i {
			v.errorf(e.path, "%s is listed twice (expected each address once)", e.a)
		} else if dup {
			v.errorf(e.path, "%s is already the address of %s %q (expected unique addresses)", e.a, index(root, j), tms[j].ID)
		} else {
			addrs[e.a] = i
		}
	}
}

// tmAddrIndex maps each TM address to the first TM that has it.
func tmAddrIndex(tms []TrafficManager) map[netip.Addr]int {
	out := map[netip.Addr]int{}
	for i, tm := range tms {
		for _, a := range tm.AllAddresses() {
			if _, ok := out[a]; !ok && a.IsValid() {
				out[a] = i
			}
		}
	}
	return out
}

// tmAddrPath is the key path of address a in TM i's config.
func tmAddrPath(tm TrafficManager, i int, a netip.Addr) string {
	p := index("traffic_managers", i)
	for k, b := range tm.Addresses {
		if b == a {
			return index(p+".addresses", k)
		}
	}
	return p + ".address"
}

// fallback checks services[].fallback_traffic_managers: known ids, each
// once, none also in the service's pool (it would be in both rings).
func (v *validator) fallback(path string, s Service, known map[string]bool, definedList string, tmsBad bool) {
	seen := map[string]int{}
	for j, id := range s.FallbackTrafficManagers {
		ip := index(path, j)
		switch {
		case id == "":
			v.errorf(ip, "missing (expected a traffic manager id, one of: %s)", definedList)
		case !known[id]:
			if !tmsBad {
				v.errorf(ip, "unknown traffic manager %q (defined: %s)", id, definedList)
			}
		case slices.Contains(s.TrafficManagers, id):
			v.errorf(ip, "%q is in the service's pool already (expected fallback TMs outside traffic_managers)", id)
		default:
			if k, dup := seen[id]; dup {
				v.errorf(ip, "%q is already in the fallback pool at %s (expected each traffic manager once)", id, index(path, k))
			}
			seen[id] = j
		}
	}
}

// health checks services[].health.
func (v *validator) health(path string, s Service) {
	h := s.Health
	switch h.Type {
	case HealthTCP, HealthHTTP, HealthHTTPS, HealthUDP:
	case "":
		v.errorf(path+".type", "missing (expected %s)", healthTypeExpected)
	default:
		v.errorf(path+".type", "%q is not a health check type (expected %s)", h.Type, healthTypeExpected)
	}
	if h.Port == 0 {
		v.errorf(path+".port", "missing: the service has all ports (expected %s)", healthPortExpected)
	}
	if h.IntervalMS < MinHealthIntervalMS || h.IntervalMS > MaxHealthIntervalMS {
		v.errorf(path+".interval_ms", "%d is out of range (expected %s)", h.IntervalMS, healthIntervalExpected)
	}
	if h.TimeoutMS < MinHealthIntervalMS || h.TimeoutMS > h.IntervalMS {
		v.errorf(path+".timeout_ms", "%d is out of range (expected %s, here %d)", h.TimeoutMS, healthTimeoutExpected, h.IntervalMS)
	}
	for _, rf := range []struct {
		key string
		n   uint32
	}{{"rise", h.Rise}, {"fall", h.Fall}} {
		if rf.n < 1 || rf.n > MaxHealthRiseFall {
			v.errorf(path+"."+rf.key, "%d is out of range (expected %s)", rf.n, riseFallExpected)
		}
	}
	http := h.Type == HealthHTTP || h.Type == HealthHTTPS
	switch {
	case !http && (h.Path != "" || h.Status != 0):
		v.errorf(path, "path and status are for http and https checks, not %s", h.Type)
	case http && !validHTTPPath(h.Path):
		v.errorf(path+".path", "%q is not a valid path (expected %s)", h.Path, healthPathExpected)
	case http && h.Status != 0 && h.Status < 100:
		v.errorf(path+".status", "%d is out of range (expected %s)", h.Status, healthStatusExpected)
	}
	if h.Type != HealthUDP && (h.Send != "" || h.Expect != "") {
		v.errorf(path, "send and expect are for udp checks, not %s", h.Type)
	}
	if len(h.Send) > MaxHealthPayload {
		v.errorf(path+".send", "%d bytes (expected %s)", len(h.Send), healthPayloadExpected)
	}
	if len(h.Expect) > MaxHealthPayload {
		v.errorf(path+".expect", "%d bytes (expected %s)", len(h.Expect), healthPayloadExpected)
	}
	if h.OnUnhealthy != OnUnhealthyKeep && h.OnUnhealthy != OnUnhealthyReselect {
		v.errorf(path+".on_unhealthy", "%q is not valid (expected %s)", h.OnUnhealthy, onUnhealthyExpected)
	}
}

func validHTTPPath(p string) bool {
	if len(p) == 0 || len(p) > MaxHealthPath || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] > '~' {
			return false
		}
	}
	return true
}
func (v *validator) peers(p Peers) {
	addr := func(path, a string) {
		ap, err := netip.ParseAddrPort(a)
		switch {
		case err != nil:
			v.errorf(path, "%q is not an IP address with port (expected %s)", a, peerAddrExpected)
		case ap.Port() == 0:
			v.errorf(path, "port 0 in %q (expected %s)", a, peerAddrExpected)
		case ap.Addr().IsMulticast() || ap.Addr().IsUnspecified() && path != "peers.listen":
			v.errorf(path, "%s cannot be a peer's address (expected %s)", ap.Addr(), peerAddrExpected)
		}
	}
	switch {
	case p.Mirror != "all" && p.Mirror != "signalled" && p.Mirror != "older":
		v.errorf("peers.mirror", "%q (expected %s)", p.Mirror, peerMirrorExpected)
	case p.Mirror == "older" && p.MinAge == 0:
		v.errorf("peers.min_age", "missing with mirror: older (expected %s)", peerMinAgeExpected)
	case p.Mirror == "older" && p.MinAge > MaxPeerMinAge:
		v.errorf("peers.min_age", "%d (expected %s)", p.MinAge, peerMinAgeExpected)
	case p.Mirror != "older" && p.MinAge != 0:
		v.errorf("peers.min_age", "set with mirror: %s (expected %s)", p.Mirror, peerMinAgeExpected)
	}
	if len(p.Addresses) == 0 {
		return
	}
	if len(p.Addresses) > MaxPeers {
		v.errorf("peers.addresses", "%d peers, at most %d", len(p.Addresses), MaxPeers)
	}
	if p.ID == 0 {
		v.errorf("peers.id", "missing (expected %s)", peerIDExpected)
	}
	if p.Listen == "" {
		v.errorf("peers.listen", "missing (expected %s)", peerAddrExpected)
	} else {
		addr("peers.listen", p.Listen)
	}
	seen := map[string]int{}
	for i, a := range p.Addresses {
		path := fmt.Sprintf("peers.addresses[%d]", i)
		addr(path, a)
		if j, ok := seen[a]; ok {
			v.errorf(path, "%s is also peers.addresses[%d] (expected each peer once)", a, j)
		}
		seen[a] = i
		if a == p.Listen {
			v.errorf(path, "%s is this distributor's own peers.listen (expected the other distributors' addresses)", a)
		}
	}
	if len(p.Key) < MinSignalKeyLen {
		v.errorf("peers.key", "the key is %d bytes long (expected %s)", len(p.Key), signalKeyExpected)
	}
}

// anyAgentStats reports whether some TM of s's pools has agent_stats.
func anyAgentStats(s Service, tms []TrafficManager) bool {
	for _, id := range s.AllTrafficManagers() {
		for _, tm := range tms {
			if tm.ID == id && tm.AgentStats != "" {
				return true
			}
		}
	}
	return false
}

// priorityGroups checks services[].priority_groups: at most
// MaxPriorityGroups, not with a fallback pool, each group a non-empty list
// of known ids that are in no other group nor the pool, min_eligible
// 1..255.
func (v *validator) priorityGroups(path string, s Service, known map[string]bool, definedList string, tmsBad bool) {
	if len(s.PriorityGroups) == 0 {
		return
	}
	if len(s.FallbackTrafficManagers) > 0 {
		v.errorf(path, "a service has either fallback_traffic_managers or priority_groups (expected the fallback pool as the first of the priority groups)")
		return
	}
	if len(s.PriorityGroups) > MaxPriorityGroups {
		v.errorf(path, "%d groups (expected %s)", len(s.PriorityGroups), priorityGroupsExpected)
		return
	}
	where := map[string]string{}
	for _, id := range s.TrafficManagers {
		where[id] = "the service's pool"
	}
	for i, g := range s.PriorityGroups {
		gp := index(path, i)
		if len(g.TrafficManagers) == 0 {
			v.errorf(gp+".traffic_managers", "empty list (expected a list of at least one traffic manager id)")
		}
		for j, id := range g.TrafficManagers {
			ip := index(gp+".traffic_managers", j)
			switch {
			case id == "":
				v.errorf(ip, "missing (expected a traffic manager id, one of: %s)", definedList)
			case !known[id]:
				if !tmsBad {
					v.errorf(ip, "unknown traffic manager %q (defined: %s)", id, definedList)
				}
			case where[id] != "":
				v.errorf(ip, "%q is in %s already (expected each traffic manager in one group)", id, where[id])
			default:
				where[id] = gp
			}
		}
		if g.MinEligible < 1 || g.MinEligible > MaxTrafficManagers {
			v.errorf(gp+".min_eligible", "%d is out of range (expected %s)", g.MinEligible, minEligibleExpected)
		}
	}
}

// qos checks services[].qos: at least one DSCP, each 0..63 once, a valid
// tag.
func (v *validator) qos(path string, q QoS) {
	if len(q.DSCP) == 0 {
		v.errorf(path+".dscp", "empty list (expected %s)", qosExpected)
	}
	seen := map[uint32]bool{}
	for i, d := range q.DSCP {
		switch {
		case d > 63:
			v.errorf(index(path+".dscp", i), "%d is out of range (expected %s)", d, dscpExpected)
		case seen[d]:
			v.errorf(index(path+".dscp", i), "%d is listed twice (expected each DSCP once)", d)
		}
		seen[d] = true
	}
	if !validID(q.Tag) {
		v.errorf(path+".tag", "%q is not a valid tag (expected %s)", q.Tag, qosExpected)
	}
}
