package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// demoCmd is `make demo` on embedded defaults. Until the end-to-end
// serving demo lands it shows the state sizes of every preset, then moves
// real requests of two hybrid models between P and D with different TP
// sizes and layouts and checks every byte: once with every rank a separate
// process over ZeroMQ and UCX, once in process.
func demoCmd() *cobra.Command {
	var transport string
	c := &cobra.Command{
		Use:   "demo",
		Short: "State sizes of every preset, then verified P -> D transfers of hybrid models",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "== Per-request state of every preset (4096 tokens, tp 1, one rank)")
			if err := runSub(cmd, modelsCmd(), nil); err != nil {
				return err
			}
			runs := [][]string{
				{"--model", "qwen3.5-27b", "--prefill-tp", "2", "--decode-tp", "4", "--decode-layout", "NHD",
					"--decode-conv-layout", "SD", "--prompt-tokens", "4096", "--requests", "3", "--transport", transport},
				{"--model", "kimi-linear-48b-a3b", "--prefill-tp", "4", "--decode-tp", "1", "--decode-memory", "separate",
					"--decode-block-size", "64", "--prompt-tokens", "4096", "--requests", "3", "--mode", "staged", "--transport", "inproc"},
			}
			for _, args := range runs {
				fmt.Fprintf(out, "\n== hybridxfer verify %v\n", args)
				if err := runSub(cmd, verifyCmd(), args); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&transport, "transport", "ucx", "transport of the first verification (ucx or inproc)")
	return c
}

// runSub runs a subcommand with args, writing to cmd's output.
func runSub(cmd *cobra.Command, sub *cobra.Command, args []string) error {
	sub.SetOut(cmd.OutOrStdout())
	sub.SetErr(cmd.ErrOrStderr())
	sub.SetContext(cmd.Context())
	if err := sub.ParseFlags(args); err != nil {
		return err
	}
	return sub.RunE(sub, nil)
}
