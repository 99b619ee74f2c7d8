package flow

import (
	"bytes"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
)

// TestModelShortFrames covers what the differential tests cannot:
// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so only
// the model answers for them. The program drops them (sy_parse_eth), counted
// under drop_truncated_ethernet, and leaves them as they came.
func TestModelShortFrames(t *testing.T) {
	m := NewModel(251, 1, 0)
	m.Ifaces[1] = datapath.Iface{Role: datapath.RoleInternal}
	for n := range 14 {
		pkt := bytes.Repeat([]byte{0x88}, n) // a signal EtherType, if it were read
		v, out := m.Process(pkt, 1)
		if v != datapath.Drop || !bytes.Equal(out, pkt) {
			t.Errorf("%d bytes: %v %x, want DROP and the frame unchanged", n, v, out)
		}
		c := m.Counters[datapath.CounterDropTruncEth]
		if c.Packets != uint64(n+1) || c.Bytes != uint64(n*(n+1)/2) {
			t.Fatalf("%d bytes: drop_truncated_ethernet %+v, want %d packets, %d bytes", n, c, n+1, n*(n+1)/2)
		}
	}
}
