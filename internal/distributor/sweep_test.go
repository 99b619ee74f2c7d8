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
		{tcp, datapath.Flow{TcpState: datapath.TCPSynSeen | datapath.TCPSeqFwd}, to.TCPSyn},
		{tcp, datapath.Flow{TcpState: datapath.TCPSynSeen | datapath.TCPEstablished}, to.TCP},
		{tcp, datapath.Flow{TcpState: datapath.TCPEstablished | datapath.TCPFinFwd}, to.TCPFin},
		{tcp, datapath.Flow{TcpState: datapath.TCPEstablished | datapath.TCPFinRev}, to.TCPFin},
		{tcp, datapath.Flow{TcpState: datapath.TCPFinFwd | datapath.TCPFinRev}, to.TCPClose},
		{tcp, datapath.Flow{TcpState: datapath.TCPEstablished | datapath.TCPReset}, to.TCPClose},
		// A signalled timeout replaces a live connection's, caps an ended one's.
		{tcp, datapath.Flow{Timeout: 3600, TcpState: datapath.TCPEstablished}, 3600},
		{tcp, datapath.Flow{Timeout: 3600, TcpState: datapath.TCPReset}, to.TCPClose},
		{tcp, datapath.Flow{Timeout: 7, TcpState: datapath.TCPFinFwd}, 7},
		{udp, datapath.Flow{}, to.UDP},
		{icmp, datapath.Flow{}, to.Other},
	} {
		if got := idleTimeout(to, c.k, c.f, false); got != c.want {
			t.Errorf("idleTimeout(proto %d, %+v) = %d, want %d", c.k.Proto, c.f, got, c.want)
		}
	}
	if got := idleTimeout(to, tcp, datapath.Flow{TcpState: datapath.TCPEstablished}, true); got != to.TCPClose {
		t.Errorf("a related flow whose parent ended: timeout %d, want the close timeout %d", got, to.TCPClose)
	}
	if got := idleTimeout(to, udp, datapath.Flow{Timeout: 600}, true); got != to.TCPClose {
		t.Errorf("a related UDP flow with a signalled timeout whose parent ended: timeout %d, want %d", got, to.TCPClose)
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
