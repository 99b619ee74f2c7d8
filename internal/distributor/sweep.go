package distributor

import (
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// maxSweep bounds the entries one sweep removes, so its memory stays small;
// the rest go in the next sweep.
const maxSweep = 100_000

// maxRelated bounds the related second keys one sweep looks at for ended
// parents (each costs a flow lookup); the rest wait for the next sweep.
const maxRelated = 100_000

// idleTimeout is how long entry f may stay idle. A TCP flow's timeout is
// its phase's (flow.TCPPhaseOf); a timeout a signal set (MEMORIZE, AGE)
// replaces that of a live connection and caps that of an ended one, so
// that a FIN or RST is never outlived by a long signalled timeout.
// parentEnded: a related flow whose parent ended gets the close timeout.
func idleTimeout(t config.Timeouts, k datapath.FlowKey, f datapath.Flow, parentEnded bool) uint32 {
	var def uint32
	ended := parentEnded
	switch k.Proto {
	case flow.ProtoTCP:
		switch flow.TCPPhaseOf(f.TcpState) {
		case flow.TCPPhaseSyn:
			def = t.TCPSyn
		case flow.TCPPhaseFin:
			def, ended = t.TCPFin, true
		case flow.TCPPhaseClosed, flow.TCPPhaseReset:
			def, ended = t.TCPClose, true
		default:
			def = t.TCP
		}
	case flow.ProtoUDP:
		def = t.UDP
	default:
		def = t.Other
	}
	if parentEnded && t.TCPClose < def {
		def = t.TCPClose
	}
	if f.Timeout != 0 && (!ended || uint32(f.Timeout) < def) {
		return uint32(f.Timeout)
	}
	return def
}

// idle reports whether an entry last seen at last has been idle longer than
// timeout at now (the clock is the data path's, in seconds).
func idle(now, last, timeout uint32) bool {
	return now > last && now-last > timeout
}

// secondTimeout is how long second key v may stay idle; a related one
// whose parent ended gets the close timeout.
func secondTimeout(t config.Timeouts, v datapath.Second, parentEnded bool) uint32 {
	if parentEnded {
		if v.Timeout != 0 && v.Timeout < t.TCPClose {
			return v.Timeout
		}
		return t.TCPClose
	}
	if v.Timeout != 0 {
		return v.Timeout
	}
	return t.SecondKey
}

// parentEnded reports whether the parent of a related entry is gone (FORGET,
// timeout) or has ended (a valid FIN or RST).
func parentEnded(dp datapath.Tables, parent datapath.FlowKey) bool {
	f, err := dp.LookupFlow(parent)
	if err != nil {
		return true
	}
	switch flow.TCPPhaseOf(f.TcpState) {
	case flow.TCPPhaseFin, flow.TCPPhaseClosed, flow.TCPPhaseReset:
		return parent.Proto == flow.ProtoTCP
	}
	return false
}

// orphans returns the related second keys (made by RELATE: they have a
// parent) whose parent ended: they, and the flows they made, age with the
// close timeout.
func (d *Daemon) orphans() (map[datapath.SecondKey]bool, error) {
	out := map[datapath.SecondKey]bool{}
	n := 0
	err := d.dp.WalkSecondKeys(func(k datapath.SecondKey, v datapath.Second) bool {
		if v.Parent.Family == 0 {
			return true // persistence: no parent
		}
		n++
		if parentEnded(d.dp, v.Parent) {
			out[k] = true
		}
		return n < maxRelated
	})
	return out, err
}

// sweep removes flow-table entries and second keys idle longer than their
// timeouts. An entry refreshed by the data path between the walk and the
// delete is kept (DeleteFlowsWhere matches again just before deleting).
func (d *Daemon) sweep() (flows, seconds int, err error) {
	d.mu.Lock()
	t := d.cfg.Timeouts
	d.mu.Unlock()
	now := d.clock()
	orphans, err := d.orphans()
	if err != nil {
		return 0, 0, err
	}
	flows, err = d.dp.DeleteFlowsWhere(func(k datapath.FlowKey, f datapath.Flow) bool {
		related := len(orphans) > 0 && f.Flags&datapath.FlowSecondKey != 0 &&
			orphans[datapath.SecondKey{Key: flow.MaskKey(k, uint32(f.Mask)), Mask: uint32(f.Mask)}]
		return idle(now, f.LastSeen, idleTimeout(t, k, f, related))
	}, maxSweep)
	if err != nil {
		return flows, 0, err
	}
	seconds, err = d.dp.DeleteSecondKeysWhere(func(k datapath.SecondKey, v datapath.Second) bool {
		return idle(now, v.LastSeen, secondTimeout(t, v, orphans[k]))
	}, maxSweep)
	return flows, seconds, err
}
