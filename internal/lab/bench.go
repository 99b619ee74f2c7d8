package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// BenchOptions configure RunBench (`switchyard bench`).
type BenchOptions struct {
	// Duration of each measurement; 0 means 5s. iperf3 runs whole seconds,
	// so its measurements are rounded up to at least 1s.
	Duration time.Duration
	// Rounds of every measurement on each path; 0 means 3.
	Rounds int
	// Bin is the switchyard binary that runs the distributor.
	Bin string
	// Dir holds the config and the admin socket; "" means a new temporary
	// directory, removed at the end.
	Dir string
	// Streams are the parallel TCP streams of the throughput measurements;
	// nil means 1 and 8.
	Streams []int
	// Reverse also measures throughput from the TM to the client (iperf3 -R).
	// The data then goes back through the distributor namespace's kernel on
	// every path (direct server return); only the client's ACKs go through
	// XDP.
	Reverse bool
	// Workers is the number of concurrent workers of the connection-rate
	// and keep-alive measurements; 0 means 8.
	Workers int
	// TMs behind the distributor and kernel ECMP; 0 means 3.
	TMs int
	// MTU of every link of the topology; 0 means 1500 (9000: jumbo frames,
	// the XDP program takes them as multi-buffer frames).
	MTU int
	// Queues is the number of RX/TX queues of every veth; 0 means the
	// kernel's default.
	Queues int
	// Qdisc on every veth (netlab.Spec.Qdisc); "" means "pfifo", "noqueue"
	// the veth's default (no queue: a full ring or backlog drops).
	Qdisc string
	// Paths to measure, in the order of the first round; nil means direct,
	// ECMP and switchyard.
	Paths []string
	// Iperf3 is the iperf3 program; "" means "iperf3" from PATH.
	Iperf3 string
	// IperfPort is the iperf3 server's port on the VIP; 0 means 5201.
	IperfPort uint16
}

// Bench paths.
const (
	// PathDirect: no XDP; the distributor namespace's kernel routes the
	// VIP to the first TM.
	PathDirect = "direct"
	// PathECMP: no XDP; the distributor namespace's kernel routes the VIP
	// over every TM (a multipath route, fib_multipath_hash_policy 1: an L4
	// hash), the stateless reference for spreading flows.
	PathECMP = "ecmp"
	// PathSwitchyard: the distributor runs and its XDP program sends the
	// client's packets to the TMs.
	PathSwitchyard = "switchyard"
)

// BenchResult is the outcome of RunBench.
type BenchResult struct {
	Machine  MachineInfo   `json:"machine"`
	Duration time.Duration `json:"duration_ns"`
	Rounds   int           `json:"rounds"`
	MTU      int           `json:"mtu"`
	Queues   int           `json:"queues,omitempty"`
	Qdisc    string        `json:"qdisc"`
	TMs      int           `json:"tms"`
	// Paths measured, in the order of the first round.
	Paths []string `json:"paths"`
	// Order is the order in which the paths ran in each round.
	Order   [][]string    `json:"order"`
	Metrics []BenchMetric `json:"metrics"`
	// DistPackets is the number of packets the distributor sent to the TMs
	// in each switchyard round (proof that the traffic went through XDP).
	DistPackets []uint64 `json:"dist_packets"`
}

// MachineInfo describes the host the bench ran on.
type MachineInfo struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model,omitempty"`
	Kernel   string `json:"kernel"`
	Iperf3   string `json:"iperf3,omitempty"`
}

// BenchSeries is one measurement on one path: a value per round, with the
// TCP retransmissions and the link drops seen while it ran.
type BenchSeries struct {
	Values []float64 `json:"values"`
	// Retrans are the TCP segments retransmitted in the client's and the
	// TMs' namespaces (RetransSegs of /proc/net/snmp) during the round.
	Retrans []uint64 `json:"retrans"`
	// Drops are the packets dropped on every link of the topology during
	// the round: the tx_dropped of every interface, as `ip -s link` shows
	// it, in every namespace (veth ring and backlog overflows, failed XDP
	// transmits; a veth shows each again as its peer's rx_dropped, which is
	// not added). DropLinks names the interfaces whose tx or rx dropped
	// count moved, with the count.
	Drops     []uint64 `json:"drops"`
	DropLinks []string `json:"drop_links,omitempty"`
	// Errors are the failed requests of the connection measurements.
	Errors        []uint64 `json:"errors,omitempty"`
	Median        float64  `json:"median"`
	RetransMedian float64  `json:"retrans_median"`
	DropsMedian   float64  `json:"drops_median"`
}

