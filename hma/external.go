package hma

import (
	"github.com/hybridxfer/hybridxfer/groups"
)

// BlockRef names a block of a group (ids are per pool; the group names the pool).
type BlockRef struct {
	Group int
	Block int
}

// FailurePolicy says what LoadFailed does with the request.
//
//go:generate go tool stringer -type=FailurePolicy -linecomment
type FailurePolicy uint8

const (
	// PolicyFail ends the request: its failed blocks lose their hashes and
	// all its blocks return to the pool.
	PolicyFail FailurePolicy = iota // fail
	// PolicyRecompute keeps the request and its valid prefix; it continues
	// from LoadFailure.Restart.
	PolicyRecompute // recompute
)

// LoadFailure reports a failed load.
type LoadFailure struct {
	// FirstBad is, per group, the first token whose state is lost (the
	// request's token count when the group lost nothing). A recurrent group
	// that lost its state reports 0.
	FirstBad []int
	// Restart is the position the request continues from: the largest
	// position, among 0, the loaded length and the groups' block boundaries,
	// at which every group holds a consistent valid state. With
	// PolicyRecompute the request's computed tokens become Restart; at 0 all
	// its blocks are returned and its next allocation is a first one.
	Restart int
	// Ended is true when the request was removed (PolicyFail).
	Ended bool
}

// LoadDone marks the external tokens of a request arrived: they become
// computed, their full blocks are cached and skipped blocks are returned.
func (a *Allocator) LoadDone(id ReqID) error {
	r, err := a.running(id)
	if err != nil {
		return err
	}
	if r.pending == 0 {
		return stateErr(id, "no external tokens pending")
	}
	r.computed += r.pending
	r.pending = 0
	r.scheduled = r.computed
	a.settle(r, a.partialLoads(r, r.computed))
	return nil
}

// partialLoads returns the blocks a load of total tokens filled only in
// part: in a sliding window or chunked local group, the block holding the
// first live position when that position is not a block boundary. Its
// earlier positions were skipped by the sender, so its contents do not
// match its token hash and it must never be cached (a later request hitting
// it would read positions nobody wrote).
func (a *Allocator) partialLoads(r *request, total int) func(g int, id int32) bool {
	var bad map[[2]int32]bool
	for g := range a.cfg.Groups {
		gs := &a.cfg.Groups[g]
		if !gs.Kind.Windowed() {
			continue
		}
		sk := gs.SkippedTokens(total)
		if sk%gs.BlockSize == 0 {
			continue
		}
		t := r.groups[g].table
		if i := sk / gs.BlockSize; i < len(t) && t[i] != 0 {
			if bad == nil {
				bad = map[[2]int32]bool{}
			}
			bad[[2]int32{int32(g), t[i]}] = true
		}
	}
	if bad == nil {
		return nil
	}
	return func(g int, id int32) bool { return bad[[2]int32{int32(g), id}] }
}

