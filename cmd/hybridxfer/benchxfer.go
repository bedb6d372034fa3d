package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/internal/baseline"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"github.com/spf13/cobra"
)

// xferResult is what `bench transfer` reports. Bandwidths are medians over
// the iterations of the same reads, all decode ranks in parallel; every
// baseline is measured in the same iteration as the transfer.
type xferResult struct {
	Model  string `json:"model"`
	Tokens int    `json:"prompt_tokens"` // each request's prompt length (mean)
	// Positions whose state each request moves: the prompt but its last
	// token (D's first step), less D's prefix hit (none in benchmarks).
	Positions  int    `json:"positions_moved"`
	PrefillTP  int    `json:"prefill_tp"`
	DecodeTP   int    `json:"decode_tp"`
	Mode       string `json:"mode"`
	ErrMode    string `json:"ucx_error_mode"`
	Requests   int    `json:"requests"`
	Iterations int    `json:"iterations"`
	// Per request, summed over decode ranks.
	Bytes int64 `json:"bytes_per_request"`
	Reads int   `json:"reads"`
	// The transfer on its default path (mapped when P's memory maps here).
	GBps float64 `json:"gbps"`
	// FirstGBps is the warm-up transfer, the first on new peers: what a
	// first request pays (page tables of P's mapped memory, wireup).
	FirstGBps float64 `json:"first_transfer_gbps"`
	// HandshakeMs is the decode side's connection to P before it (the
	// handshake: metadata, endpoints, imports).
	HandshakeMs float64 `json:"handshake_ms"`
	// The transfer with the mapped path off: UCX's own gets.
	OneSidedGBps float64 `json:"ucx_one_sided_gbps"`
	OneSidedPath string  `json:"ucx_one_sided_path"`
	// Raw gets of the same reads on the bare endpoints.
	RawGBps float64 `json:"raw_ucx_gbps"`
	// One copy() per read from the same source, one goroutine per rank.
	MemcpyGBps   float64 `json:"memcpy_gbps"`
	MemcpySource string  `json:"memcpy_source"` // prefill-mapped or local-mirror
	// The same bytes in large streaming copies on every core.
	LimitGBps float64 `json:"limit_gbps"`
	// Under UCX_TLS=tcp: one loopback TCP stream of the same bytes.
	TCPSocketGBps float64 `json:"tcp_socket_gbps,omitempty"`
	// Per request and decode rank, mean.
	PlanUs        float64 `json:"plan_us"`
	PostUs        float64 `json:"post_us"`
	StageUs       float64 `json:"stage_us"`
	StepsUs       float64 `json:"post_processing_us"`
	PlanNsPerRead float64 `json:"plan_ns_per_read"`
	PostNsPerRead float64 `json:"post_ns_per_read"`
	// One-block request until P's session handled its notification and
	// D heard back (median of rounds).
	FixedOverheadUs float64 `json:"fixed_overhead_us"`
	// Raw UCX: one get of the same block + an active-message round trip.
	RawFixedOverheadUs float64        `json:"raw_fixed_overhead_us"`
	Path               string         `json:"path"`
	Paths              map[string]int `json:"paths"`
	ByteMismatches     int64          `json:"byte_mismatches"`
	Untouched          int64          `json:"untouched_violations"`
	VsLimit            float64        `json:"gbps_vs_limit"`
	VsMemcpy           float64        `json:"gbps_vs_memcpy"`
	OneSidedVsRaw      float64        `json:"one_sided_vs_raw"`
	FixedVsRaw         float64        `json:"fixed_vs_raw"`
	VsTCPSocket        float64        `json:"gbps_vs_tcp_socket,omitempty"`
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
		ux         ucxFlags
		asJSON     bool
		plotPath   string
	)
	c := &cobra.Command{
		Use:   "transfer --model NAME --prompt-tokens N --prefill-tp A --decode-tp B",
		Short: "Move real requests between a P and a D process over UCX; compare with memcpy and raw UCX",
		Long: `transfer starts a prefill process (all P ranks, each with its own UCX worker and
registered memory filled with the coordinate pattern) and a decode process (all
D ranks), does the ZeroMQ handshake, and moves --requests requests of exactly
--prompt-tokens tokens, --iterations times. Each iteration measures, one after
the other over exactly the same reads and decode ranks in parallel:
  transfer      the serving path (session.RunPlan: checks, reads, post steps);
  ucx one-sided the same with the mapped path off (UCX's own gets);
  raw ucx       the reads as bare ucp_get_nbx gets, no planner or session;
  memcpy        one copy() per read from the same source (P's pages as mapped
                here, or a local mirror where they are not mapped);
  limit         the same bytes in large streaming copies on every core;
  tcp socket    (under UCX_TLS=tcp) one loopback TCP stream of the same bytes.
Medians over iterations are reported. Then the fixed per-request overhead: a
one-block request until P's session has handled its notification and D heard
back, against a raw get of the block plus an active-message round trip. D's
memory is checked against the pattern at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var fc flagChecks
			ux.check(&fc)
			if err := fc.err(); err != nil {
				return err
			}
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
			results, _, err := runCluster(ctx, cfg, perSide(pc.TP, dc.TP), ux, true, iterations)
			if err != nil {
				return err
			}
			var r xferResult
			if err := json.Unmarshal([]byte(results[0]), &r); err != nil {
				return err
			}
			r.ErrMode = ux.ErrMode
			out := cmd.OutOrStdout()
			if plotPath != "" {
				if err := plotTransfer(plotPath, &r); err != nil {
					return err
				}
			}
			if asJSON {
				if err := writeJSON(out, r); err != nil {
					return err
				}
			} else {
				printTransfer(out, &r)
			}
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
	ux.register(c, true)
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	c.Flags().StringVar(&plotPath, "plot", "", "also draw the bandwidth rows to this .svg or .png file")
	return c
}

// printTransfer writes the table of `bench transfer`.
func printTransfer(out io.Writer, r *xferResult) {
	fmt.Fprintf(out, "%s, %d-token prompts (%d positions moved), P tp %d -> D tp %d, mode %s, path %s, %d requests x %d iterations (medians)\n",
		r.Model, r.Tokens, r.Positions, r.PrefillTP, r.DecodeTP, r.Mode, r.Path, r.Requests, r.Iterations)
	fmt.Fprintf(out, "per request: %d bytes, %d reads; per decode rank: plan %.1f us (%.0f ns/read), post %.1f us (%.0f ns/read), stage %.1f us, post-processing %.1f us\n",
		r.Bytes, r.Reads, r.PlanUs, r.PlanNsPerRead, r.PostUs, r.PostNsPerRead, r.StageUs, r.StepsUs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tvalue\tbaseline\tbaseline value\tratio")
	fmt.Fprintf(tw, "transfer (%s)\t%.2f GB/s\tlimit (streaming, all cores)\t%.2f GB/s\t%.2f\n", r.Path, r.GBps, r.LimitGBps, r.VsLimit)
	fmt.Fprintf(tw, "transfer (%s)\t%.2f GB/s\tmemcpy (%s, per rank)\t%.2f GB/s\t%.2f\n", r.Path, r.GBps, r.MemcpySource, r.MemcpyGBps, r.VsMemcpy)
	fmt.Fprintf(tw, "transfer, mapping off (%s)\t%.2f GB/s\traw UCX gets\t%.2f GB/s\t%.2f\n", r.OneSidedPath, r.OneSidedGBps, r.RawGBps, r.OneSidedVsRaw)
	if r.TCPSocketGBps > 0 {
		fmt.Fprintf(tw, "transfer (%s)\t%.2f GB/s\tone loopback TCP stream\t%.2f GB/s\t%.2f\n", r.Path, r.GBps, r.TCPSocketGBps, r.VsTCPSocket)
	}
	fmt.Fprintf(tw, "fixed overhead (until P handled it)\t%.1f us\traw get + AM round trip\t%.1f us\t%.2f\n", r.FixedOverheadUs, r.RawFixedOverheadUs, r.FixedVsRaw)
	tw.Flush()
	fmt.Fprintf(out, "D memory check: %d byte mismatches, %d untouched violations\n", r.ByteMismatches, r.Untouched)
}

// plotTransfer draws the bandwidth rows of a run.
func plotTransfer(path string, r *xferResult) error {
	label := fmt.Sprintf("%s %d tok tp%d->%d", r.Model, r.Tokens, r.PrefillTP, r.DecodeTP)
	series := []plotSeries{
		{Name: "transfer", Values: []float64{r.GBps}},
		{Name: "ucx one-sided", Values: []float64{r.OneSidedGBps}},
		{Name: "raw ucx", Values: []float64{r.RawGBps}},
		{Name: "memcpy", Values: []float64{r.MemcpyGBps}},
		{Name: "limit", Values: []float64{r.LimitGBps}},
	}
	if r.TCPSocketGBps > 0 {
		series = append(series, plotSeries{Name: "tcp socket", Values: []float64{r.TCPSocketGBps}})
	}
	return plotBars(path, "bench transfer", "GB/s", []string{label}, series)
}

// benchRank is one hosted decode rank of `bench transfer`: its memory and
// the P ranks it reads from.
type benchRank struct {
	Rank    int
	Local   *statexfer.Local
	Remotes map[int]*statexfer.Remote
}

// benchDecode runs the decode side of `bench transfer` for every hosted
// rank, through the decode session (the serving path: session.RunPlan
// runs Load's per-rank path on plans made once). Every iteration runs,
// one after the other, the transfer on the mapped path, the transfer on
// UCX's own gets, raw gets of the same reads, memcpy of the same ranges
// from the same source, the limit copy (and under UCX_TLS=tcp one loopback
// TCP stream of the same bytes); the medians over iterations are reported.
func benchDecode(ctx context.Context, j *verify.Job, spec workerSpec, dec *verify.Decode, echoes <-chan string) (*xferResult, error) {
	iters := max(1, spec.Iterations)
	res := &xferResult{Model: j.Cfg.Model.Name, PrefillTP: j.Cfg.P.TP, DecodeTP: j.Cfg.D.TP,
		Mode: j.Cfg.Mode.String(), Requests: j.Requests(), Iterations: iters}
	for q := 0; q < j.Requests(); q++ {
		r := j.Request(q)
		res.Tokens += j.PromptLen(q)
		res.Positions += r.Tokens - r.DHit
	}
	res.Tokens /= j.Requests()
	res.Positions /= j.Requests()
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
	// Auto mode prices reads as the serving decode session does: by the
	// path the peers report (statexfer.CostFor).
	var rems []*statexfer.Remote
	for _, br := range ranks {
		for _, r := range br.Remotes {
			rems = append(rems, r)
		}
	}
	j.Planner.Cost = statexfer.CostFor(j.Planner.Cost, rems)
	// Plans (timed, each plan once: cold caches included).
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
	parallel := func(f func(i int, dr *benchRank) error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make([]error, len(ranks))
		t0 := time.Now()
		for i, dr := range ranks {
			wg.Go(func() { errs[i] = f(i, dr) })
		}
		wg.Wait()
		return time.Since(t0), errors.Join(errs...)
	}
	var statsMu sync.Mutex
	var post, stage, steps time.Duration
	// run moves every plan of rank i through the session; the transfer row
	// records the post, stage and post-step times (the one-sided row runs
	// the same plans and is not counted: the figures are per transfer).
	run := func(i int, dr *benchRank, record bool) error {
		for q, p := range plans[i] {
			st, err := dec.Session.RunPlan(ctx, dec.Peer, dr.Rank, j.ReqID(q), j.Grant(q), p)
			if err != nil {
				return err
			}
			if record {
				statsMu.Lock()
				post, stage, steps = post+st.Post, stage+st.Stage, steps+st.Steps
				statsMu.Unlock()
			}
		}
		return nil
	}
	transfer := func(i int, dr *benchRank) error { return run(i, dr, true) }
	ucxs := make([]*ucx.Transport, 0, len(ranks))
	for _, dr := range ranks {
		if t, ok := dec.Session.Transport(dr.Rank).(*ucx.Transport); ok {
			ucxs = append(ucxs, t)
		}
	}
	setMapped := func(on bool) {
		for _, t := range ucxs {
			t.SetMapped(on)
		}
	}
	oneSided := func(i int, dr *benchRank) error { return run(i, dr, false) }
	src := newBenchSources(dec, spec.Ranks[0])
	defer src.close()
	memcpy := func(i int, dr *benchRank) error { return src.memcpy(dr, plans[i]) }
	raw := func(i int, dr *benchRank) error {
		for _, p := range plans[i] {
			if err := rawReads(dr.Local, dr.Remotes, p); err != nil {
				return fmt.Errorf("raw UCX baseline: %w", err)
			}
		}
		return nil
	}
	spans, err := src.limitSpans(ranks, plans)
	if err != nil {
		return nil, err
	}
	res.MemcpySource = src.kind(ranks)
	moved := res.Bytes * int64(j.Requests())
	tcp := strings.Contains(os.Getenv("UCX_TLS"), "tcp")
	rows := []struct {
		name string
		run  func() (time.Duration, error)
	}{
		{"transfer", func() (time.Duration, error) { return parallel(transfer) }},
		{"one-sided", func() (time.Duration, error) {
			setMapped(false)
			defer setMapped(true)
			return parallel(oneSided)
		}},
		{"raw", func() (time.Duration, error) { return parallel(raw) }},
		{"memcpy", func() (time.Duration, error) { return parallel(memcpy) }},
		{"limit", func() (time.Duration, error) { return baseline.LimitSpans(spans.dst, spans.src, 0), nil }},
		{"tcp", func() (time.Duration, error) {
			if !tcp {
				return 0, nil
			}
			return baseline.TCPStream(moved, 1<<20)
		}},
	}
	res.HandshakeMs = float64(dec.Handshake.Microseconds()) / 1e3
	samples := map[string][]float64{}
	var oneSidedPaths, transferPaths map[string]int
	for it := -1; it < iters; it++ { // iteration -1 warms up: page faults, wireup
		if it == 0 {
			post, stage, steps = 0, 0, 0
		}
		for _, row := range rows {
			before := ucxPathCounts(ucxs)
			el, err := row.run()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", row.name, err)
			}
			switch row.name {
			case "one-sided":
				oneSidedPaths = diffPaths(ucxPathCounts(ucxs), before)
			case "transfer":
				transferPaths = diffPaths(ucxPathCounts(ucxs), before)
			}
			if it >= 0 && el > 0 {
				samples[row.name] = append(samples[row.name], baseline.GBps(moved, el))
			}
			if it < 0 && row.name == "transfer" && el > 0 {
				res.FirstGBps = baseline.GBps(moved, el)
			}
		}
	}
	k := n * float64(iters)
	res.PostUs, res.StageUs, res.StepsUs = float64(post.Microseconds())/k, float64(stage.Microseconds())/k, float64(steps.Microseconds())/k
	if perRank := float64(res.Reads) / float64(len(ranks)); perRank > 0 {
		res.PlanNsPerRead = res.PlanUs * 1e3 / perRank
		res.PostNsPerRead = res.PostUs * 1e3 / perRank
	}
	res.GBps = baseline.Median(samples["transfer"])
	res.OneSidedGBps = baseline.Median(samples["one-sided"])
	res.OneSidedPath = joinPaths(oneSidedPaths)
	res.RawGBps = baseline.Median(samples["raw"])
	res.MemcpyGBps = baseline.Median(samples["memcpy"])
	res.LimitGBps = baseline.Median(samples["limit"])
	res.TCPSocketGBps = baseline.Median(samples["tcp"])
	// The baselines overwrote D's memory (the limit copy whole regions):
	// prepare it afresh, move the real state once more and check it.
	for _, dr := range ranks {
		if err := j.PrepareD(dr.Rank, dr.Local.Mem); err != nil {
			return nil, err
		}
	}
	if _, err := parallel(transfer); err != nil {
		return nil, err
	}
	vr := &verify.Result{}
	for _, dr := range ranks {
		if err := j.CheckD(dr.Rank, dr.Local.Mem, vr); err != nil {
			return nil, err
		}
	}
	res.ByteMismatches, res.Untouched = vr.ByteMismatches, vr.UntouchedViolations
	if err := fixedOverhead(ctx, j, dec, ranks[0], echoes, res); err != nil {
		return nil, fmt.Errorf("fixed overhead: %w", err)
	}
	res.Paths = transferPaths
	res.Path = joinPaths(transferPaths)
	res.ratios()
	return res, nil
}

// ratios fills the ratio fields (0 where a baseline is missing).
func (r *xferResult) ratios() {
	r.VsLimit, r.VsMemcpy = ratio(r.GBps, r.LimitGBps), ratio(r.GBps, r.MemcpyGBps)
	r.OneSidedVsRaw = ratio(r.OneSidedGBps, r.RawGBps)
	r.FixedVsRaw = ratio(r.FixedOverheadUs, r.RawFixedOverheadUs)
	r.VsTCPSocket = ratio(r.GBps, r.TCPSocketGBps)
}

// ucxPathCounts counts the transports' completed batches per UCX path.
func ucxPathCounts(ts []*ucx.Transport) map[string]int {
	out := map[string]int{}
	for _, t := range ts {
		for p, n := range t.Stats().Batches {
			if n > 0 {
				out[p.String()] += int(n)
			}
		}
	}
	return out
}

func diffPaths(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for p, n := range after {
		if d := n - before[p]; d > 0 {
			out[p] = d
		}
	}
	return out
}

func joinPaths(paths map[string]int) string {
	var names []string
	for p, n := range paths {
		if n > 0 {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	return strings.Join(names, "+")
}

// benchSources gives the baselines the bytes the transfer reads: P's
// regions as mapped into this process (the same pages the mapped path
// copies from), or, when a region is not mapped (tcp only, other hosts),
// a local mirror of its size, and says which.
type benchSources struct {
	tr      transport.Transport
	mirrors map[*statexfer.Remote]map[plan.Region][]byte
	mems    []transport.Memory
	mirror  bool
}

func newBenchSources(dec *verify.Decode, rank int) *benchSources {
	return &benchSources{tr: dec.Session.Transport(rank), mirrors: map[*statexfer.Remote]map[plan.Region][]byte{}}
}

func (s *benchSources) close() {
	for _, m := range s.mems {
		m.Close()
	}
}

// source returns the bytes of P's region r as imported by rem.
func (s *benchSources) source(rem *statexfer.Remote, r plan.Region) ([]byte, error) {
	if u, ok := rem.Region(r).(*ucx.Remote); ok {
		if b := u.MappedBytes(); b != nil {
			return b, nil
		}
	}
	if b := s.mirrors[rem][r]; b != nil {
		return b, nil
	}
	n := rem.Meta.Region(r).Len
	m, err := s.tr.Alloc(int(n), transport.HostMemory) // transport memory, like the transfer's; pages touched by Alloc
	if err != nil {
		return nil, fmt.Errorf("memcpy baseline: mirror of %d bytes: %w", n, err)
	}
	s.mems = append(s.mems, m)
	if s.mirrors[rem] == nil {
		s.mirrors[rem] = map[plan.Region][]byte{}
	}
	s.mirrors[rem][r] = m.Bytes()
	s.mirror = true
	return m.Bytes(), nil
}

// kind says where the memcpy and limit baselines read from.
func (s *benchSources) kind([]*benchRank) string {
	if s.mirror {
		return "local-mirror"
	}
	return "prefill-mapped"
}

// memcpy copies a rank's plans' ranges with one copy() per read, like a
// single-threaded memcpy per decode rank (the transfer's parallelism).
func (s *benchSources) memcpy(dr *benchRank, plans []*plan.Plan) error {
	for _, p := range plans {
		for _, rp := range p.Remotes {
			var src, dst []byte
			for k, rd := range rp.Reads {
				if k == 0 || rd.Remote != rp.Reads[k-1].Remote || rd.Local != rp.Reads[k-1].Local {
					var err error
					if src, err = s.source(dr.Remotes[rp.Rank], rd.Remote); err != nil {
						return err
					}
					dst = dr.Local.Mem.Region(rd.Local)
				}
				copy(dst[rd.LocalOff:rd.LocalOff+rd.Len], src[rd.RemoteOff:rd.RemoteOff+rd.Len])
			}
		}
	}
	return nil
}

// copySpans are the contiguous copies of the limit baseline.
type copySpans struct{ dst, src [][]byte }

// limitSpans returns, per decode rank, as many bytes as its plans move,
// in contiguous spans from the start of the region pairs its reads use,
// from the same sources (baseline.LimitSpans copies them).
func (s *benchSources) limitSpans(ranks []*benchRank, plans [][]*plan.Plan) (copySpans, error) {
	var out copySpans
	for i, dr := range ranks {
		for _, p := range plans[i] {
			for _, rp := range p.Remotes {
				want := rp.Bytes
				seen := map[[2]plan.Region]bool{}
				for _, rd := range rp.Reads {
					pair := [2]plan.Region{rd.Local, rd.Remote}
					if want <= 0 {
						break
					}
					if seen[pair] {
						continue
					}
					seen[pair] = true
					src, err := s.source(dr.Remotes[rp.Rank], rd.Remote)
					if err != nil {
						return out, err
					}
					dst := dr.Local.Mem.Region(rd.Local)
					n := min(int64(len(dst)), int64(len(src)), want)
					out.dst, out.src = append(out.dst, dst[:n]), append(out.src, src[:n])
					want -= n
				}
				if want > 0 {
					return out, fmt.Errorf("limit baseline: %d bytes of prefill rank %d do not fit its regions", want, rp.Rank)
				}
			}
		}
	}
	return out, nil
}

// rawReads posts a plan's reads as raw UCX gets on the bare endpoints (never
// the mapped copy), one raw batch per (local region, remote region) pair.
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
			if _, err := peer.RawRead(local, remote, ranges, false); err != nil {
				return err
			}
			a = b
		}
	}
	return nil
}

// fixedOverhead measures a one-block request (the plan, one read, the
// read-completion notification, until P's session has handled it and its
// echo is back) against a raw get of the same block plus an active-message
// round trip, on warm peers, in alternating rounds; medians are reported.
func fixedOverhead(ctx context.Context, j *verify.Job, dec *verify.Decode, dr *benchRank, echoes <-chan string, res *xferResult) error {
	const iters = 300
	drank := dr.Rank
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
			Reads: []plan.Read{{Remote: plan.LayerRegion(&pl), RemoteOff: pl.PageOffset(1), Local: plan.LayerRegion(&lg), LocalOff: lg.PageOffset(1), Len: n}}}}}
	}
	rem := dr.Remotes[pr]
	if err := rem.Peer.Notify(append(bytes.Clone(echoPing), dec.Session.Transport(drank).Address()...)); err != nil {
		return err
	}
	request := func(id string) error {
		if _, err := dec.Session.RunPlan(ctx, dec.Peer, drank, id, 1, one()); err != nil {
			return err
		}
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-echoes:
				if got == id {
					return nil
				}
			case <-timeout:
				return fmt.Errorf("no echo of %s from prefill rank %d within 10 s", id, pr)
			}
		}
	}
	for i := 0; i < 20; i++ { // warm-up (and P's endpoint back to D)
		if err := request(fmt.Sprintf("%swarm-%d", fixedPrefix, i)); err != nil {
			return err
		}
	}
	local := dr.Local.Regions[plan.LayerRegion(&lg)].(*ucx.Memory)
	remote := rem.Region(plan.LayerRegion(&pl)).(*ucx.Remote)
	var ours, raws []float64
	for round := 0; round < 7; round++ {
		t0 := time.Now()
		for i := 0; i < iters; i++ {
			if err := request(fmt.Sprintf("%s%d-%d", fixedPrefix, round, i)); err != nil {
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
	res.FixedOverheadUs, res.RawFixedOverheadUs = baseline.Median(ours), baseline.Median(raws)
	return nil
}
