package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
)

// ErrConfig is returned for unusable verify settings.
var ErrConfig = errors.New("verify: bad configuration")

// Config is one verification run.
type Config struct {
	Model        *groups.Model
	P, D         groups.InstanceConfig
	PromptTokens int    // requests have 1..PromptTokens prompt tokens
	Requests     int    // how many requests
	Seed         uint64 // block ids, lengths, prefix hits and contents
	Mode         plan.Mode
	// HitPercent is the share of requests with a prefix hit on D (default
	// 30; negative for none).
	HitPercent int
	// Exact gives every request exactly PromptTokens tokens (benchmarks).
	Exact bool
	// Executor runs a plan; nil means plan.Execute (in process) with
	// Memory's engine.
	Executor func(p *plan.Plan, pMem []*plan.RankMemory, dMem *plan.RankMemory) error
	// Memory is where both sides' memory lives and the engine that runs
	// the kernels (zero: host memory, the CPU engine). With HostStaging
	// every plan is staged: caches are not registered, state moves through
	// host staging buffers.
	Memory statexfer.MemoryConfig
	// Progress, when set, is called after each request is moved: once per
	// request and decode rank in Run, once per request in RunTransport
	// (progress bars; nil: nothing is called).
	Progress func()
}

// Result is what a run found.
type Result struct {
	Model      string `json:"model"`
	PrefillTP  int    `json:"prefill_tp"`
	DecodeTP   int    `json:"decode_tp"`
	Mode       string `json:"mode"`
	Requests   int    `json:"requests"`
	Tokens     int64  `json:"tokens"`
	BytesMoved int64  `json:"bytes_moved"`
	Reads      int    `json:"reads"`
	PostSteps  int    `json:"post_steps"`
	// ExpectedBytes is what D needed: every owned byte it did not already
	// hold. In direct mode BytesMoved must equal it (nothing read twice).
	ExpectedBytes int64 `json:"expected_bytes"`
	// NonMaximalReads counts pairs of direct-mode reads that could have
	// been one (contiguous on both sides): 0 means reads == maximal runs.
	NonMaximalReads     int   `json:"non_maximal_reads"`
	ByteMismatches      int64 `json:"byte_mismatches"`
	UntouchedViolations int64 `json:"untouched_violations"`
	DirectPlans         int   `json:"direct_plans"`
	StagedPlans         int   `json:"staged_plans"`
	// Transport names the transport that moved the bytes ("memory": plain
	// copies in process).
	Transport string `json:"transport"`
	// Paths counts the read batches per transport path (UCX: mapped,
	// one-sided, emulated).
	Paths map[string]int `json:"paths,omitempty"`
	// PrefillReleased counts requests whose P ranks all saw the expected
	// read-completion notifications (transport runs only).
	PrefillReleased int `json:"prefill_released,omitempty"`
	// FirstProblem describes the first mismatch or violation found.
	FirstProblem string `json:"first_problem,omitempty"`
	// PrefillBlockSize, DecodeBlockSize: attention block sizes after
	// page-size unification (first per-token group).
	PrefillBlockSize int `json:"prefill_block_size"`
	DecodeBlockSize  int `json:"decode_block_size"`
}

// OK reports whether D's memory is exactly right.
func (r *Result) OK() bool { return r.ByteMismatches == 0 && r.UntouchedViolations == 0 }

// request is one request's block ids on both sides.
type request struct {
	n, h, hit int
	seed      uint64
	pIDs      [][]int // as sent: per-token groups the live tail, recurrent one id
	dTab      [][]int // D's table (0 = null); recurrent one id
}

// Job is one verification's deterministic setup: geometry, requests with
// their block ids on both sides, pool sizes and the planner. Every process
// of a multi-process run builds the same Job from the same Config.
type Job struct {
	Cfg     Config
	PGeo    *groups.Geometry // rank 0
	DGeo    *groups.Geometry
	NumP    []int // blocks per pool
	NumD    []int
	PSide   *plan.Side
	DSide   *plan.Side
	Planner *plan.Planner
	reqs    []*request
}