// BenchMetric is one measurement on every path, per round.
type BenchMetric struct {
	Name string `json:"name"`
	// Unit of the values: "bit/s", "conn/s" or "req/s".
	Unit  string                  `json:"unit"`
	Paths map[string]*BenchSeries `json:"paths"`
	// Ratios of the medians: "switchyard/direct", "switchyard/ecmp",
	// "ecmp/direct" (those whose paths were measured; NaN, written null,
	// when the denominator is 0).
	Ratios map[string]float64 `json:"ratios"`
	// RoundRatios are the same ratios per round.
	RoundRatios map[string][]float64 `json:"round_ratios"`
}

// The targets of issue 11, checked in the table.
const (
	// BenchTargetThroughput: 8 streams through the distributor against
	// the direct path.
	BenchTargetThroughput = 0.95
	// BenchTargetRetrans: the distributor's retransmissions at most this
	// many times the direct path's.
	BenchTargetRetrans = 2.0
	// BenchTargetConns: new connections per second through the
	// distributor against kernel ECMP.
	BenchTargetConns = 0.95
)

// benchRatios are the ratios a metric reports, numerator first.
var benchRatios = [][2]string{{PathSwitchyard, PathDirect}, {PathSwitchyard, PathECMP}, {PathECMP, PathDirect}}

// benchMeasure is one measurement, run on one path at a time. run returns
// the value and the failed requests.
type benchMeasure struct {
	name, unit string
	// l3: ECMP hashes on addresses only during it (iperf3's streams must
	// reach the server that holds the test).
	l3  bool
	run func(ctx context.Context) (float64, uint64, error)
}

// RunBench builds a topology with one client, one distributor namespace and
// TMs TMs, and measures the same traffic from the client to the VIP on up
// to three paths in the same run, rotating their order per round:
//
//   - direct: no XDP program; the distributor namespace's kernel routes the
//     VIP to the first TM (a /32 route via its address);
//   - ecmp: no XDP program; the kernel routes the VIP over every TM (a
//     multipath route with an L4 hash): stateless spreading, the reference
//     for the work of a balancer;
//   - switchyard: the distributor runs (routes removed) and its XDP program
//     sends the client's packets to the TMs.
//
// The TMs' replies go through the distributor namespace's kernel on every
// path (direct server return). Measurements: iperf3 TCP throughput client
// → TM with each of Streams parallel streams (and TM → client with
// Reverse), new TCP connections per second (one short HTTP request each)
// and keep-alive HTTP requests per second; each with the TCP
// retransmissions and the link drops seen during it. It prints progress and
// a table of per-round values, medians and ratios to out and removes
// everything it made before it returns.
func RunBench(ctx context.Context, o BenchOptions, out io.Writer) (res BenchResult, err error) {
	iperf, err := o.defaults()
	if err != nil {
		return res, err
	}
	res.Machine = machineInfo(iperf)
	res.Duration, res.Rounds, res.MTU, res.Queues, res.TMs, res.Paths, res.Qdisc = o.Duration, o.Rounds, o.MTU, o.Queues, o.TMs, o.Paths, o.Qdisc

	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "switchyard-bench-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(out, "building topology: 1 client, 1 distributor, %d TMs, MTU %d …\n", o.TMs, o.MTU)
	qdisc := o.Qdisc
	if qdisc == "noqueue" {
		qdisc = ""
	}
	env, err := NewEnv(ctx, netlab.Spec{Clients: 1, Distributors: 1, TMs: o.TMs, MTU: o.MTU, Queues: o.Queues, Qdisc: qdisc}, dir, o.Bin)
	if err != nil {
		return res, fmt.Errorf("build topology: %w", err)
	}
	defer func() {
		fmt.Fprintf(out, "removing namespaces %s-* …\n", env.Topo.Prefix)
		if cerr := env.Close(); cerr != nil && err == nil && ctx.Err() == nil {
			err = fmt.Errorf("cleanup: %w", cerr)
		}
	}()
	rig := newBenchRig(env, o, iperf)
	for _, h := range env.Topo.TMs {
		srv, err := startIperfServer(ctx, h, iperf, rig.iperfAddr)
		if err != nil {
			return res, err
		}
		defer srv.stop()
	}

	measures := rig.measures()
	res.Metrics = make([]BenchMetric, len(measures))
	for i, m := range measures {
		res.Metrics[i] = BenchMetric{Name: m.name, Unit: m.unit, Paths: map[string]*BenchSeries{}}
		for _, p := range o.Paths {
			res.Metrics[i].Paths[p] = &BenchSeries{}
		}
	}
	fmt.Fprintf(out, "%d rounds of %d measurements of %v on each path: %s\n", o.Rounds, len(measures), o.Duration, strings.Join(o.Paths, ", "))
	for r := range o.Rounds {
		order := benchOrder(o.Paths, r)
		res.Order = append(res.Order, order)
		for _, path := range order {
			if err := rig.runPath(ctx, &res, measures, r, path, out); err != nil {
				return res, err
			}
		}
	}
	for i := range res.Metrics {
		res.Metrics[i].finish()
	}
	res.Print(out)
	return res, nil
}

