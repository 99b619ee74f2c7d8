package distributor

import (
	"slices"

	"github.com/switchyard/switchyard/internal/config"
	"github.com/switchyard/switchyard/internal/datapath"
)

// The least-connections policies read the data path's per-TM active-flow
// counters (policy_active). The data path and the seam count each entry
// made and deleted; overwrites and the races of user-space adds make the
// counters drift, so the daemon rewrites them from a walk of the flow and
// half-open tables every resyncActiveEvery ticks of the reweigh loop. The
// drift is then bounded by what changed during one walk: it cannot grow.

// resyncActiveEvery is the number of reweigh ticks (reweighEvery) between
// two resyncs of the active-flow counters.
const resyncActiveEvery = 5

// leastConnections reports whether some service of cfg uses a
// least-connections policy.
func leastConnections(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Services, func(s config.Service) bool { return config.IsLeastConnections(s.Policy) })
}

// resyncActive rewrites the active-flow counters from a walk, every
// resyncActiveEvery calls, while some service uses least-connections.
func (d *Daemon) resyncActive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.health.closed.Load() || d.cfg == nil || !leastConnections(d.cfg) {
		return
	}
	d.resyncTicks++
	if d.resyncTicks < resyncActiveEvery {
		return
	}
	d.resyncTicks = 0
	if err := d.resyncActiveNow(); err != nil {
		d.log.Error("resync active flows", "error", err)
	}
}

// resyncActiveNow counts the flow and half-open entries of each TM and writes
// the counts to the data path's active-flow counters. Called with d.mu held.
func (d *Daemon) resyncActiveNow() error {
	n, err := datapath.CountActive(d.dp)
	if err != nil {
		return err
	}
	return d.dp.SetActive(n)
}
