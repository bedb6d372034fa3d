package groups

import (
	"fmt"
	"sort"
	"strings"
)

// PresetOptions change a preset the way serving flags change a model.
type PresetOptions struct {
	// MTP attaches the model's native MTP draft layers (Qwen3.5,
	// Qwen3-Next, DeepSeek-V3, DeepSeek-V3.2). Refused for models without.
	MTP bool
	// NumSpeculativeTokens overrides the speculative token count (default
	// 1 with MTP, 3 for Eagle3 presets, 0 otherwise).
	NumSpeculativeTokens int
	// SSMDType overrides the recurrent state dtype of GDN, Mamba2 and
	// Mamba1 layers (vLLM's --mamba-ssm-cache-dtype). KDA stays fp32;
	// short convs have no SSM state.
	SSMDType DType
	// KVCacheDType stores per-token caches as vLLM's --kv-cache-dtype
	// does (Model.WithKVCacheDType); "" and auto keep the model dtype.
	KVCacheDType KVCacheDType
}

type preset struct {
	name   string
	mtp    int // native MTP layers available
	eagle3 bool
	noSpec bool // speculative tokens refused (vLLM's Mamba1 state has no speculative rows)
	build  func(o PresetOptions) (*Model, error)
}

func ssm(o PresetOptions, def DType) DType {
	if o.SSMDType != DTypeInvalid {
		return o.SSMDType
	}
	return def
}

func qwen35(name string, layers, heads, kv, v int) preset {
	return preset{name: name, mtp: 1, build: func(o PresetOptions) (*Model, error) {
		return Qwen35(Qwen35Config{
			Name: name, Architecture: "qwen3_5", Layers: layers, FullInterval: 4,
			Heads: heads, KVHeads: kv, HeadDim: 256, LinearK: 16, LinearV: v, LinearDK: 128, LinearDV: 128,
			ConvKernel: 4, DType: BF16, SSMDType: ssm(o, FP32), MTPLayers: mtpLayers(o, 1),
			NumSpeculativeTokens: o.NumSpeculativeTokens,
		})
	}}
}

func mtpLayers(o PresetOptions, n int) int {
	if o.MTP {
		return n
	}
	return 0
}

func deepseek(name, arch string, indexer int, mtp int) preset {
	return preset{name: name, mtp: mtp, build: func(o PresetOptions) (*Model, error) {
		return DeepSeekMLA(MLAConfig{Name: name, Architecture: arch, Layers: 61, LatentDim: 512, RopeDim: 64,
			DType: BF16, IndexerHeadDim: indexer, MTPLayers: mtpLayers(o, mtp), NumSpeculativeTokens: o.NumSpeculativeTokens})
	}}
}

func gemma3(name string, layers, heads, kv, hd int) preset {
	return preset{name: name, build: func(o PresetOptions) (*Model, error) {
		sliding := make([]bool, layers)
		for i := range sliding {
			sliding[i] = (i+1)%6 != 0 // 5:1 local:global
		}
		return AttentionModel(AttentionConfig{Name: name, Architecture: "gemma3", Layers: layers, Sliding: sliding, Window: 1024,
			Heads: heads, KVHeads: kv, HeadDim: hd, DType: BF16, NumSpeculativeTokens: o.NumSpeculativeTokens})
	}}
}

func gptOSS(name string, layers int) preset {
	return preset{name: name, build: func(o PresetOptions) (*Model, error) {
		sliding := make([]bool, layers)
		for i := range sliding {
			sliding[i] = i%2 == 0 // alternating, sliding first
		}
		return AttentionModel(AttentionConfig{Name: name, Architecture: "gpt_oss", Layers: layers, Sliding: sliding, Window: 128,
			Heads: 64, KVHeads: 8, HeadDim: 64, DType: BF16, NumSpeculativeTokens: o.NumSpeculativeTokens})
	}}
}

func llama(name string, layers, heads int) preset {
	return preset{name: name, build: func(o PresetOptions) (*Model, error) {
		return AttentionModel(AttentionConfig{Name: name, Architecture: "llama", Layers: layers,
			Heads: heads, KVHeads: 8, HeadDim: 128, DType: BF16, NumSpeculativeTokens: o.NumSpeculativeTokens})
	}}
}

func nemotron(name, pattern string, heads, kv, mheads, mhd int) preset {
	return preset{name: name, build: func(o PresetOptions) (*Model, error) {
		return NemotronH(NemotronHConfig{Name: name, Architecture: "nemotron_h", Pattern: pattern,
			Heads: heads, KVHeads: kv, HeadDim: 128, MambaHeads: mheads, MambaHeadDim: mhd, NGroups: 8, State: 128,
			ConvKernel: 4, DType: BF16, SSMDType: ssm(o, FP32)})
	}}
}

