package groups

import "fmt"

// Family builders: the single place that knows how each architecture's
// config maps to cache layers. Presets and the Hugging Face importer both
// call them, so a preset and an imported config.json of the same model give
// the same spec.

// AttentionLayer returns a full-attention layer.
func AttentionLayer(name string, kvHeads, headDim int, dt DType) Layer {
	return Layer{Name: name, Kind: FullAttention, Attention: &Attention{KVHeads: kvHeads, HeadDim: headDim, DType: dt}}
}

// withQHeads sets the query head count of an attention layer.
func withQHeads(l Layer, q int) Layer {
	a := *l.Attention
	a.QHeads = q
	l.Attention = &a
	return l
}

// SlidingLayer returns a sliding-window attention layer of window w.
func SlidingLayer(name string, kvHeads, headDim, w int, dt DType) Layer {
	return Layer{Name: name, Kind: SlidingWindow, Attention: &Attention{KVHeads: kvHeads, HeadDim: headDim, DType: dt, Window: w}}
}

// MLALayer returns an MLA latent layer (kv_lora_rank latent, rope dims).
func MLALayer(name string, latent, rope int, dt DType, f MLAFormat) Layer {
	return Layer{Name: name, Kind: MLA, MLA: &MLASpec{LatentDim: latent, RopeDim: rope, DType: dt, Format: f}}
}

// IndexerLayer returns a DeepSeek-V3.2 indexer cache layer.
func IndexerLayer(name string, headDim int) Layer {
	return Layer{Name: name, Kind: Indexer, Indexer: &IndexerSpec{HeadDim: headDim}}
}

// GDNState returns the state of a gated delta net layer (Qwen3-Next,
// Qwen3.5): conv over q ‖ k ‖ v, each sharded on heads; temporal state
// (num_v_heads, head_k_dim, head_v_dim).
func GDNState(numK, numV, dk, dv, kernel int, convDT, ssmDT DType) *RecurrentSpec {
	return &RecurrentSpec{
		Type: GDN, ConvKernel: kernel, ConvDType: convDT,
		Segments: []Segment{{Name: "q", Units: numK, UnitWidth: dk}, {Name: "k", Units: numK, UnitWidth: dk}, {Name: "v", Units: numV, UnitWidth: dv}},
		States:   []State{{Name: "ssm", Heads: numV, Dims: []int{dk, dv}, DType: ssmDT}},
	}
}

// KDAState returns the state of a Kimi Delta Attention layer: conv over
// q ‖ k ‖ v, recurrent state (heads, head_dim, head_dim), always fp32.
func KDAState(heads, headDim, kHeads, kDim, kernel int, convDT DType) *RecurrentSpec {
	return &RecurrentSpec{
		Type: KDA, ConvKernel: kernel, ConvDType: convDT,
		Segments: []Segment{{Name: "q", Units: kHeads, UnitWidth: kDim}, {Name: "k", Units: kHeads, UnitWidth: kDim}, {Name: "v", Units: heads, UnitWidth: headDim}},
		States:   []State{{Name: "ssm", Heads: heads, Dims: []int{headDim, headDim}, DType: FP32}},
	}
}

// Mamba2State returns the state of a Mamba2 mixer: conv over x ‖ B ‖ C
// (B and C are n_groups groups of state_size channels, sharded by tp; a
// single group is replicated on every rank, vLLM's padding of n_groups up
// to tp, which its MambaMixer2 allows for n_groups == 1 only), SSM state
// (heads, head_dim, state_size).
func Mamba2State(heads, headDim, nGroups, stateSize, kernel int, convDT, ssmDT DType) *RecurrentSpec {
	rep := nGroups == 1
	return &RecurrentSpec{
		Type: Mamba2, ConvKernel: kernel, ConvDType: convDT,
		Segments: []Segment{
			{Name: "x", Units: heads, UnitWidth: headDim},
			{Name: "B", Units: nGroups, UnitWidth: stateSize, Replicate: rep},
			{Name: "C", Units: nGroups, UnitWidth: stateSize, Replicate: rep},
		},
		States: []State{{Name: "ssm", Heads: heads, Dims: []int{headDim, stateSize}, DType: ssmDT}},
	}
}

// Mamba1State returns the state of a Mamba1 mixer: conv over the
// intermediate channels, SSM state (intermediate, state_size).
func Mamba1State(intermediate, stateSize, kernel int, convDT, ssmDT DType) *RecurrentSpec {
	return &RecurrentSpec{
		Type: Mamba1, ConvKernel: kernel, ConvDType: convDT,
		Segments: []Segment{{Name: "x", Units: intermediate, UnitWidth: 1}},
		States:   []State{{Name: "ssm", Heads: intermediate, Dims: []int{stateSize}, DType: ssmDT}},
	}
}