// NewJob builds the job of cfg.
func NewJob(cfg Config) (*Job, error) {
	if cfg.Model == nil {
		return nil, fmt.Errorf("%w: no model", ErrConfig)
	}
	if cfg.Requests <= 0 || cfg.PromptTokens <= 0 {
		return nil, fmt.Errorf("%w: need requests > 0 and prompt tokens > 0", ErrConfig)
	}
	if cfg.HitPercent == 0 {
		cfg.HitPercent = 30
	}
	cfg.P, cfg.D = cfg.P.WithDefaults(), cfg.D.WithDefaults()
	pc, dc := cfg.P, cfg.D
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	// Geometry first (errors like an impossible tp surface here).
	pGeo, err := groups.NewGeometry(cfg.Model, pc, 0)
	if err != nil {
		return nil, fmt.Errorf("prefill: %w", err)
	}
	dGeo, err := groups.NewGeometry(cfg.Model, dc, 0)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	ng := len(pGeo.Groups)
	pAlloc := newAllocator(len(pGeo.Pools))
	dAlloc := newAllocator(len(dGeo.Pools))
	hitAlign := 1
	for _, g := range dGeo.Groups {
		if g.Kind != groups.Recurrent {
			hitAlign = lcm(hitAlign, g.BlockSize)
		}
	}
	reqs := make([]*request, cfg.Requests)
	for i := range reqs {
		n := 1 + rng.IntN(cfg.PromptTokens)
		if cfg.Exact {
			n = cfg.PromptTokens
		}
		r := &request{n: n, h: n - 1, seed: rng.Uint64(), pIDs: make([][]int, ng), dTab: make([][]int, ng)}
		if r.h >= hitAlign && rng.IntN(100) < cfg.HitPercent {
			r.hit = rng.IntN(r.h/hitAlign+1) * hitAlign
		}
		for g := 0; g < ng; g++ {
			pg, dg := &pGeo.Groups[g], &dGeo.Groups[g]
			if pg.Kind == groups.Recurrent {
				r.pIDs[g] = []int{pAlloc.take(pg.Pool, 1)[0]}
				r.dTab[g] = []int{dAlloc.take(dg.Pool, 1)[0]}
				continue
			}
			l := &cfg.Model.Layers[pg.Layers[0]]
			live := l.LiveStart(r.h)
			nP := ceilDiv(r.h, pg.BlockSize)
			r.pIDs[g] = pAlloc.take(pg.Pool, nP-live/pg.BlockSize)
			nD := ceilDiv(r.n, dg.BlockSize)
			first := live / dg.BlockSize
			tab := make([]int, nD)
			copy(tab[first:], dAlloc.take(dg.Pool, nD-first))
			r.dTab[g] = tab
		}
		reqs[i] = r
	}
	numP, permP := pAlloc.permute(rng)
	numD, permD := dAlloc.permute(rng)
	for _, r := range reqs {
		for g := 0; g < ng; g++ {
			remap(r.pIDs[g], permP[pGeo.Groups[g].Pool])
			remap(r.dTab[g], permD[dGeo.Groups[g].Pool])
		}
	}
	pSide, err := plan.NewSide(cfg.Model, pc, func(p int, _ *groups.Geometry) int { return numP[p] })
	if err != nil {
		return nil, fmt.Errorf("prefill: %w", err)
	}
	dSide, err := plan.NewSide(cfg.Model, dc, func(p int, _ *groups.Geometry) int { return numD[p] })
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	planner, err := plan.New(pSide, dSide)
	if err != nil {
		return nil, err
	}
	if cfg.Memory.HostStaging {
		planner.NoDirect = "host staging (verify --staging host)"
	}
	return &Job{Cfg: cfg, PGeo: pGeo, DGeo: dGeo, NumP: numP, NumD: numD, PSide: pSide, DSide: dSide, Planner: planner, reqs: reqs}, nil
}

// Requests is the number of requests.
func (j *Job) Requests() int { return len(j.reqs) }

// ReqID names request i.
func (j *Job) ReqID(i int) string { return fmt.Sprintf("req-%d", i) }

// NewResult returns a Result header for the job.
func (j *Job) NewResult() *Result {
	res := &Result{Model: j.Cfg.Model.Name, PrefillTP: j.Cfg.P.TP, DecodeTP: j.Cfg.D.TP, Mode: j.Cfg.Mode.String(), Requests: len(j.reqs)}
	res.PrefillBlockSize, res.DecodeBlockSize = attnBlock(j.PGeo), attnBlock(j.DGeo)
	for _, r := range j.reqs {
		res.Tokens += int64(r.h)
	}
	return res
}

// PlanRequest plans request i for decode rank d (with the job's mode).
func (j *Job) PlanRequest(d, i int) (*plan.Plan, error) {
	return j.Planner.Plan(d, j.reqs[i].planRequest(), j.Cfg.Mode)
}

// PromptLen is request i's prompt length in tokens (its transfer moves
// the state of the positions before the last one, minus D's prefix hit).
func (j *Job) PromptLen(i int) int { return j.reqs[i].n }

// Request is request i's transfer as D's scheduler describes it.
func (j *Job) Request(i int) *plan.Request { return j.reqs[i].planRequest() }

