package flow

import "github.com/switchyard/switchyard/internal/datapath"

// TCPPhase is what a flow's TCP state bits (datapath.TCP*) amount to for
// aging and for operators: the furthest point of the connection's life the
// data path has believed.
type TCPPhase uint8

// The phases, from the state bits, in the order they are tested.
const (
	// TCPPhaseNone: no TCP packet tracked yet (an entry a signal made);
	// aged like an established connection.
	TCPPhaseNone TCPPhase = iota
	// TCPPhaseSyn: a SYN, no ACK yet: half-open.
	TCPPhaseSyn
	// TCPPhaseEstablished: an ACK without SYN from either side.
	TCPPhaseEstablished
	// TCPPhaseFin: a valid FIN from one side.
	TCPPhaseFin
	// TCPPhaseClosed: valid FINs from both sides.
	TCPPhaseClosed
	// TCPPhaseReset: a valid RST.
	TCPPhaseReset
)

var tcpPhaseNames = [...]string{"none", "syn", "established", "fin", "closed", "reset"}

// String returns the phase's name as the API and metrics show it.
func (p TCPPhase) String() string {
	if int(p) < len(tcpPhaseNames) {
		return tcpPhaseNames[p]
	}
	return "unknown"
}

// TCPPhaseOf returns the phase of TCP state bits st.
func TCPPhaseOf(st uint8) TCPPhase {
	switch {
	case st&datapath.TCPReset != 0:
		return TCPPhaseReset
	case st&datapath.TCPFinFwd != 0 && st&datapath.TCPFinRev != 0:
		return TCPPhaseClosed
	case st&(datapath.TCPFinFwd|datapath.TCPFinRev) != 0:
		return TCPPhaseFin
	case st&datapath.TCPEstablished != 0:
		return TCPPhaseEstablished
	case st&datapath.TCPSynSeen != 0:
		return TCPPhaseSyn
	}
	return TCPPhaseNone
}
