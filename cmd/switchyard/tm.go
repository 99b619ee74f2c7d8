package main

import (
	"context"
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

	"github.com/switchyard/switchyard/internal/tm"
	sysignal "github.com/switchyard/switchyard/signal"
)

// parseProxy parses "MODE LISTEN SERVER [SERVER...]".
func parseProxy(s string) (tm.Proxy, error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return tm.Proxy{}, fmt.Errorf("--proxy %q: want \"MODE LISTEN SERVER [SERVER...]\"", s)
	}
	p := tm.Proxy{Mode: f[0]}
	var err error
	if p.Listen, err = netip.ParseAddrPort(f[1]); err != nil {
		return tm.Proxy{}, fmt.Errorf("--proxy %q: listen address %q: want ADDR:PORT ([ADDR]:PORT for IPv6)", s, f[1])
	}
	for _, a := range f[2:] {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return tm.Proxy{}, fmt.Errorf("--proxy %q: server %q: want ADDR:PORT ([ADDR]:PORT for IPv6)", s, a)
		}
		p.Servers = append(p.Servers, ap)
	}
	return p, nil
}

func newTMCmd() *cobra.Command {
	var (
		cfg                  tm.Config
		proxies, sources     []string
		admin                string
		sigIface, sigDst     string
		sigUDP, sigKeyFile   string
		drainTimeout         time.Duration
		healthInterval, idle time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tm --id ID --proxy \"MODE LISTEN SERVER...\" [--source ADDR] [--signal-iface IF --signal-dst MAC]",
		Short: "Run the reference traffic manager (TCP, UDP, HTTP and FTP proxy)",
		Long: `Run the reference traffic manager: a proxy that accepts on the VIPs (held on
lo) and connects to a pool of servers from the shared SNAT address (--source),
with TCP health checks and least-connections balancing. Modes: tcp, udp, http
(a server chosen per request), ftp (rewrites PASV/EPSV/PORT/EPRT and signals
the distributor where each data connection belongs: needs --signal-iface and
--signal-dst, or --signal-udp and --signal-key-file).

--admin serves GET /healthz (503 while draining or with no healthy server)
and GET /stats (JSON counters). SIGTERM drains: listeners close, open
connections finish (at most --drain-timeout), then the process exits. Set the
TM draining on the distributor first.`,
		Example: `  switchyard tm --id tm1 --source 10.1.255.1 --admin 127.0.0.1:9901 \
    --proxy "http 10.0.0.100:80 10.2.0.11:8080 10.2.0.12:8080" \
    --proxy "udp 10.0.0.100:53 10.2.0.11:53" \
    --proxy "ftp 10.0.0.100:21 10.2.0.11:21" --signal-iface eth0 --signal-dst 02:00:00:00:01:01`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range proxies {
				p, err := parseProxy(s)
				if err != nil {
					return err
				}
				cfg.Proxies = append(cfg.Proxies, p)
			}
			for _, s := range sources {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("--source %q: not an address", s)
				}
				if a.Is4() {
					cfg.Source4 = a
				} else {
					cfg.Source6 = a
				}
			}
			if admin != "" {
				ap, err := netip.ParseAddrPort(admin)
				if err != nil {
					return fmt.Errorf("--admin %q: want ADDR:PORT", admin)
				}
				cfg.Admin = ap
			}
			switch {
			case sigIface != "" && sigUDP != "":
				return errors.New("--signal-iface and --signal-udp: choose one transport")
			case sigIface != "":
				mac, err := net.ParseMAC(sigDst)
				if err != nil || len(mac) != 6 {
					return fmt.Errorf("--signal-dst %q: want the distributor's (or the signal multicast) MAC", sigDst)
				}
				s, err := sysignal.NewFrameSender(sigIface, mac)
				if err != nil {
					return err
				}
				defer s.Close()
				cfg.Signal = s
			case sigUDP != "":
				ap, err := netip.ParseAddrPort(sigUDP)
				if err != nil {
					return fmt.Errorf("--signal-udp %q: want ADDR:PORT", sigUDP)
				}
				key, err := readKeyFile(sigKeyFile)
				if err != nil {
					return err
				}
				s, err := sysignal.NewUDPSender(ap, cfg.ID, key)
				if err != nil {
					return err
				}
				defer s.Close()
				cfg.Signal = s
			}
			cfg.HealthInterval, cfg.IdleTimeout = healthInterval, idle
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			t, err := tm.Start(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			cfg.Log.Info("draining", "timeout", drainTimeout)
			dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			return t.Drain(dctx)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.ID, "id", "", "the TM's id (logs, /stats, the HTTP mode's X-Switchyard-TM header; the UDP signal id)")
	fl.StringArrayVar(&proxies, "proxy", nil, `a proxy: "MODE LISTEN SERVER [SERVER...]", MODE tcp|udp|http|ftp (repeatable)`)
	fl.StringArrayVar(&sources, "source", nil, "shared SNAT address to connect to servers from (one IPv4, one IPv6)")
	fl.StringVar(&admin, "admin", "", "ADDR:PORT for /healthz and /stats (no authentication: loopback or a management address)")
	fl.StringVar(&sigIface, "signal-iface", "", "send signal frames on this interface (towards the distributor)")
	fl.StringVar(&sigDst, "signal-dst", "", "destination MAC of signal frames: the distributor's interface or the signal multicast MAC")
	fl.StringVar(&sigUDP, "signal-udp", "", "send UDP control signals to this distributor address instead")
	fl.StringVar(&sigKeyFile, "signal-key-file", "", "file with the TM's hex signal key (for --signal-udp)")
	fl.DurationVar(&drainTimeout, "drain-timeout", 30*time.Second, "longest wait for open connections on SIGTERM")
	fl.DurationVar(&healthInterval, "health-interval", 2*time.Second, "interval of the servers' TCP health checks")
	fl.DurationVar(&idle, "idle-timeout", 5*time.Minute, "close a TCP connection pair idle this long")
	fl.IntVar(&cfg.MaxConns, "max-conns", 10000, "open connections (UDP: sessions) per proxy; more are refused")
	return cmd
}

// readKeyFile reads a hex signal key (surrounding white space ignored).
func readKeyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("--signal-udp needs --signal-key-file")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signal key: %w", err)
	}
	var key []byte
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%x", &key); err != nil || len(key) < 16 {
		return nil, fmt.Errorf("signal key %s: want at least 16 bytes in hex", path)
	}
	return key, nil
}
