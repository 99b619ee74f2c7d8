package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
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
		Short: "Run a distributor with TMs and real load in network namespaces, add and drain a TM, report PASS/FAIL",
		Long: `Run Switchyard for real on this host, inside network namespaces it creates and
removes again (needs root):

                 ext bridge                        int bridge
  ┌──────────┐       │       ┌──────────────────┐      │      ┌───────────────┐
  │ c1       ├───────┼───────┤ext0  d1      int0├──────┼──────┤ tm1  weight 1 │
  │ client,  │  10.0.1.0/24  │  switchyard      │ 10.1.0.0/24 ├───────────────┤
  │ load     │  fd00:1::/64  │  distributor     │ fd00:10::/64│ tm2  weight 1 │
  └──────────┘       │       │  (XDP)           │      │      ├───────────────┤
                             └──────────────────┘      ├──────┤ tm3  weight 2 │
                                                       │      ├───────────────┤
   VIPs 10.0.0.100 and fd00:100::100: HTTP on :80,     └──────┤ tm4  added at │
   UDP request/response on :5300. Every TM holds the          │ 1/3 of the run│
   VIPs on lo and answers with its own id.                    └───────────────┘

The client sends its load to the VIP via d1. The distributor picks a TM for
each new flow by weighted Maglev hashing, remembers it in its flow table and
sends every later packet of the flow to the same TM.

The load, for --duration: --keepalive HTTP connections that stay open and send
requests in a loop, --short workers that open one connection per request, and
--udp UDP flows (one socket each) doing request/response, every --interval.

Timeline: at 1/3 of the duration a TM is added (new namespace, reference TM,
config reload with it); at 2/3 tm1 is drained (state: draining, config
reload): it keeps its established flows but gets no new ones. Progress is
shown once a second (redrawn in place on a terminal; one block per second with
--plain or when the output is not a terminal).

The report shows per TM the new flows the distributor sent it, the requests it
answered, and, for each phase (before the addition, after it, after the
drain), its share of the short connections opened in that phase next to the
share its weight gives among the TMs eligible in that phase.

PASS means: no request failed (0 errors); no keep-alive connection or UDP flow
ever changed TM; every TM answered requests; the added TM got new connections
once it was in the config; the drained TM got no new connection (short
connection or distributor new flow) after the drain took effect; and each
phase's shares are within 3 points + 4 standard deviations of the weights.
The exit status is 1 on FAIL.

Ctrl-C stops the load and the distributor and removes every namespace. With
--keep the topology stays up after the report, until Ctrl-C, for poking with
'switchyard stats --api unix:SOCKET' (the socket path is printed).`,
		Example: `  switchyard lab                  # as root
  switchyard lab --duration 15s --plain
  switchyard lab --ipv6 --weights 1,2,3,1 --keep`,
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
					return errors.New("lab: interrupted; load and distributor stopped, namespaces removed")
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
	f.IntVar(&o.TMs, "tms", 3, "number of TMs at the start (one more is added at 1/3)")
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
