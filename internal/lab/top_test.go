package lab_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/lab"
	"github.com/switchyard/switchyard/internal/loadgen"
	"github.com/switchyard/switchyard/internal/netlab"
)

// TestTopOnce: `switchyard top --once` against a real distributor (after
// some load) and an address where nothing listens shows the distributor's
// services, TMs with their states and weights, no peers, BGP not
// available, and the other one DOWN; against only the dead address it
// fails.
func TestTopOnce(t *testing.T) {
	e := newEnv(t, netlab.Spec{Clients: 1, Distributors: 1, TMs: 3})
	d := startDist(t, e, lab.ConfigOptions{APIPath: lab.APIPath(e.Dir, e.Topo.Distributors[0]),
		Weights: map[string]int{"tm3": 2}, States: map[string]string{"tm2": "draining"}})
	rep := runLoad(t, e, false, loadgen.Options{Short: 2, Interval: 5 * time.Millisecond}, time.Second)
	if rep.Requests == 0 {
		t.Fatalf("no load got through: %s", rep)
	}
	api := "unix:" + lab.APIPath(e.Dir, d.Host)
	dead := "unix:" + filepath.Join(t.TempDir(), "nobody.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary(t), "top", "--once", "--api", api, "--api", dead).CombinedOutput()
	t.Logf("top --once:\n%s", out)
	if err != nil {
		t.Fatalf("top --once: %v", err)
	}
	frame := string(out)
	for _, re := range []string{
		`(?m)^switchyard top .* 2 distributor\(s\), 1 down$`,
		`(?m)^d1  ` + regexp.QuoteMeta(api) + `  up  flows \d+ of 1000000 \(\d+\.\d\d%\), 0 from peers$`,
		`(?m)^  web +tcp 10\.0\.0\.100:80 +maglev +tm1,tm3 +- +\d+ +[1-9]\d*`,
		`(?m)^  echo +udp 10\.0\.0\.100:5300 +maglev +tm1,tm3 `,
		`(?m)^  tm1 +active +- +1 `,
		`(?m)^  tm2 +draining +- +1 `,
		`(?m)^  tm3 +active +- +2 `,
		`(?m)^  peers: none$`,
		`(?m)^  bgp: not available$`,
		`(?m)^` + regexp.QuoteMeta(dead) + `  DOWN: .*nobody\.sock`,
	} {
		if !regexp.MustCompile(re).MatchString(frame) {
			t.Errorf("frame does not match %s", re)
		}
	}
	out, err = exec.CommandContext(ctx, binary(t), "top", "--once", "--api", dead).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "no distributor answered") {
		t.Errorf("top --once with no distributor up: %v\n%s", err, out)
	}
}
