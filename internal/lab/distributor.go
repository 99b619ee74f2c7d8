// Package lab runs Switchyard for real inside netlab topologies: distributor
// daemons as processes in their namespaces, reference TMs, and client load.
// `switchyard lab`, `switchyard bench` and the end-to-end tests share it.
package lab

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/netlab"
)

// ConfigOptions shape the config written for a topology.
type ConfigOptions struct {
	ID       string   // distributor id, default d1
	TMs      []string // TM host names in traffic_managers; default all TMs of the topology
	Pool     []string // TM ids in every service's pool; default TMs
	Weights  map[string]int
	States   map[string]string // TM id → state
	MaxFlows int               // default 1,000,000
	HTTPPort uint16            // default 80
	UDPPort  uint16            // default 5300
	IPv6     bool              // also services on the IPv6 VIP
	// ExtraServices are appended to the services list.
	ExtraServices []config.Service
	// Extra is YAML list items appended to the services list, decoded into
	// services; prefer ExtraServices.
	Extra   string
	APIPath string // unix socket path
	// SNAT lists the topology's shared SNAT addresses for learning.
	SNAT bool
	// SignalKeys are hex HMAC keys of TMs for the UDP control transport.
	SignalKeys map[string]string
	// UDPListen is the UDP control transport's address ("" = off).
	UDPListen string
	// Timeouts, if set, replace the default idle timeouts (zero fields keep
	// their defaults).
	Timeouts *config.Timeouts
	// Mutate, if set, changes the built config last, before it is written.
	Mutate func(*config.Config)
	// TMAddr6 gives the TMs by their IPv6 addresses (resolved by NDP).
	TMAddr6 bool
}

// TMAddr4 returns the IPv4 address of a TM host's eth0.
func TMAddr4(h *netlab.Host) netip.Addr { return h.Links["eth0"].Addr4.Addr() }

// Config renders a distributor config for topo: BuildConfig, marshalled. A
// config that cannot be built (bad Extra YAML or signal key hex) is a bug in
// the caller: Config panics with what is wrong.
func Config(topo *netlab.Topology, o ConfigOptions) string {
	c, err := BuildConfig(topo, o)
	if err != nil {
		panic(fmt.Sprintf("lab: %v", err))
	}
	data, err := c.Marshal()
	if err != nil {
		panic(fmt.Sprintf("lab: %v", err))
	}
	return string(data)
}

// BuildConfig builds the distributor config for topo. Keys it leaves unset
// take their defaults when the daemon loads the file; the config is not
// validated here, so that tests can build bad ones.
func BuildConfig(topo *netlab.Topology, o ConfigOptions) (*config.Config, error) {
	if o.ID == "" {
		o.ID = "d1"
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = 1_000_000
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 80
	}
	if o.UDPPort == 0 {
		o.UDPPort = 5300
	}
	tms := o.TMs
	if tms == nil {
		for _, h := range topo.TMs {
			tms = append(tms, h.Name)
		}
	}
	pool := o.Pool
	if pool == nil {
		pool = tms
	}
	byName := map[string]*netlab.Host{}
	for _, h := range topo.TMs {
		byName[h.Name] = h
	}
	c := &config.Config{
		Distributor: config.Distributor{
			ID:  o.ID,
			API: "unix:" + o.APIPath,
			Interfaces: []config.Interface{
				{Name: "ext0", Role: config.RoleExternal},
				{Name: "int0", Role: config.RoleInternal},
				{Name: "srv0", Role: config.RoleExternal},
			},
		},
		FlowTable: config.FlowTable{MaxFlows: uint32(o.MaxFlows)},
	}
	if o.APIPath != "" {
		// State kept across restarts lives with the lab's other files.
		c.Distributor.StateDir = filepath.Dir(o.APIPath)
		// So does the pinned data path, in a directory of its own per lab
		// (Env.Close removes it).
		c.Distributor.PinDir = filepath.Join(PinRoot(filepath.Dir(o.APIPath)), o.ID)
	}
	for _, id := range tms {
		h := byName[id]
		if h == nil {
			return nil, fmt.Errorf("traffic manager %q is not a TM of the topology", id)
		}
		tm := config.TrafficManager{ID: id, Address: TMAddr4(h), State: o.States[id]}
		if o.TMAddr6 {
			tm.Address = h.Links["eth0"].Addr6.Addr()
		}
		if w, ok := o.Weights[id]; ok {
			tm.Weight = uint32(w)
		}
		if k, ok := o.SignalKeys[id]; ok {
			key, err := hex.DecodeString(k)
			if err != nil {
				return nil, fmt.Errorf("signal key of %s: %w", id, err)
			}
			tm.SignalKey = key
		}
		c.TrafficManagers = append(c.TrafficManagers, tm)
	}
	if o.SNAT {
		c.Learning.SNATAddresses = []netip.Addr{topo.SNAT4, topo.SNAT6}
	}
	c.Signals.UDPListen = o.UDPListen
	svc := func(name string, vip netip.Addr, port uint16, proto string) {
		c.Services = append(c.Services, config.Service{Name: name, VIP: vip, Port: port, Protocol: proto,
			TrafficManagers: slices.Clone(pool)})
	}
	svc("web", topo.VIP4, o.HTTPPort, config.ProtocolTCP)
	svc("echo", topo.VIP4, o.UDPPort, config.ProtocolUDP)
	if o.IPv6 {
		svc("web6", topo.VIP6, o.HTTPPort, config.ProtocolTCP)
		svc("echo6", topo.VIP6, o.UDPPort, config.ProtocolUDP)
	}
	c.Services = append(c.Services, o.ExtraServices...)
	if o.Extra != "" {
		extra, err := config.ParseServices([]byte(o.Extra), "ConfigOptions.Extra")
		if err != nil {
			return nil, err
		}
		c.Services = append(c.Services, extra...)
	}
	if o.Timeouts != nil {
		c.Timeouts = *o.Timeouts
	}
	if o.Mutate != nil {
		o.Mutate(c)
	}
	return c, nil
}

