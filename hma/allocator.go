package hma

import (
	"slices"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/specdec"
)

// ReqID identifies a request.
type ReqID string

// Time is a caller-supplied monotonic instant (nanoseconds or any unit the
// caller uses consistently). The allocator never reads a clock.
type Time int64

// Allocator is the hybrid memory allocator of one engine: the pools, one
// manager per group and the coordinator over them, and the transfer holds.
// It is not safe for concurrent use; it never blocks, logs or reads a clock.
type Allocator struct {
	cfg   Config
	align int // lcm of block sizes taking part in prefix hits

	pools  []*pool
	gpool  []*pool // pool of each group
	gclass []int   // hash class (distinct block size) of each group
	cbs    []int   // block size of each hash class

	hasRecurrent bool
	reqs         map[ReqID]*request
	holds        map[ReqID]*request
	leases       LeaseStats
}

// request is the allocator's view of one request.
type request struct {
	id     ReqID
	tokens []uint32
	extra  uint64
	hashes [][]BlockHash // per hash class, the chain of the full blocks hashed so far

	computed  int  // tokens whose state is in the blocks
	pending   int  // external tokens being loaded after computed
	scheduled int  // computed + tokens of the current step (commit bound)
	allocated bool // first allocation done
	held      bool
	lease     hold

	groups []reqGroup
}

type reqGroup struct {
	table      []int32 // block per position, 0 for a null placeholder
	scratch    []int32 // speculative scratch blocks (recurrent groups)
	cachedUpTo int     // positions below have been considered for caching
	lowLive    int     // positions below are null
}

// New validates cfg and returns an allocator with every block free.
func New(cfg Config) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Groups = slices.Clone(cfg.Groups)
	cfg.Pools = slices.Clone(cfg.Pools)
	a := &Allocator{
		cfg:   cfg,
		reqs:  make(map[ReqID]*request),
		holds: make(map[ReqID]*request),
	}
	a.align, _ = cfg.alignment()
	for _, p := range cfg.Pools {
		a.pools = append(a.pools, newPool(p.NumBlocks))
	}
	for _, g := range cfg.Groups {
		a.gpool = append(a.gpool, a.pools[g.Pool])
		c := slices.Index(a.cbs, g.BlockSize)
		if c < 0 {
			c = len(a.cbs)
			a.cbs = append(a.cbs, g.BlockSize)
		}
		a.gclass = append(a.gclass, c)
		if g.Kind == groups.Recurrent {
			a.hasRecurrent = true
		}
	}
	return a, nil
}

// Config returns a copy of the configuration.
func (a *Allocator) Config() Config {
	c := a.cfg
	c.Groups = slices.Clone(c.Groups)
	c.Pools = slices.Clone(c.Pools)
	return c
}

// AddRequest registers a request with its known tokens (the prompt) and an
// extra key mixed into every block hash (LoRA id, cache salt; 0 for none).
// It allocates nothing.
func (a *Allocator) AddRequest(id ReqID, tokens []uint32, extraKey uint64) error {
	if _, ok := a.reqs[id]; ok {
		return errorf(ErrDuplicateRequest, "%q", id)
	}
	if len(tokens) == 0 {
		return argErr("request %q has no tokens", id)
	}
	r := &request{
		id:     id,
		tokens: slices.Clone(tokens),
		extra:  extraKey,
		hashes: make([][]BlockHash, len(a.cbs)),
		groups: make([]reqGroup, len(a.cfg.Groups)),
	}
	a.reqs[id] = r
	return nil
}

// AppendTokens appends known tokens (sampled outputs) to a running request.
func (a *Allocator) AppendTokens(id ReqID, tokens ...uint32) error {
	r, err := a.running(id)
	if err != nil {
		return err
	}
	r.tokens = append(r.tokens, tokens...)
	return nil
}

func (a *Allocator) running(id ReqID) (*request, error) {
	r := a.reqs[id]
	if r == nil {
		return nil, unknownErr(id)
	}
	if r.held {
		return nil, stateErr(id, "held for transfer")
	}
	return r, nil
}