// defaults fills o's zero fields, checks the rest, and returns the iperf3
// program's path.
func (o *BenchOptions) defaults() (string, error) {
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Streams == nil {
		o.Streams = []int{1, 8}
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.TMs <= 0 {
		o.TMs = 3
	}
	if o.MTU == 0 {
		o.MTU = netlab.DefaultMTU
	}
	if o.Paths == nil {
		o.Paths = []string{PathDirect, PathECMP, PathSwitchyard}
	}
	if o.Qdisc == "" {
		o.Qdisc = "pfifo"
	}
	if o.Iperf3 == "" {
		o.Iperf3 = "iperf3"
	}
	if o.IperfPort == 0 {
		o.IperfPort = 5201
	}
	if o.Bin == "" {
		return "", errors.New("no switchyard binary to run the distributor with")
	}
	for _, s := range o.Streams {
		if s < 1 || s > 128 {
			return "", fmt.Errorf("streams must be 1..128: %v", o.Streams)
		}
	}
	switch {
	case o.TMs > 16:
		return "", fmt.Errorf("at most 16 TMs, got %d", o.TMs)
	case o.MTU < 1280 || o.MTU > 9000:
		return "", fmt.Errorf("MTU must be 1280..9000, got %d", o.MTU)
	case o.Queues < 0 || o.Queues > 64:
		return "", fmt.Errorf("queues must be 0..64, got %d", o.Queues)
	}
	seen := map[string]bool{}
	for _, p := range o.Paths {
		if p != PathDirect && p != PathECMP && p != PathSwitchyard {
			return "", fmt.Errorf("unknown path %q (direct, ecmp, switchyard)", p)
		}
		if seen[p] {
			return "", fmt.Errorf("path %q twice", p)
		}
		seen[p] = true
	}
	if len(o.Paths) == 0 {
		return "", errors.New("no path to measure")
	}
	iperf, err := exec.LookPath(o.Iperf3)
	if err != nil {
		return "", fmt.Errorf("iperf3 is needed for the throughput measurements (apt-get install iperf3): %w", err)
	}
	return iperf, nil
}

// benchOrder is the order of the paths in round r: rotated by one each
// round, so that no path always runs on a warm (or tired) machine.
func benchOrder(paths []string, r int) []string {
	n := len(paths)
	out := make([]string, n)
	for i := range n {
		out[i] = paths[(i+r)%n]
	}
	return out
}

// benchRig is the bench's topology and how to set up each path on it.
type benchRig struct {
	env       *Env
	o         BenchOptions
	iperf     string
	client    *netlab.Host
	dist      *netlab.Host
	tms       []string
	iperfAddr netip.AddrPort
	// cfg is the distributor's config (the lab's services and iperf's);
	// direct and ecmp are the kernel paths' VIP routes in the distributor
	// namespace.
	cfg           string
	direct, ecmp  *netlink.Route
	watched       []*netlab.NS // where retransmissions are counted
	allNamespaces []*netlab.NS // where drops are counted
}

func newBenchRig(env *Env, o BenchOptions, iperf string) *benchRig {
	topo := env.Topo
	b := &benchRig{env: env, o: o, iperf: iperf, client: topo.Clients[0], dist: topo.Distributors[0],
		iperfAddr: netip.AddrPortFrom(topo.VIP4, o.IperfPort)}
	for _, h := range topo.TMs {
		b.tms = append(b.tms, h.Name)
	}
	// iperf's service hashes the client's address only: every stream of a
	// test reaches the TM whose iperf3 server holds the test.
	b.cfg = env.Config(ConfigOptions{
		Extra: fmt.Sprintf("  - {name: iperf, vip: %s, port: %d, protocol: tcp, policy: hash, hash: src-ip, traffic_managers: [%s]}\n",
			topo.VIP4, o.IperfPort, strings.Join(b.tms, ", ")),
	})
	vip := &net.IPNet{IP: topo.VIP4.AsSlice(), Mask: net.CIDRMask(32, 32)}
	link := b.dist.Links["int0"].Index
	b.direct = &netlink.Route{LinkIndex: link, Dst: vip, Gw: TMAddr4(topo.TMs[0]).AsSlice()}
	b.ecmp = &netlink.Route{Dst: vip}
	for _, h := range topo.TMs {
		b.ecmp.MultiPath = append(b.ecmp.MultiPath, &netlink.NexthopInfo{LinkIndex: link, Gw: TMAddr4(h).AsSlice()})
	}
	b.watched = append(b.watched, b.client.NS)
	for _, h := range topo.TMs {
		b.watched = append(b.watched, h.NS)
	}
	b.allNamespaces = append(b.allNamespaces, topo.Switch)
	for _, h := range topo.Hosts() {
		b.allNamespaces = append(b.allNamespaces, h.NS)
	}
	return b
}

// measures are the throughput measurements (each stream count, each
// direction asked for), the connection rate and the keep-alive request
// rate.
func (b *benchRig) measures() []benchMeasure {
	var ms []benchMeasure
	for _, rev := range []bool{false, true} {
		if rev && !b.o.Reverse {
			continue
		}
		for _, n := range b.o.Streams {
			ms = append(ms, b.throughput(n, rev))
		}
	}
	return append(ms, b.connRate(), b.keepAlive())
}

func (b *benchRig) throughput(streams int, reverse bool) benchMeasure {
	dir := "client→TM"
	if reverse {
		dir = "TM→client"
	}
	plural := ""
	if streams > 1 {
		plural = "s"
	}
	return benchMeasure{name: fmt.Sprintf("TCP %d stream%s %s", streams, plural, dir), unit: "bit/s", l3: true,
		run: func(ctx context.Context) (float64, uint64, error) {
			bps, err := runIperf(ctx, b.client, b.iperf, b.iperfAddr, streams, reverse, b.o.Duration)
			return bps, 0, err
		}}
}

func (b *benchRig) connRate() benchMeasure {
	return benchMeasure{name: fmt.Sprintf("new TCP conns/s (%d workers, HTTP)", b.o.Workers), unit: "conn/s",
		run: func(ctx context.Context) (float64, uint64, error) {
			rep, err := b.load(ctx, loadgen.Options{Short: b.o.Workers})
			if err != nil {
				return 0, 0, err
			}
			var n uint64
			for _, c := range rep.PerTM {
				n += c.ShortConns
			}
			if n == 0 {
				return 0, rep.Errors, fmt.Errorf("no connection succeeded: %d errors %v", rep.Errors, rep.ErrorSamples)
			}
			return float64(n) / rep.Elapsed.Seconds(), rep.Errors, nil
		}}
}

func (b *benchRig) keepAlive() benchMeasure {
	return benchMeasure{name: fmt.Sprintf("keep-alive HTTP req/s (%d conns)", b.o.Workers), unit: "req/s",
		run: func(ctx context.Context) (float64, uint64, error) {
			rep, err := b.load(ctx, loadgen.Options{KeepAlive: b.o.Workers})
			if err != nil {
				return 0, 0, err
			}
			if rep.HTTPRequests == 0 {
				return 0, rep.Errors, fmt.Errorf("no request succeeded: %d errors %v", rep.Errors, rep.ErrorSamples)
			}
			return float64(rep.HTTPRequests) / rep.Elapsed.Seconds(), rep.Errors, nil
		}}
}

func (b *benchRig) load(ctx context.Context, lo loadgen.Options) (loadgen.Report, error) {
	b.env.ClientDialer(0, &lo)
	lctx, cancel := context.WithTimeout(ctx, b.o.Duration)
	defer cancel()
	rep := loadgen.Start(lctx, b.env.Target(false), lo).Wait()
	return rep, ctx.Err()
}

// kernelPath sets up a kernel path: no distributor, no XDP program on the
// distributor's interfaces, the path's route for the VIP.
func (b *benchRig) kernelPath(path string) error {
	if err := checkNoXDP(b.dist); err != nil {
		return err
	}
	route := b.direct
	if path == PathECMP {
		route = b.ecmp
	}
	if err := b.dist.NS.Netlink().RouteReplace(route); err != nil {
		return fmt.Errorf("%s route for %s in %s: %w", path, b.iperfAddr.Addr(), b.dist.NS.Name, err)
	}
	return nil
}

// hashPolicy sets the distributor namespace's multipath hash: 1 (L4) for
// the ECMP path's connection measurements, 0 (addresses) for throughput.
func (b *benchRig) hashPolicy(l4 bool) error {
	v := "0"
	if l4 {
		v = "1"
	}
	return b.dist.NS.Sysctl("net.ipv4.fib_multipath_hash_policy", v)
}

func (b *benchRig) removeRoutes() error {
	for _, r := range []*netlink.Route{b.direct, b.ecmp} {
		if err := b.dist.NS.Netlink().RouteDel(&netlink.Route{Dst: r.Dst}); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %s in %s: %w", b.iperfAddr.Addr(), b.dist.NS.Name, err)
		}
	}
	return nil
}

