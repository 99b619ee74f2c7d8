package distributor

import (
	"context"
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
// XDP, by the same code as the model (flow.CheckMessage, ApplyOp).
type udpControl struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	windows map[string]*signal.ReplayWindow
	counts  sync.Map // counter name → *atomic.Uint64
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
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("signals.udp_listen: %w", err)
	}
	u := &udpControl{conn: conn, windows: map[string]*signal.ReplayWindow{}}
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
	id, seq, msg, err := signal.OpenUDP(b, keyFor)
	if err != nil {
		u.count("udp_refused_" + signal.ReasonOf(err))
		return
	}
	u.mu.Lock()
	w, ok := u.windows[id]
	if !ok {
		w = &signal.ReplayWindow{}
		u.windows[id] = w
	}
	u.mu.Unlock()
	if !w.Accept(seq) {
		u.count("udp_refused_replay")
		return
	}
	d.mu.Lock()
	s, ok := d.tms[id]
	present := ok && s.present
	d.mu.Unlock()
	if !present {
		u.count("udp_refused_unknown_tm")
		return
	}
	raw, err := msg.Marshal()
	if err != nil {
		u.count("udp_refused_malformed")
		return
	}
	m, refused, ok := flow.CheckMessage(raw)
	if !ok {
		u.count("udp_" + datapath.CounterName(refused))
		return
	}
	for _, c := range m.Apply(dpTables{d}, s.index) {
		u.count("udp_" + datapath.CounterName(c))
	}
}

// dpTables are the data path's maps as flow.Tables.
type dpTables struct{ d *Daemon }

func (t dpTables) Flow(k flow.Key) (datapath.Flow, bool) {
	f, err := t.d.dp.LookupFlow(k)
	return f, err == nil
}
func (t dpTables) PutFlow(k flow.Key, f datapath.Flow)    { _ = t.d.dp.PutFlow(k, f) }
func (t dpTables) UpdateFlow(k flow.Key, f datapath.Flow) { _ = t.d.dp.PutFlow(k, f) }
func (t dpTables) DeleteFlow(k flow.Key)                  { _ = t.d.dp.DeleteFlow(k) }
func (t dpTables) Now() uint32                            { return t.d.now() }
func (t dpTables) TMUsable(idx uint32) bool {
	t.d.mu.Lock()
	defer t.d.mu.Unlock()
	for _, s := range t.d.tms {
		if s.index == idx {
			return s.present && s.ready() && s.cfg.State != config.StateDisabled
		}
	}
	return false
}
func (t dpTables) Masks() []uint32 {
	t.d.mu.Lock()
	defer t.d.mu.Unlock()
	var out []uint32
	for _, m := range t.d.cfg.SecondKeys.Masks {
		out = append(out, config.MaskBits(m))
	}
	return out
}
func (t dpTables) Second(k datapath.SecondKey) (datapath.Second, bool) {
	v, err := t.d.dp.LookupSecondKey(k)
	return v, err == nil
}
func (t dpTables) PutSecond(k datapath.SecondKey, v datapath.Second) bool {
	return t.d.dp.PutSecondKey(k, v) == nil
}
