package hma

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

func mustNew(t testing.TB, cfg Config) *Allocator {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func inv(t testing.TB, a *Allocator) {
	t.Helper()
	if err := a.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func toks(n int, salt uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i)*31 + salt
	}
	return out
}

func table(t testing.TB, a *Allocator, id ReqID, g int) []int {
	t.Helper()
	bt, err := a.BlockTable(id, g)
	ok(t, err)
	return bt
}

func full(bs int) GroupSpec { return GroupSpec{Kind: groups.FullAttention, BlockSize: bs} }

func TestConfigValidate(t *testing.T) {
	good := Config{Groups: []GroupSpec{full(4)}, Pools: []PoolSpec{{NumBlocks: 8}}}
	for name, mut := range map[string]func(c *Config){
		"no groups":         func(c *Config) { c.Groups = nil },
		"no pools":          func(c *Config) { c.Pools = nil },
		"pool too small":    func(c *Config) { c.Pools[0].NumBlocks = 1 },
		"bad pool index":    func(c *Config) { c.Groups[0].Pool = 3 },
		"unused pool":       func(c *Config) { c.Pools = append(c.Pools, PoolSpec{NumBlocks: 4}) },
		"zero block size":   func(c *Config) { c.Groups[0].BlockSize = 0 },
		"invalid kind":      func(c *Config) { c.Groups[0].Kind = groups.KindInvalid },
		"window on full":    func(c *Config) { c.Groups[0].Window = 3 },
		"sw without window": func(c *Config) { c.Groups[0].Kind = groups.SlidingWindow },
		"chunk without C":   func(c *Config) { c.Groups[0].Kind = groups.ChunkedLocal },
		"eagle recurrent": func(c *Config) {
			c.Groups[0] = GroupSpec{Kind: groups.Recurrent, BlockSize: 4, Eagle: true}
		},
		"recurrent align bs 0": func(c *Config) {
			c.Groups[0] = GroupSpec{Kind: groups.Recurrent}
			c.RecurrentMode = RecurrentAlign
		},
		"bad mode":      func(c *Config) { c.RecurrentMode = 7 },
		"negative spec": func(c *Config) { c.NumSpeculativeTokens = -1 },
	} {
		c := good
		c.Groups = slices.Clone(good.Groups)
		c.Pools = slices.Clone(good.Pools)
		mut(&c)
		_, err := New(c)
		var ce *ConfigError
		if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field == "" {
			t.Errorf("%s: error %v, want a *ConfigError wrapping ErrInvalidConfig", name, err)
		}
	}
	// A recurrent group in mode none may have any block size.
	c := Config{Groups: []GroupSpec{full(4), {Kind: groups.Recurrent}}, Pools: []PoolSpec{{NumBlocks: 8}}}
	if _, err := New(c); err != nil {
		t.Fatalf("recurrent none without block size: %v", err)
	}
	if c.Alignment() != 4 || c.Layout() != Unified {
		t.Fatalf("alignment %d layout %v", c.Alignment(), c.Layout())
	}
}

func TestHashChainKeyedByBlockSizeAndExtra(t *testing.T) {
	tk := toks(16, 1)
	h4 := HashBlocks(tk, 4, 0)
	if len(h4) != 4 || !slices.Equal(h4, HashBlocks(tk, 4, 0)) {
		t.Fatalf("not deterministic: %v", h4)
	}
	if h4[1] != HashBlock(h4[0], 4, 0, tk[4:8]) {
		t.Fatal("not a chain")
	}
	h8 := HashBlocks(tk, 8, 0)
	if h8[0] == h4[1] || slices.Equal(HashBlocks(tk, 4, 9), h4) {
		t.Fatal("block size or extra key not in the hash")
	}
	other := slices.Clone(tk)
	other[0]++
	if HashBlocks(other, 4, 0)[3] == h4[3] {
		t.Fatal("a change in the first block did not propagate")
	}
}

