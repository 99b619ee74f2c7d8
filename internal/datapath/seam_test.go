package datapath_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/signal"
)

// TestSeamContract runs the same writes and reads through both
// implementations of the seam, the BPF maps and the model, and requires the
// same results, errors included.
func TestSeamContract(t *testing.T) {
	f := newFixture(t)
	for name, s := range map[string]datapath.Tables{"xdp": f.dp, "model": f.model} {
		t.Run(name, func(t *testing.T) {
			k := flow.MakeKey(netip.MustParseAddr("10.0.9.1"), vip4a, 1, 80, flow.ProtoTCP, 0)
			if _, err := s.LookupFlow(k); !errors.Is(err, datapath.ErrKeyNotExist) {
				t.Fatalf("lookup of an absent flow: %v", err)
			}
			if err := s.UpdateFlow(k, datapath.Flow{Tm: 1}); !errors.Is(err, datapath.ErrKeyNotExist) {
				t.Fatalf("update of an absent flow: %v", err)
			}
			if err := s.InsertFlow(k, datapath.Flow{Tm: 1}); err != nil {
				t.Fatalf("insert: %v", err)
			}
			if err := s.InsertFlow(k, datapath.Flow{Tm: 2}); !errors.Is(err, datapath.ErrKeyExist) {
				t.Fatalf("insert over an entry: %v", err)
			}
			if got, err := s.LookupFlow(k); err != nil || got.Tm != 1 {
				t.Fatalf("after a refused insert: %+v, %v", got, err)
			}
			if err := s.UpdateFlow(k, datapath.Flow{Tm: 3}); err != nil {
				t.Fatalf("update: %v", err)
			}
			if got, _ := s.LookupFlow(k); got.Tm != 3 {
				t.Fatalf("after update: %+v", got)
			}
			if n, err := s.DeleteFlowsWhere(func(_ datapath.FlowKey, f datapath.Flow) bool { return f.Tm == 3 }, 0); err != nil || n != 1 {
				t.Fatalf("delete where: %d, %v", n, err)
			}
			if err := s.DeleteFlow(k); !errors.Is(err, datapath.ErrKeyNotExist) {
				t.Fatalf("delete of an absent flow: %v", err)
			}
			tm := datapath.TM{Mac: [6]uint8{2, 1, 2, 3, 4, 5}, Ifindex: 3, Flags: datapath.TMReady}
			if err := s.SetTM(9, tm); err != nil {
				t.Fatal(err)
			}
			if got, err := s.LookupTM(9); err != nil || got != tm {
				t.Fatalf("TM 9: %+v, %v", got, err)
			}
			if _, err := s.LookupTM(uint32(datapath.MaxTMs)); err == nil {
				t.Fatal("TM index out of range read without error")
			}
			if err := s.SetMasks(testMasks[:2]); err != nil {
				t.Fatal(err)
			}
			if got, err := s.ReadMasks(); err != nil || !slices.Equal(got, testMasks[:2]) {
				t.Fatalf("masks %v, %v", got, err)
			}
			if err := s.SetMasks([]uint32{0}); err == nil {
				t.Fatal("a zero mask was accepted")
			}
			if err := s.SetNow(4242); err != nil {
				t.Fatal(err)
			}
			if now, err := s.ReadNow(); err != nil || now != 4242 {
				t.Fatalf("clock %d, %v", now, err)
			}
			if err := s.ResetTraffic(false, 9); err != nil {
				t.Fatal(err)
			}
			if tr, err := s.TMTraffic(9); err != nil || tr != (datapath.Traffic{}) {
				t.Fatalf("TM 9 traffic after reset: %+v, %v", tr, err)
			}
		})
	}
}

// racing is the BPF data path with a hook after each flow lookup: another
// writer acting between a MEMORIZE's read and its write.
type racing struct {
	*datapath.Datapath
	hook func(k datapath.FlowKey)
}

func (r racing) LookupFlow(k datapath.FlowKey) (datapath.Flow, error) {
	f, err := r.Datapath.LookupFlow(k)
	r.hook(k)
	return f, err
}

// TestMemorizeRaceOnTheMap: over the real flow map, a flow selected for a
// usable TM between a MEMORIZE's read and its write is not overwritten (the
// insert is BPF_NOEXIST; the MEMORIZE decides again and is refused).
func TestMemorizeRaceOnTheMap(t *testing.T) {
	f := newFixture(t)
	f.standard(t)
	k := flow.MakeKey(netip.MustParseAddr("10.0.9.2"), vip4a, 7, 80, flow.ProtoTCP, 0)
	selected := datapath.Flow{LastSeen: 1000, Tm: 1, Svc: 0, Flags: datapath.FlowSelected}
	raced := false
	r := racing{Datapath: f.dp, hook: func(got datapath.FlowKey) {
		if got == k && !raced {
			raced = true
			if err := f.dp.PutFlow(k, selected); err != nil {
				t.Fatal(err)
			}
		}
	}}
	msg, err := signal.Message{Ops: []signal.Op{signal.Memorize{Key: signal.Key{Src: flow.Src(k), Dst: flow.Dst(k), SrcPort: 7, DstPort: 80, Proto: flow.ProtoTCP}}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, refused, ok := flow.CheckMessage(msg)
	if !ok {
		t.Fatalf("message refused: %s", datapath.CounterName(refused))
	}
	counters, errs := m.ApplyAll(r, 0)
	if len(errs) != 0 || len(counters) != 1 || counters[0] != datapath.CounterSigRefForeignTM {
		t.Fatalf("MEMORIZE outcome %v, errors %v; want sig_refused_foreign_tm", counters, errs)
	}
	if got, err := f.dp.LookupFlow(k); err != nil || got != selected {
		t.Fatalf("the selected flow became %+v (%v)", got, err)
	}
}
