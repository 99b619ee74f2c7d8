package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FRRDir is where the Debian package's daemons are.
const FRRDir = "/usr/lib/frr"

// FRR is zebra, bfdd and bgpd (Debian package frr) running in a namespace with
// a directory of their own for config, pid files and sockets: never the
// system service, never /etc/frr or /var/run/frr.
type FRR struct {
	NS  *NS
	Dir string
	// procs are zebra, bfdd, bgpd.
	procs []*frrProc
}

type frrProc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // bounded: keep the first MiB
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// FRRAvailable says why FRR cannot run here ("" if it can).
func FRRAvailable() string {
	for _, p := range []string{filepath.Join(FRRDir, "zebra"), filepath.Join(FRRDir, "bfdd"), filepath.Join(FRRDir, "bgpd"), "/usr/bin/vtysh"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Sprintf("FRR is not installed (%s: %v); scripts/setup.sh installs the frr package", p, err)
		}
	}
	return ""
}

// StartFRR writes bgpdConf (an FRR bgpd config) and bfddConf (bfdd's: BFD
// profiles; "" for none) into a directory of its own (Dir, under /tmp: the daemons run as the package's frr user, which
// must reach it) and runs zebra and bgpd in ns with their sockets, pid
// files and config there; it returns once vtysh answers. Close removes
// the directory.
func StartFRR(ctx context.Context, ns *NS, bgpdConf, bfddConf string) (*FRR, error) {
	if why := FRRAvailable(); why != "" {
		return nil, errors.New(why)
	}
	u, err := user.Lookup("frr")
	if err != nil {
		return nil, fmt.Errorf("netlab: FRR's user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", ns.Name+"-frr-")
	if err != nil {
		return nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	zconf := "hostname " + ns.Name + "\n!\n"
	if err := os.WriteFile(filepath.Join(dir, "zebra.conf"), []byte(zconf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "bgpd.conf"), []byte(bgpdConf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "bfdd.conf"), []byte(bfddConf), 0o600); err != nil {
		return nil, err
	}
	// vtysh reads its own config from /etc/frr; an empty one of ours is
	// given with --config_dir.
	if err := os.WriteFile(filepath.Join(dir, "vtysh.conf"), nil, 0o600); err != nil {
		return nil, err
	}
	for _, name := range []string{"zebra.conf", "bgpd.conf", "bfdd.conf", "vtysh.conf"} {
		if err := os.Chown(filepath.Join(dir, name), uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	f := &FRR{NS: ns, Dir: dir}
	zsock := filepath.Join(dir, "zserv.api")
	common := []string{"--vty_socket", dir, "-z", zsock, "-P", "0", "--log", "stdout"}
	if err := f.start("zebra", append([]string{"-f", filepath.Join(dir, "zebra.conf"), "-i", filepath.Join(dir, "zebra.pid")}, common...)...); err != nil {
		return nil, err
	}
	if err := f.waitFile(ctx, zsock); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.start("bfdd", append([]string{"-f", filepath.Join(dir, "bfdd.conf"), "-i", filepath.Join(dir, "bfdd.pid"),
		"--bfdctl", filepath.Join(dir, "bfdd.sock")}, common...)...); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.start("bgpd", append([]string{"-f", filepath.Join(dir, "bgpd.conf"), "-i", filepath.Join(dir, "bgpd.pid")}, common...)...); err != nil {
		f.Close()
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := f.Vtysh(ctx, "show bgp summary")
		if err == nil {
			return f, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.Close()
			return nil, fmt.Errorf("netlab: FRR in %s does not answer: %v\n%s", ns.Name, err, f.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *FRR) start(name string, args ...string) error {
	p := &frrProc{name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = f.NS.Command(context.Background(), filepath.Join(FRRDir, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("netlab: start %s in %s: %w", name, f.NS.Name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	f.procs = append(f.procs, p)
	return nil
}

func (f *FRR) waitFile(ctx context.Context, path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		for _, p := range f.procs {
			select {
			case <-p.done:
				return fmt.Errorf("netlab: %s exited in %s:\n%s", p.name, f.NS.Name, p.out.String())
			default:
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("netlab: %s not made in %s:\n%s", path, f.NS.Name, f.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Vtysh runs vtysh commands against this FRR and returns their output.
func (f *FRR) Vtysh(ctx context.Context, cmds ...string) (string, error) {
	args := []string{"--vty_socket", f.Dir, "--config_dir", f.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := f.NS.Command(ctx, "vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %s in %s: %w: %s", strings.Join(cmds, "; "), f.NS.Name, err, out)
	}
	return string(out), nil
}

// Output returns what the daemons printed.
func (f *FRR) Output() string {
	var b strings.Builder
	for _, p := range f.procs {
		fmt.Fprintf(&b, "--- %s\n%s", p.name, p.out.String())
	}
	return b.String()
}

// Close stops the daemons (SIGTERM, then SIGKILL after 5 s), bgpd first.
func (f *FRR) Close() error {
	var errs []error
	for i := len(f.procs) - 1; i >= 0; i-- {
		p := f.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("netlab: %s in %s did not stop on SIGTERM", p.name, f.NS.Name))
		}
	}
	f.procs = nil
	errs = append(errs, os.RemoveAll(f.Dir))
	return errors.Join(errs...)
}
