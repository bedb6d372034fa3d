package main

import (
	"github.com/spf13/cobra"
)

// demoCmd is `make demo`: the end-to-end disaggregated serving demo on
// embedded defaults.
func demoCmd() *cobra.Command {
	var (
		keep      bool
		port      int
		model     string
		pTP, dTP  int
		seed      uint64
		maxTokens int
	)
	c := &cobra.Command{
		Use:   "demo [--keep-running] [--port P]",
		Short: "Proxy + prefill (tp 2) + decode (tp 4) processes; chat requests checked against the monolithic model",
		Long: `demo starts a proxy, a prefill instance (tp 2) and a decode instance (tp 4, NHD, SD and
cross-layer layouts) as separate processes on 127.0.0.1, talking over ZeroMQ (handshake) and UCX (state,
notifications). It sends a batch of chat requests (streaming and not) through the proxy with
a plain HTTP client, checks every answer against the same reference model run monolithically
in this process, prints a summary with a metrics excerpt, stops everything and exits 0 only
if every answer matches. With --keep-running it prints the proxy URL and serves until
interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			demoProxyPort = port
			return runE2EDemo(cmd.Context(), cmd.OutOrStdout(), model, pTP, dTP, seed, maxTokens, keep)
		},
	}
	c.Flags().BoolVar(&keep, "keep-running", false, "serve until interrupted instead of running the batch")
	c.Flags().IntVar(&port, "port", 0, "proxy port (0: any free port)")
	c.Flags().StringVar(&model, "model", "qwen3.5-27b", "preset whose reference miniature is served")
	c.Flags().IntVar(&pTP, "prefill-tp", 2, "prefill tensor-parallel size")
	c.Flags().IntVar(&dTP, "decode-tp", 4, "decode tensor-parallel size")
	c.Flags().Uint64Var(&seed, "seed", 1, "reference model weights seed")
	c.Flags().IntVar(&maxTokens, "max-tokens", 12, "tokens per answer")
	return c
}

// demoProxyPort, when not 0, is the proxy's port.
var demoProxyPort int
