package hma

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
)

// InvariantError describes a broken allocator invariant.
type InvariantError struct{ Msg string }

func (e *InvariantError) Error() string { return "hma: invariant violated: " + e.Msg }

func broken(format string, args ...any) error {
	return &InvariantError{Msg: fmt.Sprintf(format, args...)}
}

// CheckInvariants verifies the allocator invariants (DESIGN section 9) in
// O(blocks + table entries):
//   - the null block 0 is never referenced, queued, cached or owned;
//   - the free queue is a well-linked list holding exactly the non-null blocks
//     with ref 0, and its length is the free count;
//   - every ref count equals the number of table and scratch slots holding
//     the block, a block appears once per request, and all its references
//     come from one group, its owner;
//   - the prefix cache maps (hash, group) to blocks that carry that hash and
//     belong to that group; a cached block at table position i carries the
//     request's hash of block i for the group; cached blocks are full blocks
//     of known tokens (drafts never cached); scratch blocks are never cached;
//   - tables hold null only below the live region; skipped positions are
//     null; tables cover the scheduled tokens; recurrent groups hold one state
//     block (none), at most two (align), scratch blocks per the config;
//   - holds are exactly the held requests, with notified < consumers.
//
// After all requests end, it follows that every block is free.
func (a *Allocator) CheckInvariants() error {
	for pi, p := range a.pools {
		if err := a.checkPool(pi, p); err != nil {
			return err
		}
	}
	refs := make([][]int32, len(a.pools))
	stamp := make([][]int32, len(a.pools))
	for i, p := range a.pools {
		refs[i] = make([]int32, len(p.blocks))
		stamp[i] = make([]int32, len(p.blocks))
	}
	var seq int32
	for id, r := range a.reqs {
		seq++
		if err := a.checkRequest(r, refs, stamp, seq); err != nil {
			return fmt.Errorf("request %q: %w", id, err)
		}
		if r.held != (a.holds[id] == r) {
			return broken("request %q: held=%v but hold table disagrees", id, r.held)
		}
	}
	if len(a.holds) > len(a.reqs) {
		return broken("%d holds for %d requests", len(a.holds), len(a.reqs))
	}
	for pi, p := range a.pools {
		for id := 1; id < len(p.blocks); id++ {
			if p.blocks[id].ref != refs[pi][id] {
				return broken("pool %d block %d: ref %d, referenced %d times", pi, id, p.blocks[id].ref, refs[pi][id])
			}
		}
	}
	return nil
}

func (a *Allocator) checkPool(pi int, p *pool) error {
	z := &p.blocks[0]
	if z.ref != 0 || z.inFree || z.hashed || z.owner != noGroup || z.prev != noLink || z.next != noLink {
		return broken("pool %d: null block touched: %+v", pi, *z)
	}
	n := 0
	prev := noLink
	for id := p.head; id != noLink; id = p.blocks[id].next {
		if id <= 0 || int(id) >= len(p.blocks) {
			return broken("pool %d: free list holds id %d", pi, id)
		}
		n++
		if n > len(p.blocks) {
			return broken("pool %d: free list cycle", pi)
		}
		b := &p.blocks[id]
		if !b.inFree || b.ref != 0 || b.prev != prev {
			return broken("pool %d: free block %d: inFree=%v ref=%d prev=%d want %d", pi, id, b.inFree, b.ref, b.prev, prev)
		}
		prev = id
	}
	if prev != p.tail || n != p.numFree {
		return broken("pool %d: free list length %d tail %d, numFree %d tail %d", pi, n, prev, p.numFree, p.tail)
	}
	hashed := 0
	for id := 1; id < len(p.blocks); id++ {
		b := &p.blocks[id]
		if b.ref < 0 {
			return broken("pool %d block %d: ref %d", pi, id, b.ref)
		}
		if (b.ref == 0) != b.inFree {
			return broken("pool %d block %d: ref %d inFree %v", pi, id, b.ref, b.inFree)
		}
		if b.ref > 0 && b.owner == noGroup {
			return broken("pool %d block %d: used without owner", pi, id)
		}
		if b.owner != noGroup && (b.owner < 0 || int(b.owner) >= len(a.cfg.Groups) || a.cfg.Groups[b.owner].Pool != pi) {
			return broken("pool %d block %d: owner %d not of this pool", pi, id, b.owner)
		}
		if b.hashed {
			hashed++
			if p.cache[cacheKey{b.hash, b.owner}] != int32(id) {
				return broken("pool %d block %d: hashed but not the cache entry of its key", pi, id)
			}
		} else if b.ref == 0 && b.owner != noGroup {
			return broken("pool %d block %d: free, unhashed, owned by %d", pi, id, b.owner)
		}
	}
	if hashed != len(p.cache) {
		return broken("pool %d: %d hashed blocks, %d cache entries", pi, hashed, len(p.cache))
	}
	return nil
}

