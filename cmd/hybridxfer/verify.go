package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/hybridxfer/hybridxfer/engine"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"github.com/spf13/cobra"
)

// instanceFlags are the per-side flags of verify and bench.
type instanceFlags struct {
	prefix                 string // "prefill-", "decode-" or ""
	tp                     int
	blockSize, kernelBlock int
	layout, conv, memory   string
	blockLayout            string
}

func (f *instanceFlags) register(c *cobra.Command, side string, tp int) {
	p, what := side+"-", side+" "
	if side == "" {
		p, what = "", ""
	}
	f.prefix = p
	c.Flags().IntVar(&f.tp, p+"tp", tp, what+"tensor-parallel size")
	c.Flags().IntVar(&f.blockSize, p+"block-size", 16, what+"block size (unified memory: the minimum; separate: the attention block size)")
	c.Flags().IntVar(&f.kernelBlock, p+"kernel-block-size", 0, what+"attention kernel block size (0: 16 when it divides the block size)")
	c.Flags().StringVar(&f.layout, p+"layout", "HND", what+"attention layout: HND or NHD")
	c.Flags().StringVar(&f.conv, p+"conv-layout", "DS", what+"conv state layout: DS or SD")
	c.Flags().StringVar(&f.memory, p+"memory", "unified", what+"memory layout: unified or separate")
	c.Flags().StringVar(&f.blockLayout, p+"block-layout", "per-layer", what+"block layout: per-layer (a region per layer) or cross-layer (a region per pool, each block contiguous across its layers)")
}

func (f *instanceFlags) config() (groups.InstanceConfig, error) {
	c := groups.InstanceConfig{TP: f.tp, BlockSize: f.blockSize, KernelBlockSize: f.kernelBlock}
	var fc flagChecks
	parsed := func(name string, err error) {
		if err != nil {
			fc.fail(f.prefix+name, "%v", err)
		}
	}
	var err error
	c.AttnLayout, err = groups.ParseAttnLayout(f.layout)
	parsed("layout", err)
	c.ConvLayout, err = groups.ParseConvLayout(f.conv)
	parsed("conv-layout", err)
	c.Memory, err = groups.ParseMemoryLayout(f.memory)
	parsed("memory", err)
	c.BlockLayout, err = groups.ParseBlockLayout(f.blockLayout)
	parsed("block-layout", err)
	fc.intIn(f.prefix+"tp", int64(f.tp), 1, 1024)
	fc.intIn(f.prefix+"block-size", int64(f.blockSize), 1, 1<<16)
	fc.intIn(f.prefix+"kernel-block-size", int64(f.kernelBlock), 0, 1<<16)
	return c, fc.err()
}

