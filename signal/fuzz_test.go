package signal

import (
	"bytes"
	"testing"
)

// FuzzUnmarshal: Unmarshal never panics, and what it accepts re-encodes to
// the same bytes (header flags included).
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, flags, rest, err := unmarshal(b)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		re, err := m.appendTo(nil, flags)
		if err != nil {
			t.Fatalf("accepted %x but cannot re-marshal %+v: %v", b, m, err)
		}
		if !bytes.Equal(re, b[:len(b)-len(rest)]) {
			t.Fatalf("re-marshal differs:\n in %x\nout %x", b[:len(b)-len(rest)], re)
		}
		if _, _, err := Unmarshal(b); err != nil {
			t.Fatal(err)
		}
	})
}

var fuzzKey = []byte("fuzz-key-0123456789abcdef-fuzz!!")

// FuzzOpenUDP: OpenUDP never panics and never accepts a datagram whose HMAC
// was not made with the TM's key.
func FuzzOpenUDP(f *testing.F) {
	f.Add([]byte("SYSG"))
	wrong := []byte("another-key-0123456789abcdef-xyz")
	f.Fuzz(func(t *testing.T, b []byte) {
		keyFor := func(id string) ([]byte, bool) { return fuzzKey, id == "tm-a" || id == "tm-b" }
		id, _, m, err := OpenUDP(b, keyFor)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
		} else {
			if id != "tm-a" && id != "tm-b" {
				t.Fatalf("accepted unknown TM %q", id)
			}
			if !bytes.Equal(appendHMAC(append([]byte{}, b[:len(b)-32]...), fuzzKey), b) {
				t.Fatal("accepted a datagram without the right HMAC")
			}
			if _, err := m.Marshal(); err != nil {
				t.Fatalf("accepted message does not re-marshal: %v", err)
			}
		}
		if _, _, _, err := OpenUDP(b, func(string) ([]byte, bool) { return wrong, true }); err == nil {
			t.Fatal("accepted with the wrong key")
		}
		if _, _, _, err := OpenUDP(b, func(string) ([]byte, bool) { return nil, true }); err == nil {
			t.Fatal("accepted with an empty key")
		}
	})
}