// KimiLinearMLALayers are the 0-indexed MLA layers of Kimi-Linear-48B-A3B
// (the config's 1-indexed full_attn_layers minus one).
var kimiLinearMLA = map[int]bool{3: true, 7: true, 11: true, 15: true, 19: true, 23: true, 26: true}

var presets = []preset{
	qwen35("qwen3.5-0.8b", 24, 8, 2, 16),
	qwen35("qwen3.5-2b", 24, 8, 2, 16),
	qwen35("qwen3.5-4b", 32, 16, 4, 32),
	qwen35("qwen3.5-9b", 32, 16, 4, 32),
	qwen35("qwen3.5-27b", 64, 24, 4, 48),
	qwen35("qwen3.5-35b-a3b", 40, 16, 2, 32),
	qwen35("qwen3.5-122b-a10b", 48, 32, 2, 64),
	qwen35("qwen3.5-397b-a17b", 60, 32, 2, 64),
	{name: "qwen3-next-80b-a3b", mtp: 1, build: func(o PresetOptions) (*Model, error) {
		return Qwen35(Qwen35Config{
			Name: "qwen3-next-80b-a3b", Architecture: "qwen3_next", Layers: 48, FullInterval: 4,
			Heads: 16, KVHeads: 2, HeadDim: 256, LinearK: 16, LinearV: 32, LinearDK: 128, LinearDV: 128,
			ConvKernel: 4, DType: BF16, SSMDType: ssm(o, BF16), MTPLayers: mtpLayers(o, 1),
			NumSpeculativeTokens: o.NumSpeculativeTokens,
		})
	}},
	{name: "kimi-linear-48b-a3b", build: func(o PresetOptions) (*Model, error) {
		mla := make([]bool, 27)
		for i := range mla {
			mla[i] = kimiLinearMLA[i]
		}
		return KimiLinear(KimiLinearConfig{Name: "kimi-linear-48b-a3b", Architecture: "kimi_linear", Layers: 27, MLA: mla,
			LatentDim: 512, RopeDim: 64, KDAHeads: 32, KDAHeadDim: 128, ConvKernel: 4, DType: BF16,
			NumSpeculativeTokens: o.NumSpeculativeTokens})
	}},
	deepseek("kimi-k2.5", "kimi_k2", 0, 0),
	{name: "kimi-k2.5-eagle3", eagle3: true, build: func(o PresetOptions) (*Model, error) {
		t, err := DeepSeekMLA(MLAConfig{Name: "kimi-k2.5", Architecture: "kimi_k2", Layers: 61, LatentDim: 512, RopeDim: 64, DType: BF16})
		if err != nil {
			return nil, err
		}
		n := o.NumSpeculativeTokens
		if n == 0 {
			n = 3
		}
		return AttachEagle3(t, "kimi-k2.5-eagle3", Eagle3Draft{Layers: 1, Heads: 64, KVHeads: 64, HeadDim: 128, DType: BF16, NumSpeculativeTokens: n})
	}},
	deepseek("deepseek-v3", "deepseek_v3", 0, 1),
	deepseek("deepseek-v3.2", "deepseek_v32", 128, 1),
	gemma3("gemma-3-4b", 34, 8, 4, 256),
	gemma3("gemma-3-12b", 48, 16, 8, 256),
	gemma3("gemma-3-27b", 62, 32, 16, 128),
	gptOSS("gpt-oss-20b", 24),
	gptOSS("gpt-oss-120b", 36),
	nemotron("nemotron-3-nano-30b-a3b", "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME", 32, 2, 64, 64),
	nemotron("nemotron-nano-9b-v2", "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-", 40, 8, 128, 80),
	llama("llama-3.1-8b", 32, 32),
	llama("llama-3.1-70b", 80, 64),
	{name: "jamba-1.5-mini", noSpec: true, build: func(o PresetOptions) (*Model, error) {
		c := periodic(32, 8, 4, "mamba")
		c.Name, c.Architecture, c.Heads, c.KVHeads, c.HeadDim, c.DType = "jamba-1.5-mini", "jamba", 32, 8, 128, BF16
		c.MixerState = Mamba1State(2*4096, 16, 4, BF16, ssm(o, BF16))
		return Hybrid(c)
	}},
	{name: "falcon-h1-7b", build: func(o PresetOptions) (*Model, error) {
		c := HybridConfig{Name: "falcon-h1-7b", Architecture: "falcon_h1", MixerName: "mamba",
			Attention: repeat(44, true), Mixer: repeat(44, true), Heads: 12, KVHeads: 2, HeadDim: 128, DType: BF16,
			MixerState: Mamba2State(24, 128, 1, 256, 4, BF16, ssm(o, BF16)), NumSpeculativeTokens: o.NumSpeculativeTokens}
		return Hybrid(c)
	}},
	{name: "granite-4.0-h-tiny", build: func(o PresetOptions) (*Model, error) {
		attn := make([]bool, 40)
		for _, i := range []int{5, 15, 25, 35} {
			attn[i] = true
		}
		c := HybridConfig{Name: "granite-4.0-h-tiny", Architecture: "granitemoehybrid", MixerName: "mamba",
			Attention: attn, Mixer: not(attn), Heads: 12, KVHeads: 4, HeadDim: 128, DType: BF16,
			MixerState: Mamba2State(48, 64, 1, 128, 4, BF16, ssm(o, BF16)), NumSpeculativeTokens: o.NumSpeculativeTokens}
		return Hybrid(c)
	}},
	{name: "lfm2-1.2b", build: func(o PresetOptions) (*Model, error) {
		attn := make([]bool, 16)
		for _, i := range []int{2, 5, 8, 10, 12, 14} {
			attn[i] = true
		}
		c := HybridConfig{Name: "lfm2-1.2b", Architecture: "lfm2", MixerName: "conv",
			Attention: attn, Mixer: not(attn), Heads: 32, KVHeads: 8, HeadDim: 64, DType: BF16,
			MixerState: ShortConvState(2048, 3, BF16), NumSpeculativeTokens: o.NumSpeculativeTokens}
		return Hybrid(c)
	}},
	{name: "bamba-9b", build: func(o PresetOptions) (*Model, error) {
		attn := make([]bool, 32)
		for _, i := range []int{9, 18, 27} {
			attn[i] = true
		}
		c := HybridConfig{Name: "bamba-9b", Architecture: "bamba", MixerName: "mamba",
			Attention: attn, Mixer: not(attn), Heads: 32, KVHeads: 8, HeadDim: 128, DType: BF16,
			MixerState: Mamba2State(128, 64, 1, 128, 4, BF16, ssm(o, BF16)), NumSpeculativeTokens: o.NumSpeculativeTokens}
		return Hybrid(c)
	}},
}

