package mirror

import (
	"testing"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

func TestInstall(t *testing.T) {
	e := sampleEntries()[0]
	m := flow.NewModel(7, 1, 0)
	m.Now = 100
	m.MaxFlows = 2

	if out, err := Install(m, &e, m.Now); err != nil || out != Inserted {
		t.Fatalf("insert: %v %v", out, err)
	}
	got := m.Flows[e.Key]
	if got.LastSeen != 93 || got.Flags != datapath.FlowSelected|datapath.FlowPeer || got.Tm != 2 || got.TcpState != e.Flow.TcpState || got.SeqFwd != e.Flow.SeqFwd {
		t.Fatalf("installed %+v", got)
	}
	// Same entry again: equal, the local one is kept.
	if out, _ := Install(m, &e, m.Now); out != KeptLocal {
		t.Fatalf("equal entry: %v", out)
	}
	// A local entry used later is not overwritten by an older one.
	local := got
	local.LastSeen, local.Tm = 99, 1
	m.Flows[e.Key] = local
	if out, _ := Install(m, &e, m.Now); out != KeptLocal || m.Flows[e.Key].Tm != 1 {
		t.Fatalf("older received entry won: %v %+v", out, m.Flows[e.Key])
	}
	// A received entry with a FIN at the same second wins (more state).
	fin := e
	fin.Age = 1
	fin.Flow.TcpState |= datapath.TCPFinFwd
	if out, _ := Install(m, &fin, m.Now); out != Replaced || m.Flows[e.Key].TcpState&datapath.TCPFinFwd == 0 {
		t.Fatalf("FIN not installed: %v %+v", out, m.Flows[e.Key])
	}
	// Delete decided before the local use: kept; after: deleted.
	del := Entry{Op: OpDelete, Key: e.Key, Age: 5}
	if out, _ := Install(m, &del, m.Now); out != KeptLocal {
		t.Fatalf("stale delete: %v", out)
	}
	del.Age = 0
	if out, _ := Install(m, &del, m.Now); out != Deleted || len(m.Flows) != 0 {
		t.Fatalf("delete: %v, %d left", out, len(m.Flows))
	}
	if out, _ := Install(m, &del, m.Now); out != Absent {
		t.Fatalf("delete again: %v", out)
	}
	// A full table refuses; nothing is evicted.
	for i := range 3 {
		x := e
		x.Key.Sport = uint16(i + 1)
		out, err := Install(m, &x, m.Now)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]Outcome{true: Inserted, false: Refused}[i < 2]; out != want {
			t.Fatalf("entry %d: %v, want %v", i, out, want)
		}
	}
}

// TestNewerIsATotalOrder: for any two different entries exactly one is
// newer, so both distributors keep the same one.
func TestNewerIsATotalOrder(t *testing.T) {
	var fs []datapath.Flow
	for _, ls := range []uint32{1, 2} {
		for _, st := range []uint8{0, datapath.TCPEstablished, datapath.TCPEstablished | datapath.TCPFinFwd} {
			for _, tm := range []uint16{0, 3} {
				for _, fl := range []uint16{datapath.FlowSelected, datapath.FlowMemorized} {
					for _, sq := range []uint32{0, 9} {
						fs = append(fs, datapath.Flow{LastSeen: ls, TcpState: st, Tm: tm, Flags: fl, SeqFwd: sq, SeqRev: sq})
					}
				}
			}
		}
	}
	for i, a := range fs {
		for j, b := range fs {
			if i == j {
				if Newer(a, b) {
					t.Fatal("an entry is newer than itself")
				}
				continue
			}
			if Newer(a, b) == Newer(b, a) {
				t.Fatalf("%+v and %+v: not ordered", a, b)
			}
		}
	}
}
