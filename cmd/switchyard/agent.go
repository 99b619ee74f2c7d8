package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/agent"
	sig "github.com/switchyard/switchyard/signal"
)

func newAgentCmd() *cobra.Command {
	var (
		iface, distMAC, udpAddr, tmID, keyFile, socket string
		vips, snats                                    []string
		timeout                                        time.Duration
		mirror                                         bool
		maxFlows                                       int
		ftpPorts                                       []uint
		inBand, setup                                  bool
		deadline                                       time.Duration
		gateways                                       []string
		ftpHold                                        bool
		ftpQueue                                       uint16
		statsListen                                    string
	)
	cmd := &cobra.Command{
		Use:   "agent --vip ADDR [--snat ADDR] (--iface IF --distributor-mac MAC | --udp ADDR:PORT --tm-id ID --key-file FILE)",
		Short: "Run the TM-host agent: signals the distributor which flows this TM owns",
		Long: `Run the agent on a TM host.

It follows the host's conntrack events and signals the distributor:
MEMORIZE when the TM accepts a flow on a VIP or opens one from a VIP or SNAT
address, FORGET when the conntrack entry ends, and RELATE for the
expectations of the kernel's helpers (the FTP helper's data connections). On
start it announces every flow and expectation conntrack already holds, so a
restarted agent loses nothing. Signals go as frames on --iface to the
distributor's MAC (the TM is on its segment) or as authenticated UDP
(--udp, when it is not). TM software adds its own signals through the local
API on --socket (see docs/traffic-managers.md). With --ftp-port it holds
the FTP control packets that make an expectation (an NFQUEUE with bypass:
they pass when no agent runs) until the expectation's RELATE is sent.`,
		Example: `  switchyard agent --vip 10.0.0.100 --snat 10.1.255.1 --iface eth0 --distributor-mac 02:00:00:00:00:01 --socket /run/switchyard-agent.sock
  switchyard agent --vip 10.0.0.100 --udp 10.1.0.1:7946 --tm-id tm1 --key-file /etc/switchyard/tm1.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg agent.Config
			var err error
			if cfg.VIPs, err = prefixes("vip", vips); err != nil {
				return err
			}
			if cfg.SNAT, err = prefixes("snat", snats); err != nil {
				return err
			}
			cfg.Timeout, cfg.Mirror, cfg.MaxFlows = timeout, mirror, maxFlows
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

			var sender interface {
				agent.Sender
				Close() error
			}
			switch {
			case udpAddr != "" && (iface != "" || distMAC != ""):
				return errors.New("give either --udp or --iface and --distributor-mac, not both")
			case udpAddr != "":
				ap, err := netip.ParseAddrPort(udpAddr)
				if err != nil {
					return fmt.Errorf("--udp %q: want ADDR:PORT", udpAddr)
				}
				if tmID == "" || keyFile == "" {
					return errors.New("--udp needs --tm-id and --key-file")
				}
				key, err := readKey(keyFile)
				if err != nil {
					return err
				}
				if sender, err = sig.NewUDPSender(ap, tmID, key); err != nil {
					return err
				}
			case iface != "" && distMAC != "":
				mac, err := net.ParseMAC(distMAC)
				if err != nil {
					return fmt.Errorf("--distributor-mac %q: %w", distMAC, err)
				}
				if sender, err = sig.NewFrameSender(iface, mac); err != nil {
					return err
				}
				if inBand {
					var snat []netip.Addr
					for _, p := range cfg.SNAT {
						if p.IsSingleIP() {
							snat = append(snat, p.Addr())
						}
					}
					sh, err := agent.AttachShim(agent.ShimOptions{Iface: iface, DistMAC: mac, SNAT: snat, Timeout: timeout, Mirror: mirror})
					if err != nil {
						return err
					}
					defer sh.Close()
					cfg.Pending, cfg.Deadline = sh, deadline
				}
			default:
				return errors.New("give --iface and --distributor-mac (frames) or --udp (UDP control)")
			}
			defer sender.Close()
			a, err := agent.New(cfg, sender)
			if err != nil {
				return err
			}
			if setup {
				if iface == "" {
					return errors.New("--setup needs --iface")
				}
				o := agent.SetupOptions{Iface: iface}
				for _, p := range append(append([]netip.Prefix(nil), cfg.VIPs...), cfg.SNAT...) {
					if !p.IsSingleIP() {
						return fmt.Errorf("--setup: %v is a prefix; give single addresses to put on lo", p)
					}
					o.Addrs = append(o.Addrs, p.Addr())
				}
				for _, g := range gateways {
					a, err := netip.ParseAddr(g)
					if err != nil {
						return fmt.Errorf("--gateway %q: want an address", g)
					}
					o.Gateways = append(o.Gateways, a)
				}
				undoSetup, err := agent.Setup(o)
				if err != nil {
					return err
				}
				defer func() {
					if err := undoSetup(); err != nil {
						cfg.Logger.Warn("agent: undo --setup", "err", err)
					}
				}()
			}
			var ports []uint16
			for _, p := range ftpPorts {
				if p == 0 || p > 65535 {
					return fmt.Errorf("--ftp-port %d: not a port", p)
				}
				ports = append(ports, uint16(p))
			}
			undo, err := agent.EnableConntrack(ports)
			if err != nil {
				return err
			}
			defer func() {
				if err := undo(); err != nil {
					cfg.Logger.Warn("agent: cleanup", "err", err)
				}
			}()
			holdQueue := -1
			if ftpHold && len(ports) > 0 {
				if err := agent.EnableFTPHold(ftpQueue, ports); err != nil {
					return err
				}
				holdQueue = int(ftpQueue)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, a, socket, statsListen, holdQueue, cfg.Logger)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&vips, "vip", nil, "a VIP or VIP prefix the TM accepts flows on (repeatable)")
	f.StringSliceVar(&snats, "snat", nil, "a shared SNAT address or prefix the TM opens connections from (repeatable)")
	f.StringVar(&iface, "iface", "", "interface towards the distributor, for signal frames")
	f.StringVar(&distMAC, "distributor-mac", "", "the distributor's interface MAC (or the signal multicast MAC)")
	f.StringVar(&udpAddr, "udp", "", "the distributor's UDP control address, instead of frames")
	f.StringVar(&tmID, "tm-id", "", "this TM's id in the distributor's config (UDP control)")
	f.StringVar(&keyFile, "key-file", "", "file holding this TM's HMAC key in hex (UDP control)")
	f.StringVar(&socket, "socket", "", "unix socket for the local API (empty: no API)")
	f.StringVar(&statsListen, "stats-listen", "", "TCP address answering only stats requests, for the distributor's ratio-dynamic policy (traffic_managers[].agent_stats; empty: none)")
	f.DurationVar(&timeout, "timeout", 0, "idle timeout sent with every MEMORIZE (0: the distributor's default)")
	f.BoolVar(&mirror, "mirror", false, "mirror every memorized flow to the peer distributors")
	f.UintSliceVar(&ftpPorts, "ftp-port", nil, "assign the kernel's FTP helper to TCP connections to this port (repeatable)")
	f.BoolVar(&ftpHold, "ftp-hold", true, "with --ftp-port: hold the FTP control packets that make an expectation (NFQUEUE, bypass) until its RELATE is sent")
	f.Uint16Var(&ftpQueue, "ftp-queue", agent.DefaultFTPQueue, "the NFQUEUE number of the FTP hold")
	f.BoolVar(&inBand, "in-band", true, "with frames: put MEMORIZEs on the flows' own packets (tc egress on --iface); SYNs from --snat addresses carry their own")
	f.DurationVar(&deadline, "deadline", agent.DefaultDeadline, "how long an in-band MEMORIZE waits for a packet of its flow before it goes in a frame")
	f.BoolVar(&setup, "setup", false, "prepare the host for the l2 mode (VIPs and SNAT addresses on lo, arp_ignore/arp_announce, default routes via --gateway) and undo it on exit")
	f.StringSliceVar(&gateways, "gateway", nil, "with --setup: the distributor's address on --iface to route through (one per family)")
	f.IntVar(&maxFlows, "max-flows", agent.DefaultMaxFlows, "most flows tracked as owned")
	return cmd
}

func runAgent(ctx context.Context, a *agent.Agent, socket, statsListen string, holdQueue int, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	if holdQueue >= 0 {
		go func() { errc <- a.HoldFTP(ctx, uint16(holdQueue)) }()
	}
	go a.Send(ctx)
	go a.Measure(ctx)
	go a.Deadlines(ctx)
	go func() { errc <- a.Run(ctx) }()
	if socket != "" {
		l, err := agent.Listen(socket)
		if err != nil {
			return err
		}
		defer os.Remove(socket)
		go func() { errc <- a.Serve(ctx, l) }()
	}
	if statsListen != "" {
		l, err := net.Listen("tcp", statsListen)
		if err != nil {
			return fmt.Errorf("--stats-listen: %w", err)
		}
		go func() { errc <- a.ServeStats(ctx, l) }()
	}
	select {
	case <-a.Ready():
		log.Info("agent: following conntrack", "announced", a.Stats().Announced)
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

func prefixes(flag string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: want an address or a prefix", flag, s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("--key-file %s: not hex: %w", path, err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("--key-file %s: key of %d bytes, want at least 16", path, len(key))
	}
	return key, nil
}
