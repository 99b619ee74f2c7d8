package lab

import (
	"context"
	"errors"
	"fmt"
	"github.com/switchyard/switchyard/internal/datapath"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/tm/echo"
)

// Ports the reference TMs serve on the VIPs.
const (
	HTTPPort = 80
	UDPPort  = 5300
)

// Env is a topology with reference TMs running in their namespaces and
// (after StartDistributor) a distributor process.
type Env struct {
	Topo *netlab.Topology
	Dir  string // config files and admin sockets
	Bin  string // the switchyard binary

	mu   sync.Mutex
	tms  map[string]*echo.Server
	dist []*Distributor
}

// NewEnv builds a topology and starts a reference TM on every TM host. dir
// holds configs and sockets; bin is the switchyard binary to run
// distributors with.
func NewEnv(ctx context.Context, spec netlab.Spec, dir, bin string) (*Env, error) {
	if err := datapath.MountBPFFS(LabBPFFS); err != nil {
		return nil, err
	}
	topo, err := netlab.Build(ctx, spec)
	if err != nil {
		return nil, err
	}
	e := &Env{Topo: topo, Dir: dir, Bin: bin, tms: map[string]*echo.Server{}}
	for _, h := range topo.TMs {
		if err := e.StartTM(h); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// StartTM runs a reference TM on host h, serving HTTP and UDP on both VIPs.
func (e *Env) StartTM(h *netlab.Host) error {
	s := echo.New(h.Name)
	err := h.NS.Do(func() error {
		for _, vip := range []netip.Addr{e.Topo.VIP4, e.Topo.VIP6} {
			if err := s.ListenHTTP(netip.AddrPortFrom(vip, HTTPPort)); err != nil {
				return err
			}
			if err := s.ListenUDP(netip.AddrPortFrom(vip, UDPPort)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.Close()
		return fmt.Errorf("TM %s: %w", h.Name, err)
	}
	e.mu.Lock()
	e.tms[h.Name] = s
	e.mu.Unlock()
	return nil
}

// AddTM adds a TM host to the topology and starts its reference TM.
func (e *Env) AddTM(ctx context.Context) (*netlab.Host, error) {
	h, err := e.Topo.AddTM(ctx)
	if err != nil {
		return nil, err
	}
	return h, e.StartTM(h)
}

// TM returns the reference TM running on host name.
func (e *Env) TM(name string) *echo.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tms[name]
}

// Config renders a config for the env's topology with the env's socket path.
func (e *Env) Config(o ConfigOptions) string {
	if o.APIPath == "" {
		o.APIPath = APIPath(e.Dir, e.Topo.Distributors[0])
	}
	return Config(e.Topo, o)
}

// StartDistributor runs a distributor with cfg on the first distributor host.
func (e *Env) StartDistributor(ctx context.Context, cfg string) (*Distributor, error) {
	return e.StartDistributorOn(ctx, e.Topo.Distributors[0], cfg)
}

// StartDistributorOn runs a distributor with cfg on host h.
func (e *Env) StartDistributorOn(ctx context.Context, h *netlab.Host, cfg string) (*Distributor, error) {
	d, err := StartDistributor(ctx, h, e.Bin, e.Dir, cfg)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.dist = append(e.dist, d)
	e.mu.Unlock()
	return d, nil
}

// Dist returns the distributors started so far.
func (e *Env) Dist() []*Distributor {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Distributor(nil), e.dist...)
}

// ClientDialer returns loadgen dial functions that open sockets in client i.
func (e *Env) ClientDialer(i int, o *loadgen.Options) {
	o.Dial, o.ListenPacket = loadgen.NSDialer(e.Topo.Clients[i].NS.Do)
}

// Target is the load target on the IPv4 or IPv6 VIP.
func (e *Env) Target(ipv6 bool) loadgen.Target {
	vip := e.Topo.VIP4
	if ipv6 {
		vip = e.Topo.VIP6
	}
	return loadgen.Target{HTTP: netip.AddrPortFrom(vip, HTTPPort), UDP: netip.AddrPortFrom(vip, UDPPort)}
}

// Close stops the distributors and TMs and removes the topology.
func (e *Env) Close() error {
	var errs []error
	e.mu.Lock()
	for _, d := range e.dist {
		if err := d.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range e.tms {
		s.Close()
	}
	e.mu.Unlock()
	// Pinned data paths left by killed distributors (or kept ones).
	if err := os.RemoveAll(PinRoot(e.Dir)); err != nil {
		errs = append(errs, fmt.Errorf("remove pinned data paths: %w", err))
	}
	if err := e.Topo.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BuildBinary builds the switchyard command into dir (for tests, which do
// not run as the binary itself).
func BuildBinary(ctx context.Context, dir string) (string, error) {
	out := dir + "/switchyard"
	cmd := goCommand(ctx, "build", "-o", out, "github.com/switchyard/switchyard/cmd/switchyard")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build switchyard: %w", err)
	}
	return out, nil
}

func goCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "go", args...)
}

// Binary builds the switchyard command once for the tests of one package:
// Path builds it on first use, Remove (from TestMain, after m.Run) deletes it.
type Binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Path returns the built command, building it on the first call; a build
// failure fails t.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "switchyard-bin-")
		if b.err == nil {
			b.path, b.err = BuildBinary(context.Background(), b.dir)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Remove deletes the built command, if any.
func (b *Binary) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
