package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// loadMeter keeps the last second's load figures; Agent.mu guards it.
type loadMeter struct {
	last loadFigures

	prevNew           uint64
	prevBusy, prevAll uint64
	prevCPU           time.Duration
	prevAt            time.Time
}

type loadFigures struct {
	newPerSec     uint64
	cpu, agentCPU float64
}

// Measure updates the load figures once a second until ctx ends.
func (a *Agent) Measure(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	a.measure(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.measure(now)
		}
	}
}

func (a *Agent) measure(now time.Time) {
	n := a.newFlows.Load()
	busy, all, herr := hostCPU()
	self := selfCPU()
	a.mu.Lock()
	defer a.mu.Unlock()
	m := &a.load
	if !m.prevAt.IsZero() {
		m.last.newPerSec = n - m.prevNew
		if herr == nil && all > m.prevAll {
			m.last.cpu = float64(busy-m.prevBusy) / float64(all-m.prevAll)
		}
		if wall := now.Sub(m.prevAt); wall > 0 {
			m.last.agentCPU = float64(self-m.prevCPU) / float64(wall)
		}
	}
	m.prevNew, m.prevCPU, m.prevAt = n, self, now
	if herr == nil {
		m.prevBusy, m.prevAll = busy, all
	}
}

// selfCPU is the process's user + system CPU time.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU reads the aggregate line of /proc/stat: busy and total jiffies.
func hostCPU() (busy, all uint64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, fmt.Errorf("/proc/stat: empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	for i, s := range fields[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat field %d: %w", i+1, err)
		}
		all += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, all, nil
}
