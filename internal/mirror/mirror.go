package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Policy says which flows are mirrored.
type Policy int

// Mirroring policies (peers.mirror in the config).
const (
	// MirrorAll mirrors every flow entry.
	MirrorAll Policy = iota
	// MirrorSignalled mirrors only the flows a TM asked for (its MIRROR
	// signal: datapath.FlowMirror). Deletes are always sent.
	MirrorSignalled
	// MirrorOlder mirrors a flow once it has lived Config.MinAge (older.go),
	// and at once if a TM asked for it.
	MirrorOlder
)

// Config is one distributor's side of the peer protocol.
type Config struct {
	ID        uint32           // this distributor's id, unique among the peers
	Key       []byte           // the shared HMAC key
	Conn      *net.UDPConn     // the bound socket (the caller binds it: address, VRF, namespace)
	Peers     []netip.AddrPort // the other distributors
	StateFile string           // the durable replay floors ("": kept in memory only, for tests)
	Tables    datapath.Tables
	Policy    Policy
	// MinAge is MirrorOlder's age (whole seconds, at least one).
	MinAge time.Duration
	// PersistMasks, if set, returns the persistence mask of each service
	// index that has one (read at start and at each refresh): a flow such
	// a service selected is sent with its persistence second key.
	PersistMasks func() map[uint16]uint32
	// TMDigest, if set, returns a digest of this distributor's TM index
	// list (which TM each index means; 0: unknown). Every datagram carries
	// it, read at each heartbeat; entries from a peer whose digest differs
	// are refused (tmlist.go).
	TMDigest func() uint32
	// Heartbeat is the interval of heartbeats, gap checks and NACKs
	// (default 100 ms).
	Heartbeat time.Duration
	// Refresh is the interval of the walk that sends again every entry
	// used since the last walk, so a peer's copy of a long-lived flow does
	// not idle out (the data path reports state changes, not packets);
	// default 5 s; it must be well under the shortest idle timeout.
	Refresh time.Duration
	// QueueLen bounds the events waiting to be sent (default 65536); an
	// event that does not fit is counted and the next refresh walk covers
	// it.
	QueueLen int
	Logger   *slog.Logger
}

// resendSlots is how many sent datagrams each peer stream keeps for NACKs;
// a NACK for an older one gets a full resync.
const resendSlots = 8192

// maxNackRanges bounds the NACKs a receiver sends per heartbeat.
const maxNackRanges = 16

// Counters are the protocol's totals since start.
type Counters struct {
	EventsQueued, EventsDropped             uint64
	Sent, Resent, SendErrors                uint64
	Received, Truncated, Malformed, BadAuth uint64
	BadVersion, Replayed, UnknownPeer       uint64
	Inserted, Replaced, KeptLocal, Deleted  uint64
	Absent, Refused, InstallErrors          uint64
	Tombstoned                              uint64 // puts refused: the key was deleted since
	// TMListMismatch counts the times a peer's TM list was found to differ
	// from ours; RefusedTMList the entries refused meanwhile.
	TMListMismatch, RefusedTMList uint64
	// MirrorOlder: flows sent when they came of age, flows that ended
	// young (never sent), flows sent at once for want of room, flows
	// waiting now.
	OlderPromoted, OlderEndedYoung, OlderOverflow, OlderWaiting uint64
	NacksSent, NacksReceived                                    uint64
	ResyncsSent, ResyncsRequested                               uint64
	// Second keys (RELATE, persistence): entries sent, and what the
	// received ones did.
	SecondSent, SecondInserted, SecondReplaced uint64
	SecondKept, SecondRefused, SecondErrors    uint64
}

// PeerStatus is one peer as `switchyard peers` shows it.
type PeerStatus struct {
	Addr netip.AddrPort
	ID   uint32 // 0 until heard from
	// State: "unknown" (never heard), "syncing", "synced", "silent" (no
	// heartbeat for 5 intervals).
	State     string
	LastHeard time.Time
	// Lag is how many of the peer's datagrams this side has not received
	// yet (its last heartbeat's highest sequence number minus ours).
	Lag       uint64
	Sent      uint64 // datagrams sent to it
	Received  uint64 // datagrams accepted from it
	Missing   uint64 // holes NACKed
	Resyncs   uint64 // full resyncs it asked of us
	SyncedAt  time.Time
	OutSeq    uint64
	InHighest uint64
	// TMList is "agrees", "differs" (its entries are refused; State is
	// "tm-list-differs") or "unknown" (not heard, or no digest).
	TMList string
}

