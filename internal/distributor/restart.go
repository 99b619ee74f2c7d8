package distributor

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
)

// Hitless restart: the data path is pinned (datapath.LoadPinned) and a
// restarted daemon adopts it. What the daemon must recover so that its
// first reconcile moves no flow:
//   - TM indexes by id: persisted in state_dir/<id>.tm-indexes on every
//     change (the tms map holds MACs, not ids, so it cannot say which TM an
//     index was);
//   - service indexes: from the pinned services map (key → index);
//   - what it wrote (the diff base): read back from the pinned tables, so
//     that the first apply writes only what the config changed and deletes
//     what it dropped;
//   - each TM's MAC and egress: from the pinned tms map until the resolver
//     replaces them, so that no TM is "not ready" for a moment.
// The clock (CLOCK_MONOTONIC) is not reset by a restart, the sweeper walks
// the pinned tables, and the UDP replay window is in state_dir already.

// PinDir is where cfg's data path is pinned.
func PinDir(cfg *config.Config) string {
	if cfg.Distributor.PinDir != "" {
		return cfg.Distributor.PinDir
	}
	return filepath.Join(config.DefaultPinRoot, cfg.Distributor.ID)
}

// tmIndexFile is where the TM index assignment is kept.
func tmIndexFile(cfg *config.Config) string {
	return filepath.Join(cfg.Distributor.StateDir, cfg.Distributor.ID+".tm-indexes")
}

// tmIndexes is the persisted TM index assignment.
type tmIndexes struct {
	Next uint32            `json:"next"`
	TMs  map[string]uint32 `json:"tms"` // removed TMs whose index is still held included
}

// maxIndexFile bounds the file read back (MaxTMs entries of short ids).
const maxIndexFile = 1 << 20

// saveIndexes writes the TM index assignment when it changed since the last
// write (atomically: a temporary file renamed over the old one). Called with
// d.mu held.
func (d *Daemon) saveIndexes() error {
	if d.indexPath == "" {
		return nil
	}
	cur := tmIndexes{Next: d.nextTM, TMs: map[string]uint32{}}
	for id, s := range d.tms {
		cur.TMs[id] = s.index
	}
	if d.savedIndexes != nil && d.savedIndexes.Next == cur.Next && maps.Equal(d.savedIndexes.TMs, cur.TMs) {
		return nil
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return fmt.Errorf("TM indexes: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(d.indexPath), 0o700); err != nil {
		return fmt.Errorf("TM indexes (distributor.state_dir): %w", err)
	}
	tmp := d.indexPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("TM indexes (distributor.state_dir): %w", err)
	}
	if err := os.Rename(tmp, d.indexPath); err != nil {
		return fmt.Errorf("TM indexes (distributor.state_dir): %w", err)
	}
	d.savedIndexes = &cur
	return nil
}

// loadIndexes reads the TM index assignment.
func loadIndexes(path string) (*tmIndexes, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ix tmIndexes
	dec := json.NewDecoder(&limitReader{f, maxIndexFile})
	if err := dec.Decode(&ix); err != nil {
		return nil, fmt.Errorf("TM index file %s: %w", path, err)
	}
	for id, idx := range ix.TMs {
		if idx >= uint32(datapath.MaxTMs) || idx >= ix.Next && ix.Next < uint32(datapath.MaxTMs) {
			return nil, fmt.Errorf("TM index file %s: TM %s has index %d, out of range", path, id, idx)
		}
	}
	if ix.Next > uint32(datapath.MaxTMs) {
		return nil, fmt.Errorf("TM index file %s: next index %d out of range", path, ix.Next)
	}
	return &ix, nil
}

type limitReader struct {
	f *os.File
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("longer than %d bytes", maxIndexFile)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// adopt seeds the daemon from an adopted data path: indexes, MACs and the
// written state, before its first apply. Called with d.mu held.
func (d *Daemon) adopt(cfg *config.Config, dp *datapath.Datapath) error {
	ix, err := loadIndexes(d.indexPath)
	if err != nil {
		return fmt.Errorf("adopt the pinned data path in %s: cannot recover TM indexes: %w (remove the data path with `switchyard distributor --config FILE --unpin`, which breaks established flows)", dp.Pinned(), err)
	}
	tables, err := dp.ReadConfigTables()
	if err != nil {
		return fmt.Errorf("adopt the pinned data path in %s: %w", dp.Pinned(), err)
	}
	d.nextTM = ix.Next
	for _, id := range slices.Sorted(maps.Keys(ix.TMs)) {
		s := &tmSlot{index: ix.TMs[id]}
		if tc, ok := cfg.TM(id); ok {
			// Present with its config: assign does not resolve it again
			// at once, so the pinned MAC holds until the resolver finds
			// another.
			s.cfg, s.present = tc, true
		}
		if e, ok := tables.TMs[s.index]; ok && e.Flags&datapath.TMReady != 0 {
			s.mac = net.HardwareAddr(slices.Clone(e.Mac[:]))
			s.srcMAC = net.HardwareAddr(slices.Clone(e.SrcMac[:]))
			s.ifindex = int(e.Ifindex)
		}
		d.tms[id] = s
	}
	for _, sc := range cfg.Services {
		id := idOf(sc)
		if v, ok := tables.Services[serviceKey(id)]; ok {
			d.svcs[id] = &svcSlot{id: id, index: v.Index, name: sc.Name}
		}
	}
	d.written.TMs = tables.TMs
	d.written.Services = tables.Services
	d.written.VIPs = tables.VIPs
	d.written.Senders = tables.Senders
	d.written.LearnSrcs = tables.LearnSrcs
	d.savedIndexes = ix
	d.adopted = true
	d.log.Info("adopted the pinned data path", "dir", dp.Pinned(), "tms", len(ix.TMs), "services", len(d.svcs))
	return nil
}

// Adopted reports whether the daemon adopted a pinned data path.
func (d *Daemon) Adopted() bool { return d.adopted }

// lockFile is held (flock) by the running daemon of an id, so that a second
// one never adopts the same pinned data path while the first still writes it.
func lockFile(cfg *config.Config) string {
	return filepath.Join(cfg.Distributor.StateDir, cfg.Distributor.ID+".lock")
}

// lock takes the daemon's lock; the file stays open (and locked) until the
// process ends.
func lock(cfg *config.Config) (*os.File, error) {
	if err := os.MkdirAll(cfg.Distributor.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("distributor.state_dir: %w", err)
	}
	path := lockFile(cfg)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another distributor with id %s is running (it holds %s): stop it first (SIGTERM --keep for a hitless restart)", cfg.Distributor.ID, path)
	}
	return f, nil
}