// runPath sets up path, runs every measurement on it into res, and tears
// the path down; the switchyard path must have sent packets through XDP.
func (b *benchRig) runPath(ctx context.Context, res *BenchResult, measures []benchMeasure, r int, path string, out io.Writer) error {
	var d *Distributor
	var before uint64
	if err := b.removeRoutes(); err != nil {
		return err
	}
	switch path {
	case PathDirect, PathECMP:
		if err := b.kernelPath(path); err != nil {
			return err
		}
	case PathSwitchyard:
		var err error
		if d, err = b.env.StartDistributor(ctx, b.cfg); err != nil {
			return err
		}
		st, err := waitEligible(ctx, d.API, b.tms)
		if err != nil {
			d.Stop()
			return fmt.Errorf("%w\n%s", err, d.Output())
		}
		before = sumTMPackets(st)
	}
	for i, m := range measures {
		if path == PathECMP {
			if err := b.hashPolicy(!m.l3); err != nil {
				return err
			}
		}
		rt0, err := tcpRetrans(b.watched)
		if err != nil {
			return err
		}
		dr0, err := linkDrops(b.allNamespaces)
		if err != nil {
			return err
		}
		v, nerr, err := m.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if d != nil {
				err = fmt.Errorf("%w (distributor: %s)", err, distDrops(ctx, d))
				d.Stop()
			}
			return fmt.Errorf("round %d, %s, %s: %w", r+1, path, m.name, err)
		}
		rt1, err := tcpRetrans(b.watched)
		if err != nil {
			return err
		}
		dr1, err := linkDrops(b.allNamespaces)
		if err != nil {
			return err
		}
		drops, where := dropDelta(dr0, dr1)
		s := res.Metrics[i].Paths[path]
		s.record(v, rt1-rt0, drops, nerr, m.unit != "bit/s")
		for _, w := range where {
			if !slices.Contains(s.DropLinks, w) {
				s.DropLinks = append(s.DropLinks, w)
			}
		}
		note := ""
		if m.unit != "bit/s" && nerr > 0 {
			note = fmt.Sprintf(", %d errors", nerr)
		}
		fmt.Fprintf(out, "[round %d/%d] %-10s  %-36s %s (retrans %d, drops %d%s)\n", r+1, b.o.Rounds, path, m.name,
			formatValue(v, m.unit), rt1-rt0, drops, note)
	}
	if path != PathSwitchyard {
		return b.removeRoutes()
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, serr := d.API.Stats(sctx)
	cancel()
	stopErr := d.Stop()
	if serr != nil {
		return fmt.Errorf("distributor stats: %w", serr)
	}
	if stopErr != nil {
		return fmt.Errorf("distributor stop: %w\n%s", stopErr, d.Output())
	}
	pk := sumTMPackets(st) - before
	res.DistPackets = append(res.DistPackets, pk)
	if pk == 0 {
		return fmt.Errorf("round %d: the distributor sent no packet to the TMs: the traffic did not go through XDP", r+1)
	}
	return nil
}