// Mirror runs the peer protocol for one distributor.
type Mirror struct {
	cfg   Config
	log   *slog.Logger
	boot  uint64
	queue chan datapath.Event
	// tmu serializes this package's use of the tables (the Go model is
	// not safe for concurrent use; the BPF maps are, but a lookup and the
	// write it decides must not interleave with another install).
	tmu    sync.Mutex
	floors *floors

	mu     sync.Mutex // the fields below, and the peers
	out    map[netip.AddrPort]*outStream
	in     map[uint32]*inStream
	c      Counters
	dirty  atomic.Bool // events were dropped: the next refresh sends everything
	synced chan struct{}
	once   sync.Once

	// tombs are the keys deleted recently (by this side's data path or
	// sweeper, or by a peer's delete), with the time: a put that arrives
	// later for a key but was last used no later than its deletion (a
	// resync or resend in flight, a peer echoing its copy back) does not
	// bring it back. Bounded: the oldest are forgotten first. Under tmu.
	// persist is Config.PersistMasks' answer, read at start and at each
	// refresh (under tmu).
	persist map[uint16]uint32

	tombs    map[datapath.FlowKey]uint32
	tombFIFO []datapath.FlowKey
	tombNext int

	enc *Codec // the send side's codec (under mu)
	dec *Codec // the receive goroutine's

	youth *youth // MirrorOlder's young flows (the Run goroutine's)
	// older's counters (atomics: the Run goroutine writes them without mu)
	promoted, endedYoung, overflow, waiting atomic.Uint64
	tmDigest                                atomic.Uint32 // ours, read at each heartbeat
}

type outStream struct {
	addr    netip.AddrPort
	seq     uint64
	resend  [resendSlots][]byte
	resendQ [resendSlots]uint64
	resync  bool // a full resync is owed
	sent    uint64
	resyncs uint64
}

type inStream struct {
	id        uint32
	addr      netip.AddrPort
	boot      uint64
	first     uint64 // first sequence number accepted of this boot
	contig    uint64 // every seq from first to contig was accepted (or lost for good, up to lost)
	lost      uint64 // the highest seq that fell out of the window unseen
	w         window
	heard     time.Time
	peerHigh  uint64
	received  uint64
	missing   uint64
	syncFrom  uint64 // the resync being received started here (0: none)
	syncTo    uint64
	synced    bool
	syncedAt  time.Time
	reqResync bool
	lastReq   time.Time
	tms       uint32 // the peer's TM list digest, last heard
	tmDiffers bool   // it differs from ours: its entries are refused
}