// periodic is a hybrid of n decoder layers whose layer i is attention iff
// i % period == offset (Jamba), the others mixers named mixer.
func periodic(n, period, offset int, mixer string) HybridConfig {
	attn := make([]bool, n)
	for i := range attn {
		attn[i] = i%period == offset
	}
	return HybridConfig{Attention: attn, Mixer: not(attn), MixerName: mixer}
}

func repeat(n int, v bool) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func not(b []bool) []bool {
	out := make([]bool, len(b))
	for i, v := range b {
		out[i] = !v
	}
	return out
}

// PresetNames lists every preset in a stable order (the order of
// shared/reference/models.md).
func PresetNames() []string {
	out := make([]string, len(presets))
	for i, p := range presets {
		out[i] = p.name
	}
	return out
}

// Preset builds the named preset with options.
func Preset(name string, o PresetOptions) (*Model, error) {
	for _, p := range presets {
		if p.name != name {
			continue
		}
		if o.MTP && p.mtp == 0 {
			return nil, fmt.Errorf("%w: preset %q has no MTP layers", ErrUnsupported, name)
		}
		if o.NumSpeculativeTokens < 0 {
			return nil, fieldErr("num_speculative_tokens", "negative")
		}
		if o.NumSpeculativeTokens > 0 && p.noSpec {
			return nil, &FieldError{Field: "num_speculative_tokens", Msg: fmt.Sprintf("preset %q: its Mamba1 state has no rows for speculative tokens in vLLM", name), Err: ErrUnsupported}
		}
		if o.SSMDType != DTypeInvalid && o.SSMDType.Size() == 0 {
			return nil, fieldErr("ssm_dtype", "invalid")
		}
		m, err := p.build(o)
		if err != nil {
			return nil, err
		}
		return m.WithKVCacheDType(o.KVCacheDType)
	}
	return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownPreset, name, strings.Join(sortedNames(), ", "))
}

// AcceptsSpeculativeTokens reports whether the named preset can be built
// with NumSpeculativeTokens > 0 (not Jamba: vLLM's Mamba1 state has no
// speculative rows).
func AcceptsSpeculativeTokens(name string) bool {
	for _, p := range presets {
		if p.name == name {
			return !p.noSpec
		}
	}
	return false
}

// HasMTP reports whether the named preset has native MTP layers.
func HasMTP(name string) bool {
	for _, p := range presets {
		if p.name == name {
			return p.mtp > 0
		}
	}
	return false
}

func sortedNames() []string {
	n := PresetNames()
	sort.Strings(n)
	return n
}
