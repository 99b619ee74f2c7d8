package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/internal/agent"
	"github.com/switchyard/switchyard/internal/netlab"
)

// Agent is a `switchyard agent` process in a TM host's namespace.
type Agent struct {
	Host *netlab.Host
	// Socket is the agent's local API socket.
	Socket string
	cmd    *execCmd
}

// AgentSocket is the API socket of the agent on host.
func AgentSocket(dir string, host *netlab.Host) string {
	return filepath.Join(dir, host.Name+"-agent.sock")
}

// AgentArgs are the agent flags for a TM host of topo: the topology's VIPs
// and SNAT addresses, frames on eth0 to the first distributor's internal
// MAC, and the API socket in dir.
func AgentArgs(topo *netlab.Topology, host *netlab.Host, dir string) []string {
	return []string{
		"--vip", topo.VIP4.String(), "--vip", topo.VIP6.String(),
		"--snat", topo.SNAT4.String(), "--snat", topo.SNAT6.String(),
		"--iface", "eth0",
		"--distributor-mac", topo.Distributors[0].Links["int0"].MAC.String(),
		"--socket", AgentSocket(dir, host),
	}
}

// StartAgent runs bin's agent command with args in host's namespace and
// waits until it has announced what conntrack holds and follows events
// (its API reports ready). args must include --socket (see AgentArgs).
func StartAgent(ctx context.Context, host *netlab.Host, bin string, args []string) (*Agent, error) {
	socket := ""
	for i, a := range args {
		if a == "--socket" && i+1 < len(args) {
			socket = args[i+1]
		}
	}
	if socket == "" {
		return nil, errors.New("lab: StartAgent needs --socket in args")
	}
	c, err := startCmd(host.NS.Command(context.Background(), bin, append([]string{"agent"}, args...)...))
	if err != nil {
		return nil, fmt.Errorf("start agent in %s: %w", host.Name, err)
	}
	a := &Agent{Host: host, Socket: socket, cmd: c}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if s, err := a.Stats(); err == nil && s.Ready {
			return a, nil
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("agent in %s exited: %v\n%s", host.Name, c.err, c.out.String())
		case <-ctx.Done():
			a.Kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.Kill()
			return nil, fmt.Errorf("agent in %s: not ready after 15s\n%s", host.Name, c.out.String())
		}
	}
}

// StartAgent runs an agent with AgentArgs (plus extra flags) on TM host h.
func (e *Env) StartAgent(ctx context.Context, h *netlab.Host, extra ...string) (*Agent, error) {
	return StartAgent(ctx, h, e.Bin, append(AgentArgs(e.Topo, h, e.Dir), extra...))
}

// Stats asks the agent's API for its counters.
func (a *Agent) Stats() (agent.Stats, error) {
	c, err := agent.Dial(a.Socket)
	if err != nil {
		return agent.Stats{}, err
	}
	defer c.Close()
	rep, err := c.Do(agent.APIRequest{Op: "stats"})
	if err != nil {
		return agent.Stats{}, err
	}
	if rep.Stats == nil {
		return agent.Stats{}, errors.New("agent API: stats reply without stats")
	}
	return *rep.Stats, nil
}

// Output returns what the process printed so far.
func (a *Agent) Output() string { return a.cmd.out.String() }

// Kill ends the agent with SIGKILL (no cleanup: a crash) and waits.
func (a *Agent) Kill() {
	if !a.cmd.exited() {
		_ = a.cmd.Process.Kill()
		<-a.cmd.done
	}
}

// Stop sends SIGTERM and waits (SIGKILL after 5 s).
func (a *Agent) Stop() error {
	if a.cmd.exited() {
		return a.cmd.err
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.cmd.done:
	case <-time.After(5 * time.Second):
		a.Kill()
		return errors.New("agent did not stop on SIGTERM; killed")
	}
	return a.cmd.err
}

// execCmd is a started process with its output and exit status.
type execCmd struct {
	*exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startCmd(c *exec.Cmd) (*execCmd, error) {
	e := &execCmd{Cmd: c, out: &syncBuffer{}, done: make(chan struct{})}
	c.Stdout, c.Stderr = e.out, e.out
	if err := c.Start(); err != nil {
		return nil, err
	}
	go func() {
		e.err = c.Wait()
		close(e.done)
	}()
	return e, nil
}

func (e *execCmd) exited() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}