// A refused allocation changes nothing, in either layout.
func TestAllocateAllOrNothing(t *testing.T) {
	cfg := Config{
		Groups: []GroupSpec{full(2), {Kind: groups.SlidingWindow, BlockSize: 2, Window: 3, Pool: 1}},
		Pools:  []PoolSpec{{NumBlocks: 20}, {NumBlocks: 4}},
	}
	a := mustNew(t, cfg)
	ok(t, a.AddRequest("a", toks(12, 0), 0))
	snap := func() any {
		return []any{a.FreeOrder(0), a.FreeOrder(1), a.Stats(), table(t, a, "a", 0), table(t, a, "a", 1)}
	}
	before := snap()
	err := a.Allocate("a", AllocSpec{New: 12})
	var ns *NoSpaceError
	if !errors.As(err, &ns) || ns.Pool != 1 || ns.Need != 6 || ns.Free != 3 {
		t.Fatalf("got %v, want pool 1 short", err)
	}
	if after := snap(); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused allocation changed state:\n%v\n%v", before, after)
	}
	inv(t, a)
	ok(t, a.Allocate("a", AllocSpec{New: 6}))
	ok(t, a.Commit("a", 6))
	// Window 3 at 6 tokens skips 4: positions 0, 1 are null and freed.
	if bt := table(t, a, "a", 1); !slices.Equal(bt[:2], []int{0, 0}) || bt[2] == 0 {
		t.Fatalf("sliding window table %v", bt)
	}
	if a.NumFree(1) != 2 {
		t.Fatalf("%d free in pool 1, want 2", a.NumFree(1))
	}
	inv(t, a)
}

// Fresh blocks are reused before prefix-cached ones, which are kept longest.
func TestFreeQueuePrefersFreshBlocks(t *testing.T) {
	a := mustNew(t, Config{Groups: []GroupSpec{full(2)}, Pools: []PoolSpec{{NumBlocks: 9}}, EnableCaching: true})
	ok(t, a.AddRequest("a", toks(8, 0), 0))
	ok(t, a.Allocate("a", AllocSpec{New: 8, Lookahead: 2})) // 5 blocks, the 5th a lookahead slot
	ok(t, a.Commit("a", 8))
	cached := table(t, a, "a", 0)[:4]
	ok(t, a.Free("a"))
	inv(t, a)
	if s := a.Stats().Pools[0]; s.Cached != 4 || s.Free != 8 {
		t.Fatalf("stats %+v", s)
	}
	ok(t, a.AddRequest("b", toks(8, 5), 0))
	ok(t, a.Allocate("b", AllocSpec{New: 8}))
	for _, b := range table(t, a, "b", 0) {
		if slices.Contains(cached, b) {
			t.Fatalf("cached block %d reused while %v fresh ones remained", b, a.FreeOrder(0))
		}
	}
	// Growing b must now evict: the tail of a's sequence goes first (a was
	// freed in reverse order) and the reused block loses its hash.
	ok(t, a.AppendTokens("b", 1, 2))
	ok(t, a.Commit("b", 8))
	ok(t, a.Allocate("b", AllocSpec{New: 2}))
	bt := table(t, a, "b", 0)
	if got := bt[len(bt)-1]; got != cached[3] || a.Block(0, got).Cached {
		t.Fatalf("evicted %d (cached %v), want %d without hash", got, a.Block(0, got).Cached, cached[3])
	}
	inv(t, a)
}

func TestEagleDropsLastBlock(t *testing.T) {
	for _, eagle := range []bool{false, true} {
		g := full(4)
		g.Eagle = eagle
		a := mustNew(t, Config{Groups: []GroupSpec{g}, Pools: []PoolSpec{{NumBlocks: 16}}, EnableCaching: true})
		p := toks(17, 0)
		ok(t, a.AddRequest("a", p, 0))
		ok(t, a.Allocate("a", AllocSpec{New: 17}))
		ok(t, a.Commit("a", 17))
		ok(t, a.AddRequest("b", p, 0))
		hit, err := a.LookupPrefix("b")
		ok(t, err)
		want := 16
		if eagle {
			want = 12
		}
		if hit.Tokens != want {
			t.Fatalf("eagle=%v: hit %d, want %d", eagle, hit.Tokens, want)
		}
		ok(t, a.Allocate("b", AllocSpec{Prefix: hit.Tokens, New: 17 - hit.Tokens}))
		if bt := table(t, a, "b", 0); !slices.Equal(bt[:want/4], table(t, a, "a", 0)[:want/4]) {
			t.Fatalf("hit blocks not shared: %v", bt)
		}
		inv(t, a)
	}
}

