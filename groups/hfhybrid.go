package groups

import (
	"fmt"
	"slices"
)

// Importers of the attention + Mamba / short-conv hybrids: Jamba (Mamba1),
// Bamba and Granite 4.0-H (Mamba2), Falcon-H1 (attention and Mamba2 in
// every decoder layer, in parallel) and LFM2 (short convs). Shapes follow
// vLLM's model files (get_mamba_state_shape_from_config, the layers'
// get_state_shape) and mamba_utils' calculators; none of these families
// has a config hook for the state dtype in vLLM, so conv and SSM state
// follow the model dtype unless HFOptions.SSMDType says otherwise.

// intOrAuto reads an integer that may also be the string "auto" (def).
func (r *hfReader) intOrAuto(key string, def, lo, hi int) int {
	if r.err != nil {
		return def
	}
	if s, ok, _ := r.cfg.str(key); ok {
		if s != "auto" {
			r.fail(fieldErr(r.cfg.field(key), fmt.Sprintf("%q: want an integer or \"auto\"", s)))
		}
		return def
	}
	return r.optInt(key, def, lo, hi)
}

// attentionShape reads num_attention_heads and num_key_value_heads
// (required) and head_dim (the field when the family's vLLM model reads
// it, else hidden_size / num_attention_heads).
func (r *hfReader) attentionShape(c *HybridConfig, headDimField bool) {
	c.Heads = r.req("num_attention_heads", MaxKVHeads)
	c.KVHeads = r.req("num_key_value_heads", MaxKVHeads)
	if headDimField {
		c.HeadDim = r.headDim(0)
		return
	}
	hidden := r.req("hidden_size", 1<<30)
	if r.err == nil && hidden%c.Heads != 0 {
		r.fail(fieldErr(r.cfg.field("hidden_size"), fmt.Sprintf("%d is not a multiple of num_attention_heads %d", hidden, c.Heads)))
	}
	if r.err == nil {
		c.HeadDim = hidden / c.Heads
	}
}

// mamba2 reads the Mamba2 mixer of Bamba, Granite 4.0-H and Falcon-H1:
// mamba_n_heads, mamba_d_head ("auto": intermediate / heads, which must
// then be exact), mamba_n_groups, mamba_d_state, mamba_d_conv, with the
// transformers defaults 128, auto, 1, 256, 4; intermediate is given.
func (r *hfReader) mamba2(intermediate int, convDT DType) *RecurrentSpec {
	heads := r.optInt("mamba_n_heads", 128, 1, MaxDim)
	if r.err != nil {
		return nil
	}
	if intermediate%heads != 0 {
		r.fail(fieldErr(r.cfg.field("mamba_n_heads"), fmt.Sprintf("%d does not divide the mamba intermediate size %d", heads, intermediate)))
		return nil
	}
	headDim := r.intOrAuto("mamba_d_head", intermediate/heads, 1, MaxDim)
	if r.err == nil && headDim*heads != intermediate {
		r.fail(fieldErr(r.cfg.field("mamba_d_head"), fmt.Sprintf("%d x mamba_n_heads %d != mamba intermediate size %d", headDim, heads, intermediate)))
	}
	groups := r.optInt("mamba_n_groups", 1, 1, MaxDim)
	state := r.optInt("mamba_d_state", 256, 1, MaxDim)
	kernel := r.optInt("mamba_d_conv", 4, 2, MaxConvKernel)
	if r.err == nil && heads%groups != 0 {
		r.fail(fieldErr(r.cfg.field("mamba_n_groups"), fmt.Sprintf("%d does not divide mamba_n_heads %d", groups, heads)))
	}
	if r.err != nil {
		return nil
	}
	return Mamba2State(heads, headDim, groups, state, kernel, convDT, r.ssmDType(convDT, ""))
}