func (r *request) planRequest() *plan.Request {
	return &plan.Request{Tokens: r.h, PBlocks: r.pIDs, DBlocks: r.dTab, DHit: r.hit}
}

// FillP writes every request's pattern into P rank memory (device
// regions through a host shadow, plan.RankMemory.Shadow).
func (j *Job) FillP(rank int, m *plan.RankMemory) error {
	sh, err := m.Shadow()
	if err != nil {
		return err
	}
	for _, r := range j.reqs {
		fillP(j.PSide.Ranks[rank], sh, r)
	}
	return m.Store(sh)
}

// PrepareD fills D rank memory with the garbage stream and the pattern of
// the positions D already holds (prefix hits).
func (j *Job) PrepareD(rank int, m *plan.RankMemory) error {
	sh, err := m.Shadow()
	if err != nil {
		return err
	}
	garbage(sh, uint64(rank))
	for _, r := range j.reqs {
		fillHit(j.DSide.Ranks[rank], sh, r)
	}
	return m.Store(sh)
}

// CheckD checks D rank memory after every request arrived, adding to res.
func (j *Job) CheckD(rank int, m *plan.RankMemory, res *Result) error {
	sh, err := m.Shadow()
	if err != nil {
		return err
	}
	check(j.DSide.Ranks[rank], sh, j.reqs, uint64(rank), res)
	return nil
}

// Account adds one executed plan to res.
func (res *Result) Account(p *plan.Plan) {
	res.BytesMoved += p.Bytes()
	res.Reads += p.NumReads()
	res.PostSteps += len(p.Post)
	if p.Mode == plan.Direct {
		res.NonMaximalReads += NonMaximal(p)
	}
	if p.Mode == plan.Staged {
		res.StagedPlans++
	} else {
		res.DirectPlans++
	}
}

// Merge adds another rank's result (same job) into res.
func (res *Result) Merge(o *Result) {
	res.BytesMoved += o.BytesMoved
	res.Reads += o.Reads
	res.PostSteps += o.PostSteps
	res.NonMaximalReads += o.NonMaximalReads
	res.ExpectedBytes += o.ExpectedBytes
	res.ByteMismatches += o.ByteMismatches
	res.UntouchedViolations += o.UntouchedViolations
	if res.FirstProblem == "" {
		res.FirstProblem = o.FirstProblem
	}
	res.DirectPlans += o.DirectPlans
	res.StagedPlans += o.StagedPlans
	for k, v := range o.Paths {
		if res.Paths == nil {
			res.Paths = map[string]int{}
		}
		res.Paths[k] += v
	}
}

// Finish sets the mode summary.
func (res *Result) Finish() {
	if res.Mode == plan.Auto.String() {
		res.Mode = fmt.Sprintf("auto(direct=%d,staged=%d)", res.DirectPlans, res.StagedPlans)
	}
}

// Run performs one verification in process: plans executed by cfg.Executor
// (default plan.Execute) between Go byte slices.
func Run(cfg Config) (*Result, error) {
	j, err := NewJob(cfg)
	if err != nil {
		return nil, err
	}
	res := j.NewResult()
	res.Transport = "memory"
	pMem := make([]*plan.RankMemory, j.Cfg.P.TP)
	for rank, g := range j.PSide.Ranks {
		pMem[rank] = plan.NewRankMemory(g, j.NumP)
		if err := j.FillP(rank, pMem[rank]); err != nil {
			return nil, err
		}
	}
	exec := cfg.Executor
	if exec == nil {
		eng := cfg.Memory.Engine
		if eng == nil {
			eng = kernels.Default()
		}
		exec = func(p *plan.Plan, pMem []*plan.RankMemory, dMem *plan.RankMemory) error {
			return plan.Execute(eng, p, pMem, dMem)
		}
	}
	for rank, g := range j.DSide.Ranks {
		dMem := plan.NewRankMemory(g, j.NumD)
		if err := j.PrepareD(rank, dMem); err != nil {
			return nil, err
		}
		for i := range j.reqs {
			p, err := j.PlanRequest(rank, i)
			if err != nil {
				return nil, fmt.Errorf("plan for decode rank %d: %w", rank, err)
			}
			res.Account(p)
			if err := exec(p, pMem, dMem); err != nil {
				return nil, fmt.Errorf("execute for decode rank %d: %w", rank, err)
			}
			if cfg.Progress != nil {
				cfg.Progress()
			}
		}
		if err := j.CheckD(rank, dMem, res); err != nil {
			return nil, err
		}
	}
	res.Finish()
	return res, nil
}

