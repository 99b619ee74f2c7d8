package datapath_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// TestPinAdoptRefuse: a pinned data path outlives its Datapath (links stay
// attached, maps keep their entries); a second LoadPinned adopts it and swaps
// its program into the links and prunes those of interfaces it does not
// attach to; one with another map layout is refused with
// the map and the difference named; Remove detaches and removes the pins.
func TestPinAdoptRefuse(t *testing.T) {
	topo := labtest.Topology(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 1})
	host := topo.Distributors[0]
	ext := host.Links["ext0"]
	dir := fmt.Sprintf("/sys/fs/bpf/switchyard-test-%08x/pin", rand.Uint32())
	t.Cleanup(func() {
		if err := datapath.RemovePinned(filepath.Dir(dir)); err != nil {
			t.Error(err)
		}
	})
	opts := datapath.Options{MaxFlows: 4096, RingSize: 257, MaxServices: 4, MaxSecond: 1024}
	attachedOn := func(name string) bool {
		t.Helper()
		var on bool
		err := host.NS.Do(func() error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			on = l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return on
	}
	attached := func() bool { return attachedOn("ext0") }

	dp1, adopted, err := datapath.LoadPinned(opts, dir)
	if err != nil {
		t.Fatal(err)
	}
	if adopted {
		t.Fatal("a fresh directory was adopted")
	}
	k := flow.MakeKey(netip.MustParseAddr("10.0.9.1"), netip.MustParseAddr("10.0.0.100"), 40000, 80, flow.ProtoTCP, 0)
	tm := datapath.TM{Mac: [6]uint8{2, 0, 0, 0, 0, 7}, Ifindex: uint32(ext.Index), Flags: datapath.TMReady}
	if err := dp1.SetTM(3, tm); err != nil {
		t.Fatal(err)
	}
	if err := dp1.PutFlow(k, datapath.Flow{Tm: 3}); err != nil {
		t.Fatal(err)
	}
	err = host.NS.Do(func() error {
		if _, err := dp1.Attach(ext.Index, "ext0", datapath.AttachGeneric); err != nil {
			return err
		}
		_, err := dp1.Attach(host.Links["int0"].Index, "int0", datapath.AttachGeneric)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dp1.Close(); err != nil {
		t.Fatal(err)
	}
	if !attached() {
		t.Fatal("closing a pinned data path detached it")
	}

	// Another layout: refused, naming the map and the difference; the
	// running data path is untouched.
	bigger := opts
	bigger.MaxFlows = 8192
	if _, _, err := datapath.LoadPinned(bigger, dir); !errors.Is(err, datapath.ErrLayout) ||
		!strings.Contains(err.Error(), "map flows") || !strings.Contains(err.Error(), "max entries") {
		t.Fatalf("a different flow table size: %v, want a layout refusal naming flows' max entries", err)
	}
	if !attached() {
		t.Fatal("a refused adoption detached the data path")
	}

	dp2, adopted, err := datapath.LoadPinned(opts, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !adopted {
		t.Fatal("the pinned data path was not adopted")
	}
	if f, err := dp2.LookupFlow(k); err != nil || f.Tm != 3 {
		t.Fatalf("flow after adoption: %+v, %v", f, err)
	}
	tables, err := dp2.ReadConfigTables()
	if err != nil {
		t.Fatal(err)
	}
	if got := tables.TMs[3]; got != tm || len(tables.TMs) != 1 {
		t.Fatalf("TMs after adoption: %+v", tables.TMs)
	}
	var mode datapath.AttachMode
	err = host.NS.Do(func() error {
		mode, err = dp2.Attach(ext.Index, "ext0", datapath.AttachGeneric)
		return err
	})
	if err != nil || mode != datapath.AttachAdopted {
		t.Fatalf("attach over the pinned link: %v, %v", mode, err)
	}
	// int0 is not attached this time (dropped from the config): pruned.
	if !attachedOn("int0") {
		t.Fatal("int0 detached before PruneLinks")
	}
	if err := dp2.PruneLinks(); err != nil {
		t.Fatal(err)
	}
	// The kernel releases an unpinned link asynchronously.
	for i := 0; i < 100 && attachedOn("int0"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if attachedOn("int0") || !attached() {
		t.Fatalf("after PruneLinks: int0 attached %v (want false), ext0 %v (want true)", attachedOn("int0"), attached())
	}
	if err := dp2.Remove(); err != nil {
		t.Fatal(err)
	}
	if attached() {
		t.Fatal("XDP still attached after Remove")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory after Remove: %v", err)
	}
}