// The hybrid hit is the longest length every group accepts, a multiple of
// the lcm of block sizes, at most tokens-1.
func TestHybridHitAlignment(t *testing.T) {
	cfg := Config{
		Groups:        []GroupSpec{full(2), {Kind: groups.SlidingWindow, BlockSize: 3, Window: 4}},
		Pools:         []PoolSpec{{NumBlocks: 40}},
		EnableCaching: true,
	}
	a := mustNew(t, cfg)
	p := toks(20, 0)
	ok(t, a.AddRequest("a", p, 0))
	ok(t, a.Allocate("a", AllocSpec{New: 20}))
	ok(t, a.Commit("a", 20))
	ok(t, a.AddRequest("b", p[:13], 0))
	hit, err := a.LookupPrefix("b")
	ok(t, err)
	if hit.Tokens != 12 { // multiple of 6, <= 12
		t.Fatalf("hit %d, want 12", hit.Tokens)
	}
	if err := a.Allocate("b", AllocSpec{Prefix: 10, New: 1}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unaligned prefix: %v", err)
	}
	// The sliding window at 12 needs positions [9, 12): block 3 of size 3.
	if got := hit.Blocks[1]; got[0] != 0 || got[3] == 0 {
		t.Fatalf("sliding-window hit blocks %v", got)
	}
	ok(t, a.Allocate("b", AllocSpec{Prefix: 12, New: 1}))
	inv(t, a)
}

// Align mode caches the state a step ended on at a block boundary and frees
// older states; a new request reuses it.
func TestRecurrentAlignReuseAtBoundary(t *testing.T) {
	cfg := Config{
		Groups:               []GroupSpec{full(4), {Kind: groups.Recurrent, BlockSize: 4}},
		Pools:                []PoolSpec{{NumBlocks: 40}},
		RecurrentMode:        RecurrentAlign,
		NumSpeculativeTokens: 1,
		EnableCaching:        true,
	}
	a := mustNew(t, cfg)
	p := toks(14, 0)
	ok(t, a.AddRequest("a", p, 0))
	ok(t, a.Allocate("a", AllocSpec{New: 6})) // crosses the boundary at 4: not materialized
	ok(t, a.Commit("a", 6))
	ok(t, a.Allocate("a", AllocSpec{New: 2})) // ends exactly on 8
	ok(t, a.Commit("a", 2))
	ok(t, a.Allocate("a", AllocSpec{New: 3}))
	ok(t, a.Commit("a", 3))
	bt := table(t, a, "a", 1)
	if !slices.Equal(bt[:2], []int{0, 0}) || bt[2] == 0 || len(bt) != 3 {
		t.Fatalf("align table %v", bt)
	}
	inv(t, a)
	ok(t, a.AddRequest("b", p, 0))
	hit, err := a.LookupPrefix("b")
	ok(t, err)
	if hit.Tokens != 8 {
		t.Fatalf("hit %d, want 8 (the only materialized boundary)", hit.Tokens)
	}
	ok(t, a.Allocate("b", AllocSpec{Prefix: 8, New: 5}))
	if bt := table(t, a, "b", 1); len(bt) != 4 || bt[1] == 0 || bt[3] == 0 || bt[0] != 0 {
		t.Fatalf("b's align table %v", bt)
	}
	inv(t, a)
}

// TestStateBlock checks which block holds the state after n tokens in
// each recurrent mode, as a request moves through blocks.
func TestStateBlock(t *testing.T) {
	for _, mode := range []RecurrentMode{RecurrentNone, RecurrentAlign, RecurrentAll} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := Config{Groups: []GroupSpec{full(4), {Kind: groups.Recurrent, BlockSize: 4}}, Pools: []PoolSpec{{NumBlocks: 40}},
				RecurrentMode: mode, EnableCaching: true}
			a := mustNew(t, cfg)
			ok(t, a.AddRequest("a", toks(12, 0), 0))
			ok(t, a.Allocate("a", AllocSpec{New: 4}))
			ok(t, a.Commit("a", 4))
			after4 := table(t, a, "a", 1)[0]
			ok(t, a.Allocate("a", AllocSpec{New: 3}))
			bt := table(t, a, "a", 1)
			for _, c := range []struct{ n, want int }{{0, 0}, {4, after4}, {5, bt[len(bt)-1]}, {7, bt[len(bt)-1]}, {9, 0}} {
				if mode == RecurrentNone && c.n > 0 {
					c.want = after4 // one state block, updated in place
				}
				got, err := a.StateBlock("a", 1, c.n)
				ok(t, err)
				if got != c.want {
					t.Fatalf("state after %d tokens in block %d, want %d (table %v)", c.n, got, c.want, bt)
				}
			}
			if mode != RecurrentNone && bt[len(bt)-1] == after4 {
				t.Fatalf("the state moved on within block %d", after4)
			}
			ok(t, a.Commit("a", 3))
			got, err := a.StateBlock("a", 1, 4)
			ok(t, err)
			// align keeps only the running state (and the cache the
			// boundary one); all keeps a state per block.
			if want := map[RecurrentMode]int{RecurrentNone: after4, RecurrentAlign: 0, RecurrentAll: after4}[mode]; got != want {
				t.Fatalf("after the step the state after 4 tokens is in block %d, want %d", got, want)
			}
			if _, err := a.StateBlock("a", 0, 4); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("state block of an attention group: %v", err)
			}
			inv(t, a)
		})
	}
}

