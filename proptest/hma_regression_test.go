package proptest

import (
	"slices"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
)

func newAlloc(t *testing.T, cfg hma.Config) *hma.Allocator {
	t.Helper()
	a, err := hma.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func checkInv(t *testing.T, a *hma.Allocator) {
	t.Helper()
	if err := a.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func seq(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i*7 + 3)
	}
	return out
}

// vLLM #42547: on D, the first allocation of a transferred request with a
// recurrent (or sliding-window) group starts with null placeholders; they
// were counted as cached blocks, so caching returned early and the state
// block's hash was never stored (0% prefix hits with P/D). Here the blocks
// that arrive are cached when the load completes, and a second request with
// the same prompt hits.
func TestRegressionPrefixHashStoredDespiteNullPlaceholders(t *testing.T) {
	for _, mode := range []hma.RecurrentMode{hma.RecurrentAlign, hma.RecurrentAll} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := hma.Config{
				Groups: []hma.GroupSpec{
					{Kind: groups.FullAttention, BlockSize: 4},
					{Kind: groups.SlidingWindow, BlockSize: 4, Window: 5},
					{Kind: groups.Recurrent, BlockSize: 4},
				},
				Pools:         []hma.PoolSpec{{NumBlocks: 32}},
				RecurrentMode: mode,
				EnableCaching: true,
			}
			a := newAlloc(t, cfg)
			prompt := seq(17) // N = 17: P sends N-1 = 16 tokens
			must(t, a.AddRequest("d1", prompt, 0))
			must(t, a.Allocate("d1", hma.AllocSpec{External: 16}))
			for g := 1; g <= 2; g++ {
				bt, _ := a.BlockTable("d1", g)
				if bt[0] != 0 {
					t.Fatalf("group %d: expected leading null placeholders, table %v", g, bt)
				}
			}
			checkInv(t, a)
			must(t, a.LoadDone("d1"))
			checkInv(t, a)
			for g := range cfg.Groups {
				bt, _ := a.BlockTable("d1", g)
				last := bt[3]
				if last == 0 || !a.Block(0, last).Cached {
					t.Fatalf("group %d: block %d of the arrived tokens not cached (table %v)", g, last, bt)
				}
			}
			must(t, a.AddRequest("d2", prompt, 0))
			hit, err := a.LookupPrefix("d2")
			must(t, err)
			if hit.Tokens != 16 {
				t.Fatalf("second request hits %d tokens, want 16", hit.Tokens)
			}
			must(t, a.Allocate("d2", hma.AllocSpec{Prefix: hit.Tokens, New: 1}))
			checkInv(t, a)
		})
	}
}

// vLLM #58222 / #50789: the lease reaper walked holds in expiry order and
// stopped at the first unexpired one; a heartbeat extends a lease in place,
// so later-expiring entries behind it were never released. Here every hold
// is considered, every release happens exactly once, and late calls are
// ignored and counted.
func TestRegressionLeaseSweepScansEveryHold(t *testing.T) {
	cfg := hma.Config{
		Groups: []hma.GroupSpec{{Kind: groups.FullAttention, BlockSize: 2}, {Kind: groups.Recurrent, BlockSize: 2}},
		Pools:  []hma.PoolSpec{{NumBlocks: 64}},
	}
	a := newAlloc(t, cfg)
	free0 := a.NumFree(0)
	expiry := map[hma.ReqID]hma.Time{"a": 5, "b": 10, "c": 20, "d": 30}
	for _, id := range []hma.ReqID{"a", "b", "c", "d"} {
		must(t, a.AddRequest(id, seq(6), 0))
		must(t, a.Allocate(id, hma.AllocSpec{New: 6}))
		must(t, a.Commit(id, 6))
		must(t, a.Hold(id, expiry[id], 2))
	}
	// "a" expires first but is extended past everything else; a heartbeat
	// with an earlier time must not shorten it.
	if !a.Extend("a", 100) || !a.Extend("a", 7) {
		t.Fatal("extend of a held request ignored")
	}
	if h, _ := a.Holding("a"); h.Expiry != 100 {
		t.Fatalf("expiry %d, want 100", h.Expiry)
	}
	if got := a.Sweep(25); !slices.Equal(got, []hma.ReqID{"b", "c"}) {
		t.Fatalf("Sweep(25) released %v, want [b c]", got)
	}
	checkInv(t, a)
	if got := a.Sweep(25); len(got) != 0 {
		t.Fatalf("second Sweep(25) released %v", got)
	}
	if a.Notify("b") || a.Abort("c") || a.Extend("b", 50) {
		t.Fatal("late call on a released hold acted")
	}
	if a.Notify("d") {
		t.Fatal("first of two notifications released d")
	}
	if !a.Notify("d") {
		t.Fatal("second notification did not release d")
	}
	if got := a.Sweep(1000); !slices.Equal(got, []hma.ReqID{"a"}) {
		t.Fatalf("Sweep(1000) released %v, want [a]", got)
	}
	st := a.Stats()
	want := hma.LeaseStats{ReleasedNotified: 1, ReleasedExpired: 3, IgnoredExtend: 1, IgnoredNotify: 1, IgnoredAbort: 1}
	if st.Leases != want || st.Holds != 0 || st.Requests != 0 {
		t.Fatalf("stats %+v, want leases %+v and nothing live", st, want)
	}
	if a.NumFree(0) != free0 {
		t.Fatalf("%d blocks free after all releases, want %d", a.NumFree(0), free0)
	}
	checkInv(t, a)
}