func verifyCmd() *cobra.Command {
	var (
		mf       modelFlags
		pf, df   instanceFlags
		model    string
		tokens   int
		requests int
		seed     uint64
		mode     string
		mem      memoryFlags
		asJSON   bool
		tport    string
		ux       ucxFlags
		check    string
		maxTok   int
		turns    int
		pCache   string
		dCache   string
	)
	c := &cobra.Command{
		Use:   "verify --model NAME|FILE --prefill-tp N --decode-tp M [flags]",
		Short: "Transfer requests from P to D and check every byte D owns",
		Long: `verify lays out P's and D's per-rank memory with the real per-rank geometry of the
model, fills P with a pattern of global coordinates, runs --requests requests of
random lengths up to --prompt-tokens (some with prefix hits on D) through the
planner and the executor, and checks every byte D owns against the pattern for
D's own geometry, and that no other byte of D changed. Exit status 0 only when
byte_mismatches and untouched_violations are both zero.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" {
				return fmt.Errorf("--model is required (a preset name, a config.json or a hybridxfer model JSON)")
			}
			m, err := mf.load(model)
			if err != nil {
				return err
			}
			pc, err := pf.config()
			if err != nil {
				return fmt.Errorf("prefill: %w", err)
			}
			dc, err := df.config()
			if err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			md, err := plan.ParseMode(mode)
			if err != nil {
				return err
			}
			var fc flagChecks
			ux.check(&fc)
			pm := parseCacheMode(&fc, "prefill-mamba-cache-mode", pCache)
			dm := parseCacheMode(&fc, "decode-mamba-cache-mode", dCache)
			if err := fc.err(); err != nil {
				return err
			}
			if check == "model" {
				for _, name := range []string{"memory-kind", "staging"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("%w --%s: --check model runs the reference engines on host memory; use --check state", errFlag, name)
					}
				}
				if !cmd.Flags().Changed("prompt-tokens") {
					tokens = 64 // the reference model attends over every position: keep its default prompts short
				}
				mc := verify.ModelCheck{Model: m, P: pc, D: dc, Mode: md, PromptTokens: tokens, Requests: requests, MaxTokens: maxTok, Seed: seed,
					PCacheMode: pm, DCacheMode: dm, Turns: turns}
				return verifyModel(cmd, mc, tport, ux, asJSON)
			}
			for _, name := range []string{"prefill-mamba-cache-mode", "decode-mamba-cache-mode"} {
				if cmd.Flags().Changed(name) {
					return fmt.Errorf("%w --%s: only --check model runs the allocator's recurrent cache modes", errFlag, name)
				}
			}
			if check != "state" {
				return fmt.Errorf("--check %q (want state or model)", check)
			}
			start := time.Now()
			memCfg, err := mem.config()
			if err != nil {
				return err
			}
			if memCfg.Engine != nil {
				defer memCfg.Engine.Close()
			}
			cfg := verify.Config{Model: m, P: pc, D: dc, PromptTokens: tokens, Requests: requests, Seed: seed, Mode: md, Memory: memCfg}
			var res *verify.Result
			// The ucx run moves requests in worker processes: no bar.
			steps := map[string]int{"inproc": requests, "memory": dc.TP * requests}[tport]
			bar := newProgress(cmd.ErrOrStderr(), steps, "verify")
			cfg.Progress = func() { bar.Add(1) }
			switch tport {
			case "inproc":
				res, err = verify.RunTransport(cmd.Context(), cfg, "inproc", func(_ string, _ int, h transport.Handlers) (transport.Transport, error) {
					return transport.NewInproc(h), nil
				})
			case "ucx":
				res, err = verifyCluster(cmd.Context(), cfg, ux)
			case "memory":
				res, err = verify.Run(cfg)
			default:
				return fmt.Errorf("--transport %q (want inproc or ucx)", tport)
			}
			bar.Finish()
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			out := cmd.OutOrStdout()
			if asJSON {
				if err := writeJSON(out, res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "model %s: prefill tp %d (block %d) -> decode tp %d (block %d), mode %s\n",
					res.Model, res.PrefillTP, res.PrefillBlockSize, res.DecodeTP, res.DecodeBlockSize, res.Mode)
				fmt.Fprintf(out, "requests %d, tokens %d, bytes moved %d, reads %d, post steps %d (%.2fs)\n",
					res.Requests, res.Tokens, res.BytesMoved, res.Reads, res.PostSteps, elapsed.Seconds())
				fmt.Fprintf(out, "transport %s%s, prefill released %d of %d requests\n", res.Transport, pathsText(res.Paths), res.PrefillReleased, res.Requests)
				fmt.Fprintf(out, "byte mismatches %d, untouched violations %d\n", res.ByteMismatches, res.UntouchedViolations)
			}
			if !res.OK() {
				return &exitError{code: 2, err: fmt.Errorf("verification failed: %s", res.FirstProblem)}
			}
			if !asJSON {
				fmt.Fprintln(out, "OK: every byte D owns equals the monolithic state for its geometry")
			}
			return nil
		},
	}
	mf.register(c)
	pf.register(c, "prefill", 1)
	df.register(c, "decode", 1)
	c.Flags().StringVar(&model, "model", "", "preset name, Hugging Face config.json or hybridxfer model JSON")
	c.Flags().IntVar(&tokens, "prompt-tokens", 4096, "maximum prompt length; request lengths are drawn in [1, N] (--check model: default 64)")
	c.Flags().IntVar(&requests, "requests", 4, "number of requests")
	c.Flags().Uint64Var(&seed, "seed", 1, "seed for lengths, block ids, prefix hits and contents")
	c.Flags().StringVar(&mode, "mode", "auto", "read shaping: direct, staged or auto (cost model)")
	mem.add(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	c.Flags().StringVar(&tport, "transport", "inproc", "inproc: every rank in this process over the in-process transport; ucx: each rank its own process, ZeroMQ handshake and UCX reads on 127.0.0.1")
	c.Flags().StringVar(&check, "check", "state", "state: byte-exact state transfer with the coordinate pattern; model: prefill and decode engines running the reference model, answers and final states compared with the monolithic run")
	c.Flags().IntVar(&maxTok, "max-tokens", 8, "--check model: tokens generated per request")
	c.Flags().IntVar(&turns, "turns", 1, "--check model: turns per conversation (> 1: bidirectional engines; turn 2+ prefill reads the conversation back from decode; every third conversation rewrites its history before the last turn, every fourth lets the export expire before its second turn)")
	cacheModeFlag(c, &pCache, "prefill-", "--check model: prefill ")
	cacheModeFlag(c, &dCache, "decode-", "--check model: decode ")
	ux.register(c, true)
	return c
}

func pathsText(p map[string]int) string {
	if len(p) == 0 {
		return ""
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, p[k])
	}
	return " (read batches: " + strings.Join(parts, ", ") + ")"
}

// verifyCluster runs the verification with every rank in its own process.
func verifyCluster(ctx context.Context, cfg verify.Config, ux ucxFlags) (*verify.Result, error) {
	j, err := verify.NewJob(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	results, dones, err := runCluster(ctx, cfg, perRank(j.Cfg.P.TP, j.Cfg.D.TP), ux, false, 0)
	if err != nil {
		return nil, err
	}
	res := j.NewResult()
	res.Transport = "ucx"
	for _, r := range results {
		var o verify.Result
		if err := json.Unmarshal([]byte(r), &o); err != nil {
			return nil, fmt.Errorf("decode worker result: %w", err)
		}
		res.Merge(&o)
	}
	total := 0
	for _, d := range dones {
		var o struct{ Released, Ranks int }
		if err := json.Unmarshal([]byte(d), &o); err != nil {
			return nil, fmt.Errorf("prefill worker: %w", err)
		}
		total += o.Released
	}
	res.PrefillReleased = total / j.Cfg.P.TP
	if total != j.Requests()*j.Cfg.P.TP {
		return nil, fmt.Errorf("prefill ranks released %d request-ranks, want %d", total, j.Requests()*j.Cfg.P.TP)
	}
	res.Finish()
	return res, nil
}

// verifyModel is verify --check model.
func verifyModel(cmd *cobra.Command, mc verify.ModelCheck, tport string, ux ucxFlags, asJSON bool) error {
	m, pc, dc := mc.Model, mc.P, mc.D
	switch tport {
	case "inproc":
		f := func(_ int, h transport.Handlers) (transport.Transport, error) { return transport.NewInproc(h), nil }
		mc.PTransports, mc.DTransports = f, f
	case "ucx":
		uc, err := ux.config("")
		if err != nil {
			return err
		}
		f := func(side string) engine.TransportFactory {
			return func(r int, h transport.Handlers) (transport.Transport, error) {
				c := uc
				c.Name = fmt.Sprintf("%s-rank%d", side, r)
				return ucx.New(c, h)
			}
		}
		mc.PTransports, mc.DTransports = f("prefill"), f("decode")
		mc.Serve, mc.Fetch = zmqServe("127.0.0.1", 0, 0, 0, sideChannel{}, slog.New(slog.NewTextHandler(io.Discard, nil))), zmqFetch(sideChannel{})
	default:
		return fmt.Errorf("--transport %q (want inproc or ucx)", tport)
	}
	start := time.Now()
	bar := newProgress(cmd.ErrOrStderr(), mc.Requests, "verify --check model")
	mc.Progress = func() { bar.Add(1) }
	res, err := verify.RunModelCheck(cmd.Context(), mc)
	bar.Finish()
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if asJSON {
		if err := writeJSON(out, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "model %s (reference miniature): prefill tp %d -> decode tp %d over %s, %d requests (%d prompt, %d output tokens), %.2fs\n",
			m.Name, pc.TP, dc.TP, tport, res.Requests, res.PromptTokens, res.OutputTokens, time.Since(start).Seconds())
		fmt.Fprintf(out, "answers equal to monolithic %d/%d, final states equal %d/%d, positions computed twice %d, everything released %v\n",
			res.Matched, res.Requests, res.StatesEqual, res.Requests, res.PositionsTwice, res.Idle)
		if res.Turns > 1 {
			fmt.Fprintf(out, "%d conversations of %d turns (%d rewritten, %d expired): %d prompt positions read back from decode (%d bytes D -> P), per turn %v of %v prompt tokens; declines %v; positions recomputed after a decline %d\n",
				res.Conversations, res.Turns, res.Rewritten, res.Expired, res.TokensReusedFromDecode, res.BytesReadFromDecode, res.ReusedPerTurn, res.PromptTokensPerTurn, res.Declines, res.RecomputedAfterDecline)
		}
		if res.FollowUps > 0 {
			fmt.Fprintf(out, "mamba cache mode prefill %s, decode %s: %d follow-up requests; prefix cache hits: prefill %d of %d positions, decode %d of %d\n",
				res.PCacheMode, res.DCacheMode, res.FollowUps, res.PPrefixHits, res.PPrefixQueries, res.DPrefixHits, res.DPrefixQueries)
		}
	}
	if !res.OK() {
		return &exitError{code: 2, err: fmt.Errorf("model check failed: %s", res.FirstProblem)}
	}
	if !asJSON {
		fmt.Fprintln(out, "OK: disaggregated serving equals the monolithic reference model")
	}
	return nil
}