// New checks cfg and returns a mirror ready to Run.
func New(cfg Config) (*Mirror, error) {
	if cfg.Conn == nil || cfg.Tables == nil {
		return nil, errors.New("mirror: a socket and tables are required")
	}
	enc, err := NewCodec(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	dec, _ := NewCodec(cfg.Key)
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 100 * time.Millisecond
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 65536
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Policy == MirrorOlder && cfg.MinAge < time.Second {
		return nil, fmt.Errorf("mirror: mirroring older flows needs a minimum age of at least 1s, got %v", cfg.MinAge)
	}
	fl, err := openFloors(cfg.StateFile)
	if err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	m := &Mirror{
		cfg: cfg, log: cfg.Logger, floors: fl,
		// The first sequence number of a run is the time in nanoseconds:
		// above every number an earlier run of this distributor sent
		// (it would have to send a datagram per nanosecond to catch up),
		// so a peer's durable replay floor never blocks a restarted
		// sender for long.
		boot:   uint64(time.Now().UnixNano()),
		queue:  make(chan datapath.Event, cfg.QueueLen),
		out:    map[netip.AddrPort]*outStream{},
		in:     map[uint32]*inStream{},
		synced: make(chan struct{}),
		tombs:  map[datapath.FlowKey]uint32{},
		enc:    enc, dec: dec,
	}
	for _, p := range cfg.Peers {
		m.out[p] = &outStream{addr: p, seq: m.boot}
	}
	if cfg.Policy == MirrorOlder {
		m.youth = newYouth(uint32(cfg.MinAge / time.Second))
	}
	m.readDigest()
	if len(cfg.Peers) == 0 {
		close(m.synced)
	}
	bigBuffers(cfg.Conn)
	return m, nil
}

// Offer queues a flow event to mirror; it never blocks (a full queue is
// counted, and the next refresh walk sends everything).
func (m *Mirror) Offer(ev datapath.Event) {
	select {
	case m.queue <- ev:
		atomic.AddUint64(&m.c.EventsQueued, 1)
	default:
		atomic.AddUint64(&m.c.EventsDropped, 1)
		m.dirty.Store(true)
	}
}

// Synced is closed once every configured peer has sent its whole table
// (the start gate of a distributor that must not take traffic before it
// knows its peers' flows; the caller adds its own timeout).
func (m *Mirror) Synced() <-chan struct{} { return m.synced }

// Do runs fn with the mirror's table lock held, for callers whose Tables
// is not safe for concurrent use (the Go model in tests).
func (m *Mirror) Do(fn func(t datapath.Tables)) {
	m.tmu.Lock()
	defer m.tmu.Unlock()
	fn(m.cfg.Tables)
}

// Counters returns the totals.
func (m *Mirror) Counters() Counters {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.c
	c.EventsQueued = atomic.LoadUint64(&m.c.EventsQueued)
	c.EventsDropped = atomic.LoadUint64(&m.c.EventsDropped)
	c.OlderPromoted, c.OlderEndedYoung = m.promoted.Load(), m.endedYoung.Load()
	c.OlderOverflow, c.OlderWaiting = m.overflow.Load(), m.waiting.Load()
	return c
}

// Peers returns each configured peer's status.
func (m *Mirror) Peers() []PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []PeerStatus
	for _, p := range m.cfg.Peers {
		o := m.out[p]
		s := PeerStatus{Addr: p, State: "unknown", Sent: o.sent, Resyncs: o.resyncs, OutSeq: o.seq, TMList: "unknown"}
		for _, in := range m.in {
			if in.addr != p {
				continue
			}
			s.ID, s.LastHeard, s.Received, s.Missing = in.id, in.heard, in.received, in.missing
			s.InHighest = in.w.highest
			if in.peerHigh > in.w.highest {
				s.Lag = in.peerHigh - in.w.highest
			}
			switch {
			case in.tmDiffers:
				s.TMList = "differs"
			case in.tms != 0 && m.tmDigest.Load() != 0:
				s.TMList = "agrees"
			}
			switch {
			case time.Since(in.heard) > 5*m.cfg.Heartbeat:
				s.State = "silent"
			case in.tmDiffers:
				s.State = "tm-list-differs"
			case in.synced:
				s.State, s.SyncedAt = "synced", in.syncedAt
			default:
				s.State = "syncing"
			}
		}
		out = append(out, s)
	}
	return out
}

// Run sends and receives until ctx is done. It asks every peer for its
// table first (a joining or restarted distributor).
func (m *Mirror) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- m.receive(ctx) }()
	go func() {
		<-ctx.Done()
		_ = m.cfg.Conn.SetReadDeadline(time.Now())
	}()
	m.mu.Lock()
	for _, o := range m.out {
		m.control(o, TypeResyncReq, 0, 0)
	}
	m.mu.Unlock()
	hb := time.NewTicker(m.cfg.Heartbeat)
	defer hb.Stop()
	rf := time.NewTicker(m.cfg.Refresh)
	defer rf.Stop()
	lastRefresh, _ := m.cfg.Tables.ReadNow()
	m.readPersist()
	pending := map[datapath.FlowKey]struct{}{}
	var order []datapath.FlowKey
	flush := time.NewTimer(time.Hour)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			<-errc
			return nil
		case err := <-errc:
			return err
		case ev := <-m.queue:
			// Drain what is waiting: one lookup per key however many
			// events it had.
		drain:
			for {
				if ev.Type == datapath.EventExpired || ev.Type == datapath.EventForgot {
					// Remembered now, not at the flush: a copy a peer
					// sends meanwhile must not bring it back.
					m.tmu.Lock()
					now, _ := m.cfg.Tables.ReadNow()
					m.tomb(ev.Key, max(now, ev.Time))
					m.tmu.Unlock()
				}
				if ev.Type != datapath.EventRefused && !m.holdYoung(ev) {
					if _, ok := pending[ev.Key]; !ok {
						pending[ev.Key] = struct{}{}
						order = append(order, ev.Key)
					}
				}
				if len(order) >= 4*MaxEntries {
					break
				}
				select {
				case ev = <-m.queue:
				default:
					break drain
				}
			}
			immediate := ev.Flags&datapath.FlowMirror != 0
			if len(order) >= MaxEntries || immediate {
				m.sendKeys(order, pending)
				order = order[:0]
			} else {
				flush.Reset(time.Millisecond)
			}
		case <-flush.C:
			m.sendKeys(order, pending)
			order = order[:0]
		case <-hb.C:
			m.readDigest()
			m.heartbeat()
			if m.youth != nil {
				m.comeOfAge(func(k datapath.FlowKey) {
					if _, ok := pending[k]; !ok {
						pending[k] = struct{}{}
						order = append(order, k)
					}
				})
				m.sendKeys(order, pending)
				order = order[:0]
			}
		case <-rf.C:
			now, _ := m.cfg.Tables.ReadNow()
			since := lastRefresh
			if m.dirty.Swap(false) {
				since = 0
			}
			m.readPersist()
			m.walk(nil, since)
			lastRefresh = now
		}
		m.mu.Lock()
		var owed []*outStream
		for _, o := range m.out {
			if o.resync {
				o.resync = false
				owed = append(owed, o)
			}
		}
		m.mu.Unlock()
		for _, o := range owed {
			m.walk(o, 0)
		}
	}
}