// distDrops describes the distributor's non-zero drop counters, for an
// error.
func distDrops(ctx context.Context, d *Distributor) string {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := d.API.Stats(sctx)
	if err != nil {
		return fmt.Sprintf("stats: %v", err)
	}
	var out []string
	for _, c := range st.Counters {
		if c.Drop && c.Packets > 0 {
			out = append(out, fmt.Sprintf("%s %d", c.Name, c.Packets))
		}
	}
	if len(out) == 0 {
		return "no drop counter moved"
	}
	return "drops " + strings.Join(out, ", ")
}

func sumTMPackets(st api.Stats) uint64 {
	var n uint64
	for _, t := range st.TrafficManagers {
		n += t.Packets
	}
	return n
}

// tcpRetrans sums TCP RetransSegs (/proc/net/snmp) over the namespaces.
func tcpRetrans(nss []*netlab.NS) (uint64, error) {
	var sum uint64
	for _, ns := range nss {
		var b []byte
		err := ns.Do(func() error {
			var err error
			// thread-self: /proc/net follows the process's first
			// thread, which is not in the namespace.
			b, err = os.ReadFile("/proc/thread-self/net/snmp")
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("read /proc/net/snmp in %s: %w", ns.Name, err)
		}
		v, err := snmpValue(b, "Tcp", "RetransSegs")
		if err != nil {
			return 0, fmt.Errorf("%s: %w", ns.Name, err)
		}
		sum += v
	}
	return sum, nil
}

// snmpValue reads one counter of /proc/net/snmp: a header line and a value
// line per protocol ("Tcp: ... RetransSegs ..." then "Tcp: ... 42 ...").
func snmpValue(b []byte, proto, name string) (uint64, error) {
	var head []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == name && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
		break
	}
	return 0, fmt.Errorf("no %s %s in /proc/net/snmp", proto, name)
}

