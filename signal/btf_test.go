package signal_test

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/switchyard/switchyard/signal"
)

// The object bpf2go builds from bpf/switchyard.h: the single definition of
// the wire format. These tests keep the Go wire structs equal to it.
const (
	bpfObject = "../internal/datapath/sy_bpfel.o"
	bpfHeader = "../bpf/switchyard.h"
)

func loadBTF(t *testing.T) *btf.Spec {
	t.Helper()
	spec, err := btf.LoadSpec(bpfObject)
	if err != nil {
		t.Fatalf("load BTF of %s: %v", bpfObject, err)
	}
	return spec
}

// mirrors maps each Go wire struct type to the name of its C struct.
func mirrors() map[reflect.Type]string {
	m := map[reflect.Type]string{}
	for name, v := range signal.WireStructs {
		m[reflect.TypeOf(v)] = name
	}
	return m
}

func TestWireStructsMatchBTF(t *testing.T) {
	spec := loadBTF(t)
	mir := mirrors()
	for name, v := range signal.WireStructs {
		t.Run(name, func(t *testing.T) {
			var s *btf.Struct
			if err := spec.TypeByName(name, &s); err != nil {
				t.Fatalf("struct %s in %s: %v (anchor it in bpf/switchyard.h and regenerate the object)", name, bpfObject, err)
			}
			for _, d := range diffStruct(s, reflect.TypeOf(v), mir) {
				t.Errorf("struct %s: %s", name, d)
			}
		})
	}
}

// TestWireStructsComplete: every op of enum sy_sig_op has a C struct whose
// size is the op's size here, and every op struct in the object (sy_op_*)
// has a Go mirror. (sy_sig_* is not a wire prefix: distributor.c has its
// own sy_sig_scratch.)
func TestWireStructsComplete(t *testing.T) {
	spec := loadBTF(t)
	// The C header ties op codes to structs only in comments; this table
	// says it once for the test. A new op fails here until it is added.
	opStruct := map[string]string{
		"SY_OP_MEMORIZE": "sy_op_memorize",
		"SY_OP_FORGET":   "sy_op_key",
		"SY_OP_MIRROR":   "sy_op_key",
		"SY_OP_RELATE":   "sy_op_relate",
		"SY_OP_AGE":      "sy_op_age",
	}
	var ops *btf.Enum
	if err := spec.TypeByName("sy_sig_op", &ops); err != nil {
		t.Fatalf("enum sy_sig_op in %s: %v", bpfObject, err)
	}
	if len(ops.Values) != len(opStruct) {
		t.Errorf("enum sy_sig_op has %d values, the test knows %d", len(ops.Values), len(opStruct))
	}
	for _, v := range ops.Values {
		name, ok := opStruct[v.Name]
		if !ok {
			t.Errorf("op %s (%d) has no struct in this test's table", v.Name, v.Value)
			continue
		}
		var s *btf.Struct
		if err := spec.TypeByName(name, &s); err != nil {
			t.Errorf("%s: struct %s: %v", v.Name, name, err)
			continue
		}
		if got := signal.OpSize(uint8(v.Value)); got != int(s.Size) {
			t.Errorf("%s: the Go encoding's size %d, sizeof(struct %s) = %d", v.Name, got, name, s.Size)
		}
	}
	if got := signal.OpSize(uint8(len(ops.Values) + 1)); got != -1 {
		t.Errorf("OpSize of an unknown op = %d, want -1", got)
	}

	n := 0
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatalf("iterate BTF of %s: %v", bpfObject, err)
		}
		s, ok := typ.(*btf.Struct)
		if !ok || !strings.HasPrefix(s.Name, "sy_op_") {
			continue
		}
		n++
		if _, ok := signal.WireStructs[s.Name]; !ok {
			t.Errorf("wire struct %s has no Go mirror in signal.WireStructs", s.Name)
		}
	}
	if n < len(signal.WireStructs)-3 {
		t.Errorf("found only %d sy_op_* structs in %s", n, bpfObject)
	}
}