func (a *Allocator) checkRequest(r *request, refs, stamp [][]int32, seq int32) error {
	if r.computed < 0 || r.pending < 0 || r.computed > r.scheduled || r.scheduled > len(r.tokens) ||
		r.computed+r.pending > len(r.tokens) || (r.pending > 0 && r.scheduled != r.computed+r.pending) {
		return broken("counters computed=%d pending=%d scheduled=%d tokens=%d", r.computed, r.pending, r.scheduled, len(r.tokens))
	}
	if r.held && (r.lease.consumers < 1 || r.lease.notified >= r.lease.consumers || r.pending > 0) {
		return broken("bad hold %+v pending=%d", r.lease, r.pending)
	}
	if !r.allocated && (r.computed != 0 || r.scheduled != 0) {
		return broken("unallocated with computed=%d", r.computed)
	}
	for g := range a.cfg.Groups {
		gs := &a.cfg.Groups[g]
		rg := &r.groups[g]
		pi := gs.Pool
		p := a.pools[pi]
		for _, id := range rg.scratch {
			if id <= 0 || int(id) >= len(p.blocks) || p.blocks[id].hashed {
				return broken("group %d: bad scratch block %d", g, id)
			}
		}
		for _, list := range [][]int32{rg.table, rg.scratch} {
			for _, id := range list {
				if id == 0 {
					continue
				}
				if id < 0 || int(id) >= len(p.blocks) {
					return broken("group %d: block id %d out of range", g, id)
				}
				if stamp[pi][id] == seq {
					return broken("group %d: block %d twice in one request", g, id)
				}
				stamp[pi][id] = seq
				refs[pi][id]++
				if p.blocks[id].owner != int32(g) {
					return broken("group %d: block %d owned by group %d", g, id, p.blocks[id].owner)
				}
			}
		}
		if !r.allocated {
			if len(rg.table) != 0 || len(rg.scratch) != 0 {
				return broken("group %d: blocks before the first allocation", g)
			}
			continue
		}
		recurrent := gs.Kind == groups.Recurrent
		wantScratch := 0
		if recurrent {
			wantScratch = a.cfg.NumSpeculativeTokens
		}
		if len(rg.scratch) != wantScratch {
			return broken("group %d: %d scratch blocks, want %d", g, len(rg.scratch), wantScratch)
		}
		for i, id := range rg.table {
			if id == 0 {
				continue
			}
			if i < rg.lowLive {
				return broken("group %d: block %d at %d below live region %d", g, id, i, rg.lowLive)
			}
			b := &p.blocks[id]
			if b.hashed {
				if (i+1)*gs.BlockSize > len(r.tokens) || recurrent && a.cfg.RecurrentMode == RecurrentNone {
					return broken("group %d: cached block %d at position %d beyond known tokens", g, id, i)
				}
				if b.hash != a.hashAt(r, a.gclass[g], i) {
					return broken("group %d: block %d at %d carries another position's hash", g, id, i)
				}
			}
		}
		switch {
		case recurrent && a.cfg.RecurrentMode == RecurrentNone:
			if len(rg.table) != 1 || rg.table[0] == 0 {
				return broken("group %d: recurrent table %v, want one state block", g, rg.table)
			}
		case recurrent && a.cfg.RecurrentMode == RecurrentAlign:
			live := 0
			for _, id := range rg.table {
				if id != 0 {
					live++
				}
			}
			if len(rg.table) == 0 || rg.table[len(rg.table)-1] == 0 || live > 2 {
				return broken("group %d: align table %v", g, rg.table)
			}
			if len(rg.table) < cdiv(r.scheduled, gs.BlockSize) {
				return broken("group %d: table %d short of %d scheduled tokens", g, len(rg.table), r.scheduled)
			}
			if r.computed > 0 && r.pending == 0 && rg.table[(r.computed-1)/gs.BlockSize] == 0 {
				return broken("group %d: no state block for %d computed tokens", g, r.computed)
			}
		default:
			for i := rg.lowLive; i < len(rg.table); i++ {
				if rg.table[i] == 0 {
					return broken("group %d: null at live position %d", g, i)
				}
			}
			if len(rg.table) < cdiv(r.scheduled, gs.BlockSize) {
				return broken("group %d: table %d short of %d scheduled tokens", g, len(rg.table), r.scheduled)
			}
			if !recurrent && rg.lowLive < gs.SkippedTokens(r.computed)/gs.BlockSize && rg.lowLive < len(rg.table) {
				return broken("group %d: skipped positions below %d still live (live from %d)", g,
					gs.SkippedTokens(r.computed)/gs.BlockSize, rg.lowLive)
			}
		}
	}
	return nil
}
