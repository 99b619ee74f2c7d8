package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/internal/lab"
)

func newLabCmd() *cobra.Command {
	o := lab.LabOptions{}
	var weights string
	var plain bool
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the whole system in network namespaces: router, distributors, TMs, real load; kill and bring back a distributor; report PASS/FAIL",
		Long: `Run Switchyard for real on this host, inside network namespaces it creates and
removes again (needs root). By default (--distributors 2):

  e1 client ─ edge ─ r1 router ─ ext ─┬─ d1 distributor ─┬─ int ─┬─ tm1  weight 1
  (the load)         multipath route  │  (XDP)   ⇅       │       ├─ tm2  weight 1
                     to the VIPs,     └─ d2 distributor ─┘       ├─ tm3  weight 2
                     L4 hash             (XDP)  mirroring        └─ tm4  added
                         ▲                                          │
                         └─ int: the TMs answer through the router ─┘

   VIPs 10.0.0.100 and fd00:100::100: HTTP on :80, UDP request/response on
   :5300. Every TM holds the VIPs on lo and answers with its own id.

The router spreads the client's flows over the distributors by a hash of
each flow's addresses and ports. Each distributor picks a TM for each new
flow by weighted Maglev hashing (the same config, so the same choice on
each), remembers it in its flow table, sends every later packet of the flow
to the same TM, and mirrors its flow table to the other distributors.

The load, for --duration: --keepalive HTTP connections that stay open and send
requests in a loop, --short workers that open one connection per request, and
--udp UDP flows (one socket each) doing request/response, every --interval.

Timeline: at 1/6 of the duration a TM is added (new namespace, reference TM,
config reload); at 1/3 tm1 is drained (state: draining, config reload): it
keeps its established flows but gets no new ones; at 1/2 d1 is killed
(SIGKILL, its links down, the router's route without it, as a BGP withdraw
or hold-timer expiry would); at 2/3 d1 is restarted on its pinned data path
and, once it has resynced with its peer, put back into the route.

With --distributors 1: the client sends straight to d1 (no router, no
mirroring), a TM is added at 1/3 and tm1 drained at 2/3, nothing is killed.

Progress is shown once a second (redrawn in place on a terminal; one block
per second with --plain or when the output is not a terminal): the TMs, the
router's route, each distributor (flows, table fill, new flows/s,
packets/s, peers' state and lag).

The report shows per TM the new flows the distributors sent it, the
requests it answered and, for each phase (before the addition, after it,
after the drain), its share of the short connections opened in that phase
next to the share its weight gives among the TMs eligible in that phase;
per distributor its counters and peers at the end; the events.

PASS means: no request failed (0 errors, not counting UDP requests the
router sent to the killed distributor before its route was updated); no
keep-alive connection or UDP flow ever changed TM; every TM answered
requests; the added TM got new connections once it was in the config; the
drained TM got no new connection after the drain took effect; each phase's
shares are within 3 points + 4 standard deviations of the weights; and
0 connections broken across the kill and the return (no keep-alive
connection broke, none moved). The exit status is 1 on FAIL.

The report is also written as one self-contained HTML page (--html, no
script, nothing loaded from elsewhere) with plots: each TM's share of new
flows over time, HTTP latency p50/p99, each distributor's flow-table fill
and new flows per second, with the events marked.

Ctrl-C stops the load and the distributors and removes every namespace.
With --keep the topology stays up after the report, until Ctrl-C, for
poking with 'switchyard top --api unix:SOCKET …' (the command is printed).`,
		Example: `  switchyard lab                  # as root
  switchyard lab --duration 15s --plain --html /tmp/lab.html
  switchyard lab --distributors 3 --duration 60s
  switchyard lab --distributors 1 --ipv6 --weights 1,2,3,1 --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("lab needs root: it creates network namespaces and attaches XDP programs")
			}
			w, err := parseWeights(weights)
			if err != nil {
				return err
			}
			o.Weights = w
			if o.Bin, err = os.Executable(); err != nil {
				return fmt.Errorf("find own binary for the distributor: %w", err)
			}
			if o.HTML != "" {
				if o.HTML, err = filepath.Abs(o.HTML); err != nil {
					return fmt.Errorf("--html: %w", err)
				}
			}
			out := cmd.OutOrStdout()
			o.Live = !plain && isTerminal(out)
			// Netlab prefixes are random ("sy" + hex) and shared with tests,
			// so leftovers of a crashed lab cannot be told apart from a
			// running test's namespaces: no stale cleanup here.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			res, err := lab.RunLab(ctx, o, out)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return errors.New("lab: interrupted; load and distributors stopped, namespaces removed")
				}
				return fmt.Errorf("lab: %w", err)
			}
			if !res.Pass {
				return errors.New("lab: FAIL")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "how long the load runs")
	f.IntVar(&o.TMs, "tms", 3, "number of TMs at the start (one more is added)")
	f.BoolVar(&o.IPv6, "ipv6", false, "send the load to the IPv6 VIP")
	f.IntVar(&o.KeepAlive, "keepalive", 50, "concurrent keep-alive HTTP connections")
	f.IntVar(&o.Short, "short", 8, "workers opening one HTTP connection per request")
	f.IntVar(&o.UDP, "udp", 16, "concurrent UDP request/response flows")
	f.DurationVar(&o.Interval, "interval", 20*time.Millisecond, "pause between requests in each worker")
	f.StringVar(&weights, "weights", "1,1,2", "weights of tm1,tm2,…; TMs without one (such as the added TM) get 1")
	f.BoolVar(&plain, "plain", false, "print a progress block every second instead of redrawing in place")
	f.BoolVar(&o.Keep, "keep", false, "leave the topology up after the report until Ctrl-C")
	f.IntVar(&o.Distributors, "distributors", 2, "number of distributors (1: the single-distributor lab, no router, nothing killed)")
	f.StringVar(&o.HTML, "html", "switchyard-lab-report.html", "also write the report as a self-contained HTML page to this file (\"\": none)")
	return cmd
}

func parseWeights(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ws []int
	for _, f := range strings.Split(s, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 {
			return nil, fmt.Errorf("--weights: %q is not a positive integer", f)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
