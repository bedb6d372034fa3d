package main

import (
	"github.com/spf13/cobra"
)

// demoCmd is the main job of `make demo`. Until the end-to-end disaggregated
// demo lands it prints the models table for the presets on embedded defaults.
func demoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run the demo (for now: the state-size table of every preset model)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m := modelsCmd()
			m.SetOut(cmd.OutOrStdout())
			m.SetArgs(nil)
			return m.RunE(m, nil)
		},
	}
}
