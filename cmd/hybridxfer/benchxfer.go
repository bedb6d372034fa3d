package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"github.com/spf13/cobra"
)

// xferResult is what `bench transfer` reports.
type xferResult struct {
	Model      string `json:"model"`
	Tokens     int    `json:"prompt_tokens"`
	PrefillTP  int    `json:"prefill_tp"`
	DecodeTP   int    `json:"decode_tp"`
	Mode       string `json:"mode"`
	ErrMode    string `json:"ucx_error_mode"`
	Requests   int    `json:"requests"`
	Iterations int    `json:"iterations"`
	// Per request, summed over decode ranks.
	Bytes int64 `json:"bytes_per_request"`
	Reads int   `json:"reads"`
	// Bandwidths over the same reads, all decode ranks in parallel.
	GBps       float64 `json:"gbps"`
	MemcpyGBps float64 `json:"memcpy_gbps"`
	UCXGBps    float64 `json:"ucx_gbps"`
	// Per request and decode rank, mean.
	PlanUs  float64 `json:"plan_us"`
	PostUs  float64 `json:"post_us"`
	StageUs float64 `json:"stage_us"`
	StepsUs float64 `json:"post_processing_us"`
	// One-block request: plan + read + notification, warm peers (mean).
	FixedOverheadUs float64 `json:"fixed_overhead_us"`
	// Raw UCX: one get of the same block + an active-message ping/pong.
	RawFixedOverheadUs float64        `json:"raw_fixed_overhead_us"`
	Path               string         `json:"path"`
	Paths              map[string]int `json:"paths"`
	ByteMismatches     int64          `json:"byte_mismatches"`
	Untouched          int64          `json:"untouched_violations"`
	VsUCX              float64        `json:"gbps_vs_ucx"`
	VsMemcpy           float64        `json:"gbps_vs_memcpy"`
	FixedVsRaw         float64        `json:"fixed_vs_raw"`
}

