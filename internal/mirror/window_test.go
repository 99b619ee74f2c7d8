package mirror

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWindow(t *testing.T) {
	var w window
	for _, s := range []uint64{100, 101, 103, 102, 100 + WindowSize - 1} {
		if !w.check(s) {
			t.Fatalf("new %d refused", s)
		}
		w.mark(s)
	}
	for _, s := range []uint64{100, 101, 102, 103, 100 + WindowSize - 1} {
		if w.check(s) {
			t.Fatalf("replay of %d accepted", s)
		}
	}
	if !w.check(104) || w.seen(104) {
		t.Fatal("a hole (104) inside the window is not acceptable")
	}
	w.mark(105 + WindowSize)
	if w.check(104) {
		t.Fatal("104 accepted after it fell out of the window")
	}
	if !w.seen(105+WindowSize) || w.seen(104+WindowSize) || !w.seen(100+WindowSize-1) {
		t.Fatal("bitmap wrong after a jump")
	}
	// Jumps of any size keep each bit at its seq and clear the rest.
	var v window
	for s := uint64(1); s < 300000; s += 1 + s%131 {
		v.mark(s)
		if !v.seen(s) || (s > 1 && v.seen(s-1) && (s-1)+1+(s-1)%131 != s) {
			t.Fatalf("after %d: bitmap wrong", s)
		}
	}
	v.mark(5 * WindowSize)
	if v.seen(299999) || !v.seen(5*WindowSize) {
		t.Fatal("a jump past the window kept old bits")
	}
	v.floor = 6 * WindowSize
	if v.check(5*WindowSize+1) || v.check(6*WindowSize) || !v.check(6*WindowSize+1) {
		t.Fatal("floor not applied")
	}
}

func TestFloorsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "d1.mirror")
	f, err := openFloors(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.raise(7, 1000); err != nil {
		t.Fatal(err)
	}
	if err := f.raise(9, 5); err != nil {
		t.Fatal(err)
	}
	if err := f.raise(7, 10); err != nil { // lower: kept
		t.Fatal(err)
	}
	g, err := openFloors(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.saved[7] != 1000 || g.saved[9] != 5 {
		t.Fatalf("read back %v", g.saved)
	}
	for name, body := range map[string]string{
		"header": "something else\n7 1\n",
		"line":   floorHeader + "\n7 x\n",
		"empty":  "",
	} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := openFloors(p); err == nil {
			t.Errorf("%s: a bad floor file accepted", name)
		}
	}
}