// Distributor is a `switchyard distributor` process in a namespace.
type Distributor struct {
	Host    *netlab.Host
	CfgPath string
	API     *api.Client
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	err     error
	killed  bool
}

// syncBuffer is a bytes.Buffer safe for a process to write while we read.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartDistributor writes cfg into dir and runs bin's distributor command in
// host's namespace, waiting until its admin API answers. The config's API
// must be unix:<dir>/<host>.sock (see APIPath).
func StartDistributor(ctx context.Context, host *netlab.Host, bin, dir, cfg string) (*Distributor, error) {
	return StartDistributorArgs(ctx, host, bin, dir, cfg)
}

// StartDistributorArgs is StartDistributor with more arguments for the
// distributor command (e.g. --keep).
func StartDistributorArgs(ctx context.Context, host *netlab.Host, bin, dir, cfg string, args ...string) (*Distributor, error) {
	d := &Distributor{Host: host, CfgPath: filepath.Join(dir, host.Name+".yaml"), out: &syncBuffer{}, done: make(chan struct{})}
	if err := os.WriteFile(d.CfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	d.API = api.NewClient("unix:" + APIPath(dir, host))
	d.cmd = host.NS.Command(context.Background(), bin, append([]string{"distributor", "--config", d.CfgPath}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start distributor in %s: %w", host.Name, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	// Long enough for the data path's load on a busy machine plus the start
	// gate's 10 s (a distributor with peers that are slow to come up).
	deadline := time.Now().Add(startTimeout)
	for {
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := d.API.Status(sctx)
		cancel()
		if err == nil {
			return d, nil
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("distributor in %s exited: %v\n%s", host.Name, d.err, d.out.String())
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("distributor in %s: admin API not up after %v: %v\n%s", host.Name, startTimeout, err, d.out.String())
		}
	}
}

// startTimeout bounds a distributor's start, until its admin API answers.
const startTimeout = 60 * time.Second

// LabBPFFS is the bpffs the lab's distributors pin their data paths on.
// Not /sys/fs/bpf: `ip netns exec` mounts a sysfs of its own on /sys, so a
// daemon run by it would not see the host's bpffs there, and one it mounted
// would die with it. NewEnv mounts it (once; it stays mounted, empty).
const LabBPFFS = "/run/switchyard-lab-bpf"

// PinRoot is the bpffs directory under which the distributors of the lab
// in dir pin their data paths.
// One directory per lab, flat under LabBPFFS, so that removing it leaves
// nothing behind.
func PinRoot(dir string) string {
	return filepath.Join(LabBPFFS, strings.ReplaceAll(strings.Trim(dir, "/"), "/", "_"))
}

// APIPath is the admin socket of the distributor on host.
func APIPath(dir string, host *netlab.Host) string { return filepath.Join(dir, host.Name+".sock") }

// Output returns what the process printed so far.
func (d *Distributor) Output() string { return d.out.String() }

// Exited reports whether the process has ended.
func (d *Distributor) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Reload rewrites the config file with cfg and sends SIGHUP.
func (d *Distributor) Reload(cfg string) error {
	if err := os.WriteFile(d.CfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	return d.cmd.Process.Signal(syscall.SIGHUP)
}

// Kill sends SIGKILL and waits for the process to end: a crash, which
// leaves the pinned data path forwarding.
func (d *Distributor) Kill() {
	if d.Exited() {
		return
	}
	d.killed = true
	_ = d.cmd.Process.Kill()
	<-d.done
}

// Stop sends SIGTERM and waits for the process to end (SIGKILL after 5 s).
func (d *Distributor) Stop() error {
	if d.Exited() {
		if d.killed {
			return nil
		}
		return d.err
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		return errors.New("distributor did not stop on SIGTERM; killed")
	}
	return d.err
}
