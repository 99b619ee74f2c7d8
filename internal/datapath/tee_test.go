package datapath_test

import (
	"errors"
	"fmt"
	"slices"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// tee is the seam over two data paths, the XDP program's and the model: each
// write goes to both, so that a test sets up each entry once. Reads come
// from the XDP side; the tests compare the two sides themselves.
type tee struct {
	dp    *datapath.Datapath
	model *flow.Model
}

var _ datapath.Tables = tee{}

// both writes through each side and reports which failed.
func (t tee) both(what string, w func(datapath.Tables) error) error {
	var errs []error
	if err := w(t.dp); err != nil {
		errs = append(errs, fmt.Errorf("%s in XDP: %w", what, err))
	}
	if err := w(t.model); err != nil {
		errs = append(errs, fmt.Errorf("%s in the model: %w", what, err))
	}
	return errors.Join(errs...)
}

func (t tee) SetService(k datapath.ServiceKey, s datapath.Service) error {
	return t.both("set service", func(x datapath.Tables) error { return x.SetService(k, s) })
}
func (t tee) DeleteService(k datapath.ServiceKey) error {
	return t.both("delete service", func(x datapath.Tables) error { return x.DeleteService(k) })
}
func (t tee) SetVIP(k datapath.VIPKey, n uint32) error {
	return t.both("set VIP", func(x datapath.Tables) error { return x.SetVIP(k, n) })
}
func (t tee) WriteRing(svc uint32, table, slots []uint32) error {
	return t.both("write ring", func(x datapath.Tables) error { return x.WriteRing(svc, table, slots) })
}
func (t tee) SetTM(idx uint32, tm datapath.TM) error {
	return t.both("set TM", func(x datapath.Tables) error { return x.SetTM(idx, tm) })
}
func (t tee) LookupTM(idx uint32) (datapath.TM, error) { return t.dp.LookupTM(idx) }
func (t tee) SetIface(ifindex, role uint32, mac [6]uint8) error {
	return t.both("set interface", func(x datapath.Tables) error { return x.SetIface(ifindex, role, mac) })
}
func (t tee) DeleteIface(ifindex uint32) error {
	return t.both("delete interface", func(x datapath.Tables) error { return x.DeleteIface(ifindex) })
}
func (t tee) SetTxPort(key, ifindex uint32) error {
	return t.both("set tx port", func(x datapath.Tables) error { return x.SetTxPort(key, ifindex) })
}
func (t tee) SetMasks(masks []uint32) error {
	return t.both("set masks", func(x datapath.Tables) error { return x.SetMasks(masks) })
}
func (t tee) ReadMasks() ([]uint32, error) { return t.dp.ReadMasks() }
func (t tee) SetSender(mac [6]uint8, idx uint32) error {
	return t.both("set sender", func(x datapath.Tables) error { return x.SetSender(mac, idx) })
}
func (t tee) DeleteSender(mac [6]uint8) error {
	return t.both("delete sender", func(x datapath.Tables) error { return x.DeleteSender(mac) })
}
func (t tee) SetLearnSource(a datapath.VIPKey, owner uint32) error {
	return t.both("set learning source", func(x datapath.Tables) error { return x.SetLearnSource(a, owner) })
}
func (t tee) DeleteLearnSource(a datapath.VIPKey) error {
	return t.both("delete learning source", func(x datapath.Tables) error { return x.DeleteLearnSource(a) })
}
func (t tee) SetSettings(s datapath.Settings) error {
	return t.both("set settings", func(x datapath.Tables) error { return x.SetSettings(s) })
}
func (t tee) SetNow(sec uint32) error {
	return t.both("set clock", func(x datapath.Tables) error { return x.SetNow(sec) })
}
func (t tee) ReadNow() (uint32, error)                            { return t.dp.ReadNow() }
func (t tee) ReadCounters() ([]datapath.CounterValue, error)      { return t.dp.ReadCounters() }
func (t tee) ServiceTraffic(idx uint32) (datapath.Traffic, error) { return t.dp.ServiceTraffic(idx) }
func (t tee) TMTraffic(idx uint32) (datapath.Traffic, error)      { return t.dp.TMTraffic(idx) }
func (t tee) ResetTraffic(svc bool, idx uint32) error {
	return t.both("reset traffic", func(x datapath.Tables) error { return x.ResetTraffic(svc, idx) })
}
func (t tee) LookupFlow(k datapath.FlowKey) (datapath.Flow, error) { return t.dp.LookupFlow(k) }
func (t tee) InsertFlow(k datapath.FlowKey, f datapath.Flow) error {
	return t.both("insert flow", func(x datapath.Tables) error { return x.InsertFlow(k, f) })
}
func (t tee) UpdateFlow(k datapath.FlowKey, f datapath.Flow) error {
	return t.both("update flow", func(x datapath.Tables) error { return x.UpdateFlow(k, f) })
}
func (t tee) PutFlow(k datapath.FlowKey, f datapath.Flow) error {
	return t.both("put flow", func(x datapath.Tables) error { return x.PutFlow(k, f) })
}
func (t tee) DeleteFlow(k datapath.FlowKey) error {
	return t.both("delete flow", func(x datapath.Tables) error { return x.DeleteFlow(k) })
}
func (t tee) WalkFlows(fn func(datapath.FlowKey, datapath.Flow) bool) error {
	return t.dp.WalkFlows(fn)
}
func (t tee) DeleteFlowsWhere(match func(datapath.FlowKey, datapath.Flow) bool, limit int) (int, error) {
	n, err := t.dp.DeleteFlowsWhere(match, limit)
	if err != nil {
		return n, err
	}
	m, err := t.model.DeleteFlowsWhere(match, limit)
	if err == nil && m != n {
		err = fmt.Errorf("delete flows: %d in XDP, %d in the model", n, m)
	}
	return n, err
}
func (t tee) WalkHalfOpen(fn func(datapath.FlowKey, datapath.Flow) bool) error {
	return t.dp.WalkHalfOpen(fn)
}
func (t tee) DeleteHalfOpenWhere(match func(datapath.FlowKey, datapath.Flow) bool, limit int) (int, error) {
	n, err := t.dp.DeleteHalfOpenWhere(match, limit)
	if err != nil {
		return n, err
	}
	m, err := t.model.DeleteHalfOpenWhere(match, limit)
	if err == nil && m != n {
		err = fmt.Errorf("delete half-open flows: %d in XDP, %d in the model", n, m)
	}
	return n, err
}

// ReadEvents reads both and fails when they differ.
func (t tee) ReadEvents(fn func(datapath.Event)) (int, error) {
	var a, b []datapath.Event
	n, err := t.dp.ReadEvents(func(e datapath.Event) { a = append(a, e) })
	if err != nil {
		return n, err
	}
	if _, err := t.model.ReadEvents(func(e datapath.Event) { b = append(b, e) }); err != nil {
		return n, err
	}
	if !slices.Equal(a, b) {
		return n, fmt.Errorf("events differ: XDP %d %+v, model %d %+v", len(a), a, len(b), b)
	}
	for _, e := range a {
		fn(e)
	}
	return n, nil
}
func (t tee) LookupSecondKey(k datapath.SecondKey) (datapath.Second, error) {
	return t.dp.LookupSecondKey(k)
}
func (t tee) PutSecondKey(k datapath.SecondKey, v datapath.Second) error {
	return t.both("put second key", func(x datapath.Tables) error { return x.PutSecondKey(k, v) })
}
func (t tee) WalkSecondKeys(fn func(datapath.SecondKey, datapath.Second) bool) error {
	return t.dp.WalkSecondKeys(fn)
}
func (t tee) DeleteSecondKeysWhere(match func(datapath.SecondKey, datapath.Second) bool, limit int) (int, error) {
	n, err := t.dp.DeleteSecondKeysWhere(match, limit)
	if err != nil {
		return n, err
	}
	m, err := t.model.DeleteSecondKeysWhere(match, limit)
	if err == nil && m != n {
		err = fmt.Errorf("delete second keys: %d in XDP, %d in the model", n, m)
	}
	return n, err
}

func (t tee) ReadActive() ([datapath.MaxTMs]int64, error) { return t.dp.ReadActive() }
func (t tee) SetActive(n [datapath.MaxTMs]int64) error {
	return t.both("set active flows", func(x datapath.Tables) error { return x.SetActive(n) })
}
func (t tee) SetPolicyWeight(idx, w uint32) error {
	return t.both("set policy weight", func(x datapath.Tables) error { return x.SetPolicyWeight(idx, w) })
}
func (t tee) SetQoS(svc uint32, q datapath.QoS) error {
	return t.both("set QoS", func(x datapath.Tables) error { return x.SetQoS(svc, q) })
}
func (t tee) WriteQoSRing(i uint32, ring, slots []uint32) error {
	return t.both("write QoS ring", func(x datapath.Tables) error { return x.WriteQoSRing(i, ring, slots) })
}
