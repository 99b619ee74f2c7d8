package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/tm/echo"
)

func newEchoTMCmd() *cobra.Command {
	var id string
	var httpAddrs, udpAddrs []string
	cmd := &cobra.Command{
		Use:   "echo-tm --id ID --http ADDR:PORT [--udp ADDR:PORT]",
		Short: "Run the echo TM, a test fixture that answers HTTP and UDP with its id",
		Long: `Run the echo TM, a test fixture (the reference TM, a proxy, is "switchyard tm").

It answers every HTTP request (GET /) with its id in the body and in the
X-Switchyard-TM header, streams N bytes for GET /bytes?n=N, and echoes every UDP
datagram back prefixed with its id. Put the VIPs on lo (LVS-DR style) and
listen on them; the lab and the end-to-end tests use it to check that every
packet of a flow reaches one TM.`,
		Example: `  switchyard echo-tm --id tm1 --http 10.0.0.100:80 --udp 10.0.0.100:5300
  switchyard echo-tm --id tm1 --http [fd00:100::100]:80`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--id is required")
			}
			parse := func(flag string, in []string) ([]netip.AddrPort, error) {
				var out []netip.AddrPort
				for _, s := range in {
					ap, err := netip.ParseAddrPort(s)
					if err != nil {
						return nil, fmt.Errorf("--%s %q: want ADDR:PORT ([ADDR]:PORT for IPv6)", flag, s)
					}
					out = append(out, ap)
				}
				return out, nil
			}
			h, err := parse("http", httpAddrs)
			if err != nil {
				return err
			}
			u, err := parse("udp", udpAddrs)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return echo.Run(ctx, id, h, u)
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the TM's id, sent in every answer")
	cmd.Flags().StringSliceVar(&httpAddrs, "http", nil, "HTTP listen address (repeatable)")
	cmd.Flags().StringSliceVar(&udpAddrs, "udp", nil, "UDP echo listen address (repeatable)")
	return cmd
}
