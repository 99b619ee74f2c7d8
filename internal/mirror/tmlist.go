package mirror

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// An entry carries its TM's index, not its id: the peers must mean the
// same TM by each index. Every datagram carries its sender's TM list
// digest (header bytes 12–15); a receiver whose own digest differs refuses
// the peer's entries (counted: refused_tm_list), shows the peer as
// "tm-list-differs", does not count it as synced, and asks it for a full
// resync once the digests agree again (after both reloaded the same TM
// list), so that nothing refused meanwhile is missing.

// TMIndex is one TM of a distributor's TM list: its data-path index and id.
type TMIndex struct {
	Index uint32
	ID    string
}

// TMDigest is the digest of a TM list (the TMs in service, by index): the
// first 4 bytes of SHA-256 over "index id\n" lines in index order, never 0
// (0 means "no digest": nothing is checked).
func TMDigest(tms []TMIndex) uint32 {
	tms = slices.Clone(tms)
	slices.SortFunc(tms, func(a, b TMIndex) int { return int(a.Index) - int(b.Index) })
	h := sha256.New()
	for _, t := range tms {
		fmt.Fprintf(h, "%d %s\n", t.Index, t.ID)
	}
	d := binary.BigEndian.Uint32(h.Sum(nil))
	if d == 0 {
		d = 1
	}
	return d
}

// readDigest refreshes our digest from Config.TMDigest.
func (m *Mirror) readDigest() {
	if m.cfg.TMDigest != nil {
		m.tmDigest.Store(m.cfg.TMDigest())
	}
}

// checkTMList compares the digest msg carries with ours (mu held).
func (m *Mirror) checkTMList(in *inStream, msg *Message) {
	in.tms = msg.TMs
	own := m.tmDigest.Load()
	differs := own != 0 && msg.TMs != 0 && msg.TMs != own
	if differs == in.tmDiffers {
		return
	}
	in.tmDiffers = differs
	if differs {
		m.c.TMListMismatch++
		in.synced = false
		m.log.Warn("mirror: a peer's TM list differs from ours: its entries are refused until both agree (traffic_managers must be the same, in the same order, on every peer)",
			"peer", in.addr, "id", in.id, "theirs", fmt.Sprintf("%08x", msg.TMs), "ours", fmt.Sprintf("%08x", own))
		return
	}
	// Agreed again: ask for what was refused meanwhile.
	in.reqResync, in.lastReq = true, time.Time{}
	m.log.Info("mirror: a peer's TM list agrees with ours again; asking it for its table", "peer", in.addr, "id", in.id)
}