func TestWireEnumsMatchBTF(t *testing.T) {
	spec := loadBTF(t)
	for name, want := range signal.WireEnums {
		t.Run(name, func(t *testing.T) {
			var e *btf.Enum
			if err := spec.TypeByName(name, &e); err != nil {
				t.Fatalf("enum %s in %s: %v", name, bpfObject, err)
			}
			got := map[string]uint64{}
			for _, v := range e.Values {
				got[v.Name] = v.Value
				if _, ok := want[v.Name]; !ok {
					t.Errorf("%s = %d is not known to the Go encoding", v.Name, v.Value)
				}
			}
			for n, w := range want {
				if g, ok := got[n]; !ok || g != w {
					t.Errorf("%s = %d (present %v), Go uses %d", n, g, ok, w)
				}
			}
		})
	}
}

// TestDiffStructCatches: the comparison fails for the mismatches it is there
// to catch, on altered copies of a real C struct and Go mirror.
func TestDiffStructCatches(t *testing.T) {
	spec := loadBTF(t)
	mir := mirrors()
	var age *btf.Struct
	if err := spec.TypeByName("sy_op_age", &age); err != nil {
		t.Fatal(err)
	}
	goAge := reflect.TypeOf(signal.WireStructs["sy_op_age"])
	if d := diffStruct(age, goAge, mir); len(d) != 0 {
		t.Fatalf("the real pair differs: %v", d)
	}
	field := func(name string) reflect.StructField {
		f, ok := goAge.FieldByName(name)
		if !ok {
			t.Fatalf("Go sy_op_age mirror has no field %s", name)
		}
		return reflect.StructField{Name: f.Name, Type: f.Type}
	}
	timeout := age.Members[len(age.Members)-1]

	cAdded := btf.Copy(age).(*btf.Struct)
	cAdded.Members = append(cAdded.Members, btf.Member{Name: "extra", Type: timeout.Type, Offset: btf.Bits(8 * age.Size)})
	cAdded.Size += 4
	cHostOrder := btf.Copy(age).(*btf.Struct)
	cHostOrder.Members[len(cHostOrder.Members)-1].Type = btf.UnderlyingType(timeout.Type)
	cRenamed := btf.Copy(age).(*btf.Struct)
	cRenamed.Members[len(cRenamed.Members)-1].Name = "expiry"

	goMissing := reflect.StructOf([]reflect.StructField{field("Key")})
	goAdded := reflect.StructOf([]reflect.StructField{field("Key"), field("Timeout"), {Name: "Extra", Type: reflect.TypeFor[uint32]()}})
	goWide := reflect.StructOf([]reflect.StructField{field("Key"), {Name: "Timeout", Type: reflect.TypeFor[uint64]()}})
	// A uint16 after the 40-byte key puts the uint32 at 44 in memory, 42 encoded.
	goPadded := reflect.StructOf([]reflect.StructField{field("Key"), {Name: "Pad", Type: reflect.TypeFor[uint16]()}, field("Timeout")})

	for _, c := range []struct {
		name string
		s    *btf.Struct
		g    reflect.Type
		want string
	}{
		{"C member added", cAdded, goAge, "extra"},
		{"C member host order", cHostOrder, goAge, "big-endian"},
		{"C member renamed", cRenamed, goAge, "expiry"},
		{"Go field missing", age, goMissing, "timeout"},
		{"Go field added", age, goAdded, "Extra"},
		{"Go field wider", age, goWide, "size"},
		{"Go padding", age, goPadded, "padding"},
	} {
		d := diffStruct(c.s, c.g, mir)
		if !strings.Contains(strings.Join(d, "\n"), c.want) {
			t.Errorf("%s: differences %q do not mention %q", c.name, d, c.want)
		}
	}
}

