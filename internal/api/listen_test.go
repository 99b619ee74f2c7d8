package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnixOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "d1.sock")
	l, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}
	// A second daemon on the same socket is refused, not allowed to steal it.
	if _, err := Listen("unix:" + path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listener: %v", err)
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9900", "10.0.0.1:9900", "[::]:9900", "localhost:9900"} {
		if l, err := Listen(addr); err == nil {
			l.Close()
			t.Errorf("Listen(%q) accepted a non-loopback address", addr)
		}
	}
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
