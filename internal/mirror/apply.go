package mirror

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Outcome is what installing one received entry did.
type Outcome int

// Outcomes of Install.
const (
	Inserted  Outcome = iota // the key had no entry
	Replaced                 // the received entry was newer (Newer)
	KeptLocal                // the local entry was newer or equal
	Deleted                  // an OpDelete removed an entry not used since
	Absent                   // an OpDelete for a key without an entry
	Refused                  // the table is full: counted, nothing changed
)

// Newer reports whether entry a wins over entry b of the same key, with
// both last_seen times on one clock. The rule is a total order, so two
// distributors that exchange their versions of one key both keep the same
// one:
//
//  1. the later last_seen wins (the entry used most recently);
//  2. then the more TCP state bits (they only accumulate: a FIN or RST a
//     distributor saw is not lost);
//  3. then the higher TM index, then the higher flags, then the higher
//     sequence numbers (arbitrary but the same on both sides).
//
// Equal entries are not newer: the local one is kept, with no write.
func Newer(a, b datapath.Flow) bool {
	if a.LastSeen != b.LastSeen {
		return a.LastSeen > b.LastSeen
	}
	if pa, pb := bits.OnesCount8(a.TcpState), bits.OnesCount8(b.TcpState); pa != pb {
		return pa > pb
	}
	switch {
	case a.Tm != b.Tm:
		return a.Tm > b.Tm
	case a.Flags&^datapath.FlowPeer != b.Flags&^datapath.FlowPeer:
		return a.Flags&^datapath.FlowPeer > b.Flags&^datapath.FlowPeer
	case a.SeqFwd != b.SeqFwd:
		return a.SeqFwd > b.SeqFwd
	}
	return a.SeqRev > b.SeqRev
}

// onClock returns the entry's flow with last_seen put on the receiver's
// clock now (an age larger than now: 0) and marked from-peer.
func onClock(e *Entry, now uint32) datapath.Flow {
	f := e.Flow
	f.LastSeen = 0
	if e.Age < now {
		f.LastSeen = now - e.Age
	}
	f.Flags |= datapath.FlowPeer
	return f
}

// Install applies one received entry to t: a put inserts the key, or
// replaces the local entry only if the received one is Newer; a delete
// removes the local entry only if it was not used after the delete was
// decided (its last_seen is not later). It never overwrites a newer local
// entry, and a full table refuses rather than evicts (the data path's
// flood defence stays the table's bound).
func Install(t datapath.Tables, e *Entry, now uint32) (Outcome, error) {
	f := onClock(e, now)
	cur, err := t.LookupFlow(e.Key)
	if err != nil && !errors.Is(err, datapath.ErrKeyNotExist) {
		return 0, fmt.Errorf("install: look up: %w", err)
	}
	exists := err == nil
	if e.Op == OpDelete {
		if !exists {
			return Absent, nil
		}
		if cur.LastSeen > f.LastSeen {
			return KeptLocal, nil
		}
		if err := t.DeleteFlow(e.Key); err != nil && !errors.Is(err, datapath.ErrKeyNotExist) {
			return 0, fmt.Errorf("install: delete: %w", err)
		}
		return Deleted, nil
	}
	if !exists {
		err := t.InsertFlow(e.Key, f)
		switch {
		case err == nil:
			return Inserted, nil
		case errors.Is(err, datapath.ErrTableFull):
			return Refused, nil
		case !errors.Is(err, datapath.ErrKeyExist):
			return 0, fmt.Errorf("install: insert: %w", err)
		}
		// The data path made the entry meanwhile: compare with it.
		if cur, err = t.LookupFlow(e.Key); err != nil {
			return 0, fmt.Errorf("install: look up: %w", err)
		}
	}
	if !Newer(f, cur) {
		return KeptLocal, nil
	}
	if err := t.UpdateFlow(e.Key, f); err != nil {
		if errors.Is(err, datapath.ErrKeyNotExist) {
			// Deleted meanwhile (swept, or a FORGET): not brought back.
			return KeptLocal, nil
		}
		return 0, fmt.Errorf("install: update: %w", err)
	}
	return Replaced, nil
}
