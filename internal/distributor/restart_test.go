package distributor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadyGate: WaitReady returns at once with no hold, waits for every
// hold to be released, and gives up after its timeout naming who holds.
func TestReadyGate(t *testing.T) {
	var d Daemon
	if left := d.WaitReady(context.Background(), time.Hour); left != nil {
		t.Fatalf("no hold: %v", left)
	}
	r1 := d.HoldTraffic("mirror")
	r2 := d.HoldTraffic("other")
	go func() {
		time.Sleep(50 * time.Millisecond)
		r1()
		r1() // twice is harmless
		r2()
	}()
	if left := d.WaitReady(context.Background(), time.Minute); left != nil {
		t.Fatalf("after release: %v", left)
	}
	_ = d.HoldTraffic("mirror")
	if left := d.WaitReady(context.Background(), 50*time.Millisecond); len(left) != 1 || left[0] != "mirror" {
		t.Fatalf("after the timeout: %v, want [mirror]", left)
	}
}

// TestTMIndexFile: the assignment written is the one read back; a file
// that is not one, or names an index out of range, is refused.
func TestTMIndexFile(t *testing.T) {
	dir := t.TempDir()
	d := &Daemon{indexPath: filepath.Join(dir, "d1.tm-indexes"), tms: map[string]*tmSlot{"tm1": {index: 0}, "tm9": {index: 4}}, nextTM: 5}
	if err := d.saveIndexes(); err != nil {
		t.Fatal(err)
	}
	ix, err := loadIndexes(d.indexPath)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Next != 5 || len(ix.TMs) != 2 || ix.TMs["tm9"] != 4 {
		t.Fatalf("read back %+v", ix)
	}
	for name, body := range map[string]string{
		"garbage":      "not json",
		"out of range": `{"next":2,"tms":{"tm1":7}}`,
		"next too big": `{"next":100000,"tms":{}}`,
		"too long":     `{"next":1,"tms":{"` + strings.Repeat("x", maxIndexFile) + `":0}}`,
	} {
		p := filepath.Join(dir, "bad")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadIndexes(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
