package signal

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
)

// TestLayoutMatchesEncodingBinary: the layout encoder writes exactly what
// encoding/binary writes for every wire struct, with every byte set.
func TestLayoutMatchesEncodingBinary(t *testing.T) {
	for _, l := range wireLayouts {
		p := reflect.New(l.typ)
		// Fill every byte with a distinct value.
		raw := make([]byte, l.size)
		for i := range raw {
			raw[i] = byte(i*7 + 1)
		}
		if _, err := binary.Decode(raw, binary.BigEndian, p.Interface()); err != nil {
			t.Fatalf("%v: %v", l.typ, err)
		}
		got := appendLayout([]byte{0xee}, p.UnsafePointer(), l)
		want, err := binary.Append([]byte{0xee}, binary.BigEndian, p.Interface())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || !bytes.Equal(got[1:], raw) {
			t.Errorf("%v:\n got %x\nwant %x", l.typ, got, want)
		}
	}
}

// TestLayoutRefuses: a struct with implicit padding or a field that is not
// a wire integer cannot get a layout.
func TestLayoutRefuses(t *testing.T) {
	type padded struct {
		A uint8
		B uint32
	}
	type signed struct{ A int16 }
	for _, v := range []any{padded{}, signed{}} {
		if _, err := buildLayout(reflect.TypeOf(v)); err == nil {
			t.Errorf("%T: got a layout", v)
		}
	}
	if _, err := layoutOf(reflect.TypeOf(padded{})); err == nil {
		t.Error("layoutOf of a non-wire struct")
	}
}