// ShortConvState returns the state of a short-conv layer: conv only.
func ShortConvState(channels, kernel int, dt DType) *RecurrentSpec {
	return &RecurrentSpec{
		Type: ShortConv, ConvKernel: kernel, ConvDType: dt,
		Segments: []Segment{{Name: "x", Units: channels, UnitWidth: 1}},
	}
}

// RecurrentLayer wraps a recurrent state spec in a layer.
func RecurrentLayer(name string, r *RecurrentSpec) Layer {
	return Layer{Name: name, Kind: Recurrent, Recurrent: r}
}

// Qwen35Config holds what the Qwen3.5 / Qwen3-Next builder needs.
type Qwen35Config struct {
	Name, Architecture   string
	Layers               int
	FullAttention        []bool // per layer; nil: every FullInterval-th layer (1-based) is full
	FullInterval         int
	Heads                int // num_attention_heads (0: not checked)
	KVHeads, HeadDim     int
	LinearK, LinearV     int // linear_num_key_heads, linear_num_value_heads
	LinearDK, LinearDV   int
	ConvKernel           int
	DType, SSMDType      DType
	MTPLayers            int // draft MTP layers to attach (0: none)
	NumSpeculativeTokens int
}

// Qwen35 builds a Qwen3.5 or Qwen3-Next model: GDN layers and gated full
// attention, optionally with MTP draft layers (full attention).
func Qwen35(c Qwen35Config) (*Model, error) {
	m := &Model{Name: c.Name, Architecture: c.Architecture, NumSpeculativeTokens: c.NumSpeculativeTokens}
	if c.FullAttention != nil && len(c.FullAttention) != c.Layers {
		return nil, fieldErr("layer_types", fmt.Sprintf("%d entries for %d layers", len(c.FullAttention), c.Layers))
	}
	if c.FullAttention == nil && c.FullInterval <= 0 {
		return nil, fieldErr("full_attention_interval", "must be > 0")
	}
	for i := 0; i < c.Layers; i++ {
		full := false
		if c.FullAttention != nil {
			full = c.FullAttention[i]
		} else {
			full = (i+1)%c.FullInterval == 0
		}
		if full {
			m.Layers = append(m.Layers, withQHeads(AttentionLayer(fmt.Sprintf("layers.%d.attn", i), c.KVHeads, c.HeadDim, c.DType), c.Heads))
		} else {
			m.Layers = append(m.Layers, RecurrentLayer(fmt.Sprintf("layers.%d.gdn", i),
				GDNState(c.LinearK, c.LinearV, c.LinearDK, c.LinearDV, c.ConvKernel, c.DType, c.SSMDType)))
		}
	}
	addDraft(m, DraftMTP, c.MTPLayers, func(i int) Layer {
		return withQHeads(AttentionLayer(fmt.Sprintf("mtp.%d.attn", i), c.KVHeads, c.HeadDim, c.DType), c.Heads)
	})
	return m, m.Validate()
}

func addDraft(m *Model, kind DraftKind, n int, mk func(i int) Layer) {
	if n <= 0 {
		return
	}
	m.Draft = kind
	for i := 0; i < n; i++ {
		l := mk(i)
		l.Draft = true
		m.Layers = append(m.Layers, l)
	}
	if m.NumSpeculativeTokens == 0 {
		m.NumSpeculativeTokens = 1
	}
}

// MLAConfig holds what the DeepSeek / Kimi K2 builder needs.
type MLAConfig struct {
	Name, Architecture   string
	Layers               int
	LatentDim, RopeDim   int
	DType                DType
	Format               MLAFormat
	IndexerHeadDim       int // > 0: DeepSeek-V3.2 indexer cache on every layer
	MTPLayers            int
	NumSpeculativeTokens int
}

// DeepSeekMLA builds an MLA model (DeepSeek-V3/V3.2, Kimi K2/K2.5).
func DeepSeekMLA(c MLAConfig) (*Model, error) {
	m := &Model{Name: c.Name, Architecture: c.Architecture, NumSpeculativeTokens: c.NumSpeculativeTokens}
	for i := 0; i < c.Layers; i++ {
		m.Layers = append(m.Layers, MLALayer(fmt.Sprintf("layers.%d.mla", i), c.LatentDim, c.RopeDim, c.DType, c.Format))
		if c.IndexerHeadDim > 0 {
			x := IndexerLayer(fmt.Sprintf("layers.%d.indexer", i), c.IndexerHeadDim)
			x.Parallel = true // the indexer reads the attention's input
			m.Layers = append(m.Layers, x)
		}
	}
	addDraft(m, DraftMTP, c.MTPLayers, func(i int) Layer {
		return MLALayer(fmt.Sprintf("mtp.%d.mla", i), c.LatentDim, c.RopeDim, c.DType, c.Format)
	})
	return m, m.Validate()
}

