package flow

import "github.com/switchyard/switchyard/internal/datapath"

// Model of bpf/tcp.h: a flow's TCP state, with FIN and RST believed only in
// their side's window.

// inWindow is sy_in_window: is x within datapath.TCPSeqWindow of next,
// either side (mod 2^32)?
func inWindow(x, next uint32) bool {
	return x-next+datapath.TCPSeqWindow <= 2*datapath.TCPSeqWindow
}

// eventBits are the state bits whose change is an event (SY_TCP_EVENT_BITS).
const eventBits = datapath.TCPEstablished | datapath.TCPEnded

// event is sy_event: a flow event in the ring, or an overrun when it is full.
func (p *packet) event(k datapath.FlowKey, f *datapath.Flow, typ uint8) {
	m := p.m
	if m.EventCap != 0 && len(m.Events) >= m.EventCap {
		c := &m.Counters[datapath.CounterEventOverrun]
		c.Packets++
		return
	}
	m.Events = append(m.Events, datapath.Event{Key: k, Time: m.Now, Tm: f.Tm, Flags: f.Flags, Type: typ, TcpState: f.TcpState})
}

// forgotten reports a FORGET's removal (signal.h: sy_event before the
// delete).
func (m *Model) forgotten(k datapath.FlowKey, f datapath.Flow) {
	(&packet{m: m}).event(k, &f, datapath.EventForgot)
}

// tcpTrack is sy_tcp_track: updates f's TCP state for the packet, of the
// TM's side when rev. The first packet of a side records its next sequence
// number; later ones count only inside the window and move it forward. A
// FIN or RST is believed in its side's window or, its side unknown yet, if
// it acknowledges the other side's next; otherwise counted and ignored. It
// reports whether an event bit was newly set.
func (p *packet) tcpTrack(f *datapath.Flow, rev bool) bool {
	fl, st := p.tcpFlags, f.TcpState
	seen, oseen := datapath.TCPSeqFwd, datapath.TCPSeqRev
	next, onext := &f.SeqFwd, f.SeqRev
	if rev {
		seen, oseen = oseen, seen
		next, onext = &f.SeqRev, f.SeqFwd
	}
	var ok bool
	switch {
	case st&seen != 0:
		ok = inWindow(p.seq, *next)
	case fl&(tcpFIN|tcpRST) != 0:
		ok = fl&tcpACK != 0 && st&oseen != 0 && inWindow(p.ack, onext)
	default:
		ok = true
	}
	if !ok {
		if fl&tcpRST != 0 {
			p.count(datapath.CounterTCPRefRst, 0)
		} else if fl&tcpFIN != 0 {
			p.count(datapath.CounterTCPRefFin, 0)
		}
		return false
	}
	if st&seen == 0 || int32(p.seqEnd-*next) > 0 {
		st |= seen
		*next = p.seqEnd
	}
	if fl&tcpSYN != 0 {
		st |= datapath.TCPSynSeen
	} else if fl&(tcpACK|tcpRST) == tcpACK {
		st |= datapath.TCPEstablished
	}
	if fl&tcpRST != 0 {
		st |= datapath.TCPReset
	}
	if fl&tcpFIN != 0 {
		if rev {
			st |= datapath.TCPFinRev
		} else {
			st |= datapath.TCPFinFwd
		}
	}
	changed := st&^f.TcpState&eventBits != 0
	f.TcpState = st
	return changed
}