// hashAt returns the hash of block i of class c; i < len(tokens)/bs.
func (a *Allocator) hashAt(r *request, c, i int) BlockHash {
	hs := r.hashes[c]
	if i < len(hs) {
		return hs[i]
	}
	bs := a.cbs[c]
	parent := RootHash
	if len(hs) > 0 {
		parent = hs[len(hs)-1]
	}
	for j := len(hs); j <= i; j++ {
		parent = HashBlock(parent, bs, r.extra, r.tokens[j*bs:(j+1)*bs])
		hs = append(hs, parent)
	}
	r.hashes[c] = hs
	return parent
}

// AllocSpec is one allocation for a request, in vLLM's token layout
// [computed | Prefix | External | New | Lookahead].
type AllocSpec struct {
	// Prefix is a local prefix-cache hit in tokens, as returned by
	// LookupPrefix. First allocation only.
	Prefix int
	// External is the number of tokens another instance will supply (P/D).
	// First allocation only, with New == 0. The request then waits for
	// LoadDone or LoadFailed; its blocks are cached when the tokens arrive.
	External int
	// New is the number of tokens this step computes.
	New int
	// Lookahead reserves slots for speculative tokens in attention groups.
	// It is ignored by recurrent groups (they use scratch blocks) and on a
	// first allocation with External > 0: D reserves exactly what P sends.
	Lookahead int
}

// Allocate reserves the blocks for spec, all or nothing: on error nothing
// changed. Prefix-hit blocks are referenced, skipped positions become null
// placeholders, and fresh blocks come from the head of the free queue.
// computed+Prefix+External+New must not exceed the known tokens (draft
// tokens go in Lookahead, so they are never cached). In a model with
// recurrent groups the previous step must be committed first.
func (a *Allocator) Allocate(id ReqID, s AllocSpec) error {
	r, err := a.running(id)
	if err != nil {
		return err
	}
	if r.pending > 0 {
		return stateErr(id, "waiting for %d external tokens", r.pending)
	}
	if s.Prefix < 0 || s.External < 0 || s.New < 0 || s.Lookahead < 0 {
		return argErr("negative count in %+v", s)
	}
	first := !r.allocated
	if !first && (s.Prefix > 0 || s.External > 0) {
		return argErr("prefix hits and external tokens are for the first allocation only")
	}
	if s.External > 0 && s.New > 0 {
		return argErr("external tokens and new tokens in one allocation")
	}
	if s.New == 0 && s.External == 0 {
		return argErr("nothing to allocate")
	}
	if a.hasRecurrent && r.scheduled > r.computed {
		return stateErr(id, "uncommitted step (recurrent state covers whole steps)")
	}
	total := r.computed + s.Prefix + s.External
	main := total + s.New
	if main > len(r.tokens) {
		return argErr("%d tokens exceed the %d known tokens", main, len(r.tokens))
	}
	look := s.Lookahead
	if first && s.External > 0 {
		look = 0
	}
	if s.Prefix > 0 {
		if err := a.checkPrefix(r, s.Prefix); err != nil {
			return err
		}
	}
	// Count what each pool must give.
	var need [8]int
	needs := need[:0]
	if len(a.pools) > len(need) {
		needs = make([]int, 0, len(a.pools))
	}
	needs = needs[:len(a.pools)]
	for g := range a.cfg.Groups {
		fresh, evictable := a.plan(r, g, first, s.Prefix, total, main, main+look, false)
		needs[a.cfg.Groups[g].Pool] += fresh + evictable
	}
	for i, n := range needs {
		if n > a.pools[i].numFree {
			return &NoSpaceError{Pool: i, Need: n, Free: a.pools[i].numFree}
		}
	}
	// Hits first for every group (so fresh allocations cannot evict them),
	// then fresh blocks.
	if first {
		for g := range a.cfg.Groups {
			a.placeHits(r, g, s.Prefix, total)
		}
	}
	for g := range a.cfg.Groups {
		a.plan(r, g, first, s.Prefix, total, main, main+look, true)
	}
	r.allocated = true
	r.computed += s.Prefix
	r.pending = s.External
	r.scheduled = main
	return nil
}

