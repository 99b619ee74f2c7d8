// Package lossy drops a fraction of the UDP datagrams an interface sends,
// with a tc (tcx) egress BPF program: the lossy link of tests.
package lossy

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/switchyard/switchyard/internal/netlab"
)

// Link is the program attached to one interface.
type Link struct {
	objs lossObjects
	l    link.Link
}

// Attach makes ifname in ns drop ppm per million of the IPv4 UDP datagrams
// it sends (ppm ≤ 1,000,000).
func Attach(ns *netlab.NS, ifname string, ppm uint32) (*Link, error) {
	if ppm > 1_000_000 {
		return nil, fmt.Errorf("lossy: %d per million", ppm)
	}
	spec, err := loadLoss()
	if err != nil {
		return nil, fmt.Errorf("lossy: %w", err)
	}
	if err := spec.Variables["loss_ppm"].Set(ppm); err != nil {
		return nil, fmt.Errorf("lossy: set loss_ppm: %w", err)
	}
	lk := &Link{}
	err = ns.Do(func() error {
		if err := spec.LoadAndAssign(&lk.objs, nil); err != nil {
			return fmt.Errorf("lossy: load: %w", err)
		}
		nl, err := ns.Netlink().LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("lossy: %s in %s: %w", ifname, ns.Name, err)
		}
		lk.l, err = link.AttachTCX(link.TCXOptions{Interface: nl.Attrs().Index, Program: lk.objs.UdpLoss, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return fmt.Errorf("lossy: attach to %s in %s: %w", ifname, ns.Name, err)
		}
		return nil
	})
	if err != nil {
		lk.objs.Close()
		return nil, err
	}
	return lk, nil
}

// Counts returns the UDP datagrams passed and dropped so far.
func (lk *Link) Counts() (passed, dropped uint64, err error) {
	if err := lk.objs.LossCounts.Lookup(uint32(0), &passed); err != nil {
		return 0, 0, fmt.Errorf("lossy: read counts: %w", err)
	}
	if err := lk.objs.LossCounts.Lookup(uint32(1), &dropped); err != nil {
		return 0, 0, fmt.Errorf("lossy: read counts: %w", err)
	}
	return passed, dropped, nil
}

// Close detaches and unloads the program.
func (lk *Link) Close() error {
	var err error
	if lk.l != nil {
		err = lk.l.Close()
	}
	return errors.Join(err, lk.objs.Close())
}