// sendKeys sends the current entries of keys (deletes for those gone) to
// every peer.
func (m *Mirror) sendKeys(keys []datapath.FlowKey, pending map[datapath.FlowKey]struct{}) {
	if len(keys) == 0 {
		return
	}
	entries := make([]Entry, 0, MaxEntries)
	var seconds []SecondEntry
	var seen map[datapath.SecondKey]bool
	m.tmu.Lock()
	now, _ := m.cfg.Tables.ReadNow()
	for _, k := range keys {
		delete(pending, k)
		f, err := m.cfg.Tables.LookupFlow(k)
		e := Entry{Op: OpDelete, Key: k}
		if err != nil {
			m.tomb(k, now)
		} else {
			if m.cfg.Policy == MirrorSignalled && f.Flags&datapath.FlowMirror == 0 || m.isYoung(k, f, now) {
				continue
			}
			e = entryOf(k, f, now)
			seconds = m.secondsOf(k, f, now, seconds, &seen)
		}
		entries = append(entries, e)
		if len(entries) == MaxEntries {
			m.tmu.Unlock()
			m.broadcast(entries)
			entries = entries[:0]
			m.tmu.Lock()
		}
	}
	m.tmu.Unlock()
	m.broadcast(entries)
	m.broadcastSeconds(seconds)
}

func entryOf(k datapath.FlowKey, f datapath.Flow, now uint32) Entry {
	e := Entry{Op: OpPut, Key: k, Flow: f}
	if now > f.LastSeen {
		e.Age = now - f.LastSeen
	}
	e.Flow.LastSeen = 0
	e.Flow.Flags &^= datapath.FlowPeer
	return e
}

