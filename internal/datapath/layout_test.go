package datapath

import (
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestLayoutDigest: the layout record is stable across loads of one binary
// and changes when a field of a map's value moves or is renamed, which the
// kernel's sizes alone would not show.
func TestLayoutDigest(t *testing.T) {
	a, err := loadSy()
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadSy()
	if err != nil {
		t.Fatal(err)
	}
	for name := range a.Maps {
		if pinnable(name) && layoutDigest(a.Maps[name]) != layoutDigest(b.Maps[name]) {
			t.Errorf("map %s: two loads of one object give different layout digests", name)
		}
	}
	ms := a.Maps["flows"].Copy()
	want := layoutDigest(ms)
	v, ok := btf.UnderlyingType(btf.Copy(ms.Value)).(*btf.Struct)
	if !ok || len(v.Members) < 2 {
		t.Fatalf("flows' value is %T, want a struct of several fields", ms.Value)
	}
	v.Members[0].Name, v.Members[1].Name = v.Members[1].Name, v.Members[0].Name
	ms.Value = v
	if layoutDigest(ms) == want {
		t.Fatal("swapping two fields of flows' value left its layout digest unchanged")
	}
}
