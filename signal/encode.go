package signal

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"unsafe"
)

// The wire structs are the definition of the format (btf_test.go checks
// them against the C structs); encoding them with encoding/binary walked
// them by reflection on every call, ~3 µs for an 8-op message. A layout is
// that walk done once per struct type: the offset, size and kind of every
// integer field and byte array, in field order. Because the wire structs
// have no implicit padding (checked when the layout is built: the Go size
// must equal binary.Size), a field's offset in the Go struct is its offset
// on the wire, so encoding is a loop over the layout that stores each field
// big-endian at its offset. Nothing here names a field or an offset.

type leafKind uint8

const (
	leafU8 leafKind = iota
	leafU16
	leafU32
	leafU64
	leafBytes
)

type leaf struct {
	off  uintptr
	n    uintptr // bytes (leafBytes)
	kind leafKind
}

type layout struct {
	typ    reflect.Type
	size   int
	leaves []leaf
}

// wireLayouts are built once, at init, for every wire struct; a linear scan
// of these few is cheaper than a map lookup.
var wireLayouts = func() []*layout {
	var out []*layout
	for _, v := range []any{wireHdr{}, wireTLV{}, wireKey{}, wireMemorize{}, wireKeyOp{}, wireRelate{}, wireAge{}} {
		l, err := buildLayout(reflect.TypeOf(v))
		if err != nil {
			panic(err) // a wire struct the encoder cannot lay out: a bug, caught by every test
		}
		out = append(out, l)
	}
	return out
}()

// layoutOf returns the layout of the wire struct type t.
func layoutOf(t reflect.Type) (*layout, error) {
	for _, l := range wireLayouts {
		if l.typ == t {
			return l, nil
		}
	}
	return nil, fmt.Errorf("signal: %v is not a wire struct", t)
}

func buildLayout(t reflect.Type) (*layout, error) {
	l := &layout{typ: t, size: int(t.Size())}
	if err := l.walk(t, 0); err != nil {
		return nil, fmt.Errorf("signal: layout of %v: %w", t, err)
	}
	if bs := binary.Size(reflect.New(t).Interface()); bs != l.size {
		return nil, fmt.Errorf("signal: layout of %v: %d bytes in memory, %d on the wire: implicit padding", t, l.size, bs)
	}
	return l, nil
}

func (l *layout) walk(t reflect.Type, off uintptr) error {
	switch t.Kind() {
	case reflect.Uint8:
		l.leaves = append(l.leaves, leaf{off: off, n: 1, kind: leafU8})
	case reflect.Uint16:
		l.leaves = append(l.leaves, leaf{off: off, n: 2, kind: leafU16})
	case reflect.Uint32:
		l.leaves = append(l.leaves, leaf{off: off, n: 4, kind: leafU32})
	case reflect.Uint64:
		l.leaves = append(l.leaves, leaf{off: off, n: 8, kind: leafU64})
	case reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			l.leaves = append(l.leaves, leaf{off: off, n: uintptr(t.Len()), kind: leafBytes})
			return nil
		}
		for i := range t.Len() {
			if err := l.walk(t.Elem(), off+uintptr(i)*t.Elem().Size()); err != nil {
				return err
			}
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if err := l.walk(f.Type, off+f.Offset); err != nil {
				return fmt.Errorf("field %s: %w", f.Name, err)
			}
		}
	default:
		return fmt.Errorf("kind %v is not a wire field", t.Kind())
	}
	return nil
}

// appendLayout appends the big-endian encoding of the struct at p, laid
// out as l.
func appendLayout(b []byte, p unsafe.Pointer, l *layout) []byte {
	n := len(b)
	b = slices.Grow(b, l.size)[:n+l.size]
	out := b[n:]
	for _, f := range l.leaves {
		src := unsafe.Add(p, f.off)
		dst := out[f.off : f.off+f.n]
		switch f.kind {
		case leafU8:
			dst[0] = *(*uint8)(src)
		case leafU16:
			binary.BigEndian.PutUint16(dst, *(*uint16)(src))
		case leafU32:
			binary.BigEndian.PutUint32(dst, *(*uint32)(src))
		case leafU64:
			binary.BigEndian.PutUint64(dst, *(*uint64)(src))
		case leafBytes:
			copy(dst, unsafe.Slice((*byte)(src), f.n))
		}
	}
	return b
}

// appendStruct is appendWire for a statically known wire struct: no
// interface, so v can stay on the caller's stack.
func appendStruct[T any](b []byte, v *T) ([]byte, error) {
	l, err := layoutOf(reflect.TypeFor[T]())
	if err != nil {
		return nil, err
	}
	return appendLayout(b, unsafe.Pointer(v), l), nil
}
