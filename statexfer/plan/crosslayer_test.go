package plan

import (
	"fmt"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"pgregory.net/rapid"
)

// crossLayerModels are small models of every per-token kind and a hybrid
// (whose unified pages are padded for the recurrent groups).
func crossLayerModels() []*groups.Model {
	var hybrid []groups.Layer
	for i := 0; i < 8; i++ {
		if i%4 == 3 {
			hybrid = append(hybrid, groups.AttentionLayer(fmt.Sprintf("layers.%d.attn", i), 2, 4, groups.BF16))
		} else {
			hybrid = append(hybrid, groups.RecurrentLayer(fmt.Sprintf("layers.%d.gdn", i), groups.GDNState(4, 4, 2, 2, 3, groups.BF16, groups.FP32)))
		}
	}
	return []*groups.Model{
		{Name: "attn4", Layers: []groups.Layer{
			groups.AttentionLayer("layers.0.attn", 4, 4, groups.BF16), groups.AttentionLayer("layers.1.attn", 4, 4, groups.BF16),
			groups.AttentionLayer("layers.2.attn", 4, 4, groups.BF16), groups.AttentionLayer("layers.3.attn", 4, 4, groups.BF16)}},
		{Name: "mla3", Layers: []groups.Layer{
			groups.MLALayer("layers.0.mla", 8, 4, groups.BF16, groups.MLAPlain), groups.MLALayer("layers.1.mla", 8, 4, groups.BF16, groups.MLAPlain),
			groups.MLALayer("layers.2.mla", 8, 4, groups.BF16, groups.MLAPlain)}},
		{Name: "gdn-hybrid", Layers: hybrid},
	}
}

// Cross-layer on both sides with equal geometry, every block full and no
// prefix hit: each D rank makes exactly one read per maximal run of blocks
// consecutive on both sides (per pool, the groups' blocks in group order),
// a run continuing past a block only where its group's pages fill it (no
// padding: separate memory, or the unified pool's largest page), where per
// layer it makes one per run and layer.
func TestCrossLayerOneReadPerRunOfBlocks(t *testing.T) {
	models := crossLayerModels()
	rapid.Check(t, func(t *rapid.T) {
		m := rapid.SampledFrom(models).Draw(t, "model")
		kbs := rapid.SampledFrom([]int{2, 4}).Draw(t, "kernel_block")
		c := groups.InstanceConfig{TP: rapid.SampledFrom([]int{1, 2}).Draw(t, "tp"), BlockSize: kbs * rapid.IntRange(1, 2).Draw(t, "mult"),
			KernelBlockSize: kbs, BlockLayout: groups.CrossLayer,
			Memory:     rapid.SampledFrom([]groups.MemoryLayout{groups.Unified, groups.Separate}).Draw(t, "memory"),
			AttnLayout: rapid.SampledFrom([]groups.AttnLayout{groups.HND, groups.NHD}).Draw(t, "layout"),
			ConvLayout: rapid.SampledFrom([]groups.ConvLayout{groups.DS, groups.SD}).Draw(t, "conv")}
		side, err := NewSide(m, c, func(int, *groups.Geometry) int { return 1 << 12 })
		if err != nil {
			t.Fatal(err)
		}
		g0 := side.Ranks[0]
		unit := 1 // every per-token group's blocks full
		for _, gg := range g0.Groups {
			if gg.Kind != groups.Recurrent {
				a, b := unit, gg.BlockSize
				for b != 0 {
					a, b = b, a%b
				}
				unit = unit / a * gg.BlockSize
			}
		}
		tokens := unit * rapid.IntRange(1, 6).Draw(t, "blocks")
		req := &Request{Tokens: tokens, PBlocks: make([][]int, len(g0.Groups)), DBlocks: make([][]int, len(g0.Groups))}
		// Ids ascend per pool in group order, each side with random gaps:
		// a run breaks where either side skips an id.
		nextP, nextD := make([]int, len(g0.Pools)), make([]int, len(g0.Pools))
		runs := make([]int, len(g0.Pools))
		open := make([]bool, len(g0.Pools)) // the last block ends at its block's end
		for gi, gg := range g0.Groups {
			n := tokens / gg.BlockSize
			if gg.Kind == groups.Recurrent {
				n = 1
			}
			for k := 0; k < n; k++ {
				gp := rapid.IntRange(0, 1).Draw(t, "p_gap")
				gd := rapid.IntRange(0, 1).Draw(t, "d_gap")
				if !open[gg.Pool] || gp+gd > 0 {
					runs[gg.Pool]++
				}
				open[gg.Pool] = len(gg.Layers)*gg.PageBytes == g0.Pools[gg.Pool].BlockStride()
				nextP[gg.Pool] += 1 + gp
				nextD[gg.Pool] += 1 + gd
				req.PBlocks[gi] = append(req.PBlocks[gi], nextP[gg.Pool])
				req.DBlocks[gi] = append(req.DBlocks[gi], nextD[gg.Pool])
			}
		}
		want := 0
		for _, r := range runs {
			want += r
		}
		perLayer := c
		perLayer.BlockLayout = groups.PerLayer
		pside, err := NewSide(m, perLayer, func(int, *groups.Geometry) int { return 1 << 12 })
		if err != nil {
			t.Fatal(err)
		}
		cross, err := New(side, side)
		if err != nil {
			t.Fatal(err)
		}
		per, err := New(pside, pside)
		if err != nil {
			t.Fatal(err)
		}
		for d := 0; d < c.TP; d++ {
			p, err := cross.Plan(d, req, Direct)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Remotes) != 1 || p.Remotes[0].Rank != d {
				t.Fatalf("D rank %d reads from %d P ranks, want its own only", d, len(p.Remotes))
			}
			if got := p.NumReads(); got != want {
				t.Fatalf("D rank %d: %d reads cross-layer, want %d (one per run of blocks)", d, got, want)
			}
			q, err := per.Plan(d, req, Direct)
			if err != nil {
				t.Fatal(err)
			}
			if p.Bytes() != q.Bytes() {
				t.Fatalf("D rank %d: %d bytes cross-layer, %d per layer", d, p.Bytes(), q.Bytes())
			}
			if q.NumReads() < p.NumReads() {
				t.Fatalf("D rank %d: per layer %d reads, fewer than cross-layer %d", d, q.NumReads(), p.NumReads())
			}
		}
	})
}