// hitRange is the range of block positions of group g a prefix hit of L
// tokens uses: [lo, hi). It is empty for L == 0.
func (a *Allocator) hitRange(g, L int) (lo, hi int) {
	if L == 0 {
		return 0, 0
	}
	gs := &a.cfg.Groups[g]
	hi = L / gs.BlockSize
	lo = gs.SkippedTokens(L) / gs.BlockSize
	return lo, hi + specdec.ExtraHitBlocks(gs.Eagle)
}

// placeholders is the number of leading null positions of group g on a first
// allocation whose computed prefix (hits + external) is total tokens.
func (a *Allocator) placeholders(g, total int) int {
	gs := &a.cfg.Groups[g]
	if gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentNone {
		return 0
	}
	return gs.SkippedTokens(total) / gs.BlockSize
}

// placeHits appends group g's null placeholders and prefix-hit blocks on a
// first allocation, referencing the hits.
func (a *Allocator) placeHits(r *request, g, L, total int) {
	gs := &a.cfg.Groups[g]
	rg := &r.groups[g]
	p := a.gpool[g]
	ph := a.placeholders(g, total)
	nb := 0
	if L > 0 {
		nb = L / gs.BlockSize
	}
	n := max(ph, nb)
	if cap(rg.table) < n {
		rg.table = make([]int32, 0, n+4)
	}
	rg.table = rg.table[:n]
	c := a.gclass[g]
	for i := 0; i < n; i++ {
		rg.table[i] = 0
		if i >= ph && i < nb {
			id := p.lookup(a.hashAt(r, c, i), int32(g))
			p.touch(id)
			rg.table[i] = id
		}
	}
	rg.lowLive = ph
}

// plan counts (do == false) or performs (do == true) the fresh allocations of
// group g: it returns the fresh blocks needed and, on a first allocation, the
// prefix-hit blocks that sit in the free queue (touching them uses free
// capacity). With do, placeHits has already run.
func (a *Allocator) plan(r *request, g int, first bool, L, total, main, slots int, do bool) (fresh, evictable int) {
	gs := &a.cfg.Groups[g]
	rg := &r.groups[g]
	p := a.gpool[g]
	scratch := 0
	if first && gs.Kind == groups.Recurrent {
		scratch = a.cfg.NumSpeculativeTokens
	}
	if first && !do && L > 0 {
		ph := a.placeholders(g, total)
		c := a.gclass[g]
		for i := ph; i < L/gs.BlockSize; i++ {
			id := p.lookup(a.hashAt(r, c, i), int32(g))
			if p.blocks[id].ref == 0 {
				evictable++
			}
		}
	}
	have := len(rg.table)
	if first && !do && L > 0 {
		have = max(a.placeholders(g, total), L/gs.BlockSize)
	} else if first && !do {
		have = a.placeholders(g, total)
	}
	switch {
	case gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentNone:
		if first {
			fresh = 1
			if do {
				rg.table = append(rg.table[:0], p.alloc(int32(g)))
			}
		}
	case gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentAlign:
		// One running state block, at the position of the step's last
		// token; the positions in between stay null.
		sIdx := (main - 1) / gs.BlockSize
		if sIdx >= have {
			fresh = 1
			if do {
				rg.table = growNull(rg.table, sIdx+1)
				rg.table[sIdx] = p.alloc(int32(g))
			}
		}
	default:
		if gs.Kind == groups.Recurrent {
			slots = main
		}
		if need := cdiv(slots, gs.BlockSize); need > have {
			fresh = need - have
			if do {
				for i := have; i < need; i++ {
					rg.table = append(rg.table, p.alloc(int32(g)))
				}
			}
		}
	}
	if do {
		for i := 0; i < scratch; i++ {
			rg.scratch = append(rg.scratch, p.alloc(int32(g)))
		}
	}
	return fresh + scratch, evictable
}

