// Package netlab builds network-namespace topologies for tests, benchmarks and
// `switchyard lab`: clients, distributors, traffic managers and servers joined by
// Linux bridges that live in a namespace of their own, so that everything the
// project sends stays off the host's own network.
//
// Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); tests should
// go through the labtest subpackage, which skips or fails cleanly without them.
package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces are bind-mounted; it is the directory that
// iproute2 uses, so `ip netns list` and `ip netns exec` see what netlab makes.
const netnsDir = "/run/netns"

// NS is a named network namespace made by netlab. It keeps a file handle and a
// netlink socket open inside the namespace; Close releases both, because the
// kernel frees a namespace only when nothing refers to it any more.
type NS struct {
	// Name is the namespace's name under /run/netns, e.g. "sy3f2a-d1".
	Name string

	h  netns.NsHandle
	nl *netlink.Handle

	closeOnce sync.Once
	closeErr  error
}

// NewNS creates the named network namespace (like `ip netns add NAME`). The
// calling goroutine's namespace is not changed: the work happens on a dedicated
// locked thread.
func NewNS(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("netlab: invalid namespace name %q", name)
	}
	var h netns.NsHandle
	err := onFreshThread(func() error {
		var err error
		// NewNamed unshares the thread into the new namespace; onFreshThread
		// switches the thread back (or retires it) afterwards.
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: create namespace %s: %w", name, err)
	}
	n := &NS{Name: name, h: h}
	n.nl, err = netlink.NewHandleAt(h)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlab: netlink handle in %s: %w", name, err)
	}
	// Loopback starts down in a new namespace; services bound to 127.0.0.1 or
	// to addresses on lo (VIPs) need it up.
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlab: lo up in %s: %w", name, err)
	}
	return n, nil
}

// Handle returns the namespace's file handle (owned by the NS: do not close it).
func (n *NS) Handle() netns.NsHandle { return n.h }

// Netlink returns a netlink handle whose socket lives in the namespace, so links,
// addresses and routes can be managed without switching threads (owned by the
// NS: do not close it).
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Do runs fn on a locked OS thread switched into the namespace and switches the
// thread back afterwards. Sockets fn creates stay in the namespace after Do
// returns, so a listener or connection can be opened here and used anywhere.
// Goroutines that fn starts do not run in the namespace. A panic in fn is
// re-raised in the caller.
func (n *NS) Do(fn func() error) error {
	return onFreshThread(func() error {
		if err := netns.Set(n.h); err != nil {
			return fmt.Errorf("netlab: enter %s: %w", n.Name, err)
		}
		return fn()
	})
}

// Command returns a command that runs the program inside the namespace via
// `ip netns exec`, which also gives it a /sys that matches the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Sysctl writes value to the sysctl key (dotted, e.g. "net.ipv4.ip_forward")
// inside the namespace. /proc/sys/net shows the namespace of the thread that
// opens it, which is why this goes through Do.
func (n *NS) Sysctl(key, value string) error {
	return n.Sysctls([][2]string{{key, value}})
}

// Sysctls writes several key/value pairs in order on one trip into the namespace.
func (n *NS) Sysctls(kv [][2]string) error {
	return n.Do(func() error {
		for _, p := range kv {
			path := "/proc/sys/" + strings.ReplaceAll(p[0], ".", "/")
			if err := os.WriteFile(path, []byte(p[1]), 0); err != nil {
				return fmt.Errorf("netlab: sysctl %s=%s in %s: %w", p[0], p[1], n.Name, err)
			}
		}
		return nil
	})
}

// Close deletes the namespace (like `ip netns delete`). Interfaces inside it,
// and the veth peers of those interfaces wherever they are, go away once the
// kernel frees it. Close is idempotent.
func (n *NS) Close() error {
	n.closeOnce.Do(func() {
		if n.nl != nil {
			n.nl.Close()
		}
		if n.h.IsOpen() {
			n.h.Close()
		}
		n.closeErr = deleteNamed(n.Name)
	})
	return n.closeErr
}

// deleteNamed unmounts and removes /run/netns/NAME. Unlike netns.DeleteNamed it
// also removes a file that was never mounted (left by a crash between create
// and mount), and a missing file is not an error.
func deleteNamed(name string) error {
	p := filepath.Join(netnsDir, name)
	uerr := unix.Unmount(p, unix.MNT_DETACH)
	if uerr != nil && !errors.Is(uerr, unix.EINVAL) && !errors.Is(uerr, unix.ENOENT) {
		return fmt.Errorf("netlab: unmount %s: %w", p, uerr)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netlab: remove %s: %w", p, err)
	}
	return nil
}

// CleanupStale deletes every namespace under /run/netns whose name starts with
// prefix: what a crashed test or lab left behind. Veth pairs and bridges made by
// netlab live only inside its namespaces, so they go with them.
func CleanupStale(prefix string) error {
	if prefix == "" {
		return errors.New("netlab: CleanupStale needs a non-empty prefix")
	}
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			errs = append(errs, deleteNamed(e.Name()))
		}
	}
	return errors.Join(errs...)
}

// onFreshThread runs fn on a new goroutine locked to its OS thread, and puts the
// thread back into the namespace it started in. If that fails, the goroutine
// exits still locked, which makes the Go runtime terminate the thread instead
// of reusing it in the wrong namespace.
func onFreshThread(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		p        any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("netlab: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panicked, r.p = true, p
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(orig); err != nil {
			if r.err == nil {
				r.err = fmt.Errorf("netlab: restore namespace: %w", err)
			}
		} else {
			runtime.UnlockOSThread()
		}
		ch <- r
	}()
	r := <-ch
	if r.panicked {
		panic(r.p)
	}
	return r.err
}
