package hma

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Found by proptest.CheckServing: a load into a sliding-window group starts
// at the first live position, so the block holding it was filled only from
// there on. Caching it let a later request hit positions nobody wrote.
func TestRegressionPartiallyLoadedWindowBlockNotCached(t *testing.T) {
	sw := GroupSpec{Kind: groups.SlidingWindow, BlockSize: 4, Window: 8}
	a := mustNew(t, Config{Groups: []GroupSpec{sw}, Pools: []PoolSpec{{NumBlocks: 16}}, EnableCaching: true})
	// 9 loaded tokens: window 8 skips positions 0 and 1 of block 0.
	ok(t, a.AddRequest("d", toks(10, 0), 0))
	ok(t, a.Allocate("d", AllocSpec{External: 9}))
	bt := table(t, a, "d", 0)
	ok(t, a.LoadDone("d"))
	if a.Block(0, bt[0]).Cached {
		t.Fatal("block 0 (positions 0, 1 never loaded) was cached")
	}
	if !a.Block(0, bt[1]).Cached {
		t.Fatal("fully loaded block 1 not cached")
	}
	inv(t, a)
	// A request sharing the first 4 tokens gets no hit on block 0.
	ok(t, a.AddRequest("e", toks(6, 0), 0))
	hit, err := a.LookupPrefix("e")
	ok(t, err)
	if hit.Tokens != 0 {
		t.Fatalf("hit of %d tokens on a partially loaded block", hit.Tokens)
	}
}

// Found by proptest.CheckServing once loads reported failed blocks
// precisely: a sliding-window group's load starts at the first live
// position, so a block before it holds positions nobody wrote. A restart
// inside the window of such positions recomputed from garbage.
func TestRegressionRestartNotOnUnloadedWindowPositions(t *testing.T) {
	sw := GroupSpec{Kind: groups.SlidingWindow, BlockSize: 3, Window: 5}
	a := mustNew(t, Config{Groups: []GroupSpec{sw}, Pools: []PoolSpec{{NumBlocks: 16}}, EnableCaching: true})
	// 6 loaded tokens: window 5 skips positions 0 and 1 of block 0, which
	// the load never writes; block 1 (positions 3-5) fails.
	ok(t, a.AddRequest("d", toks(7, 0), 0))
	ok(t, a.Allocate("d", AllocSpec{External: 6}))
	bt := table(t, a, "d", 0)
	lf, err := a.LoadFailed("d", []BlockRef{{Group: 0, Block: bt[1]}}, PolicyRecompute)
	ok(t, err)
	// Restarting at 3 would attend to positions 0 and 1 (window [0, 3]).
	if lf.Restart != 0 {
		t.Fatalf("restart at %d: positions 0 and 1 of block 0 were never loaded", lf.Restart)
	}
	inv(t, a)
}

// Found by proptest's HMA state machine: the rule above refused every
// restart whose window starts inside the skipped positions, also one that
// needs none of them. Window 1 attends to the restart position only: with
// full attention valid on [0, 4), a load of 5 tokens whose block 4 failed
// restarts at 4, not at 0.
func TestRegressionRestartNeedingNoWindowPositions(t *testing.T) {
	sw := GroupSpec{Kind: groups.SlidingWindow, BlockSize: 2, Window: 1}
	full := GroupSpec{Kind: groups.FullAttention, BlockSize: 1}
	a := mustNew(t, Config{Groups: []GroupSpec{sw, full}, Pools: []PoolSpec{{NumBlocks: 16}}})
	ok(t, a.AddRequest("d", toks(32, 0), 0))
	ok(t, a.Allocate("d", AllocSpec{External: 5}))
	bt := table(t, a, "d", 1)
	lf, err := a.LoadFailed("d", []BlockRef{{Group: 1, Block: bt[4]}}, PolicyRecompute)
	ok(t, err)
	if lf.Restart != 4 {
		t.Fatalf("restart at %d, want 4: positions [0, 4) of the full group are valid and window 1 needs nothing before 4", lf.Restart)
	}
	inv(t, a)
}
