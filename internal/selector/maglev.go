// Package selector builds the rings the data path uses to pick a TM for a new
// flow. Maglev consistent hashing is the default: every distributor given the same
// pool computes the same ring, so a flow hashes to the same TM whichever
// distributor the upstream ECMP sends it to, and a pool change moves few flows.
package selector

import (
	"errors"
	"fmt"
	"sort"

	"github.com/switchyard/switchyard/internal/datapath"
)

// Empty marks a slot with no backend (a pool with no eligible TM): the data
// path's SY_TM_NONE. The default ring size is datapath.DefaultRingSize.
const Empty = datapath.NoTM

// Backend is one eligible TM of a pool.
type Backend struct {
	Index  uint32 // the TM's index in the data path (the value stored in slots)
	Name   string // stable identity, used for the permutation (offset/skip) hashes
	Weight uint32 // >= 1
}

// Errors returned by Maglev; wrapped with details, test with errors.Is.
var (
	ErrSize      = errors.New("selector: ring size must be prime")
	ErrWeight    = errors.New("selector: backend weight must be >= 1")
	ErrDuplicate = errors.New("selector: duplicate backend")
	ErrIndex     = errors.New("selector: backend index collides with Empty")
)

// Seeds of the two permutation hashes; they only need to differ so that offset
// and skip are independent.
const (
	seedOffset uint64 = 0x9e3779b97f4a7c15
	seedSkip   uint64 = 0xc2b2ae3d27d4eb4f
)

// Maglev builds a weighted Maglev ring of size slots (Eisenbud et al.,
// NSDI 2016). Each backend walks its own permutation of the slots, given by
// offset = h1(Name) % size and skip = h2(Name) % (size-1) + 1, and claims its
// next free preferred slot on each turn. In a round every backend adds its
// weight to a credit and gets one turn per maxWeight of credit, so turns (and
// slots) are proportional to weight and the heaviest backend takes one turn per
// round.
//
// The permutations depend only on Name, never on Index or input order, and
// backends are sorted by Name first: the same pool yields the same ring on
// every distributor. size must be prime so that every skip is coprime with it
// and each permutation visits all slots. With no backends every slot is Empty.
func Maglev(backends []Backend, size uint32) ([]uint32, error) {
	if !IsPrime(size) {
		return nil, fmt.Errorf("%w: %d", ErrSize, size)
	}
	bs := make([]Backend, len(backends))
	copy(bs, backends) // don't reorder the caller's slice
	sort.Slice(bs, func(i, j int) bool { return bs[i].Name < bs[j].Name })

	var maxW uint32
	seen := make(map[uint32]string, len(bs))
	for i, b := range bs {
		if b.Weight == 0 {
			return nil, fmt.Errorf("%w: %q", ErrWeight, b.Name)
		}
		// Empty doubles as the fill loop's "free slot" mark.
		if b.Index == Empty {
			return nil, fmt.Errorf("%w: %q", ErrIndex, b.Name)
		}
		if i > 0 && bs[i-1].Name == b.Name {
			return nil, fmt.Errorf("%w: name %q", ErrDuplicate, b.Name)
		}
		if other, ok := seen[b.Index]; ok {
			return nil, fmt.Errorf("%w: index %d (%q, %q)", ErrDuplicate, b.Index, other, b.Name)
		}
		seen[b.Index] = b.Name
		maxW = max(maxW, b.Weight)
	}

	ring := make([]uint32, size)
	for i := range ring {
		ring[i] = Empty
	}
	n := len(bs)
	if n == 0 {
		return ring, nil
	}

	// Per-backend state in flat slices so the fill loop doesn't allocate.
	// pos is the backend's current place in its permutation; stepping by skip
	// modulo size replaces offset + j*skip without a multiply or overflow.
	pos := make([]uint32, n)
	skip := make([]uint32, n)
	credit := make([]uint64, n)
	for i, b := range bs {
		pos[i] = uint32(hash64(b.Name, seedOffset) % uint64(size))
		skip[i] = uint32(hash64(b.Name, seedSkip)%uint64(size-1)) + 1
	}

	filled := uint32(0)
	for {
		for i := range bs {
			credit[i] += uint64(bs[i].Weight)
			for credit[i] >= uint64(maxW) {
				credit[i] -= uint64(maxW)
				// A free slot exists (filled < size) and the permutation
				// covers all slots, so this terminates.
				p := pos[i]
				for ring[p] != Empty {
					p += skip[i]
					if p >= size {
						p -= size
					}
				}
				ring[p] = bs[i].Index
				p += skip[i]
				if p >= size {
					p -= size
				}
				pos[i] = p
				filled++
				if filled == size {
					return ring, nil
				}
			}
		}
	}
}

// Changed returns the indexes of the slots that differ between old and new, in
// ascending order, so the control plane writes only those to the data path. A
// nil old (nothing written yet) means every slot of new changed; slots of new
// beyond len(old) count as changed too.
func Changed(old, new []uint32) []uint32 {
	var out []uint32
	if old == nil {
		out = make([]uint32, len(new))
		for i := range out {
			out[i] = uint32(i)
		}
		return out
	}
	for i, v := range new {
		if i >= len(old) || old[i] != v {
			out = append(out, uint32(i))
		}
	}
	return out
}

// IsPrime reports whether n is prime.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n < 4 {
		return true
	}
	if n%2 == 0 || n%3 == 0 {
		return false
	}
	// Trial division by 6k±1; uint64 keeps d*d from overflowing near 2^32.
	for d := uint64(5); d*d <= uint64(n); d += 6 {
		if uint64(n)%d == 0 || uint64(n)%(d+2) == 0 {
			return false
		}
	}
	return true
}

// hash64 is FNV-1a 64 with the offset basis perturbed by seed, followed by the
// murmur3 fmix64 finalizer: FNV alone mixes the last bytes poorly, and similar
// names ("tm-1", "tm-2") must still get unrelated offsets and skips.
func hash64(s string, seed uint64) uint64 {
	const (
		fnvOffset uint64 = 14695981039346656037
		fnvPrime  uint64 = 1099511628211
	)
	h := fnvOffset ^ seed
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return fmix64(h)
}

// fmix64 is murmur3's 64-bit finalizer: it makes every output bit depend on
// every input bit.
func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}