func remap(ids []int, perm []int) {
	for i, id := range ids {
		ids[i] = perm[id] // perm[0] == 0 keeps nulls null
	}
}

func attnBlock(g *groups.Geometry) int {
	for _, gg := range g.Groups {
		if gg.Kind != groups.Recurrent {
			return gg.BlockSize
		}
	}
	return 0
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func lcm(a, b int) int { return a / gcd(a, b) * b }

// table returns group g's block lookup for a request on one side.
func pTable(g *groups.Geometry, gi int, r *request) oracle.Table {
	ids := r.pIDs[gi]
	if g.Groups[gi].Kind == groups.Recurrent {
		return func(int) int { return ids[0] }
	}
	first := ceilDiv(r.h, g.Groups[gi].BlockSize) - len(ids)
	return func(k int) int {
		if k < first || k-first >= len(ids) {
			return 0
		}
		return ids[k-first]
	}
}

func dTable(gi int, r *request) oracle.Table {
	tab := r.dTab[gi]
	return func(k int) int {
		if k < 0 || k >= len(tab) {
			return 0
		}
		return tab[k]
	}
}

func region(g *groups.Geometry, li int) plan.Region {
	l := g.Layer(li)
	return plan.LayerRegion(&l)
}

// fillP writes request r's pattern into P rank memory: every live position
// of per-token layers, the state of recurrent layers.
func fillP(g *groups.Geometry, m *plan.RankMemory, r *request) {
	if r.h == 0 {
		return
	}
	for li := range g.Model.Layers {
		l := &g.Model.Layers[li]
		buf := m.Region(region(g, li))
		oracle.Visit(g, li, pTable(g, g.LayerGroup[li], r), l.LiveStart(r.h), r.h, func(off int64, n int, c oracle.Coord) {
			oracle.Fill(buf[off:off+int64(n)], r.seed, c)
		})
	}
}

// fillHit writes the pattern of the positions D already holds (its prefix hit).
func fillHit(g *groups.Geometry, m *plan.RankMemory, r *request) {
	for li := range g.Model.Layers {
		l := &g.Model.Layers[li]
		if l.Kind == groups.Recurrent || r.hit == 0 {
			continue
		}
		buf := m.Region(region(g, li))
		oracle.Visit(g, li, dTable(g.LayerGroup[li], r), l.LiveStart(r.h), r.hit, func(off int64, n int, c oracle.Coord) {
			oracle.Fill(buf[off:off+int64(n)], r.seed, c)
		})
	}
}

// garbage fills every region of D with a deterministic stream that the
// check can recompute, so untouched bytes are verified without a snapshot.
func garbage(m *plan.RankMemory, rank uint64) {
	for p, slots := range m.Pools {
		for s, b := range slots {
			garbageFill(b, garbageSeed(rank, p, s))
		}
	}
}

func garbageSeed(rank uint64, pool, slot int) uint64 {
	return rank<<40 ^ uint64(pool)<<20 ^ uint64(slot) ^ 0xdeadbeef
}

func garbageWord(seed uint64, i int) uint64 {
	x := seed + uint64(i)*0x9e3779b97f4a7c15
	x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9
	return x ^ (x >> 29)
}

func garbageFill(b []byte, seed uint64) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], garbageWord(seed, i/8))
	}
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], garbageWord(seed, i/8))
	copy(b[i:], w[:])
}

// NonMaximal counts the reads of p that start exactly where another read
// of the same P rank and regions ends, on both sides: reads a perfect
// coalescer would have merged.
func NonMaximal(p *plan.Plan) int {
	type end struct {
		rank                int
		remote, local       plan.Region
		remoteOff, localOff int64
	}
	n := 0
	for _, rp := range p.Remotes {
		ends := make(map[end]bool, len(rp.Reads))
		for _, r := range rp.Reads {
			ends[end{rp.Rank, r.Remote, r.Local, r.RemoteOff + r.Len, r.LocalOff + r.Len}] = true
		}
		for _, r := range rp.Reads {
			if ends[end{rp.Rank, r.Remote, r.Local, r.RemoteOff, r.LocalOff}] {
				n++
			}
		}
	}
	return n
}

// span is a byte range [off, end) of a region that requests own.
type span struct{ off, end int64 }

