package distributor

import (
	"testing"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

func TestIdleTimeout(t *testing.T) {
	to := config.DefaultTimeouts()
	tcp := datapath.FlowKey{Proto: flow.ProtoTCP}
	udp := datapath.FlowKey{Proto: flow.ProtoUDP}
	icmp := datapath.FlowKey{Proto: flow.ProtoICMP}
	for _, c := range []struct {
		k    datapath.FlowKey
		f    datapath.Flow
		want uint32
	}{
		{tcp, datapath.Flow{}, to.TCP},
		{tcp, datapath.Flow{TcpState: datapath.TCPClosing}, to.TCPClosing},
		{tcp, datapath.Flow{Timeout: 7, TcpState: datapath.TCPClosing}, 7},
		{udp, datapath.Flow{}, to.UDP},
		{icmp, datapath.Flow{}, to.Other},
	} {
		if got := idleTimeout(to, c.k, c.f); got != c.want {
			t.Errorf("idleTimeout(proto %d, %+v) = %d, want %d", c.k.Proto, c.f, got, c.want)
		}
	}
	if idle(100, 95, 5) || !idle(100, 94, 5) {
		t.Error("idle: an entry is idle only past its timeout")
	}
	if idle(100, 101, 0) {
		t.Error("idle: an entry seen after now (clock set concurrently) is not idle")
	}
}

func TestOrigins(t *testing.T) {
	got := origins(datapath.FlowMemorized | datapath.FlowMirror)
	if len(got) != 2 || got[0] != "memorized" || got[1] != "mirror" {
		t.Errorf("origins = %v", got)
	}
	if got := origins(0); got[0] != "unknown" {
		t.Errorf("origins(0) = %v", got)
	}
}
