package netlab

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy ethtool ioctl commands (linux/ethtool.h). They do what `ethtool -K DEV
// tx off` and `gro on` do, without starting a process per interface, which keeps
// building a topology fast.
const (
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
	ethtoolGGRO    = 0x2b
	ethtoolSGRO    = 0x2c
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with its union used as ifr_data (40 bytes on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolValueIoctl runs one get/set ethtool command on dev in the calling
// thread's namespace (the ioctl socket's namespace decides which dev is meant).
func ethtoolValueIoctl(dev string, cmd, data uint32) (uint32, error) {
	if len(dev) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("netlab: interface name %q too long", dev)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(&v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, fmt.Errorf("netlab: ethtool cmd %#x on %s: %w", cmd, dev, errno)
	}
	return v.data, nil
}

// setTxChecksum turns tx checksum offload on or off (`ethtool -K DEV tx on|off`).
// Native XDP on veth breaks locally generated partial checksums, so lab veths
// run with it off.
func setTxChecksum(dev string, on bool) error {
	_, err := ethtoolValueIoctl(dev, ethtoolSTXCSUM, b2u(on))
	return err
}

// setGRO turns GRO on or off (`ethtool -K DEV gro on|off`). GRO on a veth gives
// it NAPI, which is what lets XDP_REDIRECT into its peer be received.
func setGRO(dev string, on bool) error {
	_, err := ethtoolValueIoctl(dev, ethtoolSGRO, b2u(on))
	return err
}

// TxChecksum reports whether tx checksum offload is on for dev. It must run
// inside the device's namespace (see NS.Do).
func TxChecksum(dev string) (bool, error) {
	v, err := ethtoolValueIoctl(dev, ethtoolGTXCSUM, 0)
	return v != 0, err
}

// GRO reports whether GRO is on for dev. It must run inside the device's
// namespace (see NS.Do).
func GRO(dev string) (bool, error) {
	v, err := ethtoolValueIoctl(dev, ethtoolGGRO, 0)
	return v != 0, err
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
