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
	// both paths (direct server return); only the client's ACKs go through
	// XDP.
	Reverse bool
	// Workers is the number of concurrent workers of the connection-rate
	// measurement, each doing one HTTP request per new TCP connection with no
	// pause; 0 means 8.
	Workers int
	// Iperf3 is the iperf3 program; "" means "iperf3" from PATH.
	Iperf3 string
	// IperfPort is the iperf3 server's port on the VIP; 0 means 5201.
	IperfPort uint16
}

// Bench paths.
const (
	PathDirect     = "direct"
	PathSwitchyard = "switchyard"
)

// BenchResult is the outcome of RunBench.
type BenchResult struct {
	Machine  MachineInfo   `json:"machine"`
	Duration time.Duration `json:"duration_ns"`
	Rounds   int           `json:"rounds"`
	// Order is the order in which the paths ran in each round.
	Order   [][]string    `json:"order"`
	Metrics []BenchMetric `json:"metrics"`
	// DistPackets is the number of packets the distributor sent to the TM
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

// BenchMetric is one measurement on both paths, per round.
type BenchMetric struct {
	Name string `json:"name"`
	// Unit of the values: "bit/s" or "conn/s".
	Unit       string    `json:"unit"`
	Direct     []float64 `json:"direct"`
	Switchyard []float64 `json:"switchyard"`
	// Errors are the failed requests of the connection-rate measurement,
	// per round (nil for throughput).
	DirectErrors     []uint64 `json:"direct_errors,omitempty"`
	SwitchyardErrors []uint64 `json:"switchyard_errors,omitempty"`
	DirectMedian     float64  `json:"direct_median"`
	SwitchyardMedian float64  `json:"switchyard_median"`
	// Ratio is SwitchyardMedian / DirectMedian.
	Ratio float64 `json:"ratio"`
	// RoundRatios are switchyard / direct per round.
	RoundRatios []float64 `json:"round_ratios"`
}

// BenchTarget is the ratio (switchyard / direct) the bench aims at.
const BenchTarget = 0.9

// benchMeasure is one measurement, run on one path at a time.
type benchMeasure struct {
	name, unit string
	run        func(ctx context.Context) (float64, uint64, error)
}

// RunBench builds a topology with one client, one distributor namespace and
// one TM, and measures the same traffic from the client to the VIP on two
// paths in the same run, alternating their order per round:
//
//   - direct: no XDP program; the distributor namespace's kernel routes the
//     VIP to the TM (a /32 route via the TM's address);
//   - switchyard: the distributor runs (route removed) and its XDP program
//     sends the client's packets to the TM.
//
// The TM's replies go through the distributor namespace's kernel on both
// paths (direct server return). Measurements: iperf3 TCP throughput client
// → TM with each of Streams parallel streams (and TM → client with Reverse),
// and new TCP connections per second (one short HTTP request each). It
// prints progress and a table of per-round values, medians and ratios to out
// and removes everything it made before it returns.
func RunBench(ctx context.Context, o BenchOptions, out io.Writer) (res BenchResult, err error) {
	iperf, err := o.defaults()
	if err != nil {
		return res, err
	}
	res.Machine = machineInfo(iperf)
	res.Duration, res.Rounds = o.Duration, o.Rounds

	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "switchyard-bench-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(out, "building topology: 1 client, 1 distributor, 1 TM …\n")
	env, err := NewEnv(ctx, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1}, dir, o.Bin)
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
	srv, err := startIperfServer(ctx, rig.tm, iperf, rig.iperfAddr)
	if err != nil {
		return res, err
	}
	defer srv.stop()

	measures := rig.measures()
	res.Metrics = make([]BenchMetric, len(measures))
	for i, m := range measures {
		res.Metrics[i] = BenchMetric{Name: m.name, Unit: m.unit}
	}
	fmt.Fprintf(out, "%d rounds of %d measurements of %v on each path (direct: %s's kernel routes %s to %s; switchyard: XDP distributor in %s)\n",
		o.Rounds, len(measures), o.Duration, rig.dist.Name, rig.iperfAddr.Addr(), rig.tm.Name, rig.dist.Name)
	for r := range o.Rounds {
		order := benchOrder(r)
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
	iperf, err := exec.LookPath(o.Iperf3)
	if err != nil {
		return "", fmt.Errorf("iperf3 is needed for the throughput measurements (apt-get install iperf3): %w", err)
	}
	return iperf, nil
}

// benchOrder is the order of the paths in round r: alternating, so that
// neither path always runs on a warm (or tired) machine.
func benchOrder(r int) []string {
	if r%2 == 1 {
		return []string{PathSwitchyard, PathDirect}
	}
	return []string{PathDirect, PathSwitchyard}
}

// benchRig is the bench's topology and how to set up each path on it.
type benchRig struct {
	env       *Env
	o         BenchOptions
	iperf     string
	client    *netlab.Host
	dist, tm  *netlab.Host
	iperfAddr netip.AddrPort
	// cfg is the distributor's config (the lab's services and iperf's);
	// route is the direct path's VIP route in the distributor namespace.
	cfg   string
	route *netlink.Route
}

func newBenchRig(env *Env, o BenchOptions, iperf string) *benchRig {
	topo := env.Topo
	b := &benchRig{env: env, o: o, iperf: iperf, client: topo.Clients[0], dist: topo.Distributors[0], tm: topo.TMs[0],
		iperfAddr: netip.AddrPortFrom(topo.VIP4, o.IperfPort)}
	b.cfg = env.Config(ConfigOptions{
		Extra: fmt.Sprintf("  - {name: iperf, vip: %s, port: %d, protocol: tcp, traffic_managers: [%s]}\n", topo.VIP4, o.IperfPort, b.tm.Name),
	})
	b.route = &netlink.Route{
		LinkIndex: b.dist.Links["int0"].Index,
		Dst:       &net.IPNet{IP: topo.VIP4.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Gw:        TMAddr4(b.tm).AsSlice(),
	}
	return b
}

// measures are the throughput measurements (each stream count, each
// direction asked for) and the connection rate.
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
	return append(ms, b.connRate())
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
	return benchMeasure{name: fmt.Sprintf("TCP %d stream%s %s", streams, plural, dir), unit: "bit/s",
		run: func(ctx context.Context) (float64, uint64, error) {
			bps, err := runIperf(ctx, b.client, b.iperf, b.iperfAddr, streams, reverse, b.o.Duration)
			return bps, 0, err
		}}
}

func (b *benchRig) connRate() benchMeasure {
	return benchMeasure{name: fmt.Sprintf("new TCP conns/s (%d workers, HTTP)", b.o.Workers), unit: "conn/s",
		run: func(ctx context.Context) (float64, uint64, error) {
			lo := loadgen.Options{Short: b.o.Workers}
			b.env.ClientDialer(0, &lo)
			lctx, cancel := context.WithTimeout(ctx, b.o.Duration)
			defer cancel()
			rep := loadgen.Start(lctx, b.env.Target(false), lo).Wait()
			if ctx.Err() != nil {
				return 0, 0, ctx.Err()
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

// direct sets up the kernel path: no distributor, no XDP program on the
// distributor's interfaces, a route for the VIP to the TM.
func (b *benchRig) direct() error {
	if err := checkNoXDP(b.dist); err != nil {
		return err
	}
	if err := b.dist.NS.Netlink().RouteReplace(b.route); err != nil {
		return fmt.Errorf("route %s via %s in %s: %w", b.iperfAddr.Addr(), TMAddr4(b.tm), b.dist.NS.Name, err)
	}
	return nil
}

func (b *benchRig) undoDirect() error {
	if err := b.dist.NS.Netlink().RouteDel(b.route); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove route %s in %s: %w", b.iperfAddr.Addr(), b.dist.NS.Name, err)
	}
	return nil
}

// runPath sets up path, runs every measurement on it into res, and tears
// the path down; the switchyard path must have sent packets through XDP.
func (b *benchRig) runPath(ctx context.Context, res *BenchResult, measures []benchMeasure, r int, path string, out io.Writer) error {
	var d *Distributor
	var before uint64
	switch path {
	case PathDirect:
		if err := b.direct(); err != nil {
			return err
		}
	case PathSwitchyard:
		if err := b.undoDirect(); err != nil {
			return err
		}
		var err error
		if d, err = b.env.StartDistributor(ctx, b.cfg); err != nil {
			return err
		}
		st, err := waitEligible(ctx, d.API, []string{b.tm.Name})
		if err != nil {
			d.Stop()
			return fmt.Errorf("%w\n%s", err, d.Output())
		}
		before = tmMap(st)[b.tm.Name].Packets
	}
	for i, m := range measures {
		v, nerr, err := m.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if d != nil {
				d.Stop()
			}
			return fmt.Errorf("round %d, %s, %s: %w", r+1, path, m.name, err)
		}
		res.Metrics[i].record(path, v, nerr)
		note := ""
		if m.unit == "conn/s" && nerr > 0 {
			note = fmt.Sprintf(" (%d errors)", nerr)
		}
		fmt.Fprintf(out, "[round %d/%d] %-10s  %-36s %s%s\n", r+1, b.o.Rounds, path, m.name, formatValue(v, m.unit), note)
	}
	if path == PathDirect {
		return b.undoDirect()
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
	pk := tmMap(st)[b.tm.Name].Packets - before
	res.DistPackets = append(res.DistPackets, pk)
	if pk == 0 {
		return fmt.Errorf("round %d: the distributor sent no packet to %s: the traffic did not go through XDP", r+1, b.tm.Name)
	}
	return nil
}

// record adds one round's value (and, for the connection rate, its failed
// requests) on path.
func (m *BenchMetric) record(path string, v float64, errs uint64) {
	if path == PathDirect {
		m.Direct = append(m.Direct, v)
		if m.Unit == "conn/s" {
			m.DirectErrors = append(m.DirectErrors, errs)
		}
		return
	}
	m.Switchyard = append(m.Switchyard, v)
	if m.Unit == "conn/s" {
		m.SwitchyardErrors = append(m.SwitchyardErrors, errs)
	}
}

func (m *BenchMetric) finish() {
	m.DirectMedian, m.SwitchyardMedian = median(m.Direct), median(m.Switchyard)
	m.Ratio = ratio(m.SwitchyardMedian, m.DirectMedian)
	m.RoundRatios = nil
	for i := range min(len(m.Direct), len(m.Switchyard)) {
		m.RoundRatios = append(m.RoundRatios, ratio(m.Switchyard[i], m.Direct[i]))
	}
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

// MarshalJSON writes NaN ratios (no direct value) as null.
func (m BenchMetric) MarshalJSON() ([]byte, error) {
	type plain BenchMetric
	type out struct {
		plain
		Ratio       *float64   `json:"ratio"`
		RoundRatios []*float64 `json:"round_ratios"`
	}
	f := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	o := out{plain: plain(m), Ratio: f(m.Ratio)}
	for _, r := range m.RoundRatios {
		o.RoundRatios = append(o.RoundRatios, f(r))
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

// Print writes the machine info and the table of per-round values, medians
// and ratios.
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
	fmt.Fprintln(w, "topology: c1 ─ext bridge─ d1 ─int bridge─ tm1 (veth pairs, MTU 1500); replies tm1 → d1 kernel → c1 on both paths")
	fmt.Fprintln(w, "direct:     no XDP; d1's kernel forwards the VIP to tm1 (route VIP/32 via tm1)")
	fmt.Fprintln(w, "switchyard: distributor on d1; its XDP program sends the client's packets to tm1")
	fmt.Fprintln(w, "throughput: iperf3 client in c1 → iperf3 server on the VIP in tm1 (receiver's rate); conns/s: short HTTP requests, one TCP connection each")
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
	fmt.Fprintf(tw, "%*s\t\n", cellWidth, "MEDIAN")
	for _, mt := range r.Metrics {
		row := func(name, unit, path string, vals []float64, med float64, errs []uint64) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t", name, unit, path)
			for i := range r.Rounds {
				if i < len(vals) {
					cell := formatCell(vals[i], mt.Unit)
					if i < len(errs) && errs[i] > 0 {
						cell += fmt.Sprintf(" (%d err)", errs[i])
					}
					fmt.Fprintf(tw, "%*s\t", cellWidth, cell)
				} else {
					fmt.Fprintf(tw, "%*s\t", cellWidth, "-")
				}
			}
			fmt.Fprintf(tw, "%*s\t\n", cellWidth, formatCell(med, mt.Unit))
		}
		row(mt.Name, displayUnit(mt.Unit), PathDirect, mt.Direct, mt.DirectMedian, mt.DirectErrors)
		row("", "", PathSwitchyard, mt.Switchyard, mt.SwitchyardMedian, mt.SwitchyardErrors)
		fmt.Fprintf(tw, "\t\tratio\t")
		for i := range r.Rounds {
			if i < len(mt.RoundRatios) {
				fmt.Fprintf(tw, "%*.3f\t", cellWidth, mt.RoundRatios[i])
			} else {
				fmt.Fprintf(tw, "%*s\t", cellWidth, "-")
			}
		}
		verdict := "below target"
		if mt.Ratio >= BenchTarget {
			verdict = "ok"
		}
		fmt.Fprintf(tw, "%*.3f\t%s\n", cellWidth, mt.Ratio, verdict)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nratio = switchyard / direct (MEDIAN column: ratio of the medians); target ≥ %.1f\n", BenchTarget)
	if len(r.DistPackets) > 0 {
		fmt.Fprintf(w, "packets the distributor sent to tm1 per switchyard round: %v\n", r.DistPackets)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "summary:")
	for _, mt := range r.Metrics {
		fmt.Fprintf(w, "  %s %.2f;", mt.Name, mt.Ratio)
	}
	fmt.Fprintln(w)
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