// Eagle3Draft describes an Eagle3 draft model (LlamaForCausalLMEagle3):
// Layers full-attention layers.
type Eagle3Draft struct {
	Layers, KVHeads, HeadDim int
	Heads                    int // num_attention_heads (0: not checked)
	DType                    DType
	NumSpeculativeTokens     int
}

// AttachEagle3 appends an Eagle3 draft to a target model (which must have no
// draft yet) and returns a new model named name.
func AttachEagle3(target *Model, name string, d Eagle3Draft) (*Model, error) {
	if target.Draft != DraftNone {
		return nil, fieldErr("draft", "target already has draft layers")
	}
	m := target.Clone()
	m.Name = name
	m.NumSpeculativeTokens = d.NumSpeculativeTokens
	addDraft(m, DraftEagle3, d.Layers, func(i int) Layer {
		return withQHeads(AttentionLayer(fmt.Sprintf("draft.%d.attn", i), d.KVHeads, d.HeadDim, d.DType), d.Heads)
	})
	return m, m.Validate()
}

// Clone returns a deep copy of m.
func (m *Model) Clone() *Model {
	c := *m
	c.Layers = make([]Layer, len(m.Layers))
	for i, l := range m.Layers {
		c.Layers[i] = l.clone()
	}
	return &c
}

func (l Layer) clone() Layer {
	if l.Attention != nil {
		a := *l.Attention
		l.Attention = &a
	}
	if l.MLA != nil {
		x := *l.MLA
		l.MLA = &x
	}
	if l.Indexer != nil {
		x := *l.Indexer
		l.Indexer = &x
	}
	if l.Recurrent != nil {
		r := *l.Recurrent
		r.Segments = append([]Segment(nil), r.Segments...)
		r.States = make([]State, len(l.Recurrent.States))
		for i, s := range l.Recurrent.States {
			s.Dims = append([]int(nil), s.Dims...)
			r.States[i] = s
		}
		l.Recurrent = &r
	}
	return l
}

// Pattern builds a model from a per-layer pattern: mk returns the layer for
// decoder layer i, or ok=false when that layer keeps no cache (MLP, MoE).
func Pattern(name, arch string, n int, mk func(i int) (Layer, bool)) *Model {
	m := &Model{Name: name, Architecture: arch}
	for i := 0; i < n; i++ {
		if l, ok := mk(i); ok {
			m.Layers = append(m.Layers, l)
		}
	}
	return m
}

// NemotronHConfig holds what the Nemotron-H builder needs.
type NemotronHConfig struct {
	Name, Architecture string
	// Pattern has one character per decoder layer: M Mamba2, * attention,
	// anything else (E MoE, - MLP) keeps no cache.
	Pattern                                  string
	Heads, KVHeads, HeadDim                  int // Heads: num_attention_heads (0: not checked)
	MambaHeads, MambaHeadDim, NGroups, State int
	ConvKernel                               int
	DType, SSMDType                          DType
}

// NemotronH builds a Nemotron-H (Mamba2 hybrid) model.
func NemotronH(c NemotronHConfig) (*Model, error) {
	m := Pattern(c.Name, c.Architecture, len(c.Pattern), func(i int) (Layer, bool) {
		switch c.Pattern[i] {
		case 'M':
			return RecurrentLayer(fmt.Sprintf("layers.%d.mamba", i),
				Mamba2State(c.MambaHeads, c.MambaHeadDim, c.NGroups, c.State, c.ConvKernel, c.DType, c.SSMDType)), true
		case '*':
			return withQHeads(AttentionLayer(fmt.Sprintf("layers.%d.attn", i), c.KVHeads, c.HeadDim, c.DType), c.Heads), true
		}
		return Layer{}, false
	})
	return m, m.Validate()
}

// AttentionConfig holds what the builder of attention-only models needs
// (Llama, Mistral, Gemma 3, gpt-oss): full and sliding-window layers.
type AttentionConfig struct {
	Name, Architecture string
	Layers             int
	// Sliding marks the sliding-window layers (window Window); nil: none.
	Sliding              []bool
	Window               int
	Heads                int // num_attention_heads (0: not checked)
	KVHeads, HeadDim     int
	DType                DType
	NumSpeculativeTokens int
}