// walk sends every entry used at or after since (on this side's clock):
// to one peer (a resync, ended by a TypeResyncEnd-like heartbeat), or to
// all (a refresh).
func (m *Mirror) walk(to *outStream, since uint32) {
	var entries []Entry
	m.tmu.Lock()
	now, _ := m.cfg.Tables.ReadNow()
	_ = m.cfg.Tables.WalkFlows(func(k datapath.FlowKey, f datapath.Flow) bool {
		if f.LastSeen < since {
			return true
		}
		if m.cfg.Policy == MirrorSignalled && f.Flags&datapath.FlowMirror == 0 || m.isYoung(k, f, now) || m.endedOlder(f) {
			return true
		}
		entries = append(entries, entryOf(k, f, now))
		return true
	})
	seconds := m.walkSeconds(since, now)
	m.tmu.Unlock()
	if to == nil {
		for len(entries) > 0 {
			n := min(MaxEntries, len(entries))
			m.broadcast(entries[:n])
			entries = entries[n:]
		}
		m.broadcastSeconds(seconds)
		return
	}
	m.mu.Lock()
	start := to.seq + 1
	m.mu.Unlock()
	// The flows, then the second keys, all before the resync's end: a
	// peer synced has both.
	for i := 0; len(entries) > 0 || len(seconds) > 0; i++ {
		m.mu.Lock()
		if len(entries) > 0 {
			n := min(MaxEntries, len(entries))
			m.sendTo(to, &Message{Type: TypeUpdate, Entries: entries[:n]})
			entries = entries[n:]
		} else {
			n := min(MaxSecondEntries, len(seconds))
			m.sendTo(to, &Message{Type: TypeSecond, Seconds: seconds[:n]})
			m.c.SecondSent += uint64(n)
			seconds = seconds[n:]
		}
		m.mu.Unlock()
		if i%resyncBurst == resyncBurst-1 {
			// Paced: a table sent at once overflows the peer's socket
			// buffer, and what the NACKs cannot recover costs another
			// resync.
			time.Sleep(resyncPause)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	to.resyncs++
	m.c.ResyncsSent++
	m.control(to, TypeResyncEnd, start, 0)
}

// A resync sends resyncBurst datagrams, then pauses resyncPause: at most
// about 64 × 21 entries per 200 µs, 6.7 million a second, paced enough for
// a peer's socket buffer.
const (
	resyncBurst = 64
	resyncPause = 200 * time.Microsecond
)

func (m *Mirror) broadcast(entries []Entry) {
	if len(entries) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.cfg.Peers {
		m.sendTo(m.out[p], &Message{Type: TypeUpdate, Entries: entries})
	}
}

// sendTo numbers, encodes, keeps and sends one datagram (mu held).
func (m *Mirror) sendTo(o *outStream, msg *Message) {
	o.seq++
	msg.Sender, msg.Boot, msg.Seq, msg.TMs = m.cfg.ID, m.boot, o.seq, m.tmDigest.Load()
	slot := o.seq % resendSlots
	b, err := m.enc.Append(o.resend[slot][:0], msg)
	if err != nil {
		m.log.Error("mirror: encode", "err", err)
		return
	}
	o.resend[slot], o.resendQ[slot] = b, o.seq
	o.sent++
	m.c.Sent++
	if _, err := m.cfg.Conn.WriteToUDPAddrPort(b, o.addr); err != nil {
		m.c.SendErrors++
	}
}

// control sends a datagram without entries (mu held). Heartbeats and
// resync ends are numbered like updates (a lost one is NACKed); NACKs and
// resync requests are not kept for resending.
func (m *Mirror) control(o *outStream, t Type, arg uint64, count uint16) {
	msg := &Message{Type: t, Arg: arg, Count: count}
	if t == TypeHeartbeat || t == TypeResyncEnd {
		m.sendTo(o, msg)
		return
	}
	msg.Sender, msg.Boot, msg.Seq, msg.TMs = m.cfg.ID, m.boot, 0, m.tmDigest.Load()
	b, err := m.enc.Append(nil, msg)
	if err != nil {
		m.log.Error("mirror: encode", "err", err)
		return
	}
	if _, err := m.cfg.Conn.WriteToUDPAddrPort(b, o.addr); err != nil {
		m.c.SendErrors++
	}
}

// heartbeat tells every peer the highest sequence number sent to it, and
// NACKs the holes of every incoming stream.
func (m *Mirror) heartbeat() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.out {
		m.control(o, TypeHeartbeat, o.seq+1, 0)
	}
	for _, in := range m.in {
		o := m.out[in.addr]
		if o == nil {
			continue
		}
		if in.reqResync && time.Since(in.lastReq) > max(time.Second, 10*m.cfg.Heartbeat) {
			in.lastReq = time.Now()
			m.control(o, TypeResyncReq, in.w.floor+1, 0)
			continue
		}
		m.nackHoles(in, o)
	}
}

// nackHoles asks for the missing sequence numbers of in (mu held): those
// above the contiguous prefix, up to the peer's last heartbeat.
func (m *Mirror) nackHoles(in *inStream, o *outStream) {
	if in.first == 0 {
		return
	}
	top := max(in.w.highest, in.peerHigh)
	ranges := 0
	for s := in.contig + 1; s <= top && ranges < maxNackRanges; s++ {
		if in.w.seen(s) {
			continue
		}
		from := s
		for s+1 <= top && !in.w.seen(s+1) && s+1-from < 1<<15 {
			s++
		}
		m.control(o, TypeNack, from, uint16(s-from+1))
		in.missing += s - from + 1
		m.c.NacksSent++
		ranges++
	}
}

// receive reads datagrams until ctx is done.
func (m *Mirror) receive(ctx context.Context) error {
	buf := make([]byte, MaxDatagram+1)
	var msg Message
	for {
		n, from, err := m.cfg.Conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("mirror: receive: %w", err)
		}
		m.handle(buf[:n], from, &msg)
	}
}

