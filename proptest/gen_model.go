package proptest

import (
	"fmt"
	"strconv"

	"github.com/hybridxfer/hybridxfer/groups"
	"pgregory.net/rapid"
)

// GenModel generates valid model specs (groups.Model.Validate accepts them,
// and so do the limits of groups.MarshalModelJSON): random decoder-layer
// patterns over every layer kind (full, sliding-window and chunked-local
// attention, MLA in both formats, indexer caches, recurrent layers of every
// type with random conv segments and states), decoder layers without cache
// and with several caches, every dtype, speculative token counts and MTP or
// Eagle3 draft layers. A small palette of specs is reused across layers, as
// in real models; layer names mix the "layers.<i>.<suffix>" convention
// (suffixes sometimes shared by different specs) with free-form names.
func GenModel() *rapid.Generator[*groups.Model] {
	return rapid.Custom(func(t *rapid.T) *groups.Model {
		m := &groups.Model{
			Name:                 gmName().Draw(t, "name"),
			Architecture:         rapid.SampledFrom([]string{"", "qwen3_5", "hybrid", "tiny-test"}).Draw(t, "architecture"),
			NumSpeculativeTokens: rapid.OneOf(rapid.IntRange(0, 4), rapid.Just(64)).Draw(t, "num_speculative_tokens"),
		}
		palette := rapid.SliceOfN(GenLayerSpec(), 1, 6).Draw(t, "palette")
		labels := []string{"attn", "gdn", "mla", "x", "layer.y"}
		label := make([]string, len(palette))
		for i := range palette {
			label[i] = rapid.SampledFrom(labels).Draw(t, "label")
		}
		names := map[string]bool{}
		unique := func(base string) string {
			n := base
			for i := 2; names[n]; i++ {
				n = base + "~" + strconv.Itoa(i)
			}
			names[n] = true
			return n
		}
		addLayer := func(prefix string, d, spec int, draft, parallel bool) {
			l := cloneLayer(palette[spec])
			l.Parallel = parallel
			if rapid.IntRange(0, 9).Draw(t, "free_name") == 0 {
				l.Name = unique(gmName().Draw(t, "layer_name"))
			} else {
				l.Name = unique(fmt.Sprintf("%s.%d.%s", prefix, d, label[spec]))
			}
			l.Draft = draft
			m.Layers = append(m.Layers, l)
		}
		decoder := rapid.IntRange(1, 64).Draw(t, "decoder_layers")
		for d := 0; d < decoder; d++ {
			switch rapid.IntRange(0, 9).Draw(t, "caches") {
			case 0: // MLP or MoE: no cache
			case 1: // two caches in one decoder layer (MLA + indexer, Falcon-H1's attention + Mamba2)
				addLayer("layers", d, rapid.IntRange(0, len(palette)-1).Draw(t, "spec"), false, false)
				addLayer("layers", d, rapid.IntRange(0, len(palette)-1).Draw(t, "spec"), false, rapid.IntRange(0, 4).Draw(t, "parallel") > 0)
			default:
				addLayer("layers", d, rapid.IntRange(0, len(palette)-1).Draw(t, "spec"), false, false)
			}
		}
		if len(m.Layers) == 0 {
			addLayer("layers", decoder, 0, false, false)
		}
		var drafts []int
		for i, l := range palette {
			if l.Kind != groups.Recurrent {
				drafts = append(drafts, i)
			}
		}
		if len(drafts) > 0 {
			m.Draft = rapid.SampledFrom([]groups.DraftKind{groups.DraftNone, groups.DraftMTP, groups.DraftEagle3}).Draw(t, "draft")
		}
		if m.Draft != groups.DraftNone {
			prefix := "mtp"
			if m.Draft == groups.DraftEagle3 {
				prefix = "draft"
			}
			n := rapid.IntRange(1, 3).Draw(t, "draft_layers")
			for i := 0; i < n; i++ {
				addLayer(prefix, i, rapid.SampledFrom(drafts).Draw(t, "draft_spec"), true, false)
			}
		}
		return m
	})
}

func cloneLayer(l groups.Layer) groups.Layer {
	m := &groups.Model{Layers: []groups.Layer{l}}
	return m.Clone().Layers[0]
}

// gmName draws a model or layer name: printable, sometimes with spaces,
// dots, slashes or non-ASCII letters.
func gmName() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.StringMatching(`[a-z][a-z0-9_.\-]{0,15}`),
		rapid.StringMatching(`[A-Za-z][A-Za-z0-9 /.é]{0,20}[a-z]`),
	)
}

var gmDTypes = []groups.DType{groups.BF16, groups.FP16, groups.FP32, groups.FP8E4M3, groups.FP8E5M2, groups.UInt8}

// GenDType generates a valid element type.
func GenDType() *rapid.Generator[groups.DType] { return rapid.SampledFrom(gmDTypes) }

