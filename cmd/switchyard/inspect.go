package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
)

// apiFlags find the admin API: --api, or the one in --config, or the only
// socket in /run/switchyard; and its token: --token-file, or
// $SWITCHYARD_API_TOKEN_FILE, or the config's distributor.api_token_file.
type apiFlags struct {
	addr      string
	cfgPath   string
	tokenFile string
}

// tokenEnv names the environment variable with the token file's path.
const tokenEnv = "SWITCHYARD_API_TOKEN_FILE"

func (f *apiFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "api", "", "admin API address (unix:/path or 127.0.0.1:PORT)")
	cmd.Flags().StringVarP(&f.cfgPath, "config", "c", "", "read the admin API address (and token file) from this distributor config")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file with the admin API's bearer token, needed on a TCP address (default $"+tokenEnv+")")
}

func (f *apiFlags) client() (*api.Client, error) {
	addr, cfgToken, err := f.address()
	if err != nil {
		return nil, err
	}
	c := api.NewClient(addr)
	tokenFile := f.tokenFile
	if tokenFile == "" {
		tokenFile = os.Getenv(tokenEnv)
	}
	if tokenFile == "" {
		tokenFile = cfgToken
	}
	if tokenFile != "" {
		tok, err := api.ReadTokenFile(tokenFile)
		if err != nil {
			return nil, err
		}
		c.WithToken(tok)
	}
	return c, nil
}

// address returns the API's address and the config's token file, if any.
func (f *apiFlags) address() (addr, tokenFile string, err error) {
	switch {
	case f.addr != "":
		return f.addr, "", nil
	case f.cfgPath != "":
		cfg, err := config.Load(f.cfgPath)
		if err != nil {
			return "", "", err
		}
		return cfg.Distributor.API, cfg.Distributor.APITokenFile, nil
	}
	socks, _ := filepath.Glob("/run/switchyard/*.sock")
	switch len(socks) {
	case 1:
		return "unix:" + socks[0], "", nil
	case 0:
		return "", "", errors.New("no distributor found in /run/switchyard; give --api or --config")
	}
	return "", "", fmt.Errorf("several distributors (%s); choose one with --api or --config", strings.Join(socks, ", "))
}

