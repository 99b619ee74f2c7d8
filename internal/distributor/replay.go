package distributor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/internal/config"
)

// The UDP control transport's replay state outlives a restart: each TM's
// highest accepted sequence number is written to a file before the datagram
// that raised it is applied, so a restarted daemon refuses every datagram it
// may have applied before. (The alternative, an epoch the distributor
// announces, needs a reply channel and a handshake in every TM; a file
// needs nothing from the TMs.)

// replayHeader is the first line of a replay state file, with its version.
const replayHeader = "switchyard-replay 1"

// maxReplayFile bounds the replay state file read at start: room for
// maxReplayIDs lines of at most 54 bytes (a 32-byte id, a space, 20 digits,
// a newline) and the header.
const maxReplayFile = 64 << 10

// maxReplayIDs bounds the TM ids the file keeps. The ids of TMs removed
// from the config are kept (a TM re-added with the same key must not have
// its old datagrams replayed) until the file would hold more; then only
// the configured TMs' are (at most config.MaxTrafficManagers).
const maxReplayIDs = 1024

// replayFile is the replay state file of distributor id under dir.
func replayFile(dir, id string) string { return filepath.Join(dir, id+".replay") }

// replayStore writes the per-TM highest accepted sequence numbers to its
// file, crash-safely: a temporary file, fsync, rename, fsync of the
// directory. A crash at any point leaves the old file or the new one.
type replayStore struct {
	path  string
	saved map[string]uint64 // what the file holds
	// configured reports whether a TM id is in the current config; nil:
	// all are.
	configured func(id string) bool
}

// openReplayStore creates dir if needed and reads path's state, if any. A
// file that cannot be read or parsed is an error: starting without it would
// accept replays of what was applied before.
func openReplayStore(dir, path string) (*replayStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("replay state: create %s: %w", dir, err)
	}
	r := &replayStore{path: path, saved: map[string]uint64{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replay state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReplayFile+1))
	if err != nil {
		return nil, fmt.Errorf("replay state: read %s: %w", path, err)
	}
	if r.saved, err = parseReplayState(b); err != nil {
		return nil, fmt.Errorf("replay state %s: %w (remove the file only if no datagram accepted before can be replayed, e.g. after rotating the TMs' signal keys)", path, err)
	}
	return r, nil
}

// parseReplayState reads a replay state file: the header line, then one
// line per TM, "<tm id> <highest sequence number>", ids unique.
func parseReplayState(b []byte) (map[string]uint64, error) {
	if len(b) > maxReplayFile {
		return nil, fmt.Errorf("over %d bytes", maxReplayFile)
	}
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 256), maxReplayFile)
	line := 0
	for sc.Scan() {
		line++
		t := sc.Text()
		if line == 1 {
			if t != replayHeader {
				return nil, fmt.Errorf("line 1: %q is not %q", t, replayHeader)
			}
			continue
		}
		id, num, ok := strings.Cut(t, " ")
		if !ok || !config.ValidID(id) {
			return nil, fmt.Errorf("line %d: %q is not \"<tm id> <sequence number>\"", line, t)
		}
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: sequence number of %s: %w", line, id, err)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("line %d: %s listed twice", line, id)
		}
		out[id] = seq
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if line == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// formatReplayState is the file's content for state, ids sorted.
func formatReplayState(state map[string]uint64) []byte {
	var b bytes.Buffer
	b.WriteString(replayHeader + "\n")
	for _, id := range slices.Sorted(maps.Keys(state)) {
		fmt.Fprintf(&b, "%s %d\n", id, state[id])
	}
	return b.Bytes()
}

// highest returns the saved highest sequence number of TM id.
func (r *replayStore) highest(id string) (uint64, bool) {
	s, ok := r.saved[id]
	return s, ok
}

// save records seq as TM id's highest accepted sequence number, durably,
// if it is above the saved one. The caller applies the datagram only after
// save returned nil.
func (r *replayStore) save(id string, seq uint64) error {
	return r.saveAll(map[string]uint64{id: seq})
}

// saveAll is save for several TMs at once, in one durable write (none when
// no number is above the saved one).
func (r *replayStore) saveAll(high map[string]uint64) error {
	next := maps.Clone(r.saved)
	changed := false
	for id, seq := range high {
		if cur, ok := next[id]; !ok || seq > cur {
			next[id] = seq
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if len(next) > maxReplayIDs && r.configured != nil {
		for id := range next {
			if _, now := high[id]; !now && !r.configured(id) {
				delete(next, id)
			}
		}
	}
	if err := writeFileSync(r.path, formatReplayState(next)); err != nil {
		return fmt.Errorf("replay state: %w", err)
	}
	r.saved = next
	return nil
}

// writeFileSync replaces path with data so that a crash leaves either the
// old content or the new: temporary file, fsync, rename, fsync of the
// directory (the rename itself must reach the disk).
func writeFileSync(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