// GenLayerSpec generates one valid layer (its Name left empty, not a draft)
// of any kind.
func GenLayerSpec() *rapid.Generator[groups.Layer] {
	return rapid.Custom(func(t *rapid.T) groups.Layer {
		kind := rapid.SampledFrom(groups.Kinds()).Draw(t, "kind")
		l := groups.Layer{Kind: kind}
		switch kind {
		case groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal:
			a := &groups.Attention{
				KVHeads: rapid.OneOf(rapid.IntRange(1, 16), rapid.SampledFrom([]int{32, 64, 128})).Draw(t, "kv_heads"),
				HeadDim: rapid.OneOf(rapid.SampledFrom([]int{64, 80, 96, 128, 256}), rapid.IntRange(1, 512)).Draw(t, "head_dim"),
				DType:   GenDType().Draw(t, "dtype"),
				Scales:  rapid.Bool().Draw(t, "scales"),
			}
			if rapid.Bool().Draw(t, "q_heads_known") {
				a.QHeads = a.KVHeads * rapid.SampledFrom([]int{1, 2, 4, 7, 8}).Draw(t, "q_per_kv")
			}
			if rapid.IntRange(0, 3).Draw(t, "mla_like_v") == 0 {
				a.HeadDimV = rapid.IntRange(1, 512).Draw(t, "head_dim_v")
			}
			switch kind {
			case groups.SlidingWindow:
				a.Window = rapid.OneOf(rapid.SampledFrom([]int{128, 1024, 4096}), rapid.IntRange(1, 1<<17)).Draw(t, "window")
			case groups.ChunkedLocal:
				a.Chunk = rapid.OneOf(rapid.SampledFrom([]int{8192}), rapid.IntRange(1, 1<<17)).Draw(t, "chunk")
			}
			l.Attention = a
		case groups.MLA:
			if rapid.Bool().Draw(t, "fp8_ds_mla") {
				l.MLA = &groups.MLASpec{LatentDim: 512, RopeDim: 64, DType: groups.FP8E4M3, Format: groups.MLAFP8DS}
			} else {
				l.MLA = &groups.MLASpec{LatentDim: rapid.IntRange(1, 1024).Draw(t, "latent_dim"),
					RopeDim: rapid.IntRange(0, 128).Draw(t, "rope_dim"), DType: GenDType().Draw(t, "dtype")}
			}
		case groups.Indexer:
			l.Indexer = &groups.IndexerSpec{HeadDim: 128 * rapid.IntRange(1, 4).Draw(t, "indexer_blocks")}
		case groups.Recurrent:
			l.Recurrent = genRecurrent(t)
		}
		return l
	})
}

func genRecurrent(t *rapid.T) *groups.RecurrentSpec {
	kernel := rapid.IntRange(2, 8).Draw(t, "conv_kernel")
	conv := GenDType().Draw(t, "conv_dtype")
	ssm := GenDType().Draw(t, "ssm_dtype")
	heads := func(label string) int { return rapid.SampledFrom([]int{1, 2, 4, 8, 16, 32, 64}).Draw(t, label) }
	dim := func(label string) int { return rapid.IntRange(1, 256).Draw(t, label) }
	switch rapid.IntRange(0, 5).Draw(t, "recurrent_builder") {
	case 0:
		return groups.GDNState(heads("num_k"), heads("num_v"), dim("dk"), dim("dv"), kernel, conv, ssm)
	case 1:
		return groups.KDAState(heads("heads"), dim("head_dim"), heads("k_heads"), dim("k_dim"), kernel, conv)
	case 2:
		return groups.Mamba2State(heads("heads"), dim("head_dim"), heads("n_groups"), dim("state"), kernel, conv, ssm)
	case 3:
		return groups.Mamba1State(rapid.IntRange(1, 4096).Draw(t, "intermediate"), dim("state"), kernel, conv, ssm)
	case 4:
		return groups.ShortConvState(rapid.IntRange(1, 4096).Draw(t, "channels"), kernel, conv)
	}
	r := &groups.RecurrentSpec{
		Type:       rapid.SampledFrom(groups.RecurrentTypes()).Draw(t, "type"),
		ConvKernel: kernel, ConvDType: conv,
	}
	nseg := rapid.IntRange(1, 4).Draw(t, "segments")
	for i := 0; i < nseg; i++ {
		r.Segments = append(r.Segments, groups.Segment{Name: "s" + strconv.Itoa(i), Units: heads("units"),
			UnitWidth: dim("unit_width"), Replicate: rapid.Bool().Draw(t, "replicate")})
	}
	nst := rapid.IntRange(0, 3).Draw(t, "states")
	for i := 0; i < nst; i++ {
		dims := rapid.SliceOfN(rapid.IntRange(1, 128), 1, 3).Draw(t, "dims")
		r.States = append(r.States, groups.State{Name: "st" + strconv.Itoa(i), Heads: heads("state_heads"),
			Dims: dims, DType: GenDType().Draw(t, "state_dtype")})
	}
	return r
}
