package signal_test

import (
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/switchyard/switchyard/signal"
)

// The object bpf2go builds from bpf/switchyard.h: the single definition of
// the wire format. This test keeps the hand-written Go encoding equal to it.
const bpfObject = "../internal/datapath/sy_bpfel.o"

func TestWireLayoutMatchesBTF(t *testing.T) {
	spec, err := btf.LoadSpec(bpfObject)
	if err != nil {
		t.Fatalf("load BTF of %s: %v", bpfObject, err)
	}
	for name, want := range signal.WireLayout {
		t.Run(name, func(t *testing.T) {
			var s *btf.Struct
			if err := spec.TypeByName(name, &s); err != nil {
				t.Fatalf("struct %s in %s: %v (regenerate the object with the wire structs anchored)", name, bpfObject, err)
			}
			if int(s.Size) != want.Size {
				t.Errorf("sizeof(struct %s) = %d, Go encodes %d", name, s.Size, want.Size)
			}
			seen := map[string]bool{}
			for _, m := range s.Members {
				seen[m.Name] = true
				w, ok := want.Members[m.Name]
				if !ok {
					t.Errorf("struct %s has member %s that the Go encoding does not know", name, m.Name)
					continue
				}
				if m.BitfieldSize != 0 {
					t.Errorf("%s.%s is a bitfield", name, m.Name)
				}
				sz, err := btf.Sizeof(m.Type)
				if err != nil {
					t.Errorf("%s.%s: %v", name, m.Name, err)
					continue
				}
				if got := int(m.Offset.Bytes()); got != w[0] || sz != w[1] {
					t.Errorf("%s.%s: C offset %d size %d, Go offset %d size %d", name, m.Name, got, sz, w[0], w[1])
				}
			}
			for m := range want.Members {
				if !seen[m] {
					t.Errorf("struct %s has no member %s", name, m)
				}
			}
		})
	}
	for name, want := range signal.WireEnums {
		t.Run(name, func(t *testing.T) {
			var e *btf.Enum
			if err := spec.TypeByName(name, &e); err != nil {
				t.Fatalf("enum %s in %s: %v", name, bpfObject, err)
			}
			got := map[string]uint64{}
			for _, v := range e.Values {
				got[v.Name] = v.Value
			}
			for n, w := range want {
				if g, ok := got[n]; !ok || g != w {
					t.Errorf("%s = %d (present %v), Go uses %d", n, g, ok, w)
				}
			}
		})
	}
}