// handle checks and applies one datagram; whatever is wrong with it is
// counted and changes nothing.
func (m *Mirror) handle(b []byte, from netip.AddrPort, msg *Message) {
	err := m.dec.Decode(b, msg)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
	case errors.Is(err, ErrTruncated):
		m.c.Truncated++
		return
	case errors.Is(err, ErrAuth):
		m.c.BadAuth++
		return
	case errors.Is(err, ErrVersion):
		m.c.BadVersion++
		return
	default:
		m.c.Malformed++
		return
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	o := m.out[from]
	if o == nil || msg.Sender == m.cfg.ID {
		m.c.UnknownPeer++
		return
	}
	m.c.Received++
	in := m.in[msg.Sender]
	if in == nil {
		in = &inStream{id: msg.Sender, addr: from}
		in.w.floor = m.floors.saved[msg.Sender]
		m.in[msg.Sender] = in
	}
	if msg.Boot < in.boot {
		m.c.Replayed++ // a datagram of an earlier run
		return
	}
	switch msg.Type {
	case TypeNack:
		m.c.NacksReceived++
		m.resend(o, msg.Arg, uint64(msg.Count))
		return
	case TypeResyncReq:
		m.c.ResyncsRequested++
		if msg.Arg > o.seq {
			o.seq = msg.Arg // continue above the asker's replay floor
		}
		o.resync = true
		return
	}
	if msg.Boot > in.boot {
		// The peer (re)started: a new stream. The durable floor stays.
		floor := in.w.floor
		*in = inStream{id: msg.Sender, addr: from, boot: msg.Boot}
		in.w.floor = floor
		// Its table is asked for, unless the resync asked for at start
		// arrives within the retry interval (its end clears this).
		in.reqResync, in.lastReq = true, time.Now()
	}
	if !in.w.check(msg.Seq) {
		m.c.Replayed++
		if msg.Seq <= in.w.floor && msg.Seq > in.w.highest {
			// Our restart raised the floor above the live stream.
			in.reqResync = true
		}
		return
	}
	if msg.Seq > m.floors.saved[msg.Sender] {
		if err := m.floors.raise(msg.Sender, msg.Seq+floorReserve); err != nil {
			m.log.Error("mirror: cannot keep the replay floor; datagram refused", "err", err)
			return
		}
	}
	if in.first == 0 {
		in.first, in.contig = msg.Seq, msg.Seq-1
	}
	if msg.Seq >= WindowSize && in.contig < msg.Seq-WindowSize {
		// Seqs sliding out of the window unseen are lost for good: only a
		// resync can make up for them.
		in.lost = msg.Seq - WindowSize
		in.contig = in.lost
		in.reqResync = true
		in.lastReq = time.Time{}
	}
	in.w.mark(msg.Seq)
	for in.contig < in.w.highest && in.w.seen(in.contig+1) {
		in.contig++
	}
	in.received++
	in.heard = time.Now()
	m.checkTMList(in, msg)
	if in.tmDiffers && (msg.Type == TypeUpdate || msg.Type == TypeSecond) {
		m.c.RefusedTMList += uint64(len(msg.Entries) + len(msg.Seconds))
		msg.Type = 0 // counted; nothing installed
	}
	switch msg.Type {
	case TypeHeartbeat:
		if msg.Arg > 0 {
			in.peerHigh = msg.Arg - 1
		}
	case TypeResyncEnd:
		in.syncFrom, in.syncTo = msg.Arg, msg.Seq
		in.reqResync = false
	case TypeSecond:
		m.installSeconds(msg.Seconds)
	case TypeUpdate:
		m.tmu.Lock()
		now, _ := m.cfg.Tables.ReadNow()
		for i := range msg.Entries {
			e := &msg.Entries[i]
			if t, ok := m.tombs[e.Key]; ok && e.Op == OpPut && onClock(e, now).LastSeen <= t {
				m.c.Tombstoned++
				continue
			}
			out, err := Install(m.cfg.Tables, e, now)
			if out == Deleted || out == Absent {
				m.tomb(e.Key, now)
			}
			if err != nil {
				m.c.InstallErrors++
				continue
			}
			switch out {
			case Inserted:
				m.c.Inserted++
			case Replaced:
				m.c.Replaced++
			case KeptLocal:
				m.c.KeptLocal++
			case Deleted:
				m.c.Deleted++
			case Absent:
				m.c.Absent++
			case Refused:
				m.c.Refused++
			}
		}
		m.tmu.Unlock()
	}
	if !in.synced && in.syncTo != 0 && !in.tmDiffers && m.complete(in) {
		in.synced, in.syncedAt = true, time.Now()
		m.checkSynced()
	}
}

