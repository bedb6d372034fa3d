package hma

import (
	"slices"

	"github.com/hybridxfer/hybridxfer/groups"
)

// RequestInfo is a snapshot of a request's token counters.
type RequestInfo struct {
	NumTokens int  // known tokens (prompt + appended)
	Computed  int  // tokens whose state is in the blocks
	Pending   int  // external tokens being loaded
	Scheduled int  // computed + tokens allocated for the current step
	Allocated bool // the first allocation happened
	Held      bool
}

// Request returns the counters of a live request.
func (a *Allocator) Request(id ReqID) (RequestInfo, error) {
	r := a.reqs[id]
	if r == nil {
		return RequestInfo{}, unknownErr(id)
	}
	return RequestInfo{
		NumTokens: len(r.tokens),
		Computed:  r.computed,
		Pending:   r.pending,
		Scheduled: r.scheduled,
		Allocated: r.allocated,
		Held:      r.held,
	}, nil
}

// NumComputedTokens returns the request's computed tokens (as vLLM's
// num_computed_tokens: prefix hits included, external tokens once arrived).
func (a *Allocator) NumComputedTokens(id ReqID) (int, error) {
	r := a.reqs[id]
	if r == nil {
		return 0, unknownErr(id)
	}
	return r.computed, nil
}

// Requests returns the ids of the live requests (running and held), sorted.
func (a *Allocator) Requests() []ReqID {
	out := make([]ReqID, 0, len(a.reqs))
	for id := range a.reqs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (a *Allocator) groupOf(id ReqID, g int) (*reqGroup, error) {
	r := a.reqs[id]
	if r == nil {
		return nil, unknownErr(id)
	}
	if g < 0 || g >= len(a.cfg.Groups) {
		return nil, argErr("no group %d", g)
	}
	return &r.groups[g], nil
}

// BlockTable returns group g's block table of a request: one block id per
// position, 0 for null placeholders. Scratch blocks are not in it.
func (a *Allocator) BlockTable(id ReqID, g int) ([]int, error) {
	rg, err := a.groupOf(id, g)
	if err != nil {
		return nil, err
	}
	return toInts(rg.table), nil
}

// ScratchBlocks returns the speculative scratch blocks of a recurrent group.
func (a *Allocator) ScratchBlocks(id ReqID, g int) ([]int, error) {
	rg, err := a.groupOf(id, g)
	if err != nil {
		return nil, err
	}
	return toInts(rg.scratch), nil
}

// StateBlock returns the block of recurrent group g that holds (or, being
// computed, receives) the request's state after n tokens: in RecurrentNone
// the request's one state block, in RecurrentAlign and RecurrentAll the
// block at index (n-1)/BlockSize. It is 0 for n == 0 and for an index the
// table does not hold or holds null (a state that was not kept).
func (a *Allocator) StateBlock(id ReqID, g, n int) (int, error) {
	rg, err := a.groupOf(id, g)
	if err != nil {
		return 0, err
	}
	gs := &a.cfg.Groups[g]
	if gs.Kind != groups.Recurrent {
		return 0, argErr("group %d is %v, not recurrent", g, gs.Kind)
	}
	if n < 1 {
		return 0, nil
	}
	i := a.stateIndex(g, n)
	if i >= len(rg.table) {
		return 0, nil
	}
	return int(rg.table[i]), nil
}

// stateIndex is the table index of recurrent group g that holds the state
// after n >= 1 tokens.
func (a *Allocator) stateIndex(g, n int) int {
	if a.cfg.RecurrentMode == RecurrentNone {
		return 0
	}
	return (n - 1) / a.cfg.Groups[g].BlockSize
}

func toInts(s []int32) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = int(v)
	}
	return out
}

// TransferBlocks returns, per group, the blocks holding the state of the
// request's computed tokens, in position order: never a null id, never a
// scratch block, never a lookahead slot past the computed tokens; sliding
// window and chunked local only their live blocks; recurrent groups exactly
// the running state slot. A request with no computed tokens has none; a
// request still waiting for external tokens has no consistent state to
// transfer (ErrBadState).
func (a *Allocator) TransferBlocks(id ReqID) ([][]int, error) {
	r := a.reqs[id]
	if r == nil {
		return nil, unknownErr(id)
	}
	if r.pending > 0 {
		return nil, stateErr(id, "waiting for %d external tokens", r.pending)
	}
	out := make([][]int, len(a.cfg.Groups))
	for g := range a.cfg.Groups {
		out[g] = a.transferGroup(r, g)
	}
	return out, nil
}

func (a *Allocator) transferGroup(r *request, g int) []int {
	gs := &a.cfg.Groups[g]
	rg := &r.groups[g]
	n := r.computed
	if n == 0 {
		return []int{}
	}
	if gs.Kind == groups.Recurrent {
		return []int{int(rg.table[a.stateIndex(g, n)])}
	}
	hi := min(cdiv(n, gs.BlockSize), len(rg.table))
	out := make([]int, 0, max(0, hi-rg.lowLive))
	for i := rg.lowLive; i < hi; i++ {
		if id := rg.table[i]; id != 0 {
			out = append(out, int(id))
		}
	}
	return out
}