// diffStruct compares a C struct with its Go mirror: size (encoded and in
// memory: the package takes wire offsets from Go offsets), then member by
// member in order: name (case aside), offset, size and type.
func diffStruct(s *btf.Struct, g reflect.Type, mir map[reflect.Type]string) []string {
	var diffs []string
	add := func(format string, a ...any) { diffs = append(diffs, fmt.Sprintf(format, a...)) }
	size := binary.Size(reflect.New(g).Interface())
	if size < 0 {
		return []string{fmt.Sprintf("Go %v is not fixed-size", g)}
	}
	if int(s.Size) != size {
		add("size %d in C, Go encodes %d", s.Size, size)
	}
	if int(g.Size()) != size {
		add("Go %v has implicit padding: %d bytes in memory, %d encoded", g, g.Size(), size)
	}
	off := 0 // encoded offset of the Go field
	for i := range max(len(s.Members), g.NumField()) {
		if i >= len(s.Members) {
			add("Go field %s has no C member", g.Field(i).Name)
			continue
		}
		m := s.Members[i]
		if i >= g.NumField() {
			add("C member %s has no Go field", m.Name)
			continue
		}
		f := g.Field(i)
		fsize := binary.Size(reflect.New(f.Type).Interface())
		if !strings.EqualFold(f.Name, m.Name) {
			add("member %d is %s in C, %s in Go", i, m.Name, f.Name)
		}
		if m.BitfieldSize != 0 {
			add("%s is a bitfield", m.Name)
		}
		csize, err := btf.Sizeof(m.Type)
		if err != nil {
			add("%s: %v", m.Name, err)
		}
		if coff := int(m.Offset.Bytes()); coff != off || csize != fsize {
			add("%s: C offset %d size %d, Go offset %d size %d", m.Name, coff, csize, off, fsize)
		}
		if int(f.Offset) != off {
			add("%s: Go field at %d in memory, %d encoded", f.Name, f.Offset, off)
		}
		diffs = append(diffs, diffType(m.Name, m.Type, f.Type, mir)...)
		off += fsize
	}
	return diffs
}

// diffType compares the C type of a member with the Go type of its field.
// The Go side encodes every integer big-endian, so a multi-byte C integer
// must be declared __be16/__be32/__be64.
func diffType(name string, ct btf.Type, gt reflect.Type, mir map[reflect.Type]string) []string {
	bigEndian := false
	for {
		td, ok := ct.(*btf.Typedef)
		if !ok {
			break
		}
		bigEndian = bigEndian || strings.HasPrefix(td.Name, "__be")
		ct = td.Type
	}
	switch c := btf.UnderlyingType(ct).(type) {
	case *btf.Int:
		kinds := map[uint32]reflect.Kind{1: reflect.Uint8, 2: reflect.Uint16, 4: reflect.Uint32, 8: reflect.Uint64}
		if c.Encoding == btf.Signed || c.Encoding == btf.Bool {
			return []string{fmt.Sprintf("%s: C integer %s is %v; the Go encoding has unsigned integers only", name, c.Name, c.Encoding)}
		}
		if k, ok := kinds[c.Size]; !ok || gt.Kind() != k {
			return []string{fmt.Sprintf("%s: C %d-byte integer, Go %v", name, c.Size, gt)}
		}
		if c.Size > 1 && !bigEndian {
			return []string{fmt.Sprintf("%s: C integer in host order; the wire is big-endian (declare it __be%d)", name, 8*c.Size)}
		}
	case *btf.Array:
		if gt.Kind() != reflect.Array || gt.Len() != int(c.Nelems) {
			return []string{fmt.Sprintf("%s: C array of %d, Go %v", name, c.Nelems, gt)}
		}
		return diffType(name+"[]", c.Type, gt.Elem(), mir)
	case *btf.Struct:
		if mir[gt] != c.Name {
			return []string{fmt.Sprintf("%s: C struct %s, Go %v (the mirror of %q)", name, c.Name, gt, mir[gt])}
		}
	default:
		return []string{fmt.Sprintf("%s: C type %v has no Go wire equivalent", name, c)}
	}
	return nil
}