// expandIntermediate is mamba_expand (default 2) x hidden_size.
func (r *hfReader) expandIntermediate() int {
	hidden := r.req("hidden_size", 1<<30)
	expand := r.optInt("mamba_expand", 2, 1, 64)
	if r.err != nil {
		return 0
	}
	if hidden*expand > MaxDim*64 {
		r.fail(fieldErr(r.cfg.field("mamba_expand"), fmt.Sprintf("intermediate size %d x %d too large", expand, hidden)))
		return 0
	}
	return hidden * expand
}

func (r *hfReader) hybrid(c HybridConfig) (*Model, error) {
	c.Name, c.Architecture, c.NumSpeculativeTokens = r.name, r.arch, r.opt.NumSpeculativeTokens
	r.noMTP()
	if r.err != nil {
		return nil, r.err
	}
	return Hybrid(c)
}

// jamba: Mamba1 + attention; decoder layer i is attention iff
// i % attn_layer_period == attn_layer_offset (transformers'
// layers_block_type), else a Mamba1 mixer of intermediate mamba_expand x
// hidden_size. vLLM's Mamba1 state has no speculative rows, so
// speculative tokens are refused.
func hfJamba(r *hfReader) (*Model, error) {
	n := r.numLayers()
	period := r.optInt("attn_layer_period", 8, 1, MaxLayers)
	offset := r.optInt("attn_layer_offset", 4, 0, MaxLayers)
	if r.err == nil && offset >= period {
		r.fail(fieldErr(r.cfg.field("attn_layer_offset"), fmt.Sprintf("%d must be < attn_layer_period %d", offset, period)))
	}
	if r.err == nil && r.opt.NumSpeculativeTokens > 0 {
		r.fail(&FieldError{Field: "num_speculative_tokens", Msg: "jamba's Mamba1 state has no rows for speculative tokens in vLLM", Err: ErrUnsupported})
	}
	c := HybridConfig{Attention: make([]bool, n), Mixer: make([]bool, n), MixerName: "mamba"}
	for i := 0; i < n; i++ {
		c.Attention[i] = i%period == offset
		c.Mixer[i] = !c.Attention[i]
	}
	c.DType = r.kvDType()
	if slices.Contains(c.Attention, true) {
		r.attentionShape(&c, false)
	}
	if slices.Contains(c.Mixer, true) {
		inter := r.expandIntermediate()
		state := r.optInt("mamba_d_state", 16, 1, MaxDim)
		kernel := r.optInt("mamba_d_conv", 4, 2, MaxConvKernel)
		c.MixerState = Mamba1State(inter, state, kernel, c.DType, r.ssmDType(c.DType, ""))
	}
	return r.hybrid(c)
}

// bamba: Mamba2 + attention; attention at attn_layer_indices (0-indexed;
// absent: none), Mamba2 of intermediate mamba_expand x hidden_size.
func hfBamba(r *hfReader) (*Model, error) {
	n := r.numLayers()
	c := HybridConfig{Attention: make([]bool, n), Mixer: make([]bool, n), MixerName: "mamba"}
	if idx, ok := r.intList(r.cfg, "attn_layer_indices", 0, max(n-1, 0)); ok {
		for i, l := range idx {
			if c.Attention[l] {
				return nil, fieldErr(jsonIndex(r.cfg.field("attn_layer_indices"), i), fmt.Sprintf("layer %d listed twice", l))
			}
			c.Attention[l] = true
		}
	}
	for i := range c.Mixer {
		c.Mixer[i] = !c.Attention[i]
	}
	return r.mambaHybrid(c, r.expandIntermediate, false)
}

// granitemoehybrid: layer_types ("mamba" or "attention", required: vLLM
// indexes it), Mamba2 of intermediate mamba_expand x hidden_size.
func hfGraniteHybrid(r *hfReader) (*Model, error) {
	n := r.numLayers()
	types := r.layerTypes("layer_types", n, "mamba", "attention")
	if types == nil && r.err == nil {
		r.fail(fieldErr(r.cfg.field("layer_types"), "required"))
	}
	if r.err != nil {
		return nil, r.err
	}
	c := HybridConfig{Attention: make([]bool, n), Mixer: make([]bool, n), MixerName: "mamba"}
	for i, t := range types {
		c.Attention[i], c.Mixer[i] = t == "attention", t == "mamba"
	}
	return r.mambaHybrid(c, r.expandIntermediate, false)
}

