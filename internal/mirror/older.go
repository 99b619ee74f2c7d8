package mirror

import "github.com/switchyard/switchyard/internal/datapath"

// MirrorOlder (peers.mirror: older) mirrors a flow only once it has lived
// MinAge: counted from its "new" event, on the data path's clock. A flow
// that ends younger is never sent (short connections cost the peers
// nothing; so is one that has ended, a FIN or RST, when it comes of age);
// one that lives on is sent when it comes of age, and from then on like
// any other. A flow a TM asked to mirror is sent at once, and
// deletes are always sent. There is no packet count: the flow value has
// none (a counter would grow every entry and cost a write per packet on
// the data path), so "older than N packets" is not offered.

// maxYoung bounds the young flows waiting to come of age; a new flow that
// does not fit is sent at once (mirroring more than asked is safe; less is
// not) and counted (older_overflow).
const maxYoung = 1 << 18

type bornKey struct {
	key  datapath.FlowKey
	born uint32
}

// youth tracks the flows not mirrored yet because they are younger than
// minAge. Used by the Run goroutine only.
type youth struct {
	minAge uint32
	born   map[datapath.FlowKey]uint32
	fifo   []bornKey // in the order of birth; stale entries skipped
	head   int
}

func newYouth(minAge uint32) *youth {
	return &youth{minAge: minAge, born: map[datapath.FlowKey]uint32{}}
}

// add records a new flow born at t; false: no room (send it at once).
func (y *youth) add(k datapath.FlowKey, t uint32) bool {
	if _, ok := y.born[k]; ok {
		return true
	}
	if len(y.fifo)-y.head >= maxYoung {
		return false
	}
	y.born[k] = t
	y.fifo = append(y.fifo, bornKey{k, t})
	return true
}

// young reports whether k is a flow not of age at now.
func (y *youth) young(k datapath.FlowKey, now uint32) bool {
	t, ok := y.born[k]
	return ok && now-t < y.minAge
}

// forget drops k (it ended young: the peers never had it).
func (y *youth) forget(k datapath.FlowKey) { delete(y.born, k) }

// due calls fn for each flow that came of age at now, and forgets it.
func (y *youth) due(now uint32, fn func(datapath.FlowKey)) {
	for y.head < len(y.fifo) {
		b := y.fifo[y.head]
		if now-b.born < y.minAge {
			break
		}
		y.head++
		if t, ok := y.born[b.key]; ok && t == b.born {
			delete(y.born, b.key)
			fn(b.key)
		}
	}
	if y.head > 4096 && y.head*2 > len(y.fifo) {
		y.fifo = append(y.fifo[:0], y.fifo[y.head:]...)
		y.head = 0
	}
}

// waiting is how many flows wait to come of age.
func (y *youth) waiting() int { return len(y.born) }

// holdYoung keeps a young flow's events back under MirrorOlder: a new
// flow waits to come of age; the events of one still young are not sent
// (an end forgets it: the peers never had it). A flow a TM asked to mirror
// is never held. It reports whether ev is held back.
func (m *Mirror) holdYoung(ev datapath.Event) bool {
	y := m.youth
	if y == nil || ev.Flags&datapath.FlowMirror != 0 {
		return false
	}
	defer func() { m.waiting.Store(uint64(y.waiting())) }()
	switch ev.Type {
	case datapath.EventNew:
		if y.add(ev.Key, ev.Time) {
			return true
		}
		m.overflow.Add(1)
		return false
	case datapath.EventExpired, datapath.EventForgot:
		if y.young(ev.Key, ev.Time) {
			y.forget(ev.Key)
			m.endedYoung.Add(1)
			return true
		}
		return false
	}
	return y.young(ev.Key, ev.Time)
}

// isYoung reports whether entry k, f must not be sent yet (MirrorOlder).
func (m *Mirror) isYoung(k datapath.FlowKey, f datapath.Flow, now uint32) bool {
	return m.youth != nil && f.Flags&datapath.FlowMirror == 0 && m.youth.young(k, now)
}

// comeOfAge hands add the flows that came of age now; one that is gone
// or has ended (a FIN or RST: it is closing, its entry only waits for its
// close timeout) counts as ended young and is not sent.
func (m *Mirror) comeOfAge(add func(datapath.FlowKey)) {
	m.tmu.Lock()
	now, err := m.cfg.Tables.ReadNow()
	if err != nil {
		m.tmu.Unlock()
		return
	}
	var due []datapath.FlowKey
	m.youth.due(now, func(k datapath.FlowKey) {
		f, err := m.cfg.Tables.LookupFlow(k)
		if err != nil || f.TcpState&datapath.TCPEnded != 0 {
			m.endedYoung.Add(1)
			return
		}
		due = append(due, k)
	})
	m.tmu.Unlock()
	for _, k := range due {
		m.promoted.Add(1)
		add(k)
	}
	m.waiting.Store(uint64(m.youth.waiting()))
}

// endedOlder reports whether a walk skips f under MirrorOlder: a flow that
// has ended (FIN or RST). One that was mirrored sent its end by its event;
// one that ended young must not reach the peers by a walk either.
func (m *Mirror) endedOlder(f datapath.Flow) bool {
	return m.youth != nil && f.Flags&datapath.FlowMirror == 0 && f.TcpState&datapath.TCPEnded != 0
}
