package signal_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/signal"
)

// TestAuthenticateUDP: the authenticated bytes are exactly the message as
// Marshal encodes it, and nothing unauthenticated gets through.
func TestAuthenticateUDP(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	keyFor := func(id string) ([]byte, bool) { return key, id == "tm1" }
	m := signal.Message{Ops: []signal.Op{signal.Forget{Key: signal.Key{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 2, Proto: 6}}}}
	want, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := signal.SealUDP("tm1", key, 42, m)
	if err != nil {
		t.Fatal(err)
	}
	id, seq, msg, err := signal.AuthenticateUDP(b, keyFor)
	if err != nil || id != "tm1" || seq != 42 || !bytes.Equal(msg, want) {
		t.Fatalf("AuthenticateUDP = %q, %d, %x, %v; want tm1, 42, %x", id, seq, msg, err, want)
	}
	b[len(b)-40] ^= 1 // a byte of the message
	if _, _, _, err := signal.AuthenticateUDP(b, keyFor); signal.ReasonOf(err) != "auth" {
		t.Fatalf("tampered datagram: %v", err)
	}
	var e *signal.Error
	if _, _, _, err := signal.AuthenticateUDP([]byte("SYSG"), keyFor); !errors.As(err, &e) || e.Reason != "truncated" {
		t.Fatalf("short datagram: %v", err)
	}
}
