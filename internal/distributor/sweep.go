package distributor

import (
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// maxSweep bounds the entries one sweep removes, so its memory stays small;
// the rest go in the next sweep.
const maxSweep = 100_000

// idleTimeout is how long entry f may stay idle.
func idleTimeout(t config.Timeouts, k datapath.FlowKey, f datapath.Flow) uint32 {
	if f.Timeout != 0 {
		return uint32(f.Timeout)
	}
	switch k.Proto {
	case flow.ProtoTCP:
		if f.TcpState == datapath.TCPClosing {
			return t.TCPClosing
		}
		return t.TCP
	case flow.ProtoUDP:
		return t.UDP
	}
	return t.Other
}

// idle reports whether an entry last seen at last has been idle longer than
// timeout at now (the clock is the data path's, in seconds).
func idle(now, last, timeout uint32) bool {
	return now > last && now-last > timeout
}

// secondTimeout is how long second key v may stay idle.
func secondTimeout(t config.Timeouts, v datapath.Second) uint32 {
	if v.Timeout != 0 {
		return v.Timeout
	}
	return t.SecondKey
}

// sweep removes flow-table entries and second keys idle longer than their
// timeouts. An entry refreshed by the data path between the walk and the
// delete is kept (DeleteFlowsWhere matches again just before deleting).
func (d *Daemon) sweep() (flows, seconds int, err error) {
	d.mu.Lock()
	t := d.cfg.Timeouts
	d.mu.Unlock()
	now := d.clock()
	flows, err = d.dp.DeleteFlowsWhere(func(k datapath.FlowKey, f datapath.Flow) bool {
		return idle(now, f.LastSeen, idleTimeout(t, k, f))
	}, maxSweep)
	if err != nil {
		return flows, 0, err
	}
	seconds, err = d.dp.DeleteSecondKeysWhere(func(_ datapath.SecondKey, v datapath.Second) bool {
		return idle(now, v.LastSeen, secondTimeout(t, v))
	}, maxSweep)
	return flows, seconds, err
}