// linkDrops reads tx_dropped and rx_dropped of every interface of the
// namespaces, by "namespace/interface tx" and "... rx".
func linkDrops(nss []*netlab.NS) (map[string]uint64, error) {
	m := map[string]uint64{}
	for _, ns := range nss {
		links, err := ns.Netlink().LinkList()
		if err != nil {
			return nil, fmt.Errorf("links of %s: %w", ns.Name, err)
		}
		for _, l := range links {
			a := l.Attrs()
			if a.Statistics == nil {
				continue
			}
			m[ns.Name+"/"+a.Name+" tx"] = a.Statistics.TxDropped
			m[ns.Name+"/"+a.Name+" rx"] = a.Statistics.RxDropped
		}
	}
	return m, nil
}

// dropDelta is the drops between two readings and the links that dropped.
func dropDelta(before, after map[string]uint64) (uint64, []string) {
	var sum uint64
	var where []string
	for k, v := range after {
		if v <= before[k] {
			continue
		}
		d := v - before[k]
		// A drop at a veth's transmit is also shown as its peer's
		// rx_dropped (and an XDP transmit failure as the peer's tx):
		// the sum counts transmit drops only, each once.
		if strings.HasSuffix(k, " tx") {
			sum += d
		}
		where = append(where, fmt.Sprintf("%s:%d", k, d))
	}
	slices.Sort(where)
	return sum, where
}

// record adds one round's value, retransmissions, drops and (for the
// connection measurements) failed requests.
func (s *BenchSeries) record(v float64, retrans, drops, errs uint64, withErrors bool) {
	s.Values = append(s.Values, v)
	s.Retrans = append(s.Retrans, retrans)
	s.Drops = append(s.Drops, drops)
	if withErrors {
		s.Errors = append(s.Errors, errs)
	}
}

func (m *BenchMetric) finish() {
	for _, s := range m.Paths {
		s.Median = median(s.Values)
		s.RetransMedian = median(toFloats(s.Retrans))
		s.DropsMedian = median(toFloats(s.Drops))
	}
	m.Ratios, m.RoundRatios = map[string]float64{}, map[string][]float64{}
	for _, rp := range benchRatios {
		a, b := m.Paths[rp[0]], m.Paths[rp[1]]
		if a == nil || b == nil {
			continue
		}
		k := rp[0] + "/" + rp[1]
		m.Ratios[k] = ratio(a.Median, b.Median)
		rr := []float64{}
		for i := range min(len(a.Values), len(b.Values)) {
			rr = append(rr, ratio(a.Values[i], b.Values[i]))
		}
		m.RoundRatios[k] = rr
	}
}

func toFloats(v []uint64) []float64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return f
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// MarshalJSON writes NaN ratios (a zero denominator) as null.
func (m BenchMetric) MarshalJSON() ([]byte, error) {
	type plain BenchMetric
	type out struct {
		plain
		Ratios      map[string]*float64   `json:"ratios"`
		RoundRatios map[string][]*float64 `json:"round_ratios"`
	}
	f := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	o := out{plain: plain(m), Ratios: map[string]*float64{}, RoundRatios: map[string][]*float64{}}
	for k, r := range m.Ratios {
		o.Ratios[k] = f(r)
	}
	for k, rr := range m.RoundRatios {
		for _, r := range rr {
			o.RoundRatios[k] = append(o.RoundRatios[k], f(r))
		}
	}
	return json.Marshal(o)
}

