package hma

import "github.com/hybridxfer/hybridxfer/groups"

// PrefixHit is the result of LookupPrefix.
type PrefixHit struct {
	// Tokens is the hit length: the longest length every group accepts, a
	// multiple of Alignment(), at most the request's tokens - 1.
	Tokens int
	// Blocks holds, per group, the block per position the hit would place in
	// the table (0 for null placeholders). It is a snapshot: pass Tokens to
	// Allocate, which references the blocks.
	Blocks [][]int
}

// accepts reports whether group g can start a request at L cached tokens:
// every block of positions [lo, hi) of hitRange is in the prefix cache with
// the request's hash chain. Recurrent groups in RecurrentNone accept only 0.
func (a *Allocator) accepts(r *request, g, L int) bool {
	if L == 0 {
		return true
	}
	gs := &a.cfg.Groups[g]
	if gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentNone {
		return false
	}
	if L%gs.BlockSize != 0 {
		return false
	}
	lo, hi := a.hitRange(g, L)
	if hi*gs.BlockSize > len(r.tokens) {
		return false
	}
	p := a.gpool[g]
	c := a.gclass[g]
	for i := lo; i < hi; i++ {
		if p.lookup(a.hashAt(r, c, i), int32(g)) == 0 {
			return false
		}
	}
	return true
}

// checkPrefix validates an AllocSpec.Prefix of L > 0 tokens.
func (a *Allocator) checkPrefix(r *request, L int) error {
	if !a.cfg.EnableCaching {
		return argErr("prefix hit of %d tokens with caching disabled", L)
	}
	if L%a.align != 0 || L > len(r.tokens)-1 {
		return argErr("prefix hit of %d tokens: must be a multiple of %d and at most %d", L, a.align, len(r.tokens)-1)
	}
	for g := range a.cfg.Groups {
		if !a.accepts(r, g, L) {
			return errorf(ErrStalePrefix, "request %q, %d tokens, group %d", r.id, L, g)
		}
	}
	return nil
}

// LookupPrefix finds the hybrid prefix-cache hit of a request: the longest
// length L <= tokens-1, a multiple of the lcm of the groups' block sizes,
// that every group accepts. Full attention, MLA and indexer groups need every
// block before L cached, sliding-window and chunked-local groups the blocks
// still in their window or chunk at L, recurrent groups (align, all) the state
// block ending at L; a group with Eagle layers needs one block more (the hit
// drops its last block). It changes nothing.
func (a *Allocator) LookupPrefix(id ReqID) (PrefixHit, error) {
	r := a.reqs[id]
	if r == nil {
		return PrefixHit{}, unknownErr(id)
	}
	hit := PrefixHit{Blocks: make([][]int, len(a.cfg.Groups))}
	if a.cfg.EnableCaching {
		hit.Tokens = a.longestHit(r)
	}
	for g := range a.cfg.Groups {
		if hit.Tokens == 0 {
			continue
		}
		gs := &a.cfg.Groups[g]
		ph := a.placeholders(g, hit.Tokens)
		nb := hit.Tokens / gs.BlockSize
		row := make([]int, nb)
		for i := ph; i < nb; i++ {
			row[i] = int(a.gpool[g].lookup(a.hashAt(r, a.gclass[g], i), int32(g)))
		}
		hit.Blocks[g] = row
	}
	return hit, nil
}

// longestHit scans candidate lengths downwards. Per group it first records
// which positions are cached, so each length costs O(groups).
func (a *Allocator) longestHit(r *request) int {
	limit := len(r.tokens) - 1
	top := limit / a.align * a.align
	if top == 0 {
		return 0
	}
	// miss[g][i] = number of uncached positions among [0, i).
	miss := make([][]int, len(a.cfg.Groups))
	for g := range a.cfg.Groups {
		gs := &a.cfg.Groups[g]
		if gs.Kind == groups.Recurrent && a.cfg.RecurrentMode == RecurrentNone {
			return 0
		}
		n := min(len(r.tokens)/gs.BlockSize, top/gs.BlockSize+1)
		m := make([]int, n+1)
		p := a.gpool[g]
		c := a.gclass[g]
		for i := 0; i < n; i++ {
			m[i+1] = m[i]
			if p.lookup(a.hashAt(r, c, i), int32(g)) == 0 {
				m[i+1]++
			}
		}
		miss[g] = m
	}
	for L := top; L > 0; L -= a.align {
		ok := true
		for g := range a.cfg.Groups {
			lo, hi := a.hitRange(g, L)
			m := miss[g]
			if hi >= len(m) || m[hi] != m[lo] {
				ok = false
				break
			}
		}
		if ok {
			return L
		}
	}
	return 0
}
