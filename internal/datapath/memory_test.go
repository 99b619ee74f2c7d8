package datapath

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/switchyard/switchyard/internal/netlab/labtest"
)

// BenchmarkFlowTableMemory reports the kernel memory of the flow table per
// entry, full, at 1 M and 10 M entries (docs/performance.md):
//
//	go test ./internal/datapath -run XXX -bench FlowTableMemory -benchtime 1x
//
// memlock-B/entry is what the kernel charges the map (the memlock line of
// its fdinfo); MemAvailable-B/entry, Slab-B/entry and VmallocUsed-B/entry
// are the changes of those /proc/meminfo lines from before the map was
// created to after it was filled, a cross-check that other activity on the
// machine blurs (a preallocated hash map lives in vmalloc memory, not slab).
func BenchmarkFlowTableMemory(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("%dM", n/1_000_000), func(b *testing.B) { flowTableMemory(b, n) })
	}
}

func flowTableMemory(b *testing.B, n int) {
	labtest.Require(b)
	if err := rlimit.RemoveMemlock(); err != nil {
		b.Fatal(err)
	}
	spec, err := loadSy()
	if err != nil {
		b.Fatal(err)
	}
	ms := spec.Maps["flows"].Copy()
	ms.MaxEntries = uint32(n)

	before, err := settledMeminfo()
	if err != nil {
		b.Fatal(err)
	}
	m, err := ebpf.NewMap(ms)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	// Half IPv4, half IPv6 keys, all distinct; a share from each CPU (the
	// table's LRU lists are per CPU).
	if err := fillFlows(m, n, func(i int) (FlowKey, Flow) {
		return prefillKey(i%2 == 0, i/2), Flow{LastSeen: uint32(i), Tm: uint16(i % 3), Flags: FlowSelected}
	}); err != nil {
		b.Fatal(err)
	}
	fill := time.Since(start)
	after, err := settledMeminfo()
	if err != nil {
		b.Fatal(err)
	}
	count, err := countEntries[Flow](m)
	if err != nil {
		b.Fatal(err)
	}
	if count != n {
		b.Fatalf("table holds %d entries after writing %d distinct keys", count, n)
	}
	memlock, err := fdinfoField(m.FD(), "memlock")
	if err != nil {
		b.Fatal(err)
	}
	per := func(v int64) float64 { return float64(v) / float64(n) }
	avail := (before["MemAvailable"] - after["MemAvailable"]) * 1024
	slab := (after["Slab"] - before["Slab"]) * 1024
	vmalloc := (after["VmallocUsed"] - before["VmallocUsed"]) * 1024
	percpu := (after["Percpu"] - before["Percpu"]) * 1024
	b.Logf("%d entries filled in %v: memlock %d B (%.1f B/entry); MemAvailable -%d B (%.1f B/entry), Slab +%d B (%.1f), VmallocUsed +%d B (%.1f), Percpu +%d B (%.1f)",
		count, fill.Round(time.Millisecond), memlock, per(memlock), avail, per(avail), slab, per(slab), vmalloc, per(vmalloc), percpu, per(percpu))
	b.ReportMetric(per(memlock), "memlock-B/entry")
	b.ReportMetric(per(avail), "MemAvailable-B/entry")
	b.ReportMetric(per(slab), "Slab-B/entry")
	b.ReportMetric(per(vmalloc), "VmallocUsed-B/entry")
}

// settledMeminfo reads /proc/meminfo once VmallocUsed has stopped moving
// (the kernel frees maps, such as those of an earlier benchmark, in the
// background), or after 5 s.
func settledMeminfo() (map[string]int64, error) {
	runtime.GC()
	prev, err := readMeminfo()
	if err != nil {
		return nil, err
	}
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		cur, err := readMeminfo()
		if err != nil {
			return nil, err
		}
		d := cur["VmallocUsed"] - prev["VmallocUsed"]
		prev = cur
		if d > -1024 && d < 1024 { // kB
			break
		}
	}
	return prev, nil
}

// readMeminfo returns /proc/meminfo's fields in kB.
func readMeminfo() (map[string]int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("meminfo %s: %w", name, err)
		}
		out[name] = v
	}
	return out, sc.Err()
}

// fdinfoField reads a numeric field of /proc/self/fdinfo/<fd>.
func fdinfoField(fd int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if ok && name == field {
			return strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
		}
	}
	return 0, fmt.Errorf("fdinfo of fd %d has no %s", fd, field)
}
