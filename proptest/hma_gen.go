package proptest

import (
	"pgregory.net/rapid"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
)

// HMAPreset is the group structure of a model preset, scaled down (small
// block sizes and windows) so that short random runs reach every rule.
// Pool is ignored: the generator assigns pools per layout.
type HMAPreset struct {
	Name   string
	Groups []hma.GroupSpec
}

func grp(k groups.Kind, bs int) hma.GroupSpec { return hma.GroupSpec{Kind: k, BlockSize: bs} }

func sw(bs, w int) hma.GroupSpec {
	return hma.GroupSpec{Kind: groups.SlidingWindow, BlockSize: bs, Window: w}
}

func eagle(g hma.GroupSpec) hma.GroupSpec { g.Eagle = true; return g }

// HMAPresets returns the group structures of the models in
// shared/reference/models.md (and a chunked-local one), with and without
// their draft layers. Under the unified layout vLLM gives all groups one page
// and, for hybrids, one block size; the separate layout may not.
func HMAPresets() []HMAPreset {
	F, M, I, R := groups.FullAttention, groups.MLA, groups.Indexer, groups.Recurrent
	return []HMAPreset{
		{"llama-3.1", []hma.GroupSpec{grp(F, 4)}},
		{"llama-3.1+eagle3", []hma.GroupSpec{eagle(grp(F, 4))}},
		{"gpt-oss", []hma.GroupSpec{sw(4, 6), grp(F, 4)}},
		{"gpt-oss+eagle3", []hma.GroupSpec{sw(4, 6), eagle(grp(F, 4))}},
		{"gemma-3", []hma.GroupSpec{grp(F, 2), sw(2, 9), sw(2, 9), sw(2, 9)}},
		{"gemma-3+eagle3", []hma.GroupSpec{grp(F, 2), sw(2, 9), sw(2, 9), eagle(grp(F, 2))}},
		{"qwen3.5", []hma.GroupSpec{grp(F, 4), grp(R, 4)}},
		{"qwen3.5+mtp", []hma.GroupSpec{eagle(grp(F, 4)), grp(R, 4)}},
		{"qwen3-next-separate-bs", []hma.GroupSpec{grp(F, 2), grp(R, 8)}},
		{"nemotron-h", []hma.GroupSpec{grp(F, 8), grp(R, 8)}},
		{"kimi-linear", []hma.GroupSpec{grp(M, 4), grp(R, 4)}},
		{"kimi-k2.5+eagle3", []hma.GroupSpec{grp(M, 4), eagle(grp(F, 4))}},
		{"deepseek-v3+mtp", []hma.GroupSpec{eagle(grp(M, 4))}},
		{"deepseek-v3.2", []hma.GroupSpec{grp(M, 4), grp(I, 4)}},
		{"chunked-local", []hma.GroupSpec{{Kind: groups.ChunkedLocal, BlockSize: 2, Chunk: 6}, grp(F, 2)}},
	}
}

// GenHMAPresetConfig draws a Config for preset p: unified or separate layout
// (a pool per kind), recurrent mode, speculative tokens, caching on or off,
// and small pool sizes.
func GenHMAPresetConfig(p HMAPreset) *rapid.Generator[hma.Config] {
	return rapid.Custom(func(t *rapid.T) hma.Config {
		return finishConfig(t, append([]hma.GroupSpec(nil), p.Groups...))
	})
}

// GenHMAConfig draws a random hybrid Config: 1 to 4 groups of any kind with
// block sizes 1 to 8, windows, chunks, Eagle groups, any recurrent mode,
// speculative tokens, either layout, and small pools.
func GenHMAConfig() *rapid.Generator[hma.Config] {
	return rapid.Custom(func(t *rapid.T) hma.Config {
		kinds := []groups.Kind{groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal,
			groups.MLA, groups.Indexer, groups.Recurrent}
		n := rapid.IntRange(1, 4).Draw(t, "groups")
		gs := make([]hma.GroupSpec, n)
		for i := range gs {
			g := hma.GroupSpec{
				Kind:      rapid.SampledFrom(kinds).Draw(t, "kind"),
				BlockSize: rapid.SampledFrom([]int{1, 2, 3, 4, 8}).Draw(t, "bs"),
			}
			switch g.Kind {
			case groups.SlidingWindow:
				g.Window = rapid.IntRange(1, 12).Draw(t, "window")
			case groups.ChunkedLocal:
				g.Chunk = rapid.IntRange(1, 12).Draw(t, "chunk")
			}
			if g.Kind != groups.Recurrent {
				g.Eagle = rapid.IntRange(0, 4).Draw(t, "eagle") == 0
			}
			gs[i] = g
		}
		return finishConfig(t, gs)
	})
}

func finishConfig(t *rapid.T, gs []hma.GroupSpec) hma.Config {
	cfg := hma.Config{
		Groups:               gs,
		RecurrentMode:        hma.RecurrentMode(rapid.IntRange(0, 2).Draw(t, "mode")),
		NumSpeculativeTokens: rapid.IntRange(0, 2).Draw(t, "spec"),
		EnableCaching:        rapid.IntRange(0, 5).Draw(t, "caching") > 0,
	}
	if cfg.RecurrentMode == hma.RecurrentNone {
		for i := range cfg.Groups {
			if cfg.Groups[i].Kind == groups.Recurrent && rapid.IntRange(0, 3).Draw(t, "anyBS") == 2 {
				cfg.Groups[i].BlockSize = 0 // mode none: one state block whatever the size
			}
		}
	}
	if rapid.Bool().Draw(t, "separate") {
		pools := map[groups.Kind]int{}
		for i := range cfg.Groups {
			k := cfg.Groups[i].Kind
			if _, ok := pools[k]; !ok {
				pools[k] = len(cfg.Pools)
				cfg.Pools = append(cfg.Pools, hma.PoolSpec{NumBlocks: rapid.IntRange(2, 32).Draw(t, "poolBlocks")})
			}
			cfg.Groups[i].Pool = pools[k]
		}
	} else {
		cfg.Pools = []hma.PoolSpec{{NumBlocks: rapid.IntRange(2, 64).Draw(t, "poolBlocks")}}
		for i := range cfg.Groups {
			cfg.Groups[i].Pool = 0
		}
	}
	return cfg
}
