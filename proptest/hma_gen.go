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

// HMAPresets returns the group structures of every groups preset (with its
// MTP layers too where it has them) as the planner's geometry derives them
// (hma.ConfigFromGeometry at tp 1, unified layout), scaled down so small
// pools exercise them: the same groups, kinds, Eagle flags and pools, block
// sizes of 4 tokens and windows or chunks of at most 9. A chunked-local
// structure (no preset has one) is added by hand.
func HMAPresets() []HMAPreset {
	var out []HMAPreset
	for _, name := range groups.PresetNames() {
		for _, mtp := range []bool{false, true} {
			if mtp && !groups.HasMTP(name) {
				continue
			}
			m, err := groups.Preset(name, groups.PresetOptions{MTP: mtp})
			if err != nil {
				panic(err)
			}
			g, err := groups.NewGeometry(m, groups.InstanceConfig{TP: 1}, 0)
			if err != nil {
				panic(err)
			}
			cfg, err := hma.ConfigFromGeometry(g, []int{1 << 20}, hma.RecurrentNone, true)
			if err != nil {
				panic(err)
			}
			gs := cfg.Groups
			for i := range gs {
				gs[i].BlockSize, gs[i].Pool = 4, 0
				gs[i].Window, gs[i].Chunk = min(gs[i].Window, 9), min(gs[i].Chunk, 9)
			}
			if mtp {
				name += "+mtp"
			}
			out = append(out, HMAPreset{Name: name, Groups: gs})
		}
	}
	return append(out, HMAPreset{Name: "chunked-local", Groups: []hma.GroupSpec{{Kind: groups.ChunkedLocal, BlockSize: 2, Chunk: 6}, grp(groups.FullAttention, 2)}})
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
		kinds := groups.Kinds()
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
