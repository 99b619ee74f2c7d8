package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Verdict is an XDP action.
type Verdict uint32

// XDP actions (enum xdp_action of the kernel UAPI).
const (
	Aborted Verdict = iota
	Drop
	Pass
	TX
	Redirect
)

func (v Verdict) String() string {
	switch v {
	case Aborted:
		return "ABORTED"
	case Drop:
		return "DROP"
	case Pass:
		return "PASS"
	case TX:
		return "TX"
	case Redirect:
		return "REDIRECT"
	}
	return fmt.Sprintf("XDP(%d)", uint32(v))
}

// xdpMD mirrors struct xdp_md from the kernel UAPI, the context of a test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// TestRun runs the program once on pkt through BPF_PROG_TEST_RUN, as if it
// arrived on ingressIfindex (an interface of the caller's network namespace),
// and returns the verdict and the packet as the program left it.
func (d *Datapath) TestRun(pkt []byte, ingressIfindex uint32) (Verdict, []byte, error) {
	return testRun(d.objs.SwitchyardXdp, pkt, ingressIfindex)
}

func testRun(prog *ebpf.Program, pkt []byte, ingressIfindex uint32) (Verdict, []byte, error) {
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{
		Data:    pkt,
		DataOut: out,
		Context: xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: ingressIfindex},
		Repeat:  1,
	}
	ret, err := prog.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run: %w", err)
	}
	return Verdict(ret), opts.DataOut, nil
}
