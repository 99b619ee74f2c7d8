package signal_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/netlab"
	"github.com/switchyard/switchyard/internal/netlab/labtest"
	"github.com/switchyard/switchyard/signal"
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestFrameSender sends a message through a FrameSender on one end of a veth
// pair in a namespace of its own, and reads the frame on the other end.
func TestFrameSender(t *testing.T) {
	labtest.Require(t)
	ns, err := netlab.NewNS(fmt.Sprintf("sysig%06x", rand.N(1<<24)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("close namespace: %v", err)
		}
	})
	dst := net.HardwareAddr{0x02, 0x53, 0x59, 0, 0, 0x02}
	src := net.HardwareAddr{0x02, 0x53, 0x59, 0, 0, 0x01}
	var (
		rfd    = -1
		sender *signal.FrameSender
	)
	err = ns.Do(func() error {
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: "tm0", HardwareAddr: src},
			PeerName:  "dist0", PeerHardwareAddr: dst,
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		for _, n := range []string{"tm0", "dist0"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		peer, err := net.InterfaceByName("dist0")
		if err != nil {
			return err
		}
		rfd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(signal.EtherType)))
		if err != nil {
			return fmt.Errorf("receive socket: %w", err)
		}
		if err := unix.Bind(rfd, &unix.SockaddrLinklayer{Protocol: htons(signal.EtherType), Ifindex: peer.Index}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(5 * time.Second))
		if err := unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		sender, err = signal.NewFrameSender("tm0", dst)
		return err
	})
	if rfd >= 0 {
		defer unix.Close(rfd)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()

	m := signal.Message{Ops: []signal.Op{
		signal.Memorize{Key: signal.Key{
			Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.1"),
			SrcPort: 40000, DstPort: 80, Proto: 6,
		}, Timeout: time.Minute},
		signal.Forget{Key: signal.Key{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Proto: 17, VLAN: 7}},
	}}
	if err := sender.Send(m); err != nil {
		t.Fatal(err)
	}
	want, err := signal.Frame(dst, src, m)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(rfd, buf, 0)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if !bytes.Equal(buf[:n], want) {
		t.Errorf("received\n%x\nwant\n%x", buf[:n], want)
	}
	got, _, err := signal.Unmarshal(buf[14:n])
	if err != nil || len(got.Ops) != 2 {
		t.Errorf("Unmarshal of received frame: %+v %v", got, err)
	}
	if err := sender.Close(); err != nil {
		t.Error(err)
	}
	if err := sender.Send(m); err == nil {
		t.Error("Send after Close succeeded")
	}
}