// AttentionModel builds an attention-only model: layers named
// "layers.<i>.attn", full or sliding window.
func AttentionModel(c AttentionConfig) (*Model, error) {
	if c.Sliding != nil && len(c.Sliding) != c.Layers {
		return nil, fieldErr("layer_types", fmt.Sprintf("%d entries for %d layers", len(c.Sliding), c.Layers))
	}
	m := Pattern(c.Name, c.Architecture, c.Layers, func(i int) (Layer, bool) {
		if c.Sliding != nil && c.Sliding[i] {
			return withQHeads(SlidingLayer(fmt.Sprintf("layers.%d.attn", i), c.KVHeads, c.HeadDim, c.Window, c.DType), c.Heads), true
		}
		return withQHeads(AttentionLayer(fmt.Sprintf("layers.%d.attn", i), c.KVHeads, c.HeadDim, c.DType), c.Heads), true
	})
	m.NumSpeculativeTokens = c.NumSpeculativeTokens
	return m, m.Validate()
}

// KimiLinearConfig holds what the Kimi Linear builder needs.
type KimiLinearConfig struct {
	Name, Architecture string
	Layers             int
	// MLA marks the full-attention (MLA) layers, 0-indexed; the others are
	// KDA layers.
	MLA                  []bool
	LatentDim, RopeDim   int // kv_lora_rank, qk_rope_head_dim
	KDAHeads, KDAHeadDim int // q, k and v heads of the KDA short convs
	ConvKernel           int
	DType                DType
	NumSpeculativeTokens int
}

// KimiLinear builds a Kimi Linear model: KDA layers (recurrent state always
// fp32) and MLA layers.
func KimiLinear(c KimiLinearConfig) (*Model, error) {
	if len(c.MLA) != c.Layers {
		return nil, fieldErr("linear_attn_config.kda_layers", fmt.Sprintf("%d layer flags for %d layers", len(c.MLA), c.Layers))
	}
	m := Pattern(c.Name, c.Architecture, c.Layers, func(i int) (Layer, bool) {
		if c.MLA[i] {
			return MLALayer(fmt.Sprintf("layers.%d.mla", i), c.LatentDim, c.RopeDim, c.DType, MLAPlain), true
		}
		return RecurrentLayer(fmt.Sprintf("layers.%d.kda", i),
			KDAState(c.KDAHeads, c.KDAHeadDim, c.KDAHeads, c.KDAHeadDim, c.ConvKernel, c.DType)), true
	})
	m.NumSpeculativeTokens = c.NumSpeculativeTokens
	return m, m.Validate()
}

// HybridConfig holds what the builder of attention + recurrent hybrids
// needs (Jamba, Bamba, Granite 4.0-H, Falcon-H1, LFM2): per decoder layer
// an attention layer, a recurrent mixer, both (Falcon-H1: run in parallel
// on the same input) or neither (an MLP or MoE layer).
type HybridConfig struct {
	Name, Architecture string
	// Attention and Mixer mark, per decoder layer, which caches it has;
	// both have one entry per decoder layer.
	Attention, Mixer []bool
	Heads            int // num_attention_heads (0: not checked)
	KVHeads, HeadDim int
	DType            DType
	// MixerName names the recurrent layers "layers.<i>.<MixerName>".
	MixerName            string
	MixerState           *RecurrentSpec
	NumSpeculativeTokens int
}

// Hybrid builds an attention + recurrent hybrid: layers "layers.<i>.attn"
// and "layers.<i>.<MixerName>", the mixer Parallel where a decoder layer
// has both.
func Hybrid(c HybridConfig) (*Model, error) {
	if len(c.Attention) != len(c.Mixer) {
		return nil, fieldErr("layers", fmt.Sprintf("%d attention flags for %d mixer flags", len(c.Attention), len(c.Mixer)))
	}
	m := &Model{Name: c.Name, Architecture: c.Architecture, NumSpeculativeTokens: c.NumSpeculativeTokens}
	for i := range c.Attention {
		if c.Attention[i] {
			m.Layers = append(m.Layers, withQHeads(AttentionLayer(fmt.Sprintf("layers.%d.attn", i), c.KVHeads, c.HeadDim, c.DType), c.Heads))
		}
		if c.Mixer[i] {
			l := RecurrentLayer(fmt.Sprintf("layers.%d.%s", i, c.MixerName), c.MixerState)
			l = l.clone()
			l.Parallel = c.Attention[i]
			m.Layers = append(m.Layers, l)
		}
	}
	return m, m.Validate()
}
