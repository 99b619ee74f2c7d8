package mirror

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// NewerSecond reports whether second-key entry a wins over b (same key,
// both last_seen on one clock), by a total order as Newer is for flows:
// the later last_seen, then the higher TM index, the longer timeout, the
// higher service, then the parent key's bytes.
func NewerSecond(a, b datapath.Second) bool {
	switch {
	case a.LastSeen != b.LastSeen:
		return a.LastSeen > b.LastSeen
	case a.Tm != b.Tm:
		return a.Tm > b.Tm
	case a.Timeout != b.Timeout:
		return a.Timeout > b.Timeout
	case a.Svc != b.Svc:
		return a.Svc > b.Svc
	}
	return bytes.Compare(keyBytes(a.Parent), keyBytes(b.Parent)) > 0
}

func keyBytes(k datapath.FlowKey) []byte {
	return appendKey(make([]byte, 0, 40), &k)
}

// secondOf returns the wire entry of second key k.
func secondOf(k datapath.SecondKey, v datapath.Second, now uint32) SecondEntry {
	e := SecondEntry{Op: OpPut, Key: k, Value: v}
	if now > v.LastSeen {
		e.Age = now - v.LastSeen
	}
	e.Value.LastSeen, e.Value.Pad = 0, 0
	return e
}

// InstallSecond applies one received second-key entry to t through the
// seam: it inserts the key, or replaces the local entry only if the
// received one is NewerSecond (Inserted, Replaced, KeptLocal). A table
// that refuses the write (full) gives Refused. The seam has no conditional
// write for second keys: a data-path write between the lookup and the
// write is overwritten (its TM is the same unless both sides chose at
// once; the order decides as for flows). Received second keys are not
// marked from-peer (the value has no flags); the receiver's sweeper ages
// them like its own, from the age they came with, so deletes are not sent.
func InstallSecond(t datapath.Tables, e *SecondEntry, now uint32) (Outcome, error) {
	v := e.Value
	v.LastSeen = 0
	if e.Age < now {
		v.LastSeen = now - e.Age
	}
	cur, err := t.LookupSecondKey(e.Key)
	switch {
	case err == nil:
		if !NewerSecond(v, cur) {
			return KeptLocal, nil
		}
	case !errors.Is(err, datapath.ErrKeyNotExist):
		return 0, fmt.Errorf("install second key: look up: %w", err)
	}
	if perr := t.PutSecondKey(e.Key, v); perr != nil {
		return Refused, nil
	}
	if err == nil {
		return Replaced, nil
	}
	return Inserted, nil
}

// readPersist refreshes the services' persistence masks.
func (m *Mirror) readPersist() {
	if m.cfg.PersistMasks == nil {
		return
	}
	p := m.cfg.PersistMasks()
	m.tmu.Lock()
	m.persist = p
	m.tmu.Unlock()
}

// secondsOf appends to out the second key that goes with flow k: the one
// it came from (a second-key hit: its mask is in the entry), or the
// persistence key its service wrote when it selected it. At most two
// lookups, and none for a flow of a service without persistence. seen
// dedups within one batch (tmu held).
func (m *Mirror) secondsOf(k datapath.FlowKey, f datapath.Flow, now uint32, out []SecondEntry, seen *map[datapath.SecondKey]bool) []SecondEntry {
	var masks [2]uint32
	n := 0
	if f.Flags&datapath.FlowSecondKey != 0 && f.Mask != 0 {
		masks[n] = uint32(f.Mask)
		n++
	}
	if pm := m.persist[f.Svc]; f.Flags&datapath.FlowSelected != 0 && pm != 0 {
		masks[n] = pm
		n++
	}
	for _, mask := range masks[:n] {
		sk := datapath.SecondKey{Key: flow.MaskKey(k, mask), Mask: mask}
		if (*seen)[sk] {
			continue
		}
		v, err := m.cfg.Tables.LookupSecondKey(sk)
		if err != nil {
			continue
		}
		if *seen == nil {
			*seen = map[datapath.SecondKey]bool{}
		}
		(*seen)[sk] = true
		out = append(out, secondOf(sk, v, now))
	}
	return out
}

// walkSeconds returns every second key used at or after since (tmu held).
func (m *Mirror) walkSeconds(since, now uint32) []SecondEntry {
	var out []SecondEntry
	_ = m.cfg.Tables.WalkSecondKeys(func(k datapath.SecondKey, v datapath.Second) bool {
		if v.LastSeen >= since {
			out = append(out, secondOf(k, v, now))
		}
		return true
	})
	return out
}

// broadcastSeconds sends second-key entries to every peer.
func (m *Mirror) broadcastSeconds(entries []SecondEntry) {
	for len(entries) > 0 {
		n := min(MaxSecondEntries, len(entries))
		m.mu.Lock()
		for _, p := range m.cfg.Peers {
			m.sendTo(m.out[p], &Message{Type: TypeSecond, Seconds: entries[:n]})
		}
		m.c.SecondSent += uint64(n)
		m.mu.Unlock()
		entries = entries[n:]
	}
}

// installSeconds installs received second-key entries (mu held).
func (m *Mirror) installSeconds(entries []SecondEntry) {
	m.tmu.Lock()
	defer m.tmu.Unlock()
	now, _ := m.cfg.Tables.ReadNow()
	for i := range entries {
		out, err := InstallSecond(m.cfg.Tables, &entries[i], now)
		if err != nil {
			m.c.SecondErrors++
			continue
		}
		switch out {
		case Inserted:
			m.c.SecondInserted++
		case Replaced:
			m.c.SecondReplaced++
		case KeptLocal:
			m.c.SecondKept++
		case Refused:
			m.c.SecondRefused++
		}
	}
}