func growNull(t []int32, n int) []int32 {
	for len(t) < n {
		t = append(t, 0)
	}
	return t
}

// Commit marks n more scheduled tokens computed: full blocks are cached and
// blocks whose positions are now skipped return to the pool. In a model with
// recurrent groups a step is committed whole (n equals the tokens allocated
// by the last Allocate).
func (a *Allocator) Commit(id ReqID, n int) error {
	r, err := a.running(id)
	if err != nil {
		return err
	}
	if r.pending > 0 {
		return stateErr(id, "waiting for %d external tokens", r.pending)
	}
	out := r.scheduled - r.computed
	if n < 1 || n > out {
		return argErr("commit %d tokens, %d scheduled", n, out)
	}
	if a.hasRecurrent && n != out {
		return argErr("commit %d of %d tokens: recurrent state covers the whole step", n, out)
	}
	r.computed += n
	a.settle(r, nil)
	return nil
}

// settle caches the full blocks of the computed tokens (except blocks in
// bad) and removes the blocks of skipped positions.
func (a *Allocator) settle(r *request, bad func(g int, id int32) bool) {
	if a.cfg.EnableCaching {
		for g := range a.cfg.Groups {
			a.cacheGroup(r, g, bad)
		}
	}
	for g := range a.cfg.Groups {
		a.removeSkipped(r, g)
	}
}

func (a *Allocator) cacheGroup(r *request, g int, bad func(g int, id int32) bool) {
	gs := &a.cfg.Groups[g]
	rg := &r.groups[g]
	if gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentNone {
		return
	}
	bs := gs.BlockSize
	nFull := min(r.computed, len(r.tokens)) / bs
	nFull = min(nFull, len(rg.table))
	if nFull <= rg.cachedUpTo {
		return
	}
	p := a.gpool[g]
	c := a.gclass[g]
	lo := rg.cachedUpTo
	if gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentAlign {
		// Only a state a step ended on exactly is materialized.
		lo = nFull
		if r.computed%bs == 0 && r.computed <= len(r.tokens) {
			lo = nFull - 1
		}
	}
	for i := lo; i < nFull; i++ {
		id := rg.table[i]
		if id == 0 || (bad != nil && bad(g, id)) {
			continue
		}
		p.cacheBlock(id, a.hashAt(r, c, i), int32(g))
	}
	rg.cachedUpTo = nFull
}

func (a *Allocator) removeSkipped(r *request, g int) {
	gs := &a.cfg.Groups[g]
	rg := &r.groups[g]
	if gs.Kind == groups.Recurrent && a.cfg.RecurrentMode != RecurrentAlign {
		return
	}
	s := min(gs.SkippedTokens(r.computed)/gs.BlockSize, len(rg.table))
	if s <= rg.lowLive {
		return
	}
	p := a.gpool[g]
	for i := s - 1; i >= rg.lowLive; i-- {
		if id := rg.table[i]; id != 0 {
			p.release(id)
			rg.table[i] = 0
		}
	}
	rg.lowLive = s
}

// Free ends a running request (finished or preempted without a transfer
// hold) and returns its blocks, each group's in reverse order.
func (a *Allocator) Free(id ReqID) error {
	r, err := a.running(id)
	if err != nil {
		return err
	}
	a.freeBlocks(r)
	delete(a.reqs, id)
	return nil
}

func (a *Allocator) freeBlocks(r *request) {
	for g := range r.groups {
		rg := &r.groups[g]
		p := a.gpool[g]
		for i := len(rg.scratch) - 1; i >= 0; i-- {
			p.release(rg.scratch[i])
		}
		for i := len(rg.table) - 1; i >= rg.lowLive; i-- {
			if id := rg.table[i]; id != 0 {
				p.release(id)
			}
		}
		*rg = reqGroup{}
	}
}