// check compares D rank memory with the pattern (owned bytes) and the
// garbage stream (everything else).
func check(g *groups.Geometry, m *plan.RankMemory, reqs []*request, rank uint64, res *Result) {
	owned := make([][][]span, len(m.Pools))
	for p, slots := range m.Pools {
		owned[p] = make([][]span, len(slots))
	}
	problem := func(format string, a ...any) {
		if res.FirstProblem == "" {
			res.FirstProblem = fmt.Sprintf("decode rank %d: ", rank) + fmt.Sprintf(format, a...)
		}
	}
	want := make([]byte, 0, 1<<16)
	for _, r := range reqs {
		if r.h == 0 {
			continue
		}
		for li := range g.Model.Layers {
			l := &g.Model.Layers[li]
			reg := region(g, li)
			buf := m.Region(reg)
			spans := owned[reg.Pool][reg.Slot]
			oracle.Visit(g, li, dTable(g.LayerGroup[li], r), l.LiveStart(r.h), r.h, func(off int64, n int, c oracle.Coord) {
				got := buf[off : off+int64(n)]
				if i := oracle.Mismatch(got, r.seed, c); i >= 0 {
					want = want[:n]
					oracle.Fill(want, r.seed, c)
					bad := 0
					for j := range got {
						if got[j] != want[j] {
							bad++
						}
					}
					res.ByteMismatches += int64(bad)
					problem("layer %d (%s) %+v: %d of %d bytes wrong, first at byte %d", li, l.Name, c, bad, n, i)
				}
				if c.Part == oracle.PartConv || c.Part == oracle.PartState || c.Pos >= r.hit {
					res.ExpectedBytes += int64(n)
				}
				if k := len(spans) - 1; k >= 0 && spans[k].end == off {
					spans[k].end += int64(n)
				} else {
					spans = append(spans, span{off, off + int64(n)})
				}
			})
			owned[reg.Pool][reg.Slot] = spans
		}
	}
	for p, slots := range m.Pools {
		for s, b := range slots {
			spans := owned[p][s]
			sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
			seed := garbageSeed(rank, p, s)
			var at int64
			for _, sp := range append(spans, span{int64(len(b)), int64(len(b))}) {
				if sp.off > at {
					if o := garbageDiff(b, seed, at, sp.off); o >= 0 {
						n := countGarbageDiff(b, seed, at, sp.off)
						res.UntouchedViolations += n
						problem("pool %d region %d byte %d (block %d): %d bytes changed outside the requests' state", p, s, o, o/int64(g.Pools[p].BlockStride()), n)
					}
				}
				at = max(at, sp.end)
			}
		}
	}
}

// garbageDiff returns the first offset in [lo, hi) of b that differs from
// the garbage stream, or -1. It compares a word at a time.
func garbageDiff(b []byte, seed uint64, lo, hi int64) int64 {
	for o := lo; o < hi; {
		w := o / 8
		exp := garbageWord(seed, int(w))
		if o%8 == 0 && o+8 <= hi {
			if binary.LittleEndian.Uint64(b[o:]) != exp {
				for j := int64(0); j < 8; j++ {
					if b[o+j] != byte(exp>>(8*j)) {
						return o + j
					}
				}
			}
			o += 8
			continue
		}
		if b[o] != byte(exp>>(8*(o%8))) {
			return o
		}
		o++
	}
	return -1
}

func countGarbageDiff(b []byte, seed uint64, lo, hi int64) int64 {
	var n int64
	for o := lo; o < hi; o++ {
		if b[o] != byte(garbageWord(seed, int(o/8))>>(8*(o%8))) {
			n++
		}
	}
	return n
}

// allocator hands out block ids per pool. Ids are placeholders 1..n until
// permute maps them onto a shuffled order made of short runs of consecutive
// ids, so requests get scattered ids with some runs (exercising coalescing
// across blocks) and pools have spare blocks no request uses.
type allocator struct {
	next []int // per pool: placeholders handed out so far
}

func newAllocator(pools int) *allocator { return &allocator{next: make([]int, pools)} }

func (a *allocator) take(pool, n int) []int {
	out := make([]int, n)
	for i := range out {
		a.next[pool]++
		out[i] = a.next[pool]
	}
	return out
}

// permute fixes the pool sizes (used + null + 25% spare) and returns, per
// pool, the map from placeholder to block id.
func (a *allocator) permute(rng *rand.Rand) (numBlocks []int, perm [][]int) {
	numBlocks = make([]int, len(a.next))
	perm = make([][]int, len(a.next))
	for p, n := range a.next {
		numBlocks[p] = n + 1 + n/4
		var chunks [][]int
		for id := 1; id < numBlocks[p]; {
			l := min(1+rng.IntN(8), numBlocks[p]-id)
			c := make([]int, l)
			for i := range c {
				c[i] = id + i
			}
			chunks = append(chunks, c)
			id += l
		}
		rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
		perm[p] = []int{0}
		for _, c := range chunks {
			perm[p] = append(perm[p], c...)
		}
	}
	return numBlocks, perm
}
