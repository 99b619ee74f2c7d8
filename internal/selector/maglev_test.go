package selector

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
)

// pool returns n backends of weight 1 named tm-0..tm-(n-1), with Index = i+1 so
// that Index and position in the slice never coincide by accident.
func pool(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{Index: uint32(i + 1), Name: fmt.Sprintf("tm-%d", i), Weight: 1}
	}
	return bs
}

func mustMaglev(t testing.TB, bs []Backend, size uint32) []uint32 {
	t.Helper()
	table, err := Maglev(bs, size)
	if err != nil {
		t.Fatalf("Maglev: %v", err)
	}
	if uint32(len(table)) != size {
		t.Fatalf("table has %d slots, want %d", len(table), size)
	}
	return table
}

func counts(table []uint32) map[uint32]int {
	c := make(map[uint32]int)
	for _, v := range table {
		c[v]++
	}
	return c
}

// checkShares asserts that every backend owns its weight share of the slots
// within 1%, and that no slot is Empty or owned by an unknown index.
func checkShares(t *testing.T, bs []Backend, table []uint32) {
	t.Helper()
	var sum uint64
	for _, b := range bs {
		sum += uint64(b.Weight)
	}
	c := counts(table)
	m := float64(len(table))
	total := 0
	worst := 0.0
	for _, b := range bs {
		want := m * float64(b.Weight) / float64(sum)
		got := float64(c[b.Index])
		dev := (got - want) / want
		if dev < 0 {
			dev = -dev
		}
		worst = max(worst, dev)
		if dev > 0.01 {
			t.Errorf("%s (weight %d): %d slots, want %.1f ± 1%%", b.Name, b.Weight, c[b.Index], want)
		}
		total += c[b.Index]
	}
	if total != len(table) {
		t.Errorf("backends own %d slots of %d (Empty or unknown indexes present)", total, len(table))
	}
	t.Logf("worst deviation from share: %.4f%%", 100*worst)
}

func TestBalance(t *testing.T) {
	for _, n := range []int{3, 10, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			if int(datapath.DefaultRingSize) <= 100*n {
				t.Fatalf("test assumes M > 100·N")
			}
			bs := pool(n)
			checkShares(t, bs, mustMaglev(t, bs, datapath.DefaultRingSize))
		})
	}
}

func TestWeights(t *testing.T) {
	for _, ws := range [][]uint32{{1, 2, 3}, {1, 1, 5}, {7, 3, 3, 1}} {
		t.Run(fmt.Sprint(ws), func(t *testing.T) {
			bs := pool(len(ws))
			for i, w := range ws {
				bs[i].Weight = w
			}
			checkShares(t, bs, mustMaglev(t, bs, datapath.DefaultRingSize))
		})
	}
}

func TestDisruptionRemove(t *testing.T) {
	bs := pool(10)
	before := mustMaglev(t, bs, datapath.DefaultRingSize)
	for _, victim := range []int{0, 4, 9} {
		rest := slices.Delete(slices.Clone(bs), victim, victim+1)
		after := mustMaglev(t, rest, datapath.DefaultRingSize)
		gone := bs[victim].Index
		owned := 0
		for i, v := range before {
			if v == gone {
				owned++
				if after[i] == gone {
					t.Fatalf("slot %d still points to removed backend", i)
				}
			}
		}
		changed := len(Changed(before, after))
		t.Logf("remove %s: owned %d, changed %d (%.3f× minimum)", bs[victim].Name, owned, changed, float64(changed)/float64(owned))
		// Its slots must all move (checked above); Maglev also moves a few
		// others, but only a few.
		if changed < owned {
			t.Errorf("changed %d < owned %d", changed, owned)
		}
		if float64(changed) > 1.10*float64(owned) {
			t.Errorf("changed %d slots, want <= 1.10 × %d", changed, owned)
		}
	}
}