// vLLM #50153 and the NIXL clipping rules: speculative scratch slots and
// null placeholders were reported as transfer blocks (garbage copied, D
// loading its state from P's scratch slot). Here the transfer view has no
// null id and no scratch block, sliding window only its live blocks (at
// most cdiv(W, bs)+1), recurrent exactly the state slot, and no lookahead
// slot past the computed tokens.
func TestRegressionTransferHasNoScratchOrNull(t *testing.T) {
	for _, mode := range []hma.RecurrentMode{hma.RecurrentNone, hma.RecurrentAlign, hma.RecurrentAll} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := hma.Config{
				Groups: []hma.GroupSpec{
					{Kind: groups.FullAttention, BlockSize: 4},
					{Kind: groups.SlidingWindow, BlockSize: 4, Window: 6},
					{Kind: groups.Recurrent, BlockSize: 4, Pool: 1},
				},
				Pools:                []hma.PoolSpec{{NumBlocks: 64}, {NumBlocks: 16}},
				RecurrentMode:        mode,
				NumSpeculativeTokens: 2,
				EnableCaching:        true,
			}
			a := newAlloc(t, cfg)
			must(t, a.AddRequest("p", seq(23), 0))
			for _, step := range []int{8, 8, 6} { // P computes N-1 = 22 tokens in chunks
				must(t, a.Allocate("p", hma.AllocSpec{New: step, Lookahead: 3}))
				must(t, a.Commit("p", step))
			}
			must(t, a.Hold("p", 100, 1))
			tb, err := a.TransferBlocks("p")
			must(t, err)
			for g := range cfg.Groups {
				bt, _ := a.BlockTable("p", g)
				sc, _ := a.ScratchBlocks("p", g)
				for _, b := range tb[g] {
					if b == 0 || slices.Contains(sc, b) || !slices.Contains(bt, b) {
						t.Fatalf("group %d transfers %v: block %d is null, scratch %v, or not in table %v", g, tb[g], b, sc, bt)
					}
				}
			}
			if len(tb[0]) != 6 { // cdiv(22, 4): no lookahead block
				t.Fatalf("full attention transfers %d blocks, want 6: %v", len(tb[0]), tb[0])
			}
			if lim := (6+3)/4 + 1; len(tb[1]) > lim || len(tb[1]) == 0 {
				t.Fatalf("sliding window transfers %d blocks, want 1..%d", len(tb[1]), lim)
			}
			sc, _ := a.ScratchBlocks("p", 2)
			if len(tb[2]) != 1 || len(sc) != 2 {
				t.Fatalf("recurrent transfers %v (scratch %v), want exactly the state slot", tb[2], sc)
			}
			bt, _ := a.BlockTable("p", 2)
			if want := bt[len(bt)-1]; mode != hma.RecurrentAll && tb[2][0] != want {
				t.Fatalf("recurrent transfers %v, want the running state %d", tb[2], want)
			}
			checkInv(t, a)
		})
	}
}

// vLLM #22317 / #46694 / #50173: D's first allocation for a transferred
// request reserved lookahead slots, one block more than P sent, so
// descriptor counts mismatched. Here D's first allocation with external
// tokens reserves exactly the positions P transfers, whatever lookahead the
// caller asks for; lookahead applies again from the next allocation.
func TestRegressionFirstExternalAllocationHasNoLookahead(t *testing.T) {
	cfg := hma.Config{
		Groups: []hma.GroupSpec{
			{Kind: groups.FullAttention, BlockSize: 4, Eagle: true},
			{Kind: groups.SlidingWindow, BlockSize: 4, Window: 5},
			{Kind: groups.Recurrent, BlockSize: 4},
		},
		Pools:                []hma.PoolSpec{{NumBlocks: 64}},
		RecurrentMode:        hma.RecurrentAlign,
		NumSpeculativeTokens: 3,
		EnableCaching:        true,
	}
	p := newAlloc(t, cfg)
	d := newAlloc(t, cfg)
	prompt := seq(17)
	const h = 16 // handoff: P computes [0, 16), exactly a block boundary
	must(t, p.AddRequest("x", prompt, 0))
	must(t, p.Allocate("x", hma.AllocSpec{New: h, Lookahead: 3}))
	must(t, p.Commit("x", h))
	must(t, p.Hold("x", 10, 1))
	sent, err := p.TransferBlocks("x")
	must(t, err)

	free0 := d.NumFree(0)
	must(t, d.AddRequest("x", prompt, 0))
	must(t, d.Allocate("x", hma.AllocSpec{External: h, Lookahead: 3}))
	used := 0
	for g := range cfg.Groups {
		bt, _ := d.BlockTable("x", g)
		live := slices.DeleteFunc(slices.Clone(bt), func(b int) bool { return b == 0 })
		if len(live) != len(sent[g]) {
			t.Fatalf("group %d: D reserved %d blocks %v, P sends %d %v", g, len(live), bt, len(sent[g]), sent[g])
		}
		sc, _ := d.ScratchBlocks("x", g)
		used += len(live) + len(sc)
	}
	if got := free0 - d.NumFree(0); got != used {
		t.Fatalf("D took %d blocks, tables and scratch hold %d", got, used)
	}
	checkInv(t, d)
	must(t, d.LoadDone("x"))
	// The next step computes the last prompt token with lookahead.
	must(t, d.Allocate("x", hma.AllocSpec{New: 1, Lookahead: 3}))
	if bt, _ := d.BlockTable("x", 0); len(bt) != 5 { // cdiv(16+1+3, 4)
		t.Fatalf("lookahead ignored after the first allocation: table %v", bt)
	}
	checkInv(t, d)
}
