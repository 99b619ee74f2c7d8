package mirror

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WindowSize is how many sequence numbers below the highest accepted one a
// window still tracks: an authentic datagram that arrives later than that,
// or twice, is refused as a replay (and, if it was missing, the receiver
// resyncs instead). 2^20 datagrams: a whole resync of 22 million entries
// fits, in a 128 KiB bitmap per peer.
const WindowSize = 1 << 20

// floorReserve is how far above the highest accepted sequence number the
// durable floor is written. A datagram is accepted only below the floor
// last written, so the file is written once every floorReserve datagrams of
// a peer, not once per datagram; after a restart everything up to the floor
// is refused, and the receiver asks the sender to continue above it
// (TypeResyncReq's Arg).
const floorReserve = 1 << 16

// window is one peer's replay window: the highest sequence number accepted
// and a ring bitmap of the WindowSize up to it (bit seq mod WindowSize).
type window struct {
	floor   uint64 // nothing at or below is accepted (durable, from the file)
	highest uint64
	bits    []uint64
}

// check reports whether seq is new (not at or below the floor, not seen,
// not older than the window) without recording it.
func (w *window) check(seq uint64) bool {
	if seq <= w.floor {
		return false
	}
	if seq > w.highest {
		return true
	}
	return w.highest-seq < WindowSize && !w.seen(seq)
}

// mark records seq as accepted (check must have passed).
func (w *window) mark(seq uint64) {
	if w.bits == nil {
		w.bits = make([]uint64, WindowSize/64)
	}
	if seq > w.highest {
		if w.highest == 0 || seq-w.highest >= WindowSize {
			clear(w.bits)
		} else {
			// The slots the window slides over held seqs WindowSize
			// older: clear them, whole words where possible.
			s := w.highest + 1
			for ; s <= seq && s%64 != 0; s++ {
				w.bits[(s%WindowSize)/64] &^= 1 << (s % 64)
			}
			for ; s+63 <= seq; s += 64 {
				w.bits[(s%WindowSize)/64] = 0
			}
			for ; s <= seq; s++ {
				w.bits[(s%WindowSize)/64] &^= 1 << (s % 64)
			}
		}
		w.highest = seq
	}
	w.bits[(seq%WindowSize)/64] |= 1 << (seq % 64)
}

// seen reports whether seq (within the window) was accepted.
func (w *window) seen(seq uint64) bool {
	if w.bits == nil || seq > w.highest || w.highest-seq >= WindowSize {
		return false
	}
	return w.bits[(seq%WindowSize)/64]&(1<<(seq%64)) != 0
}

// floorHeader is the first line of the floor file, with its version.
const floorHeader = "switchyard-mirror-floor 1"

// maxFloorFile bounds the floor file read at start.
const maxFloorFile = 64 << 10

// floors is the durable replay floor of each peer, in a file written
// crash-safely (temporary file, fsync, rename, fsync of the directory), the
// approach of the UDP control transport's replay state.
type floors struct {
	path  string
	saved map[uint32]uint64
}

// openFloors reads path, if it exists. A file that cannot be parsed is an
// error: starting without it would accept replays.
func openFloors(path string) (*floors, error) {
	f := &floors{path: path, saved: map[uint32]uint64{}}
	if path == "" {
		return f, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("mirror replay state: %w", err)
	}
	fd, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mirror replay state: %w", err)
	}
	defer fd.Close()
	b, err := io.ReadAll(io.LimitReader(fd, maxFloorFile+1))
	if err != nil {
		return nil, fmt.Errorf("mirror replay state: read %s: %w", path, err)
	}
	if len(b) > maxFloorFile {
		return nil, fmt.Errorf("mirror replay state %s: larger than %d bytes", path, maxFloorFile)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		t := sc.Text()
		if line == 1 {
			if t != floorHeader {
				return nil, fmt.Errorf("mirror replay state %s:1: header %q, want %q", path, t, floorHeader)
			}
			continue
		}
		id, seq, ok := strings.Cut(t, " ")
		p, err1 := strconv.ParseUint(id, 10, 32)
		s, err2 := strconv.ParseUint(seq, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mirror replay state %s:%d: want \"<peer id> <sequence number>\", got %q", path, line, t)
		}
		f.saved[uint32(p)] = s
	}
	if line == 0 {
		return nil, fmt.Errorf("mirror replay state %s: empty", path)
	}
	return f, nil
}

// raise writes floor for peer id if it is above what the file holds.
func (f *floors) raise(id uint32, floor uint64) error {
	if f.saved[id] >= floor {
		return nil
	}
	f.saved[id] = floor
	if f.path == "" {
		return nil
	}
	var b bytes.Buffer
	b.WriteString(floorHeader + "\n")
	for id, s := range f.saved {
		fmt.Fprintf(&b, "%d %d\n", id, s)
	}
	tmp := f.path + ".tmp"
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("mirror replay state: %w", err)
	}
	if _, err := fd.Write(b.Bytes()); err != nil {
		fd.Close()
		return fmt.Errorf("mirror replay state: write %s: %w", tmp, err)
	}
	if err := fd.Sync(); err != nil {
		fd.Close()
		return fmt.Errorf("mirror replay state: sync %s: %w", tmp, err)
	}
	if err := fd.Close(); err != nil {
		return fmt.Errorf("mirror replay state: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("mirror replay state: %w", err)
	}
	d, err := os.Open(filepath.Dir(f.path))
	if err != nil {
		return fmt.Errorf("mirror replay state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("mirror replay state: sync directory: %w", err)
	}
	return nil
}