func TestDisruptionAdd(t *testing.T) {
	bs := pool(11)
	before := mustMaglev(t, bs[:10], datapath.DefaultRingSize)
	after := mustMaglev(t, bs, datapath.DefaultRingSize)
	changed := len(Changed(before, after))
	ideal := float64(datapath.DefaultRingSize) / 11
	newOwned := counts(after)[bs[10].Index]
	t.Logf("add %s: new backend owns %d, changed %d (%.3f× M/11 = %.1f)", bs[10].Name, newOwned, changed, float64(changed)/ideal, ideal)
	if float64(changed) > 1.10*ideal {
		t.Errorf("changed %d slots, want <= 1.10 × %.1f", changed, ideal)
	}
	if changed < newOwned {
		t.Errorf("changed %d < slots of the new backend %d", changed, newOwned)
	}
}

func TestDeterminism(t *testing.T) {
	bs := pool(25)
	bs[3].Weight = 4
	bs[17].Weight = 2
	want := mustMaglev(t, bs, datapath.DefaultRingSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		shuffled := slices.Clone(bs)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		orig := slices.Clone(shuffled)
		got := mustMaglev(t, shuffled, datapath.DefaultRingSize)
		if !slices.Equal(got, want) {
			t.Fatalf("table depends on input order: %d slots differ", len(Changed(want, got)))
		}
		if !slices.Equal(shuffled, orig) {
			t.Fatalf("Maglev reordered the caller's slice")
		}
	}
}

// TestGolden pins small tables so that a change to the hashes or the fill order,
// which would silently break agreement between distributors of different
// versions, fails here. The expected values come from a separate Python
// implementation written from the paper's formula (offset + j*skip) % size.
func TestGolden(t *testing.T) {
	bs := pool(3)
	if got, want := mustMaglev(t, bs, 13), []uint32{2, 2, 1, 1, 3, 2, 1, 3, 3, 1, 2, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("equal weights: table = %v, want %v", got, want)
	}
	bs[1].Weight, bs[2].Weight = 2, 3
	if got, want := mustMaglev(t, bs, 13), []uint32{2, 2, 1, 1, 3, 2, 3, 3, 3, 2, 3, 3, 3}; !slices.Equal(got, want) {
		t.Errorf("weights 1,2,3: table = %v, want %v", got, want)
	}
}

func TestErrors(t *testing.T) {
	dupName := pool(3)
	dupName[2].Name = dupName[0].Name
	dupIndex := pool(3)
	dupIndex[2].Index = dupIndex[0].Index
	zero := pool(3)
	zero[1].Weight = 0
	emptyIndex := pool(3)
	emptyIndex[1].Index = Empty
	for _, tc := range []struct {
		name string
		bs   []Backend
		size uint32
		want error
	}{
		{"size 0", pool(3), 0, ErrSize},
		{"size 1", pool(3), 1, ErrSize},
		{"size 65536", pool(3), 65536, ErrSize},
		{"size 65535", nil, 65535, ErrSize},
		{"zero weight", zero, datapath.DefaultRingSize, ErrWeight},
		{"duplicate name", dupName, datapath.DefaultRingSize, ErrDuplicate},
		{"duplicate index", dupIndex, datapath.DefaultRingSize, ErrDuplicate},
		{"index Empty", emptyIndex, datapath.DefaultRingSize, ErrIndex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table, err := Maglev(tc.bs, tc.size)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if table != nil {
				t.Errorf("table returned with error")
			}
		})
	}
}

func TestEmptyPool(t *testing.T) {
	for _, bs := range [][]Backend{nil, {}} {
		table := mustMaglev(t, bs, datapath.DefaultRingSize)
		for i, v := range table {
			if v != Empty {
				t.Fatalf("slot %d = %d, want Empty", i, v)
			}
		}
	}
}

// TestSmallSizes covers tables smaller than the pool and the smallest prime,
// where some backends get no slot but every slot must still be filled.
func TestSmallSizes(t *testing.T) {
	for _, size := range []uint32{2, 3, 5, 7} {
		table := mustMaglev(t, pool(6), size)
		for i, v := range table {
			if v == Empty || v < 1 || v > 6 {
				t.Errorf("size %d: slot %d = %d", size, i, v)
			}
		}
	}
	// One backend owns everything.
	table := mustMaglev(t, pool(1), 101)
	for i, v := range table {
		if v != 1 {
			t.Fatalf("slot %d = %d, want 1", i, v)
		}
	}
}