// falcon_h1: every decoder layer holds attention and a Mamba2 mixer in
// parallel; Mamba intermediate mamba_d_ssm (required; null: mamba_expand x
// hidden_size), head_dim from the config (else hidden / heads).
func hfFalconH1(r *hfReader) (*Model, error) {
	n := r.numLayers()
	c := HybridConfig{Attention: make([]bool, n), Mixer: make([]bool, n), MixerName: "mamba"}
	for i := range c.Attention {
		c.Attention[i], c.Mixer[i] = true, true
	}
	inter := func() int {
		switch {
		case r.cfg.isNull("mamba_d_ssm"):
			return r.expandIntermediate()
		case !r.cfg.has("mamba_d_ssm"):
			r.fail(fieldErr(r.cfg.field("mamba_d_ssm"), "required (null: mamba_expand x hidden_size)"))
			return 0
		}
		return r.req("mamba_d_ssm", MaxDim*64)
	}
	return r.mambaHybrid(c, inter, true)
}

func (r *hfReader) mambaHybrid(c HybridConfig, intermediate func() int, headDimField bool) (*Model, error) {
	c.DType = r.kvDType()
	if slices.Contains(c.Attention, true) {
		r.attentionShape(&c, headDimField)
	}
	if slices.Contains(c.Mixer, true) {
		if inter := intermediate(); r.err == nil {
			c.MixerState = r.mamba2(inter, c.DType)
		}
	}
	return r.hybrid(c)
}

// lfm2: short conv + attention; layer_types ("full_attention" or "conv"),
// else full_attn_idxs (0-indexed; transformers derives layer_types from
// it; when both are given they must agree; with neither every layer is
// attention, the transformers default); conv of conv_dim channels (absent:
// hidden_size) and conv_L_cache (default 3) taps, conv only.
func hfLFM2(r *hfReader) (*Model, error) {
	n := r.numLayers()
	c := HybridConfig{Attention: make([]bool, n), Mixer: make([]bool, n), MixerName: "conv"}
	types := r.layerTypes("layer_types", n, "full_attention", "conv")
	idx, hasIdx := r.intList(r.cfg, "full_attn_idxs", 0, max(n-1, 0))
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case types != nil:
		for i, t := range types {
			c.Attention[i] = t == "full_attention"
		}
	case hasIdx:
		for i, l := range idx {
			if c.Attention[l] {
				return nil, fieldErr(jsonIndex(r.cfg.field("full_attn_idxs"), i), fmt.Sprintf("layer %d listed twice", l))
			}
			c.Attention[l] = true
		}
	default:
		for i := range c.Attention {
			c.Attention[i] = true
		}
	}
	if types != nil && hasIdx {
		want := make([]bool, n)
		for _, l := range idx {
			want[l] = true
		}
		if !slices.Equal(want, c.Attention) {
			return nil, fieldErr(r.cfg.field("full_attn_idxs"), "disagrees with layer_types")
		}
	}
	for i := range c.Mixer {
		c.Mixer[i] = !c.Attention[i]
	}
	c.DType = r.kvDType()
	if slices.Contains(c.Attention, true) {
		r.attentionShape(&c, false)
	}
	if slices.Contains(c.Mixer, true) {
		dim := 0
		if r.cfg.has("conv_dim") {
			dim = r.req("conv_dim", MaxDim*64)
		} else {
			dim = r.req("hidden_size", MaxDim*64)
		}
		kernel := r.optInt("conv_L_cache", 3, 2, MaxConvKernel)
		c.MixerState = ShortConvState(dim, kernel, c.DType)
	}
	return r.hybrid(c)
}
