package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/spf13/cobra"
)

func benchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks: plan (planner cost and reads per request), transfer (P -> D over UCX)",
	}
	c.AddCommand(benchPlanCmd(), benchTransferCmd(), benchPatternCmd(), benchServeCmd())
	return c
}

// planRow is one line of `bench plan`.
type planRow struct {
	Model        string  `json:"model"`
	Tokens       int     `json:"tokens"`
	PrefillTP    int     `json:"prefill_tp"`
	DecodeTP     int     `json:"decode_tp"`
	PrefillBlock string  `json:"prefill_block_layout"`
	DecodeBlock  string  `json:"decode_block_layout"`
	BlockOrder   string  `json:"block_order"`
	Bytes        int64   `json:"bytes"`
	DirectReads  int     `json:"direct_reads"`
	StagedReads  int     `json:"staged_reads"`
	AutoMode     string  `json:"auto_mode"`
	DirectPlanUs float64 `json:"direct_plan_us"` // per decode rank
	StagedPlanUs float64 `json:"staged_plan_us"`
}

func benchPlanCmd() *cobra.Command {
	var (
		mf      modelFlags
		model   string
		tokens  string
		pf, df  instanceFlags
		asJSON  bool
		repeats int
		order   string
	)
	c := &cobra.Command{
		Use:   "plan",
		Short: "Plan one request per model and report reads (all decode ranks) and planning time",
		Long: `plan builds, for every preset (or --model), one request of each --prompt-tokens
length with worst-case fragmented block ids (--block-order random; in-order:
consecutive ids, as a fresh allocator hands out), plans it for every decode rank in
direct and staged mode, and reports the read descriptors of the whole request
(summed over decode ranks), the bytes moved and the planning time per decode
rank (best of --repeats).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lens []int
			for _, s := range strings.Split(tokens, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 {
					return fmt.Errorf("--prompt-tokens: bad length %q", s)
				}
				lens = append(lens, n)
			}
			names := groups.PresetNames()
			if model != "" {
				names = []string{model}
			}
			if order != "random" && order != "in-order" {
				return fmt.Errorf("--block-order %q (want random or in-order)", order)
			}
			pc, err := pf.config()
			if err != nil {
				return err
			}
			dc, err := df.config()
			if err != nil {
				return err
			}
			var rows []planRow
			bar := newProgress(cmd.ErrOrStderr(), len(names)*len(lens), "bench plan")
			defer bar.Finish()
			for _, name := range names {
				m, err := mf.load(name)
				if err != nil {
					return err
				}
				for _, n := range lens {
					row, err := benchPlanOne(m, pc, dc, n, repeats, order)
					if err != nil {
						return fmt.Errorf("%s at %d tokens: %w", name, n, err)
					}
					rows = append(rows, row)
					bar.Add(1)
				}
			}
			bar.Finish()
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, rows)
			}
			tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "model\ttokens\ttp\tblocks\tbytes\tdirect reads\tstaged reads\tauto\tdirect plan us\tstaged plan us\t")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%d\t%d->%d\t%s->%s\t%d\t%d\t%d\t%s\t%.1f\t%.1f\t\n", r.Model, r.Tokens, r.PrefillTP, r.DecodeTP,
					r.PrefillBlock, r.DecodeBlock, r.Bytes, r.DirectReads, r.StagedReads, r.AutoMode, r.DirectPlanUs, r.StagedPlanUs)
			}
			return tw.Flush()
		},
	}
	mf.register(c)
	pf.register(c, "prefill", 2)
	df.register(c, "decode", 4)
	c.Flags().StringVar(&model, "model", "", "one preset or file instead of every preset")
	c.Flags().StringVar(&tokens, "prompt-tokens", "4096,32768", "comma-separated request lengths")
	c.Flags().IntVar(&repeats, "repeats", 5, "planning repetitions (the best time is reported)")
	c.Flags().StringVar(&order, "block-order", "random", "block ids: random (worst-case fragmentation) or in-order (consecutive)")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}

func benchPlanOne(m *groups.Model, pc, dc groups.InstanceConfig, tokens, repeats int, order string) (planRow, error) {
	pc, dc = pc.WithDefaults(), dc.WithDefaults()
	row := planRow{Model: m.Name, Tokens: tokens, PrefillTP: pc.TP, DecodeTP: dc.TP,
		PrefillBlock: string(pc.BlockLayout), DecodeBlock: string(dc.BlockLayout), BlockOrder: order}
	synth := func() (*plan.Planner, *plan.Request, error) { return plan.Synthetic(m, pc, dc, tokens-1, 0, 1) }
	if order == "in-order" {
		synth = func() (*plan.Planner, *plan.Request, error) { return plan.SyntheticInOrder(m, pc, dc, tokens-1, 0) }
	}
	pl, req, err := synth()
	if err != nil {
		return row, err
	}
	staged, direct := 0, 0
	for d := 0; d < dc.TP; d++ {
		for _, mode := range []plan.Mode{plan.Direct, plan.Staged, plan.Auto} {
			best := time.Duration(1 << 62)
			var p *plan.Plan
			for i := 0; i < max(1, repeats); i++ {
				start := time.Now()
				p, err = pl.Plan(d, req, mode)
				if err != nil {
					return row, err
				}
				best = min(best, time.Since(start))
			}
			us := float64(best.Nanoseconds()) / 1e3 / float64(dc.TP)
			switch mode {
			case plan.Direct:
				row.DirectReads += p.NumReads()
				row.Bytes += p.Bytes()
				row.DirectPlanUs += us
			case plan.Staged:
				row.StagedReads += p.NumReads()
				row.StagedPlanUs += us
			default:
				if p.Mode == plan.Staged {
					staged++
				} else {
					direct++
				}
			}
		}
	}
	row.AutoMode = "direct"
	switch {
	case staged == dc.TP:
		row.AutoMode = "staged"
	case staged > 0:
		row.AutoMode = fmt.Sprintf("mixed(%d staged)", staged)
	}
	return row, nil
}
