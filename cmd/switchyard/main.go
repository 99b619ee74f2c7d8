// Command switchyard is the single binary of Switchyard: the distributor daemon,
// the TM-side agent, the reference traffic manager, the lab and the inspection
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
		Use:           "switchyard",
		Short:         "Scale out stateful traffic managers behind XDP distributors",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	return root
}