func benchTransferCmd() *cobra.Command {
	var (
		mf         modelFlags
		pf, df     instanceFlags
		model      string
		tokens     int
		requests   int
		iterations int
		mode       string
		errMode    string
		asJSON     bool
	)
	c := &cobra.Command{
		Use:   "transfer --model NAME --prompt-tokens N --prefill-tp A --decode-tp B",
		Short: "Move real requests between a P and a D process over UCX; compare with memcpy and raw UCX",
		Long: `transfer starts a prefill process (all P ranks, each with its own UCX worker and
registered memory filled with the coordinate pattern) and a decode process (all
D ranks), does the ZeroMQ handshake, and times moving --requests requests of
exactly --prompt-tokens tokens, --iterations times. In the same run it measures,
over exactly the same reads: memcpy (the ranges copied within one process) and
raw UCX (the reads posted on the bare UCX endpoints, no planner, agent or
protocol); and the fixed per-request overhead of a one-block request against a
raw one-block get followed by an active-message round trip. D's memory is
checked against the pattern at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := mf.load(model)
			if err != nil {
				return err
			}
			pc, err := pf.config()
			if err != nil {
				return err
			}
			dc, err := df.config()
			if err != nil {
				return err
			}
			md, err := plan.ParseMode(mode)
			if err != nil {
				return err
			}
			cfg := verify.Config{Model: m, P: pc, D: dc, PromptTokens: tokens, Requests: requests, Seed: 1, Mode: md, Exact: true, HitPercent: -1}
			if _, err := verify.NewJob(cfg); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			results, _, err := runCluster(ctx, cfg, perSide(pc.TP, dc.TP), errMode, true, iterations)
			if err != nil {
				return err
			}
			var r xferResult
			if err := json.Unmarshal([]byte(results[0]), &r); err != nil {
				return err
			}
			r.ErrMode = errMode
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, r)
			}
			fmt.Fprintf(out, "%s, %d tokens, P tp %d -> D tp %d, mode %s, path %s, %d requests x %d iterations\n",
				r.Model, r.Tokens, r.PrefillTP, r.DecodeTP, r.Mode, r.Path, r.Requests, r.Iterations)
			fmt.Fprintf(out, "per request: %d bytes, %d reads; plan %.1f us, post %.1f us, stage %.1f us, post-processing %.1f us (per decode rank)\n",
				r.Bytes, r.Reads, r.PlanUs, r.PostUs, r.StageUs, r.StepsUs)
			fmt.Fprintf(out, "bandwidth: %.2f GB/s; memcpy %.2f GB/s (x%.2f); raw UCX %.2f GB/s (x%.2f)\n", r.GBps, r.MemcpyGBps, r.VsMemcpy, r.UCXGBps, r.VsUCX)
			fmt.Fprintf(out, "fixed overhead: %.1f us; raw get + AM round trip %.1f us (x%.2f)\n", r.FixedOverheadUs, r.RawFixedOverheadUs, r.FixedVsRaw)
			fmt.Fprintf(out, "D memory check: %d byte mismatches, %d untouched violations\n", r.ByteMismatches, r.Untouched)
			if r.ByteMismatches != 0 || r.Untouched != 0 {
				return &exitError{code: 2, err: fmt.Errorf("the transferred state is wrong")}
			}
			return nil
		},
	}
	mf.register(c)
	pf.register(c, "prefill", 2)
	df.register(c, "decode", 4)
	c.Flags().StringVar(&model, "model", "qwen3.5-27b", "preset name or model file")
	c.Flags().IntVar(&tokens, "prompt-tokens", 32768, "tokens per request")
	c.Flags().IntVar(&requests, "requests", 1, "requests per iteration")
	c.Flags().IntVar(&iterations, "iterations", 5, "timed iterations")
	c.Flags().StringVar(&mode, "mode", "direct", "direct, staged or auto")
	c.Flags().StringVar(&errMode, "ucx-error-mode", "none", "UCX endpoint error handling: none or peer")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}

// benchDecode runs the decode side of `bench transfer` for every hosted
// rank, through the decode session (the serving path: session.RunPlan
// runs Load's per-rank path on plans made once).
func benchDecode(ctx context.Context, j *verify.Job, spec workerSpec, dec *verify.Decode) (*xferResult, error) {
	iters := max(1, spec.Iterations)
	res := &xferResult{Model: j.Cfg.Model.Name, Tokens: j.Cfg.PromptTokens, PrefillTP: j.Cfg.P.TP, DecodeTP: j.Cfg.D.TP,
		Mode: j.Cfg.Mode.String(), Requests: j.Requests(), Iterations: iters}
	type benchRank struct {
		Rank    int
		Local   *statexfer.Local
		Remotes map[int]*statexfer.Remote
	}
	var ranks []*benchRank
	for _, r := range spec.Ranks {
		br := &benchRank{Rank: r, Local: dec.Session.Local(r), Remotes: map[int]*statexfer.Remote{}}
		for _, pr := range j.Planner.Targets(r) {
			rem, err := dec.Session.Remote(ctx, dec.Peer, r, pr)
			if err != nil {
				return nil, err
			}
			br.Remotes[pr] = rem
		}
		ranks = append(ranks, br)
	}
	// Plans (timed).
	plans := make([][]*plan.Plan, len(ranks))
	var planTime time.Duration
	for i, dr := range ranks {
		for q := 0; q < j.Requests(); q++ {
			t0 := time.Now()
			p, err := j.PlanRequest(dr.Rank, q)
			planTime += time.Since(t0)
			if err != nil {
				return nil, err
			}
			plans[i] = append(plans[i], p)
			res.Bytes += p.Bytes()
			res.Reads += p.NumReads()
		}
	}
	n := float64(len(ranks) * j.Requests())
	res.PlanUs = float64(planTime.Microseconds()) / n
	res.Bytes /= int64(j.Requests())
	res.Reads /= j.Requests()
	// parallel runs f for every rank at once and returns the wall time.
	parallel := func(f func(i int, dr *benchRank) error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make([]error, len(ranks))
		t0 := time.Now()
		for i, dr := range ranks {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = f(i, dr) }()
		}
		wg.Wait()
		el := time.Since(t0)
		for _, e := range errs {
			if e != nil {
				return el, e
			}
		}
		return el, nil
	}
	var statsMu sync.Mutex
	var post, stage, steps time.Duration
	transfer := func(i int, dr *benchRank) error {
		for q, p := range plans[i] {
			st, err := dec.Session.RunPlan(ctx, dec.Peer, dr.Rank, j.ReqID(q), j.Grant(q), p)
			if err != nil {
				return err
			}
			statsMu.Lock()
			post, stage, steps = post+st.Post, stage+st.Stage, steps+st.Steps
			statsMu.Unlock()
		}
		return nil
	}
	if _, err := parallel(transfer); err != nil { // warm-up: page faults, wireup
		return nil, err
	}
	post, stage, steps = 0, 0, 0
	var total time.Duration
	for it := 0; it < iters; it++ {
		el, err := parallel(transfer)
		if err != nil {
			return nil, err
		}
		total += el
	}
	moved := float64(res.Bytes) * float64(j.Requests()) * float64(iters)
	res.GBps = moved / total.Seconds() / 1e9
	k := n * float64(iters)
	res.PostUs, res.StageUs, res.StepsUs = float64(post.Microseconds())/k, float64(stage.Microseconds())/k, float64(steps.Microseconds())/k
	// Raw UCX: the same reads, per (local, remote) region pair, on the bare
	// endpoints (staged plans read P's staging buffer: raw reads do too).
	var raw time.Duration
	for it := -1; it < iters; it++ { // iteration -1 warms up, like the transfer's
		el, err := parallel(func(i int, dr *benchRank) error {
			for _, p := range plans[i] {
				if err := rawReads(dr.Local, dr.Remotes, p); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("raw UCX baseline: %w", err)
		}
		if it >= 0 {
			raw += el
		}
	}
	res.UCXGBps = moved / raw.Seconds() / 1e9
	// memcpy: the same ranges copied within this process from buffers the
	// size of P's regions.
	mirrors := map[string][]byte{}
	mirror := func(p int, r plan.Region, n uint64) []byte {
		key := fmt.Sprintf("%d/%v", p, r)
		if b, ok := mirrors[key]; ok {
			return b
		}
		// Memory of the same kind as the transfer's (transport-allocated,
		// outside the Go heap), every page touched before timing.
		m, err := dec.Session.Transport(spec.Ranks[0]).Alloc(int(n))
		if err != nil {
			return nil
		}
		b := m.Bytes()
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		mirrors[key] = b
		return b
	}
	for i, dr := range ranks {
		for _, p := range plans[i] {
			for _, rp := range p.Remotes {
				meta := dr.Remotes[rp.Rank].Meta
				for _, rd := range rp.Reads {
					if mirror(rp.Rank, rd.Remote, meta.Region(rd.Remote).Len) == nil {
						return nil, fmt.Errorf("memcpy baseline: cannot allocate %d bytes", meta.Region(rd.Remote).Len)
					}
				}
			}
		}
	}
	var mc time.Duration
	for it := -1; it < iters; it++ { // iteration -1 warms up
		el, err := parallel(func(i int, dr *benchRank) error {
			for _, p := range plans[i] {
				for _, rp := range p.Remotes {
					var src, dst []byte
					for k, rd := range rp.Reads { // one copy() per range, like a single-threaded memcpy
						if k == 0 || rd.Remote != rp.Reads[k-1].Remote || rd.Local != rp.Reads[k-1].Local {
							src = mirrors[fmt.Sprintf("%d/%v", rp.Rank, rd.Remote)]
							dst = dr.Local.Mem.Region(rd.Local)
						}
						copy(dst[rd.LocalOff:rd.LocalOff+rd.Len], src[rd.RemoteOff:rd.RemoteOff+rd.Len])
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("memcpy baseline: %w", err)
		}
		if it >= 0 {
			mc += el
		}
	}
	res.MemcpyGBps = moved / mc.Seconds() / 1e9
	// The baselines overwrote D's memory: move the real state once more
	// and check it.
	if _, err := parallel(transfer); err != nil {
		return nil, err
	}
	vr := &verify.Result{}
	for _, dr := range ranks {
		j.CheckD(dr.Rank, dr.Local.Mem, vr)
	}
	res.ByteMismatches, res.Untouched = vr.ByteMismatches, vr.UntouchedViolations
	if err := fixedOverhead(ctx, j, dec, ranks[0].Rank, ranks[0].Local, ranks[0].Remotes, res); err != nil {
		return nil, fmt.Errorf("fixed overhead: %w", err)
	}
	res.Paths = ucxPaths(dec.Session, spec.Ranks)
	var names []string
	for p := range res.Paths {
		names = append(names, p)
	}
	sort.Strings(names)
	res.Path = strings.Join(names, "+")
	res.VsUCX, res.VsMemcpy = res.GBps/res.UCXGBps, res.GBps/res.MemcpyGBps
	res.FixedVsRaw = res.FixedOverheadUs / res.RawFixedOverheadUs
	return res, nil
}

// rawReads posts a plan's reads on the bare UCX endpoints, one raw batch per
// (local region, remote region) pair.
func rawReads(local *statexfer.Local, remotes map[int]*statexfer.Remote, p *plan.Plan) error {
	for _, rp := range p.Remotes {
		rem := remotes[rp.Rank]
		peer := rem.Peer.(*ucx.Peer)
		for a := 0; a < len(rp.Reads); {
			b := a
			var ranges []ucx.Range
			for ; b < len(rp.Reads) && rp.Reads[b].Remote == rp.Reads[a].Remote && rp.Reads[b].Local == rp.Reads[a].Local; b++ {
				r := rp.Reads[b]
				ranges = append(ranges, ucx.Range{RemoteOff: uint64(r.RemoteOff), LocalOff: uint64(r.LocalOff), Len: uint64(r.Len)})
			}
			local := local.Regions[rp.Reads[a].Local].(*ucx.Memory)
			remote := rem.Region(rp.Reads[a].Remote).(*ucx.Remote)
			if _, err := peer.RawRead(local, remote, ranges, remote.Mapped()); err != nil {
				return err
			}
			a = b
		}
	}
	return nil
}

// fixedOverhead measures a one-block request (planning, one read, the
// notification) against a raw get of the same block plus an active-message
// round trip, on warm peers.
func fixedOverhead(ctx context.Context, j *verify.Job, dec *verify.Decode, drank int, dlocal *statexfer.Local, remotes map[int]*statexfer.Remote, res *xferResult) error {
	const iters = 300
	pr := j.Planner.Targets(drank)[0]
	g := j.DSide.Ranks[drank]
	// The first per-token group's first layer, block 1 on both sides.
	gi := -1
	for i, gg := range g.Groups {
		if gg.Kind != groups.Recurrent {
			gi = i
			break
		}
	}
	if gi < 0 {
		gi = 0
	}
	li := g.Groups[gi].Layers[0]
	lg := g.Layer(li)
	pl := j.PSide.Ranks[pr].Layer(li)
	// One block in vLLM's sense: one attention kernel block (16 tokens by
	// default) of one layer, not a whole unified page (hundreds of tokens
	// after page-size unification, which would measure bandwidth).
	n := int64(min(lg.PageBytes, pl.PageBytes))
	if lg.TokenBytes > 0 {
		n = min(n, int64(lg.KernelBlockSize*lg.TokenBytes))
	}
	one := func() *plan.Plan {
		return &plan.Plan{Mode: plan.Direct, DRank: drank, Notify: []int{pr}, Remotes: []plan.RemotePlan{{Rank: pr, Bytes: n,
			Reads: []plan.Read{{Remote: plan.Region{Pool: pl.Pool, Slot: pl.Slot}, RemoteOff: int64(pl.PageStride), Local: plan.Region{Pool: lg.Pool, Slot: lg.Slot}, LocalOff: int64(lg.PageStride), Len: n}}}}}
	}
	for i := 0; i < 20; i++ { // warm-up
		if _, err := dec.Session.RunPlan(ctx, dec.Peer, drank, "fixed-warm", 1, one()); err != nil {
			return err
		}
	}
	rem := remotes[pr]
	local := dlocal.Regions[plan.Region{Pool: lg.Pool, Slot: lg.Slot}].(*ucx.Memory)
	remote := rem.Region(plan.Region{Pool: pl.Pool, Slot: pl.Slot}).(*ucx.Remote)
	// Seven rounds, ours and raw alternating so both see the same machine;
	// the medians are reported.
	var ours, raws []float64
	for round := 0; round < 7; round++ {
		t0 := time.Now()
		for i := 0; i < iters; i++ {
			if _, err := dec.Session.RunPlan(ctx, dec.Peer, drank, fmt.Sprintf("fixed-%d-%d", round, i), 1, one()); err != nil {
				return err
			}
		}
		ours = append(ours, float64(time.Since(t0).Nanoseconds())/iters/1e3)
		d, err := rem.Peer.(*ucx.Peer).RawRoundTrip(local, remote, uint64(n), iters)
		if err != nil {
			return err
		}
		raws = append(raws, float64(d.Nanoseconds())/1e3) // RawRoundTrip reports the mean round
	}
	res.FixedOverheadUs, res.RawFixedOverheadUs = median(ours), median(raws)
	return nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
