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

	"golang.org/x/sys/unix"

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
	store.configured = func(tm string) bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		_, ok := d.cfg.TM(tm)
		return ok
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
	go d.readUDP(u, conn)
	d.log.Info("UDP signal transport listening", "address", addr)
	return nil
}

// udpBatch bounds the datagrams read, admitted and saved together: one
// durable write of the replay state for up to this many.
const udpBatch = 64

// udpMaxDatagram is the receive buffer per datagram. The longest valid
// datagram is 6 + 32 (id) + 8 + 8 + 8×(2+88) + 32 = 806 bytes; a longer one
// is cut here and fails authentication.
const udpMaxDatagram = 2048

// readUDP reads datagrams until conn is closed: one blocking read, then
// whatever else is already queued (up to udpBatch) without waiting, so that
// a burst shares one write of the replay state.
func (d *Daemon) readUDP(u *udpControl, conn *net.UDPConn) {
	rc, err := conn.SyscallConn()
	if err != nil {
		d.log.Error("UDP signal transport: raw socket", "error", err)
		return
	}
	bufs := make([][]byte, udpBatch)
	for i := range bufs {
		bufs[i] = make([]byte, udpMaxDatagram)
	}
	batch := make([][]byte, 0, udpBatch)
	for {
		n, _, err := conn.ReadFromUDP(bufs[0])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		batch = append(batch[:0], bufs[0][:n])
		for len(batch) < udpBatch {
			buf := bufs[len(batch)]
			var m int
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				m, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
				return true // never wait: an empty queue ends the batch
			})
			if err != nil || rerr != nil {
				break
			}
			batch = append(batch, buf[:m])
		}
		d.handleUDPBatch(u, batch)
	}
}

// udpAdmitted is a datagram that passed authentication and the replay
// window, waiting for its replay state to be saved.
type udpAdmitted struct {
	id  string
	seq uint64
	raw []byte // the message
}

// handleUDP handles one datagram (handleUDPBatch of one).
func (d *Daemon) handleUDP(u *udpControl, b []byte) { d.handleUDPBatch(u, [][]byte{b}) }

// handleUDPBatch authenticates control datagrams and passes them through
// their TMs' replay windows; saves each TM's new highest sequence number
// durably, once for the batch; then checks and applies each message with the
// XDP program's checks (flow.CheckMessage) and ops (flow.ApplyOp) over the
// data-path seam. Nothing is applied before the save: a restarted daemon
// refuses these datagrams whatever happens next.
func (d *Daemon) handleUDPBatch(u *udpControl, bs [][]byte) {
	var ok []udpAdmitted
	for _, b := range bs {
		if a, admitted := d.admitUDP(u, b); admitted {
			ok = append(ok, a)
		}
	}
	if len(ok) == 0 {
		return
	}
	if u.store != nil {
		high := map[string]uint64{}
		for _, a := range ok {
			high[a.id] = max(high[a.id], a.seq)
		}
		if err := u.store.saveAll(high); err != nil {
			for range ok {
				u.count(udpRefusedState)
			}
			d.log.Error("UDP signals refused: cannot save the replay state", "datagrams", len(ok), "error", err)
			return
		}
	}
	for _, a := range ok {
		d.applyUDP(u, a.id, a.raw)
	}
}

// admitUDP authenticates a datagram and passes it through its TM's replay
// window.
func (d *Daemon) admitUDP(u *udpControl, b []byte) (udpAdmitted, bool) {
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
		return udpAdmitted{}, false
	}
	if !u.window(id).Accept(seq) {
		u.count("udp_refused_replay")
		return udpAdmitted{}, false
	}
	return udpAdmitted{id: id, seq: seq, raw: raw}, true
}

// applyUDP checks and applies an admitted datagram's message once. A
// datagram carries only header and TLVs: a shim flag or bytes after the
// TLVs are refused.
func (d *Daemon) applyUDP(u *udpControl, id string, raw []byte) {
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
