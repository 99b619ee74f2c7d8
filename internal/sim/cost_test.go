package sim

import (
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/flow"
	"github.com/switchyard/switchyard/internal/mirror"
)

// threadCPU is the CPU time (user + system) of the calling OS thread.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHopCost measures the CPU one mirrored entry costs to deliver to
// one peer, the way internal/mirror does it, step by step on one OS thread
// (so that its CPU time, not the wall clock of a shared machine, is what is
// measured): the sender looks each key up in its flow table (the Go model)
// and encodes and signs a datagram of 21 entries (mirror.Codec), sends it
// over loopback UDP; the receiver reads it, checks and decodes it, and
// installs each entry through the seam (mirror.Install into a flow.Model).
// It reports CPU ns per entry: the figure `switchyard simulate
// --hop-cpu-ns` takes (DefaultHopCPUNanos). The BPF-map cost of lookups and
// installs on a real data path is not in it.
func BenchmarkHopCost(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	codec, err := mirror.NewCodec([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())

	const flows = 1 << 16
	src, dst := flow.NewModel(7, 1, 0), flow.NewModel(7, 1, 0)
	src.Now, dst.Now = 1000, 1000
	keys := make([]datapath.FlowKey, flows)
	for i := range keys {
		keys[i] = flow.MakeKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), vip, uint16(1024+i%60000), 443, flow.ProtoTCP, 0)
		src.Flows[keys[i]] = datapath.Flow{LastSeen: 1000, Tm: uint16(i % 200), Flags: datapath.FlowSelected, TcpState: datapath.TCPEstablished}
	}
	msg := mirror.Message{Type: mirror.TypeUpdate, Sender: 1, Boot: 1, Entries: make([]mirror.Entry, mirror.MaxEntries)}
	buf := make([]byte, 0, mirror.MaxDatagram)
	in := make([]byte, 2048)
	var out mirror.Message
	next := 0
	b.ResetTimer()
	start := threadCPU(b)
	for i := range b.N {
		for j := range msg.Entries {
			k := keys[next%flows]
			next++
			f, err := src.LookupFlow(k)
			if err != nil {
				b.Fatal(err)
			}
			f.LastSeen = 1000 + uint32(i) // newer each time: an update, not a kept copy
			msg.Entries[j] = mirror.Entry{Op: mirror.OpPut, Key: k, Flow: f}
		}
		msg.Seq = uint64(i + 1)
		if buf, err = codec.Append(buf[:0], &msg); err != nil {
			b.Fatal(err)
		}
		if _, err := tx.WriteToUDPAddrPort(buf, to); err != nil {
			b.Fatal(err)
		}
		n, _, err := rx.ReadFromUDPAddrPort(in)
		if err != nil {
			b.Fatal(err)
		}
		if err := codec.Decode(in[:n], &out); err != nil {
			b.Fatal(err)
		}
		dst.Now = 1000 + uint32(i)
		for j := range out.Entries {
			if _, err := mirror.Install(dst, &out.Entries[j], dst.Now); err != nil {
				b.Fatal(err)
			}
		}
	}
	cpu := threadCPU(b) - start
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*mirror.MaxEntries), "cpu-ns/entry")
	b.ReportMetric(float64(mirror.MaxEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
}