// complete reports whether every datagram of the resync in progress has
// arrived (mu held).
func (m *Mirror) complete(in *inStream) bool {
	return in.syncFrom > in.lost && in.syncFrom >= in.first && in.contig >= in.syncTo
}

// checkSynced closes Synced once every configured peer is synced (mu held).
func (m *Mirror) checkSynced() {
	n := 0
	for _, in := range m.in {
		if in.synced {
			n++
		}
	}
	if n >= len(m.cfg.Peers) {
		m.once.Do(func() { close(m.synced) })
	}
}

// resend sends again what a peer NACKed; anything no longer kept gets it a
// full resync (mu held).
func (m *Mirror) resend(o *outStream, from, count uint64) {
	for s := from; s < from+count; s++ {
		slot := s % resendSlots
		if s > o.seq || o.resendQ[slot] != s {
			o.resync = true
			return
		}
		m.c.Resent++
		if _, err := m.cfg.Conn.WriteToUDPAddrPort(o.resend[slot], o.addr); err != nil {
			m.c.SendErrors++
		}
	}
}

// bigBuffers gives the socket 8 MiB buffers: a resync or a burst of new
// flows arrives faster than one read loop drains it. As root the sysctl
// limits (net.core.rmem_max) are overridden; otherwise they cap it.
func bigBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetWriteBuffer(8 << 20)
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	})
}

// maxTombs bounds the recently deleted keys remembered.
const maxTombs = 1 << 16

// tomb remembers that k was deleted at now (tmu held).
func (m *Mirror) tomb(k datapath.FlowKey, now uint32) {
	if _, ok := m.tombs[k]; !ok {
		if len(m.tombFIFO) < maxTombs {
			m.tombFIFO = append(m.tombFIFO, k)
		} else {
			delete(m.tombs, m.tombFIFO[m.tombNext])
			m.tombFIFO[m.tombNext] = k
			m.tombNext = (m.tombNext + 1) % maxTombs
		}
	}
	m.tombs[k] = now
}

// CounterMap returns the counters by their operator-facing names (the
// switchyard_mirror_total metric's counter label).
func (c Counters) CounterMap() map[string]uint64 {
	return map[string]uint64{
		"events_queued": c.EventsQueued, "events_dropped": c.EventsDropped,
		"sent": c.Sent, "resent": c.Resent, "send_errors": c.SendErrors,
		"received": c.Received, "refused_truncated": c.Truncated, "refused_malformed": c.Malformed,
		"refused_auth": c.BadAuth, "refused_version": c.BadVersion, "refused_replayed": c.Replayed,
		"refused_unknown_peer": c.UnknownPeer,
		"inserted":             c.Inserted, "replaced": c.Replaced, "kept_local": c.KeptLocal, "deleted": c.Deleted,
		"delete_absent": c.Absent, "refused_table_full": c.Refused, "install_errors": c.InstallErrors,
		"tombstoned": c.Tombstoned, "nacks_sent": c.NacksSent, "nacks_received": c.NacksReceived,
		"resyncs_sent": c.ResyncsSent, "resyncs_requested": c.ResyncsRequested,
		"second_sent": c.SecondSent, "second_inserted": c.SecondInserted, "second_replaced": c.SecondReplaced,
		"second_kept_local": c.SecondKept, "second_refused": c.SecondRefused, "second_install_errors": c.SecondErrors,
		"tm_list_mismatch": c.TMListMismatch, "refused_tm_list": c.RefusedTMList,
		"older_promoted": c.OlderPromoted, "older_ended_young": c.OlderEndedYoung,
		"older_overflow": c.OlderOverflow, "older_waiting": c.OlderWaiting,
	}
}