func formatValue(v float64, unit string) string {
	if unit == "bit/s" {
		return fmt.Sprintf("%.2f Gbit/s", v/1e9)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

func formatCell(v float64, unit string) string {
	if unit == "bit/s" {
		return fmt.Sprintf("%.2f", v/1e9)
	}
	return fmt.Sprintf("%.0f", v)
}

func displayUnit(unit string) string {
	if unit == "bit/s" {
		return "Gbit/s"
	}
	return unit
}

// cellWidth is the width of the table's number columns.
const cellWidth = 8

// Print writes the machine info, the table of per-round values (with
// retransmissions and drops), medians and ratios, and the targets.
func (r BenchResult) Print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\n=== switchyard bench: %d round(s), %v per measurement ===\n", r.Rounds, r.Duration)
	fmt.Fprintf(w, "machine: %d CPUs", m.CPUs)
	if m.CPUModel != "" {
		fmt.Fprintf(w, " (%s)", m.CPUModel)
	}
	fmt.Fprintf(w, ", kernel %s", m.Kernel)
	if m.Iperf3 != "" {
		fmt.Fprintf(w, ", %s", m.Iperf3)
	}
	fmt.Fprintln(w)
	q := "default queues"
	if r.Queues > 0 {
		q = fmt.Sprintf("%d queues per veth", r.Queues)
	}
	fmt.Fprintf(w, "topology: c1 ─ext bridge─ d1 ─int bridge─ %d TMs (veth pairs, MTU %d, %s); replies TM → d1 kernel → c1 on every path\n", r.TMs, r.MTU, q)
	fmt.Fprintln(w, "direct:     no XDP; d1's kernel forwards the VIP to tm1 (route VIP/32 via tm1)")
	fmt.Fprintln(w, "ecmp:       no XDP; d1's kernel spreads the VIP over every TM (multipath route; L4 hash, L3 for iperf3)")
	fmt.Fprintln(w, "switchyard: distributor on d1; its XDP program sends the client's packets to the TMs (iperf3: hash src-ip)")
	fmt.Fprintln(w, "throughput: iperf3 client in c1 → iperf3 server on the VIP (receiver's rate); conns/s: short HTTP requests, one TCP connection each; req/s: keep-alive HTTP")
	fmt.Fprintf(w, "retrans: TCP RetransSegs in c1 and the TMs; drops: tx dropped on every interface of every namespace; qdisc on every veth: %s\n", r.Qdisc)
	var order []string
	for _, o := range r.Order {
		order = append(order, strings.Join(o, "→"))
	}
	fmt.Fprintf(w, "path order per round: %s\n\n", strings.Join(order, ", "))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "MEASUREMENT\tUNIT\tPATH\t")
	for i := range r.Rounds {
		fmt.Fprintf(tw, "%*s\t", cellWidth, fmt.Sprintf("R%d", i+1))
	}
	fmt.Fprintf(tw, "%*s\t%s\t%s\t\n", cellWidth, "MEDIAN", "RETRANS", "DROPS")
	for _, mt := range r.Metrics {
		first := true
		for _, p := range r.Paths {
			s := mt.Paths[p]
			if s == nil {
				continue
			}
			name, unit := "", ""
			if first {
				name, unit = mt.Name, displayUnit(mt.Unit)
				first = false
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t", name, unit, p)
			for i := range r.Rounds {
				if i < len(s.Values) {
					cell := formatCell(s.Values[i], mt.Unit)
					if i < len(s.Errors) && s.Errors[i] > 0 {
						cell += fmt.Sprintf(" (%d err)", s.Errors[i])
					}
					fmt.Fprintf(tw, "%*s\t", cellWidth, cell)
				} else {
					fmt.Fprintf(tw, "%*s\t", cellWidth, "-")
				}
			}
			fmt.Fprintf(tw, "%*s\t%.0f\t%.0f\t\n", cellWidth, formatCell(s.Median, mt.Unit), s.RetransMedian, s.DropsMedian)
		}
		for _, rp := range benchRatios {
			k := rp[0] + "/" + rp[1]
			rr, ok := mt.RoundRatios[k]
			if !ok {
				continue
			}
			fmt.Fprintf(tw, "\t\t%s\t", k)
			for i := range r.Rounds {
				if i < len(rr) {
					fmt.Fprintf(tw, "%*.3f\t", cellWidth, rr[i])
				} else {
					fmt.Fprintf(tw, "%*s\t", cellWidth, "-")
				}
			}
			fmt.Fprintf(tw, "%*.3f\t\t\t\n", cellWidth, mt.Ratios[k])
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nratios: of the medians (MEDIAN column) and per round; RETRANS and DROPS: medians per measurement")
	for _, t := range r.Targets() {
		fmt.Fprintf(w, "target: %s\n", t)
	}
	if len(r.DistPackets) > 0 {
		fmt.Fprintf(w, "packets the distributor sent to the TMs per switchyard round: %v\n", r.DistPackets)
	}
	for _, mt := range r.Metrics {
		for _, p := range r.Paths {
			if s := mt.Paths[p]; s != nil && len(s.DropLinks) > 0 {
				fmt.Fprintf(w, "drops: %s, %s: %s\n", mt.Name, p, strings.Join(s.DropLinks, " "))
			}
		}
	}
}

// Targets checks the targets of issue 11 that the measured paths allow and
// describes each with its verdict.
func (r BenchResult) Targets() []string {
	var out []string
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	for _, mt := range r.Metrics {
		sy, direct, ecmp := mt.Paths[PathSwitchyard], mt.Paths[PathDirect], mt.Paths[PathECMP]
		if sy == nil {
			continue
		}
		switch {
		case mt.Unit == "bit/s" && strings.HasPrefix(mt.Name, "TCP 8 streams") && direct != nil:
			rt := ratio(sy.RetransMedian, direct.RetransMedian)
			okRt := sy.RetransMedian <= BenchTargetRetrans*direct.RetransMedian
			out = append(out, fmt.Sprintf("%s: switchyard/direct %.3f ≥ %.2f %s; retransmissions %.0f vs %.0f (%.2f×) ≤ %.0f× %s",
				mt.Name, mt.Ratios[PathSwitchyard+"/"+PathDirect], BenchTargetThroughput,
				verdict(mt.Ratios[PathSwitchyard+"/"+PathDirect] >= BenchTargetThroughput),
				sy.RetransMedian, direct.RetransMedian, rt, BenchTargetRetrans, verdict(okRt)))
		case mt.Unit == "conn/s" && ecmp != nil:
			out = append(out, fmt.Sprintf("%s: switchyard/ecmp %.3f ≥ %.2f %s", mt.Name, mt.Ratios[PathSwitchyard+"/"+PathECMP],
				BenchTargetConns, verdict(mt.Ratios[PathSwitchyard+"/"+PathECMP] >= BenchTargetConns)))
		}
	}
	return out
}

// machineInfo collects what the bench ran on.
func machineInfo(iperf string) MachineInfo {
	m := MachineInfo{CPUs: runtime.NumCPU()}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := exec.Command(iperf, "--version").Output(); err == nil {
		m.Iperf3, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
		m.Iperf3, _, _ = strings.Cut(m.Iperf3, " (")
	}
	return m
}

// checkNoXDP fails if an XDP program is attached to an interface of host.
func checkNoXDP(h *netlab.Host) error {
	for name := range h.Links {
		l, err := h.NS.Netlink().LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", h.NS.Name, name, err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			return fmt.Errorf("%s/%s still has XDP program %d attached: the direct path would not be direct", h.NS.Name, name, x.ProgId)
		}
	}
	return nil
}

// iperfServer is an iperf3 server process in a namespace.
type iperfServer struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

func startIperfServer(ctx context.Context, h *netlab.Host, iperf string, addr netip.AddrPort) (*iperfServer, error) {
	s := &iperfServer{out: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = h.NS.Command(context.Background(), iperf, "-s", "-B", addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port())))
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start iperf3 server in %s: %w", h.Name, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	// Wait until it listens (ss in the namespace, so that no probe
	// connection reaches iperf3).
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := h.NS.Command(ctx, "ss", "-Hltn", fmt.Sprintf("sport = :%d", addr.Port())).Output()
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("iperf3 server in %s exited:\n%s", h.Name, s.out.String())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("iperf3 server in %s not listening on %s after 10s (ss: %v):\n%s", h.Name, addr, err, s.out.String())
		}
	}
}

