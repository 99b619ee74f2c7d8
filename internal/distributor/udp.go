package distributor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/signal"
)

// udpControl is the authenticated UDP transport for TMs that are not on the
// distributor's segment. Messages are verified (HMAC-SHA256 under the TM's
// key, replay window), then checked and applied exactly like signals in
// XDP, by the same code as the model (flow.CheckMessage, ApplyOp), through
// the data-path seam.
type udpControl struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	windows map[string]*signal.ReplayWindow
	// store keeps each TM's highest accepted sequence number across
	// restarts; nil in tests that do not restart.
	store  *replayStore
	counts sync.Map // counter name → *atomic.Uint64
}

// window returns TM id's replay window, starting a new one where the
// replay state left off.
func (u *udpControl) window(id string) *signal.ReplayWindow {
	u.mu.Lock()
	defer u.mu.Unlock()
	w, ok := u.windows[id]
	if !ok {
		w = &signal.ReplayWindow{}
		if u.store != nil {
			if h, ok := u.store.highest(id); ok {
				w = signal.NewReplayWindowAt(h)
			}
		}
		u.windows[id] = w
	}
	return w
}

func (u *udpControl) count(name string) {
	v, _ := u.counts.LoadOrStore(name, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// Counters returns the UDP transport's counters by name.
func (u *udpControl) Counters() map[string]uint64 {
	out := map[string]uint64{}
	u.counts.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// startUDP listens on addr and applies the signals it receives until ctx is
// done.
func (d *Daemon) startUDP(ctx context.Context, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("signals.udp_listen %q: %w", addr, err)
	}
	d.mu.Lock()
	dir, id := d.cfg.Distributor.StateDir, d.cfg.Distributor.ID
	d.mu.Unlock()
	store, err := openReplayStore(dir, replayFile(dir, id))
	if err != nil {
		return fmt.Errorf("UDP signal transport (distributor.state_dir): %w", err)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("signals.udp_listen: %w", err)
	}
	u := &udpControl{conn: conn, windows: map[string]*signal.ReplayWindow{}, store: store}
	d.mu.Lock()
	d.udp = u
	d.mu.Unlock()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			d.handleUDP(u, buf[:n])
		}
	}()
	d.log.Info("UDP signal transport listening", "address", addr)
	return nil
}

// handleUDP authenticates a control datagram, then checks and applies its
// message once, with the XDP program's checks (flow.CheckMessage) and ops
// (flow.ApplyOp) over the data-path seam. A datagram carries only header and
// TLVs: a shim flag or bytes after the TLVs are refused.
func (d *Daemon) handleUDP(u *udpControl, b []byte) {
	keyFor := func(id string) ([]byte, bool) {
		d.mu.Lock()
		defer d.mu.Unlock()
		tc, ok := d.cfg.TM(id)
		if !ok || len(tc.SignalKey) == 0 {
			return nil, false
		}
		return tc.SignalKey, true
	}
	id, seq, raw, err := signal.AuthenticateUDP(b, keyFor)
	if err != nil {
		u.count("udp_refused_" + signal.ReasonOf(err))
		return
	}
	if !u.window(id).Accept(seq) {
		u.count("udp_refused_replay")
		return
	}
	// The new highest number is on disk before anything is applied: a
	// restarted daemon refuses this datagram whatever happens next.
	if u.store != nil {
		if err := u.store.save(id, seq); err != nil {
			u.count(udpRefusedState)
			d.log.Error("UDP signal refused: cannot save the replay state", "tm", id, "error", err)
			return
		}
	}
	d.mu.Lock()
	s, ok := d.tms[id]
	why := ""
	var sender uint32
	switch {
	case !ok || !s.present:
		why = "udp_refused_unknown_tm"
	case s.cfg.State == config.StateDisabled:
		// As in XDP, where a disabled TM's MAC is not a sender.
		why = "udp_refused_disabled"
	case !s.ready():
		// As in XDP (sig_refused_not_ready): flows pinned to a TM that
		// gets no traffic would be lost.
		why = "udp_refused_not_ready"
	default:
		sender = s.index
	}
	d.mu.Unlock()
	if why != "" {
		u.count(why)
		return
	}
	// A shim needs the EtherType after its TLVs, which a datagram does not
	// carry: refuse it as such before CheckMessage calls it truncated.
	if len(raw) >= datapath.SigHeaderLen && binary.BigEndian.Uint16(raw[4:])&datapath.SigFlagShim != 0 {
		u.count("udp_refused_" + signal.ReasonNotShim)
		return
	}
	m, refused, ok := flow.CheckMessage(raw)
	if !ok {
		u.count("udp_" + datapath.CounterName(refused))
		return
	}
	if m.Len != len(raw) {
		u.count("udp_refused_" + signal.ReasonBadLength)
		return
	}
	counters, errs := m.ApplyAll(d.dp, sender)
	for _, c := range counters {
		u.count("udp_" + datapath.CounterName(c))
	}
	for _, err := range errs {
		// The op's outcome is unknown: not counted as applied.
		u.count(udpWriteFailed)
		d.log.Warn("UDP signal: data-path write failed", "tm", id, "error", err)
	}
}

// udpRefusedState counts datagrams refused because the replay state could
// not be saved.
const udpRefusedState = "udp_refused_state_write"

// udpWriteFailed counts UDP signal ops whose data-path read or write failed.
const udpWriteFailed = "udp_write_failed"
