package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
)

// persistMask is source persistence's default mask: proto, src, dst, dport.
const persistMask = datapath.FieldProto | datapath.FieldSrc | datapath.FieldDst | datapath.FieldDstPort

func sampleSeconds() []SecondEntry {
	k := sampleEntries()[0].Key
	parent := sampleEntries()[1].Key
	return []SecondEntry{
		{Op: OpPut, Key: datapath.SecondKey{Key: flow.MaskKey(k, persistMask), Mask: persistMask}, Age: 3, Value: datapath.Second{Timeout: 300, Tm: 2, Svc: 1}},
		{Op: OpPut, Key: datapath.SecondKey{Key: flow.MaskKey(parent, datapath.FieldSrc), Mask: datapath.FieldSrc}, Value: datapath.Second{Tm: 5, Svc: datapath.SvcNone, Parent: parent}},
	}
}

// TestSecondRoundTrip: second-key entries and the TM list digest
// encode and decode to the same values; a full datagram fits 1,472 bytes.
func TestSecondRoundTrip(t *testing.T) {
	c, _ := NewCodec(testKey)
	for _, m := range []Message{
		{Type: TypeSecond, Sender: 3, Boot: 9, Seq: 10, Seconds: sampleSeconds()},
		{Type: TypeHeartbeat, Sender: 3, Boot: 9, Seq: 11, Arg: 11, TMs: 0xdeadbeef},
	} {
		b, err := c.Append(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		if want := HeaderSize + len(m.Seconds)*SecondEntrySize + MACSize; len(b) != want {
			t.Fatalf("%d bytes, want %d", len(b), want)
		}
		var got Message
		if err := c.Decode(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Type != m.Type || got.TMs != m.TMs || len(got.Seconds) != len(m.Seconds) || len(got.Entries) != 0 {
			t.Fatalf("got %+v, want %+v", got, m)
		}
		for i := range m.Seconds {
			if got.Seconds[i] != m.Seconds[i] {
				t.Fatalf("entry %d: got %+v, want %+v", i, got.Seconds[i], m.Seconds[i])
			}
		}
	}
	full := Message{Type: TypeSecond, Seconds: make([]SecondEntry, MaxSecondEntries)}
	for i := range full.Seconds {
		full.Seconds[i] = sampleSeconds()[0]
	}
	b, err := c.Append(nil, &full)
	if err != nil || len(b) > 1472 {
		t.Fatalf("a full second-key datagram: %d bytes, %v", len(b), err)
	}
	full.Seconds = append(full.Seconds, full.Seconds[0])
	if _, err := c.Append(nil, &full); err == nil {
		t.Fatal("MaxSecondEntries+1 encoded")
	}
	if _, err := c.Append(nil, &Message{Type: TypeUpdate, Seconds: sampleSeconds()}); err == nil {
		t.Fatal("second-key entries on an update encoded")
	}
}

// TestSecondDecodeRefuses: every bad second-key entry is refused.
func TestSecondDecodeRefuses(t *testing.T) {
	c, _ := NewCodec(testKey)
	good, _ := c.Append(nil, &Message{Type: TypeSecond, Sender: 1, Boot: 1, Seq: 2, Seconds: sampleSeconds()[:1]})
	resign := func(mut func(b []byte)) []byte {
		b := bytes.Clone(good[:len(good)-MACSize])
		mut(b)
		c.mac.Reset()
		c.mac.Write(b)
		return c.mac.Sum(b)
	}
	e := HeaderSize
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"entry version 2", resign(func(b []byte) { b[e+45] = 2 }), ErrVersion},
		{"op delete", resign(func(b []byte) { b[e+44] = OpDelete }), ErrMalformed},
		{"padding", resign(func(b []byte) { b[e+61] = 1 }), ErrMalformed},
		{"mask 0", resign(func(b []byte) { copy(b[e+40:], []byte{0, 0, 0, 0}) }), ErrMalformed},
		{"mask unknown bit", resign(func(b []byte) { b[e+40] = 0x80 }), ErrMalformed},
		{"field outside mask", resign(func(b []byte) { b[e+32] = 1 }), ErrMalformed},
		{"family", resign(func(b []byte) { b[e+39] = 9 }), ErrMalformed},
		{"TM", resign(func(b []byte) { b[e+56] = 0xff }), ErrMalformed},
		{"parent family", resign(func(b []byte) { b[e+64] = 1 }), ErrMalformed},
		{"count", resign(func(b []byte) { b[7] = 2 }), ErrMalformed},
	} {
		var m Message
		if err := c.Decode(tc.b, &m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestInstallSecond: insert, keep the newer local, replace with a newer
// received one, refuse on a full table.
func TestInstallSecond(t *testing.T) {
	m := flow.NewModel(7, 1, 0)
	m.Now, m.MaxSecond = 100, 1
	e := sampleSeconds()[0]
	if out, err := InstallSecond(m, &e, m.Now); err != nil || out != Inserted {
		t.Fatalf("insert: %v %v", out, err)
	}
	if got := m.SecondKeys[e.Key]; got.LastSeen != 97 || got.Tm != 2 || got.Timeout != 300 || got.Svc != 1 {
		t.Fatalf("installed %+v", got)
	}
	if out, _ := InstallSecond(m, &e, m.Now); out != KeptLocal {
		t.Fatalf("equal: %v", out)
	}
	newer := e
	newer.Age, newer.Value.Tm = 0, 1
	if out, _ := InstallSecond(m, &newer, m.Now); out != Replaced || m.SecondKeys[e.Key].Tm != 1 {
		t.Fatalf("newer: %v %+v", out, m.SecondKeys[e.Key])
	}
	if out, _ := InstallSecond(m, &e, m.Now); out != KeptLocal || m.SecondKeys[e.Key].Tm != 1 {
		t.Fatalf("older won: %v", out)
	}
	other := sampleSeconds()[1]
	if out, err := InstallSecond(m, &other, m.Now); err != nil || out != Refused {
		t.Fatalf("full table: %v %v", out, err)
	}
	if !NewerSecond(datapath.Second{LastSeen: 2}, datapath.Second{LastSeen: 1, Tm: 9}) || NewerSecond(datapath.Second{Tm: 1}, datapath.Second{Tm: 1}) {
		t.Fatal("NewerSecond order")
	}
}

// TestSecondKeysReachPeer: d1's persistence second keys (written with the
// flow that made them) reach d2 with the flow, and a RELATE second key
// with a parent and no flow of its own reaches it with the refresh walk
// and with a resync.
func TestSecondKeysReachPeer(t *testing.T) {
	d1, d2 := pair(t)
	// Service 0 has source persistence (Config.PersistMasks in the daemon).
	d1.m.Do(func(datapath.Tables) { d1.m.persist = map[uint16]uint32{0: persistMask} })
	const n = 300
	want := map[datapath.SecondKey]datapath.Second{}
	for i := 0; i < n; i++ {
		k := testFlowKey(i)
		sk := datapath.SecondKey{Key: flow.MaskKey(k, persistMask), Mask: persistMask}
		v := datapath.Second{LastSeen: d1.model.Now, Timeout: 60, Tm: uint16(i % 3), Svc: 0}
		d1.m.Do(func(t datapath.Tables) { _ = t.PutSecondKey(sk, v) })
		want[sk] = v
	}
	d1.makeFlows(0, n, datapath.FlowSelected)
	eventually(t, 10*time.Second, "d1's persistence second keys on d2", func() (bool, string) {
		missing := 0
		d2.m.Do(func(datapath.Tables) {
			for k, v := range want {
				if g, ok := d2.model.SecondKeys[k]; !ok || g.Tm != v.Tm || g.Timeout != v.Timeout || g.LastSeen != v.LastSeen {
					missing++
				}
			}
		})
		return missing == 0, fmt.Sprintf("%d of %d missing, d1 %+v", missing, n, d1.m.Counters())
	})
	// A RELATE second key: no flow event names it; the refresh walk
	// (every 5 s by default; called here) sends it.
	parent := testFlowKey(1)
	rk := datapath.SecondKey{Key: flow.MaskKey(testFlowKey(99999), datapath.FieldSrc), Mask: datapath.FieldSrc}
	rv := datapath.Second{LastSeen: d1.model.Now, Tm: 1, Svc: datapath.SvcNone, Parent: parent}
	d1.m.Do(func(t datapath.Tables) { _ = t.PutSecondKey(rk, rv) })
	d1.m.walk(nil, d1.model.Now)
	eventually(t, 10*time.Second, "the RELATE second key on d2", func() (bool, string) {
		var g datapath.Second
		var ok bool
		d2.m.Do(func(datapath.Tables) { g, ok = d2.model.SecondKeys[rk] })
		return ok && g == rv, fmt.Sprintf("%v %+v", ok, g)
	})
	// A peer that joins gets them in its resync, before it is synced.
	c3 := listen(t)
	d3 := start(t, 3, c3, "", d1.addr)
	d1.m.mu.Lock()
	d1.m.cfg.Peers = append(d1.m.cfg.Peers, d3.addr)
	d1.m.out[d3.addr] = &outStream{addr: d3.addr, seq: d1.m.boot}
	d1.m.mu.Unlock()
	select {
	case <-d3.m.Synced():
	case <-time.After(30 * time.Second):
		t.Fatalf("d3 not synced: %+v", d3.m.Counters())
	}
	d3.m.Do(func(datapath.Tables) {
		if len(d3.model.SecondKeys) != n+1 {
			t.Errorf("d3 synced with %d second keys, want %d", len(d3.model.SecondKeys), n+1)
		}
	})
	if c := d2.m.Counters(); c.SecondInserted != n+1 || c.SecondErrors+c.SecondRefused+c.Malformed != 0 {
		t.Errorf("d2 counters %+v", c)
	}
}