func (s *iperfServer) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// iperfResult is the part of iperf3 -J output the bench reads.
type iperfResult struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// runIperf runs an iperf3 client in h against addr for d (whole seconds, at
// least 1) and returns the receiver's rate in bit/s.
func runIperf(ctx context.Context, h *netlab.Host, iperf string, addr netip.AddrPort, streams int, reverse bool, d time.Duration) (float64, error) {
	secs := max(1, int(math.Ceil(d.Seconds())))
	args := []string{"-c", addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port())),
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J", "--connect-timeout", "3000"}
	if reverse {
		args = append(args, "-R")
	}
	var lastErr error
	// The server takes a moment after a test before it accepts the next
	// one ("the server is busy"): retry a few times.
	for attempt := range 5 {
		if attempt > 0 && !sleepUntil(ctx, time.Now().Add(500*time.Millisecond)) {
			return 0, ctx.Err()
		}
		cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+20*time.Second)
		cmd := h.NS.Command(cctx, iperf, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		cancel()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var r iperfResult
		if jerr := json.Unmarshal(b, &r); jerr != nil {
			lastErr = fmt.Errorf("iperf3: %v; output not JSON (%v): %s %s", err, jerr, benchTrunc(string(b)), stderr.String())
			continue
		}
		if r.Error != "" {
			lastErr = fmt.Errorf("iperf3: %s", r.Error)
			continue
		}
		if err != nil {
			lastErr = fmt.Errorf("iperf3: %w: %s", err, stderr.String())
			continue
		}
		if r.End.SumReceived.BitsPerSecond <= 0 {
			lastErr = errors.New("iperf3 reported no data received")
			continue
		}
		return r.End.SumReceived.BitsPerSecond, nil
	}
	return 0, lastErr
}

func benchTrunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
