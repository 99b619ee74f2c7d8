// Command switchyard is the single binary of Switchyard: the distributor daemon,
// the reference traffic manager, the lab, benchmarks and the inspection
// commands.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "switchyard:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "switchyard",
		Short: "Scale out stateful traffic managers behind XDP distributors",
		Long: `Switchyard sends every packet of a flow to the same traffic manager (TM),
chooses a TM for new flows with weighted Maglev hashing, and keeps established
flows where they are while TMs come, drain and go.

Start with 'switchyard lab' to see it work in network namespaces, then
'switchyard distributor --config FILE' on a real host. Docs: docs/.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDistributorCmd(), newStatsCmd(), newFlowsCmd(), newReloadCmd())
	root.AddCommand(newLabCmd(), newTMCmd(), newEchoTMCmd(), newBenchCmd())
	root.AddCommand(newAgentCmd())
	root.AddCommand(newPeersCmd(), newTopCmd())
	root.AddCommand(newSimulateCmd())
	root.AddCommand(newBGPCmd(), newDrainCmd())
	return root
}
