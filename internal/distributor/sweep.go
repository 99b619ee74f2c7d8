package distributor

import (
	"errors"

	"github.com/cilium/ebpf"

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

// sweep removes flow-table entries and second keys idle longer than their
// timeouts. An entry refreshed by the data path between the walk and the
// delete is kept: it is looked up again first.
func (d *Daemon) sweep() (flows, seconds int, err error) {
	d.mu.Lock()
	t := d.cfg.Timeouts
	d.mu.Unlock()
	now := d.now()

	var dead []datapath.FlowKey
	err = d.dp.WalkFlows(func(k datapath.FlowKey, f datapath.Flow) bool {
		if idle(now, f.LastSeen, idleTimeout(t, k, f)) {
			dead = append(dead, k)
		}
		return len(dead) < maxSweep
	})
	if err != nil {
		return 0, 0, err
	}
	for _, k := range dead {
		f, err := d.dp.LookupFlow(k)
		if err != nil || !idle(now, f.LastSeen, idleTimeout(t, k, f)) {
			continue
		}
		if err := d.dp.DeleteFlow(k); err == nil {
			flows++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return flows, 0, err
		}
	}

	var deadSecond []datapath.SecondKey
	err = d.dp.WalkSecondKeys(func(k datapath.SecondKey, v datapath.Second) bool {
		to := v.Timeout
		if to == 0 {
			to = t.SecondKey
		}
		if idle(now, v.LastSeen, to) {
			deadSecond = append(deadSecond, k)
		}
		return len(deadSecond) < maxSweep
	})
	if err != nil {
		return flows, 0, err
	}
	for _, k := range deadSecond {
		v, err := d.dp.LookupSecondKey(k)
		if err != nil {
			continue
		}
		to := v.Timeout
		if to == 0 {
			to = t.SecondKey
		}
		if !idle(now, v.LastSeen, to) {
			continue
		}
		if err := d.dp.DeleteSecondKey(k); err == nil {
			seconds++
		}
	}
	return flows, seconds, nil
}
