package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/top"
)

func newTopCmd() *cobra.Command {
	var (
		addrs     []string
		tokenFile string
		once      bool
		plain     bool
		interval  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of distributors: services, TMs, peers, BGP",
		Long: `Show one or more distributors from their admin APIs, refreshed every
--interval: per distributor its services (VIP, policy, eligible TMs, new
flows per second, active flows), its TMs (state, health, weight, active
flows, new flows per second, share of the distributor's new flows), its
peers (state, lag) and its BGP state ("bgp: not available" when the
distributor has no GET /v1/bgp). A distributor that does not answer is
shown as DOWN with the error; the others keep updating.

On a terminal the view is redrawn in place; with --plain (or when the
output is not a terminal) a frame is printed after the other; --once prints
one frame and exits (status 1 if no distributor answered).

Without --api: every socket in /run/switchyard.`,
		Example: `  switchyard top
  switchyard top --api unix:/run/switchyard/d1.sock --api unix:/run/switchyard/d2.sock
  switchyard top --api 10.0.0.1:9900 --token-file /etc/switchyard/api.token --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %v: at least 100ms", interval)
			}
			if len(addrs) == 0 {
				socks, _ := filepath.Glob("/run/switchyard/*.sock")
				if len(socks) == 0 {
					return errors.New("top: no distributor found in /run/switchyard; give --api (repeat it for several)")
				}
				for _, s := range socks {
					addrs = append(addrs, "unix:"+s)
				}
			}
			if len(addrs) > 64 {
				return fmt.Errorf("top: %d distributors: at most 64", len(addrs))
			}
			if tokenFile == "" {
				tokenFile = os.Getenv(tokenEnv)
			}
			var tok string
			if tokenFile != "" {
				var err error
				if tok, err = api.ReadTokenFile(tokenFile); err != nil {
					return err
				}
			}
			w := &top.Watcher{}
			for _, a := range addrs {
				c := api.NewClient(a)
				if tok != "" {
					c.WithToken(tok)
				}
				w.Sources = append(w.Sources, top.Source{Addr: a, Client: c})
			}
			out := cmd.OutOrStdout()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if once {
				f := w.Fetch(ctx)
				top.Render(out, f)
				for _, d := range f.Dists {
					if d.Err == nil {
						return nil
					}
				}
				return errors.New("top: no distributor answered")
			}
			live := !plain && isTerminal(out)
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				var b bytes.Buffer
				if live {
					// Home, draw each line clearing what the last frame left
					// to its right, then clear below.
					var fb bytes.Buffer
					top.Render(&fb, w.Fetch(ctx))
					b.WriteString("\x1b[H")
					b.Write(bytes.ReplaceAll(fb.Bytes(), []byte("\n"), []byte("\x1b[K\n")))
					b.WriteString("\x1b[J")
				} else {
					top.Render(&b, w.Fetch(ctx))
					b.WriteString("\n")
				}
				if _, err := out.Write(b.Bytes()); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&addrs, "api", nil, "admin API address of a distributor (unix:/path or host:port); repeat for several")
	f.StringVar(&tokenFile, "token-file", "", "file with the admin APIs' bearer token, needed on TCP addresses (default $"+tokenEnv+")")
	f.BoolVar(&once, "once", false, "print one frame and exit")
	f.BoolVar(&plain, "plain", false, "print frame after frame instead of redrawing in place")
	f.DurationVar(&interval, "interval", time.Second, "time between frames")
	return cmd
}