func TestLoadFailedPolicies(t *testing.T) {
	cfg := Config{Groups: []GroupSpec{full(4)}, Pools: []PoolSpec{{NumBlocks: 16}}, EnableCaching: true}
	a := mustNew(t, cfg)
	ok(t, a.AddRequest("d", toks(17, 0), 0))
	ok(t, a.Allocate("d", AllocSpec{External: 16}))
	bt := table(t, a, "d", 0)
	res, err := a.LoadFailed("d", []BlockRef{{Group: 0, Block: bt[2]}}, PolicyRecompute)
	ok(t, err)
	if res.Restart != 8 || res.FirstBad[0] != 8 || res.Ended {
		t.Fatalf("result %+v, want restart 8", res)
	}
	if n, _ := a.NumComputedTokens("d"); n != 8 {
		t.Fatalf("computed %d, want 8", n)
	}
	if a.Block(0, bt[1]).Cached != true || a.Block(0, bt[2]).Cached {
		t.Fatal("valid prefix not cached, or failed block cached")
	}
	ok(t, a.Allocate("d", AllocSpec{New: 9}))
	ok(t, a.Commit("d", 9))
	inv(t, a)

	ok(t, a.AddRequest("e", toks(17, 3), 0))
	ok(t, a.Allocate("e", AllocSpec{External: 16}))
	if _, err := a.LoadFailed("e", []BlockRef{{Group: 0, Block: bt[0]}}, PolicyFail); !errors.Is(err, ErrForeignBlock) {
		t.Fatalf("foreign block: %v", err)
	}
	et := table(t, a, "e", 0)
	res, err = a.LoadFailed("e", []BlockRef{{Group: 0, Block: et[0]}}, PolicyFail)
	ok(t, err)
	if !res.Ended || res.Restart != 0 {
		t.Fatalf("result %+v", res)
	}
	if _, err := a.Request("e"); !errors.Is(err, ErrUnknownRequest) {
		t.Fatalf("failed request still live: %v", err)
	}
	ok(t, a.Free("d"))
	if s := a.Stats().Pools[0]; s.Free != s.NumBlocks {
		t.Fatalf("stats %+v after all requests ended", s)
	}
	inv(t, a)
}

func TestStatesAndErrors(t *testing.T) {
	a := mustNew(t, Config{Groups: []GroupSpec{full(2), {Kind: groups.Recurrent}}, Pools: []PoolSpec{{NumBlocks: 16}}})
	if err := a.Allocate("x", AllocSpec{New: 1}); !errors.Is(err, ErrUnknownRequest) {
		t.Fatal(err)
	}
	ok(t, a.AddRequest("x", toks(5, 0), 0))
	if err := a.AddRequest("x", toks(5, 0), 0); !errors.Is(err, ErrDuplicateRequest) {
		t.Fatal(err)
	}
	ok(t, a.Allocate("x", AllocSpec{New: 3}))
	if err := a.Allocate("x", AllocSpec{New: 1}); !errors.Is(err, ErrBadState) {
		t.Fatalf("allocate over an uncommitted recurrent step: %v", err)
	}
	if err := a.Commit("x", 2); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("partial commit with a recurrent group: %v", err)
	}
	ok(t, a.Commit("x", 3))
	ok(t, a.Hold("x", 5, 1))
	if err := a.Allocate("x", AllocSpec{New: 1}); !errors.Is(err, ErrBadState) {
		t.Fatal(err)
	}
	if err := a.Free("x"); !errors.Is(err, ErrBadState) {
		t.Fatal(err)
	}
	if got := a.Sweep(4); len(got) != 0 {
		t.Fatalf("released before expiry: %v", got)
	}
	if got := a.Sweep(5); !slices.Equal(got, []ReqID{"x"}) {
		t.Fatalf("Sweep(5) = %v", got)
	}
	inv(t, a)
}
