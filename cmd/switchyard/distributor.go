package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/switchyard/switchyard/internal/api"
	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
	"github.com/switchyard/switchyard/internal/distributor"
)

func newDistributorCmd() *cobra.Command {
	var cfgPath string
	var check, keep, unpin bool
	cmd := &cobra.Command{
		Use:   "distributor --config FILE",
		Short: "Run the distributor: XDP data path, TM resolution, admin API",
		Long: `Run the distributor daemon.

It loads the XDP program, attaches it to the interfaces of the config,
programs services, traffic managers and Maglev rings, keeps TM MAC addresses
resolved, and serves the admin API (see 'switchyard stats' and 'switchyard
flows').

Signals: SIGHUP reloads the config file (a bad file is refused and the running
state stays as it was; established flows never move); SIGTERM or SIGINT
detaches the program from every interface, removes its pins and exits; with
--keep it leaves the data path pinned and forwarding, for the next daemon to
adopt (a hitless restart or upgrade; also what SIGKILL or a crash leaves).
--unpin removes a pinned data path (this stops forwarding) and exits.

Config reference: docs/config.md.`,
		Example: `  switchyard distributor --config /etc/switchyard/d1.yaml
  switchyard distributor --config d1.yaml --check   # validate only (and check the interfaces exist)
  switchyard distributor --config d1.yaml --keep    # SIGTERM leaves the data path forwarding
  switchyard distributor --config d1.yaml --unpin   # remove the pinned data path`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			if check {
				// --check also checks the host: the interfaces must exist here.
				cfg, err := config.Check(cfgPath, func(name string) error {
					_, err := netlink.LinkByName(name)
					return err
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: OK (%d services, %d traffic managers, %d interfaces present)\n",
					cfgPath, len(cfg.Services), len(cfg.TrafficManagers), len(cfg.Distributor.Interfaces))
				return nil
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if unpin {
				dir := distributor.PinDir(cfg)
				if err := datapath.RemovePinned(dir); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed the pinned data path %s\n", dir)
				return nil
			}
			return runDistributor(cmd.Context(), cfgPath, cfg, keep)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().BoolVar(&check, "check", false, "validate the config, check that its interfaces exist, and exit")
	cmd.Flags().BoolVar(&keep, "keep", false, "on SIGTERM/SIGINT, leave the pinned data path attached and forwarding")
	cmd.Flags().BoolVar(&unpin, "unpin", false, "remove the pinned data path (detach, free the flow table) and exit")
	return cmd
}

// readyTimeout bounds how long the start sequence waits for the holds on
// its ready gate (the mirror's initial resync) before it takes traffic.
const readyTimeout = 10 * time.Second

func runDistributor(ctx context.Context, cfgPath string, cfg *config.Config, keep bool) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("distributor", cfg.Distributor.ID)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var err error
	var apiOpts api.ServerOptions
	if cfg.Distributor.APITokenFile != "" {
		if apiOpts.Token, err = api.ReadTokenFile(cfg.Distributor.APITokenFile); err != nil {
			return err
		}
	}
	l, err := api.Listen(cfg.Distributor.API)
	if err != nil {
		return err
	}
	if err := apiOpts.CheckListener(l); err != nil {
		l.Close()
		return err
	}
	d, err := distributor.New(log, cfgPath, cfg)
	if err != nil {
		l.Close()
		return err
	}
	defer func() {
		if keep {
			if err := d.Close(true); err != nil {
				log.Error("close", "error", err)
			}
			log.Info("data path left pinned and forwarding (--keep); exiting", "dir", distributor.PinDir(cfg))
			return
		}
		if err := d.Close(false); err != nil {
			log.Error("detach", "error", err)
		}
		log.Info("detached; exiting")
	}()
	d.Settle(ctx, 3*time.Second)
	if err := d.StartPeers(ctx); err != nil {
		l.Close()
		return err
	}
	gateDeadline := time.Now().Add(readyTimeout)
	if !d.Adopted() {
		if left := d.WaitReady(ctx, readyTimeout); len(left) > 0 {
			log.Warn("taking traffic before these were ready (timeout)", "waiting_for", left, "timeout", readyTimeout)
		}
	}
	if err := d.Attach(); err != nil {
		l.Close()
		return err
	}
	if err := d.StartControl(ctx); err != nil {
		l.Close()
		return err
	}
	// BGP announces the VIPs once the gate above is passed; on the way out
	// it withdraws them before the data path is detached (defers run last
	// first).
	if err := d.StartBGP(ctx, gateDeadline); err != nil {
		l.Close()
		return err
	}
	defer d.StopBGP()
	go func() {
		if err := api.NewServer(d, log, apiOpts).Serve(ctx, l); err != nil {
			log.Error("admin API", "error", err)
		}
	}()
	log.Info("running", "config", cfgPath, "api", cfg.Distributor.API,
		"services", len(cfg.Services), "traffic_managers", len(cfg.TrafficManagers))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go d.Run(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.Drained():
			log.Info("drained (switchyard drain): stopping")
			return nil
		case <-hup:
			if err := d.Reload(); err != nil {
				log.Error("reload", "error", err)
			} else {
				log.Info("reloaded", "config", cfgPath)
			}
		}
	}
}