// Stats is a snapshot of the allocator's counters.
type Stats struct {
	Pools    []PoolStats  // per pool
	Groups   []GroupStats // per group
	Requests int          // live requests, running and held
	Holds    int          // held requests
	Leases   LeaseStats
}

// PoolStats counts the blocks of one pool, the null block excluded:
// Free + Used == NumBlocks.
type PoolStats struct {
	NumBlocks int // usable blocks (PoolSpec.NumBlocks - 1)
	Free      int // in the free queue (including prefix-cached ones)
	Used      int // referenced by a request
	Cached    int // in the prefix cache, free or used
	Held      int // referenced by a held request
}

// GroupStats counts the blocks a group owns.
type GroupStats struct {
	Used   int // referenced blocks of the group
	Cached int // prefix-cached blocks of the group, free or used
	Held   int // blocks referenced by held requests
}

// Stats returns pool, group and lease counters. It costs O(blocks + table
// entries of held requests).
func (a *Allocator) Stats() Stats {
	s := Stats{
		Pools:    make([]PoolStats, len(a.pools)),
		Groups:   make([]GroupStats, len(a.cfg.Groups)),
		Requests: len(a.reqs),
		Holds:    len(a.holds),
		Leases:   a.leases,
	}
	for i, p := range a.pools {
		ps := &s.Pools[i]
		ps.NumBlocks = len(p.blocks) - 1
		ps.Free = p.numFree
		for id := 1; id < len(p.blocks); id++ {
			b := &p.blocks[id]
			if b.ref > 0 {
				ps.Used++
				s.Groups[b.owner].Used++
			}
			if b.hashed {
				ps.Cached++
				s.Groups[b.owner].Cached++
			}
		}
	}
	seen := make([]map[int32]bool, len(a.pools))
	for i := range seen {
		seen[i] = make(map[int32]bool)
	}
	for _, r := range a.holds {
		for g := range r.groups {
			pi := a.cfg.Groups[g].Pool
			rg := &r.groups[g]
			for _, ids := range [][]int32{rg.table, rg.scratch} {
				for _, id := range ids {
					if id != 0 && !seen[pi][id] {
						seen[pi][id] = true
						s.Pools[pi].Held++
						s.Groups[g].Held++
					}
				}
			}
		}
	}
	return s
}

// NumFree returns the free blocks of pool i (cheap).
func (a *Allocator) NumFree(pool int) int { return a.pools[pool].numFree }

// Evict drops the prefix-cache entries of the given blocks (after a failed
// load, for instance). Blocks that are not cached, or not of that group, are
// skipped. It returns the number of entries dropped.
func (a *Allocator) Evict(refs []BlockRef) int {
	n := 0
	for _, f := range refs {
		if f.Group < 0 || f.Group >= len(a.cfg.Groups) {
			continue
		}
		p := a.gpool[f.Group]
		if f.Block <= 0 || f.Block >= len(p.blocks) {
			continue
		}
		b := &p.blocks[f.Block]
		if b.hashed && b.owner == int32(f.Group) {
			p.dropHash(int32(f.Block))
			n++
		}
	}
	return n
}

// ResetPrefixCache drops every prefix-cache entry. It needs every block free.
func (a *Allocator) ResetPrefixCache() error {
	for i, p := range a.pools {
		if p.numFree != len(p.blocks)-1 {
			return errorf(ErrInUse, "pool %d has %d blocks in use", i, len(p.blocks)-1-p.numFree)
		}
	}
	for _, p := range a.pools {
		for id := range p.blocks {
			if p.blocks[id].hashed {
				p.dropHash(int32(id))
			}
		}
	}
	return nil
}

// BlockInfo describes one block of a pool.
type BlockInfo struct {
	Ref    int       // references from table and scratch slots
	Group  int       // owning group, -1 if none (fresh and free)
	Cached bool      // in the prefix cache
	Hash   BlockHash // valid when Cached
	Free   bool      // in the free queue
}

// Block returns the state of block id of pool i (for views and tests).
func (a *Allocator) Block(i, id int) BlockInfo {
	b := &a.pools[i].blocks[id]
	return BlockInfo{Ref: int(b.ref), Group: int(b.owner), Cached: b.hashed, Hash: b.hash, Free: b.inFree}
}

// FreeOrder returns pool i's free queue in the order blocks will be reused.
func (a *Allocator) FreeOrder(i int) []int {
	p := a.pools[i]
	out := make([]int, 0, p.numFree)
	for id := p.head; id != noLink; id = p.blocks[id].next {
		out = append(out, int(id))
	}
	return out
}