func TestChanged(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new []uint32
		want     []uint32
	}{
		{"nil old", nil, []uint32{5, 6, 7}, []uint32{0, 1, 2}},
		{"same", []uint32{1, 2, 3}, []uint32{1, 2, 3}, nil},
		{"some", []uint32{1, 2, 3, 4}, []uint32{1, 9, 3, Empty}, []uint32{1, 3}},
		{"all", []uint32{1, 2}, []uint32{2, 1}, []uint32{0, 1}},
		{"old shorter", []uint32{1}, []uint32{1, 2, 3}, []uint32{1, 2}},
		{"old longer", []uint32{1, 2, 3}, []uint32{1, 0}, []uint32{1}},
		{"empty old", []uint32{}, []uint32{4}, []uint32{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Changed(tc.old, tc.new)
			if len(got) != len(tc.want) || !slices.Equal(got, tc.want) {
				t.Errorf("Changed(%v, %v) = %v, want %v", tc.old, tc.new, got, tc.want)
			}
		})
	}
}

func TestIsPrime(t *testing.T) {
	// Against a sieve for small n.
	const limit = 10000
	composite := make([]bool, limit)
	composite[0], composite[1] = true, true
	for i := 2; i*i < limit; i++ {
		if !composite[i] {
			for j := i * i; j < limit; j += i {
				composite[j] = true
			}
		}
	}
	for n := range uint32(limit) {
		if IsPrime(n) != !composite[n] {
			t.Errorf("IsPrime(%d) = %v", n, IsPrime(n))
		}
	}
	for _, tc := range []struct {
		n    uint32
		want bool
	}{
		{65537, true},
		{655373, true},
		{65521, true},
		{4294967291, true}, // largest prime below 2^32
		{65536, false},
		{65539 * 65521, false},
		{4294967295, false},
		{4294967279, true},
		{65537 * 65521, false},
		{4294836225, false}, // 65535²
		{4294705157, true},
		{65521 * 65549, false}, // two primes near 2^16
		{65521 * 65521, false}, // square of a prime: d*d == n boundary
		{25, false},
		{49, false},
	} {
		if got := IsPrime(tc.n); got != tc.want {
			t.Errorf("IsPrime(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func benchmarkMaglev(b *testing.B, n int) {
	bs := pool(n)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Maglev(bs, datapath.DefaultRingSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMaglev65537x10(b *testing.B)  { benchmarkMaglev(b, 10) }
func BenchmarkMaglev65537x100(b *testing.B) { benchmarkMaglev(b, 100) }

// BenchmarkMaglev65537x1000: the ring of a service of 1,000 TMs (issue 10:
// weight recomputation at fleet scale; the data path addresses 255).
func BenchmarkMaglev65537x1000(b *testing.B) { benchmarkMaglev(b, 1000) }

// BenchmarkReweight1000 is what a weighted policy pays per interval for
// 1,000 TMs: new weights (each TM's moved by a little, as damped
// measurements do), the new ring, and the slots to rewrite against the old
// one. It reports the share of slots that changed.
func BenchmarkReweight1000(b *testing.B) {
	bs := pool(1000)
	old, err := Maglev(bs, datapath.DefaultRingSize)
	if err != nil {
		b.Fatal(err)
	}
	changed := 0
	round := 0
	b.ReportAllocs()
	for b.Loop() {
		round++
		next := slices.Clone(bs)
		for i := range next {
			next[i].Weight = uint32(100 + (i*7+round)%5) // ±2% around 100
		}
		ring, err := Maglev(next, datapath.DefaultRingSize)
		if err != nil {
			b.Fatal(err)
		}
		changed = len(Changed(old, ring))
	}
	b.ReportMetric(float64(changed)/float64(len(old)), "slots-changed/ring")
}
