package sim

import (
	"fmt"
	"slices"
)

// ECMP modes: how the router in front of the distributors maps a flow's hash
// to one of its next hops (the distributors announcing the VIP).
const (
	// ECMPThreshold is hash-threshold (RFC 2992), what Linux does for IPv4
	// and IPv6 multipath routes (fib_select_multipath: each next hop owns
	// a contiguous range of the hash space; a change of the set resizes
	// every range, so flows move between survivors too).
	ECMPThreshold = "hash-threshold"
	// ECMPModulo is hash modulo the number of next hops: many hardware
	// routers; the worst case (a change moves about (N-1)/N of the flows).
	ECMPModulo = "modulo"
	// ECMPResilient is a resilient next-hop group (Linux 5.13+ `ip nexthop
	// ... type resilient`, FRR nexthop groups): a table of buckets; a
	// removed next hop's buckets go to the survivors, an added one takes
	// buckets from the others, and no other bucket moves.
	ECMPResilient = "resilient"
)

// ECMPModes lists the modes, default first.
var ECMPModes = []string{ECMPThreshold, ECMPModulo, ECMPResilient}

// resilientBuckets is the bucket count of the resilient group model per
// next hop (the kernel's default group has 128 buckets; operators size it
// to a multiple of the next hops).
const resilientBuckets = 64

// router maps a flow's router hash to a distributor id. The ids are the
// distributors' places in the original list (0..N-1); an added one is N.
type router struct {
	mode    string
	hops    []int // the next hops in the order the router holds them
	buckets []int // resilient: bucket → distributor id
}

func newRouter(mode string, n int) (*router, error) {
	if !slices.Contains(ECMPModes, mode) {
		return nil, fmt.Errorf("ecmp mode %q: want one of %v", mode, ECMPModes)
	}
	r := &router{mode: mode}
	for i := range n {
		r.hops = append(r.hops, i)
	}
	if mode == ECMPResilient {
		r.buckets = make([]int, resilientBuckets*n)
		for b := range r.buckets {
			r.buckets[b] = b % n
		}
	}
	return r, nil
}

// pick is the distributor id the router sends a flow with hash h to.
func (r *router) pick(h uint32) int {
	n := uint64(len(r.hops))
	switch r.mode {
	case ECMPModulo:
		return r.hops[uint64(h)%n]
	case ECMPResilient:
		return r.buckets[uint64(h)%uint64(len(r.buckets))]
	}
	return r.hops[(uint64(h)*n)>>32]
}

// without returns the router after distributor id dead is withdrawn.
func (r *router) without(dead int) *router {
	out := &router{mode: r.mode}
	for _, h := range r.hops {
		if h != dead {
			out.hops = append(out.hops, h)
		}
	}
	if r.buckets != nil {
		out.buckets = slices.Clone(r.buckets)
		count := map[int]int{}
		for _, d := range out.buckets {
			count[d]++
		}
		delete(count, dead)
		for b, d := range out.buckets {
			if d != dead {
				continue
			}
			// The survivor with the fewest buckets (first in order on a tie).
			best := out.hops[0]
			for _, h := range out.hops {
				if count[h] < count[best] {
					best = h
				}
			}
			out.buckets[b] = best
			count[best]++
		}
	}
	return out
}

// with returns the router after distributor id added announces the VIP:
// appended to the next hops (the order a router keeps them in is its own;
// appending is the case that moves least under hash-threshold).
func (r *router) with(added int) *router {
	out := &router{mode: r.mode, hops: append(slices.Clone(r.hops), added)}
	if r.buckets != nil {
		out.buckets = slices.Clone(r.buckets)
		count := map[int]int{}
		for _, d := range out.buckets {
			count[d]++
		}
		want := len(out.buckets) / len(out.hops)
		// Take buckets from the most loaded until the newcomer has its share.
		for b := range out.buckets {
			if count[added] >= want {
				break
			}
			d := out.buckets[b]
			if count[d] > want {
				out.buckets[b] = added
				count[d]--
				count[added]++
			}
		}
	}
	return out
}
