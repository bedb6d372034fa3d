package main

import (
	"fmt"
	"strconv"

	"github.com/hybridxfer/hybridxfer/groups"
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
		nP, nD    int
		disc      bool
		seed      uint64
		maxTokens int
		spec      string
		numSpec   int
		bidir     bool
	)
	c := &cobra.Command{
		Use:   "demo [--keep-running] [--port P] [--prefill-instances N --decode-instances M]",
		Short: "Proxy + prefill (tp 2) + decode (tp 4) processes; chat requests checked against the monolithic model",
		Long: `demo starts a proxy, a prefill instance (tp 2) and a decode instance (tp 4, NHD, SD and
cross-layer layouts, staged reads) as separate processes on 127.0.0.1, talking over ZeroMQ (handshake) and UCX (state,
notifications). It sends a batch of chat requests (streaming and not) through the proxy with
a plain HTTP client, checks every answer against the same reference model run monolithically
in this process, prints a summary with a metrics excerpt, stops everything and exits 0 only
if every answer matches. With --keep-running it prints the proxy URL and serves until
interrupted. --prefill-instances and --decode-instances start more instances of each
role behind the one proxy (mixed tp, layouts and read modes), e.g. a cluster for bench serve:

  hybridxfer demo --prefill-instances 4 --decode-instances 4 --keep-running --port 8000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			demoProxyPort = port
			sp := demoSpec{method: spec, k: numSpec}
			if err := sp.check(); err != nil {
				return err
			}
			if nP < 1 || nD < 1 || nP > 32 || nD > 32 {
				return fmt.Errorf("%w --prefill-instances %d, --decode-instances %d (want 1..32 each)", errFlag, nP, nD)
			}
			return runE2EDemo(cmd.Context(), cmd.OutOrStdout(), model, demoShape{prefills: nP, decodes: nD, pTP: pTP, dTP: dTP, discovery: map[bool]string{true: "embedded"}[disc], bidirectional: bidir}, seed, maxTokens, keep, sp)
		},
	}
	c.Flags().BoolVar(&keep, "keep-running", false, "serve until interrupted instead of running the batch")
	c.Flags().IntVar(&port, "port", 0, "proxy port (0: any free port)")
	c.Flags().StringVar(&model, "model", "qwen3.5-27b", "preset whose reference miniature is served")
	c.Flags().IntVar(&pTP, "prefill-tp", 2, "prefill tensor-parallel size")
	c.Flags().IntVar(&dTP, "decode-tp", 4, "decode tensor-parallel size")
	c.Flags().BoolVar(&disc, "discovery", false, "start an embedded etcd: instances register there and the proxy routes to what is registered (no URL lists)")
	c.Flags().IntVar(&nP, "prefill-instances", 1, "prefill instances (odd-numbered ones run half of --prefill-tp)")
	c.Flags().IntVar(&nD, "decode-instances", 1, "decode instances (odd-numbered ones run half of --decode-tp, in the default layouts)")
	c.Flags().Uint64Var(&seed, "seed", 1, "reference model weights seed")
	c.Flags().IntVar(&maxTokens, "max-tokens", 12, "tokens per answer")
	c.Flags().StringVar(&spec, "speculative", "", "decode speculatively: mtp (the model's native MTP layers) or eagle3 (--model kimi-k2.5-eagle3); answers are still checked against the run without speculation")
	c.Flags().BoolVar(&bidir, "bidirectional", false, "run every instance with --bidirectional and also send multi-turn conversations: turn 2+ prefill reads the conversation so far back from decode (D -> P); answers checked against the monolithic model")
	c.Flags().IntVar(&numSpec, "num-speculative-tokens", 3, "with --speculative: draft tokens per decode step")
	return c
}

// demoSpec is the demo's speculative decoding setup (method "" : none).
type demoSpec struct {
	method string
	k      int
}

func (s demoSpec) check() error {
	switch groups.DraftKind(s.method) {
	case groups.DraftNone:
		return nil
	case groups.DraftMTP, groups.DraftEagle3:
		if s.k < 1 {
			return fmt.Errorf("--num-speculative-tokens %d (want >= 1 with --speculative)", s.k)
		}
		return nil
	}
	return fmt.Errorf("--speculative %q (want mtp or eagle3)", s.method)
}

// presetOptions are the preset options of the speculative setup.
func (s demoSpec) presetOptions() groups.PresetOptions {
	if s.method == "" {
		return groups.PresetOptions{}
	}
	return groups.PresetOptions{MTP: s.method == string(groups.DraftMTP), NumSpeculativeTokens: s.k}
}

// serveArgs are the serve flags of the speculative setup (P and D alike).
func (s demoSpec) serveArgs() []string {
	if s.method == "" {
		return nil
	}
	return []string{"--speculative", s.method, "--num-speculative-tokens", strconv.Itoa(s.k)}
}

// demoProxyPort, when not 0, is the proxy's port.
var demoProxyPort int