// LoadFailed reports that the loads of some blocks of a request waiting for
// external tokens failed. Each block must be a non-null, not prefix-cached
// table block of the request (scratch blocks are never loaded). Failed blocks
// lose any prefix-cache hash and are never cached with the loaded contents.
func (a *Allocator) LoadFailed(id ReqID, failed []BlockRef, policy FailurePolicy) (LoadFailure, error) {
	r, err := a.running(id)
	if err != nil {
		return LoadFailure{}, err
	}
	if r.pending == 0 {
		return LoadFailure{}, stateErr(id, "no external tokens pending")
	}
	if policy != PolicyFail && policy != PolicyRecompute {
		return LoadFailure{}, argErr("unknown policy %d", policy)
	}
	pos := make([]map[int32]int, len(a.cfg.Groups)) // failed block -> position
	for _, f := range failed {
		if f.Group < 0 || f.Group >= len(a.cfg.Groups) || f.Block <= 0 {
			return LoadFailure{}, errorf(ErrForeignBlock, "request %q: %+v", id, f)
		}
		rg := &r.groups[f.Group]
		i := -1
		for j := rg.lowLive; j < len(rg.table); j++ {
			if int(rg.table[j]) == f.Block {
				i = j
				break
			}
		}
		if i < 0 || a.gpool[f.Group].blocks[f.Block].hashed {
			return LoadFailure{}, errorf(ErrForeignBlock, "request %q: %+v is not a block it loads", id, f)
		}
		if pos[f.Group] == nil {
			pos[f.Group] = make(map[int32]int)
		}
		pos[f.Group][int32(f.Block)] = i
	}
	total := r.computed + r.pending
	res := LoadFailure{FirstBad: make([]int, len(a.cfg.Groups))}
	for g := range a.cfg.Groups {
		gs := &a.cfg.Groups[g]
		res.FirstBad[g] = total
		for _, i := range pos[g] {
			t := i * gs.BlockSize
			if gs.Kind == groups.Recurrent {
				t = 0
			}
			res.FirstBad[g] = min(res.FirstBad[g], t)
		}
	}
	bad := func(g int, id int32) bool { _, ok := pos[g][id]; return ok }
	res.Restart = a.restartPoint(r, total, bad)
	for g := range a.cfg.Groups {
		for id := range pos[g] {
			if a.gpool[g].blocks[id].hashed {
				a.gpool[g].dropHash(id)
			}
		}
	}
	if policy == PolicyFail {
		res.Ended = true
		a.release(r)
		return res, nil
	}
	r.pending = 0
	if res.Restart == 0 {
		a.freeBlocks(r)
		r.computed, r.scheduled, r.allocated = 0, 0, false
		return res, nil
	}
	r.computed = res.Restart
	r.scheduled = res.Restart
	a.settle(r, bad)
	return res, nil
}

// restartPoint is the largest candidate position p <= total (total, or a
// block boundary of an attention group) at which every group has a
// consistent valid state, or 0. Recurrent groups hold only the state after
// all loaded tokens, so with one of them only total can qualify.
func (a *Allocator) restartPoint(r *request, total int, bad func(g int, id int32) bool) int {
	// inv[g][i]: invalid (null or failed) positions among [0, i).
	inv := make([][]int, len(a.cfg.Groups))
	recurrent := false
	for g := range a.cfg.Groups {
		gs := &a.cfg.Groups[g]
		rg := &r.groups[g]
		if gs.Kind == groups.Recurrent {
			recurrent = true
			i := a.stateIndex(g, total)
			if i >= len(rg.table) || rg.table[i] == 0 || bad(g, rg.table[i]) {
				return 0
			}
			continue
		}
		m := make([]int, len(rg.table)+1)
		for i, id := range rg.table {
			m[i+1] = m[i]
			if id == 0 || bad(g, id) {
				m[i+1]++
			}
		}
		inv[g] = m
	}
	// nulls[g][i]: null positions among [0, i) (a recompute writes the
	// positions after a restart into the request's own blocks: they must
	// exist, failed or not).
	nulls := make([][]int, len(a.cfg.Groups))
	for g := range a.cfg.Groups {
		if a.cfg.Groups[g].Kind == groups.Recurrent {
			continue
		}
		t := r.groups[g].table
		m := make([]int, len(t)+1)
		for i, id := range t {
			m[i+1] = m[i]
			if id == 0 {
				m[i+1]++
			}
		}
		nulls[g] = m
	}
	validAt := func(p int) bool {
		for g := range a.cfg.Groups {
			gs := &a.cfg.Groups[g]
			if gs.Kind == groups.Recurrent {
				continue
			}
			need := gs.SkippedTokens(p)
			lo := need / gs.BlockSize
			hi := cdiv(p, gs.BlockSize)
			if hi >= len(inv[g]) || inv[g][hi] != inv[g][lo] {
				return false
			}
			// The load skipped the positions [computed, SkippedTokens(total))
			// (not live at total): a restart that needs any of them (it
			// needs [need, p)) finds them unwritten, also inside a block
			// that is not null.
			if max(need, r.computed) < min(p, gs.SkippedTokens(total)) {
				return false
			}
			end := min(cdiv(total, gs.BlockSize), len(nulls[g])-1)
			if p < total && nulls[g][end] != nulls[g][p/gs.BlockSize] {
				return false
			}
		}
		return true
	}
	if validAt(total) {
		return total
	}
	if recurrent {
		return 0
	}
	best := 0
	for g := range a.cfg.Groups {
		bs := a.cfg.Groups[g].BlockSize
		for p := total / bs * bs; p > best; p -= bs {
			if validAt(p) {
				best = p
				break
			}
		}
	}
	return best
}