func newReloadCmd() *cobra.Command {
	var af apiFlags
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make a distributor re-read its config file (as SIGHUP does)",
		Example: `  switchyard reload
  switchyard reload --api 127.0.0.1:9900 --token-file /etc/switchyard/api.token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			if err := c.Reload(cmd.Context()); err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reloaded")
			return nil
		},
	}
	af.register(cmd)
	return cmd
}

func newStatsCmd() *cobra.Command {
	return newStatsViewCmd("stats",
		"Show a distributor's counters per service, per TM, and drops by reason",
		`  switchyard stats
  switchyard stats --config /etc/switchyard/d1.yaml --json`,
		func(st api.Stats) any { return st }, printStats)
}

// newStatsViewCmd is a command that reads the distributor's stats and prints
// a view of them: as a table, or with --json as jsonOf's value.
func newStatsViewCmd(use, short, example string, jsonOf func(api.Stats) any, print func(io.Writer, api.Stats)) *cobra.Command {
	var af apiFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			st, err := c.Stats(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(jsonOf(st))
			}
			print(cmd.OutOrStdout(), st)
			return nil
		},
	}
	af.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStats(w io.Writer, st api.Stats) {
	fmt.Fprintf(w, "distributor %s: %d flow entries (capacity %d)\n\n", st.ID, st.FlowEntries, st.FlowCapacity)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tVIP\tPORT\tPROTO\tPACKETS\tBYTES\tNEW FLOWS\tACTIVE\tELIGIBLE TMS")
	for _, s := range st.Services {
		port := fmt.Sprint(s.Port)
		if s.Port == 0 {
			port = "all"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.Name, s.VIP, port, s.Protocol,
			s.Packets, s.Bytes, s.NewFlows, s.ActiveFlows, strings.Join(s.Eligible, ","))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TM\tADDRESS\tSTATE\tWEIGHT\tMAC\tPACKETS\tBYTES\tNEW FLOWS\tACTIVE\tNOTE")
	for _, t := range st.TrafficManagers {
		note := t.Reason
		if !t.Ready && note == "" {
			note = "not ready"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n", t.ID, strings.Join(t.Addresses, ","), t.State, t.Weight, t.MAC,
			t.Packets, t.Bytes, t.NewFlows, t.ActiveFlows, note)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COUNTER\tPACKETS\tBYTES")
	for _, c := range st.Counters {
		if c.Packets == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\n", c.Name, c.Packets, c.Bytes)
	}
	tw.Flush()
	printHealth(w, st)
	if len(st.UDPSignals) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "UDP SIGNALS\tCOUNT")
		names := make([]string, 0, len(st.UDPSignals))
		for n := range st.UDPSignals {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(tw, "%s\t%d\n", n, st.UDPSignals[n])
		}
		tw.Flush()
	}
}

func newFlowsCmd() *cobra.Command {
	var af apiFlags
	var f api.FlowFilter
	var addr string
	var asJSON, follow bool
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "List a distributor's flow table (streamed; filter by service, TM, address)",
		Example: `  switchyard flows --service web
  switchyard flows --tm tm2 --limit 100
  switchyard flows --addr 10.0.1.11 --json
  switchyard flows --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr != "" {
				a, err := netip.ParseAddr(addr)
				if err != nil {
					return fmt.Errorf("--addr: %q is not an IP address", addr)
				}
				f.Addr = a
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			enc := json.NewEncoder(w)
			if follow {
				return followFlows(cmd.Context(), c, w, asJSON)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			if !asJSON {
				fmt.Fprintln(tw, "PROTO\tSOURCE\tDESTINATION\tVLAN\tSERVICE\tTM\tORIGIN\tPARENT\tIDLE")
			}
			n := 0
			err = c.Flows(cmd.Context(), f, func(fl api.Flow) error {
				n++
				if asJSON {
					return enc.Encode(fl)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%.0fs\n", fl.Proto, fl.Src, fl.Dst, fl.VLAN,
					fl.Service, fl.TM, strings.Join(fl.Origin, ","), fl.Parent, fl.IdleSeconds)
				if n%4096 == 0 {
					return tw.Flush() // keep memory flat on big tables
				}
				return nil
			})
			tw.Flush()
			if !asJSON {
				fmt.Fprintf(w, "%d flows\n", n)
			}
			return err
		},
	}
	af.register(cmd)
	cmd.Flags().StringVar(&f.Service, "service", "", "only flows of this service")
	cmd.Flags().StringVar(&f.TM, "tm", "", "only flows on this traffic manager")
	cmd.Flags().StringVar(&addr, "addr", "", "only flows from or to this address")
	cmd.Flags().IntVar(&f.Limit, "limit", 0, "stop after this many flows (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	cmd.Flags().BoolVar(&follow, "follow", false, "stream flow events (new, state, refused, expired) as they happen, until interrupted")
	return cmd
}

// followFlows prints flow events, one line each, until ctx is done.
func followFlows(ctx context.Context, c *api.Client, w io.Writer, asJSON bool) error {
	enc := json.NewEncoder(w)
	return c.FollowFlows(ctx, func(ev api.FlowEvent) error {
		if asJSON {
			return enc.Encode(ev)
		}
		if ev.Type == "lost" {
			_, err := fmt.Fprintf(w, "lost %d events (this follower did not keep up)\n", ev.Lost)
			return err
		}
		_, err := fmt.Fprintf(w, "%-8s %s %s -> %s vlan %d tm %s origin %s tcp %s %s\n", ev.Type, ev.Proto, ev.Src, ev.Dst,
			ev.VLAN, ev.TM, strings.Join(ev.Origin, ","), ev.TCPState, ev.Reason)
		return err
	})
}

// printHealth prints the health-check table: one line per checked TM of
// each service, and which services run on their fallback pool.
func printHealth(w io.Writer, st api.Stats) {
	shown := false
	for _, s := range st.Services {
		shown = shown || len(s.Health) > 0 || s.Fallback
	}
	if !shown {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HEALTH\tTM\tSTATE\tSINCE\tCHANGES\tRTT\tLAST ERROR")
	for _, s := range st.Services {
		if s.Fallback {
			fmt.Fprintf(tw, "%s\t-\tfallback pool\t\t\t\tno TM of the pool is eligible\n", s.Name)
		}
		for _, h := range s.Health {
			state := "healthy"
			switch {
			case !h.Healthy:
				state = "UNHEALTHY"
			case !h.Checked:
				state = "healthy (unchecked)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.1fms\t%s\n", s.Name, h.TM, state, h.Since, h.Changes, h.RTTSeconds*1000, h.LastError)
		}
	}
	tw.Flush()
}
