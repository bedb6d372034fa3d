package groups

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Import of Hugging Face config.json files, for the architectures of
// shared/reference/models.md, with vLLM's defaults. Every field read and
// every default is listed in docs/model-spec.md. The family builders do the
// mapping, so a config of a preset model yields the preset's layers.

// HFOptions are the serving choices a config.json does not hold.
type HFOptions struct {
	// Name of the model. Default: the config's "_name_or_path", else
	// "<model_type>-<num_hidden_layers>l".
	Name string
	// MTP attaches the model's native MTP draft layers (qwen3_next,
	// qwen3_5*, deepseek_v3/v32, kimi_k2 when the config has them).
	MTP bool
	// NumSpeculativeTokens (0-64): conv rows grow by this many; with MTP,
	// 0 means 1.
	NumSpeculativeTokens int
	// SSMDType overrides the recurrent state dtype of GDN, Mamba2 and
	// Mamba1 layers, like vLLM's --mamba-ssm-cache-dtype. KDA state stays
	// fp32; short convs have no SSM state.
	SSMDType DType
	// KVCacheDType stores per-token caches as vLLM's --kv-cache-dtype
	// does (Model.WithKVCacheDType); "" and auto keep the model dtype.
	KVCacheDType KVCacheDType
}

// MaxHFConfigBytes caps the size of a config.json.
const MaxHFConfigBytes = 16 << 20

// Eagle3 draft architectures (vLLM's registry names).
var eagle3Architectures = []string{"LlamaForCausalLMEagle3", "Eagle3LlamaForCausalLM"}

// SupportedHFModelTypes lists the model_type values ParseHFConfig accepts.
func SupportedHFModelTypes() []string {
	out := make([]string, 0, len(hfFamilies))
	for t := range hfFamilies {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

type hfFamily struct {
	arch string // Model.Architecture, as the presets write it
	// text lists the model_type values accepted in "text_config" (nil: the
	// config is read at the top level only).
	text  []string
	build func(r *hfReader) (*Model, error)
}

var hfFamilies map[string]hfFamily

func init() {
	qwen35Text := []string{"qwen3_5_text", "qwen3_5", "qwen3_5_moe_text", "qwen3_5_moe"}
	kimi := []string{"kimi_k2", "deepseek_v3"}
	hfFamilies = map[string]hfFamily{
		"qwen3_next":       {arch: "qwen3_next", build: hfQwenNext},
		"qwen3_5":          {arch: "qwen3_5", text: qwen35Text, build: hfQwen35},
		"qwen3_5_moe":      {arch: "qwen3_5", text: qwen35Text, build: hfQwen35},
		"qwen3_5_text":     {arch: "qwen3_5", build: hfQwen35},
		"qwen3_5_moe_text": {arch: "qwen3_5", build: hfQwen35},
		"kimi_linear":      {arch: "kimi_linear", build: hfKimiLinear},
		"deepseek_v3":      {arch: "deepseek_v3", build: hfDeepSeek},
		"deepseek_v32":     {arch: "deepseek_v32", build: hfDeepSeek},
		"kimi_k2":          {arch: "kimi_k2", build: hfDeepSeek},
		"kimi_k25":         {arch: "kimi_k2", text: kimi, build: hfDeepSeek},
		"gemma3":           {arch: "gemma3", text: []string{"gemma3_text"}, build: hfGemma3},
		"gemma3_text":      {arch: "gemma3", build: hfGemma3},
		"gpt_oss":          {arch: "gpt_oss", build: hfGptOSS},
		"nemotron_h":       {arch: "nemotron_h", build: hfNemotronH},
		"jamba":            {arch: "jamba", build: hfJamba},
		"bamba":            {arch: "bamba", build: hfBamba},
		"granitemoehybrid": {arch: "granitemoehybrid", build: hfGraniteHybrid},
		"falcon_h1":        {arch: "falcon_h1", build: hfFalconH1},
		"lfm2":             {arch: "lfm2", build: hfLFM2},
		"llama":            {arch: "llama", build: hfLlama},
		"mistral":          {arch: "mistral", build: hfLlama},
	}
}

// hfReader reads the fields of one config. cfg is where the architecture's
// fields live: the top level, or "text_config" of a multimodal wrapper.
type hfReader struct {
	root, cfg *jsonObj
	modelType string
	arch      string
	name      string
	opt       HFOptions
	err       error // the first error; later reads are no-ops
}

func (r *hfReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// opt reads an optional integer in [lo, hi] (def when absent or null).
func (r *hfReader) optInt(key string, def, lo, hi int) int {
	if r.err != nil {
		return def
	}
	v, ok, err := r.cfg.integer(key)
	if err != nil {
		r.fail(err)
		return def
	}
	if !ok {
		return def
	}
	if v < lo || v > hi {
		r.fail(fieldErr(r.cfg.field(key), fmt.Sprintf("%d out of range [%d, %d]", v, lo, hi)))
		return def
	}
	return v
}

// req reads a required integer in [1, hi].
func (r *hfReader) req(key string, hi int) int {
	if r.err != nil {
		return 0
	}
	if !r.cfg.has(key) {
		r.fail(fieldErr(r.cfg.field(key), "required"))
		return 0
	}
	return r.optInt(key, 0, 1, hi)
}

// reqFrom reads a required positive integer from the first of keys present
// in o (for fields with alternative spellings); the error names keys[0].
func (r *hfReader) reqFrom(o *jsonObj, hi int, keys ...string) int {
	if r.err != nil {
		return 0
	}
	for _, k := range keys {
		if !o.has(k) {
			continue
		}
		saved := r.cfg
		r.cfg = o
		v := r.optInt(k, 0, 1, hi)
		r.cfg = saved
		return v
	}
	r.fail(fieldErr(o.field(keys[0]), "required"))
	return 0
}

// dtypeField reads a dtype from cfg, then from the top level.
func (r *hfReader) dtypeField(def DType, keys ...string) DType {
	if r.err != nil {
		return def
	}
	for _, o := range []*jsonObj{r.cfg, r.root} {
		for _, k := range keys {
			s, ok, err := o.str(k)
			if err != nil {
				r.fail(err)
				return def
			}
			if !ok {
				continue
			}
			d, err := ParseDType(s)
			if err != nil || d.Size() == 0 {
				r.fail(fieldErr(o.field(k), fmt.Sprintf("unknown dtype %q", s)))
				return def
			}
			return d
		}
		if o == r.root {
			break
		}
	}
	return def
}

// kvDType is the model dtype: torch_dtype or dtype, bf16 by default.
func (r *hfReader) kvDType() DType { return r.dtypeField(BF16, "torch_dtype", "dtype") }

// headDim is head_dim, else def (> 0: the config class's default), else
// hidden_size / num_attention_heads.
func (r *hfReader) headDim(def int) int {
	if r.err != nil {
		return 0
	}
	if r.cfg.has("head_dim") {
		return r.req("head_dim", MaxDim)
	}
	if def > 0 {
		return def
	}
	hidden := r.req("hidden_size", 1<<30)
	heads := r.req("num_attention_heads", MaxKVHeads)
	if r.err != nil {
		return 0
	}
	if hidden%heads != 0 {
		r.fail(fieldErr(r.cfg.field("head_dim"), fmt.Sprintf("absent, and hidden_size %d is not a multiple of num_attention_heads %d", hidden, heads)))
		return 0
	}
	return hidden / heads
}

// layerTypes reads a per-layer type list (nil when absent); every entry
// must be one of allowed, and there must be n of them.
func (r *hfReader) layerTypes(key string, n int, allowed ...string) []string {
	if r.err != nil {
		return nil
	}
	raw, ok, err := r.cfg.array(key, MaxLayers)
	if err != nil || !ok {
		r.fail(err)
		return nil
	}
	if len(raw) != n {
		r.fail(fieldErr(r.cfg.field(key), fmt.Sprintf("%d entries for num_hidden_layers %d", len(raw), n)))
		return nil
	}
	out := make([]string, n)
	for i, v := range raw {
		p := jsonIndex(r.cfg.field(key), i)
		s, err := jsonStringValue(v, p)
		if err != nil {
			r.fail(err)
			return nil
		}
		if !slices.Contains(allowed, s) {
			r.fail(fieldErr(p, fmt.Sprintf("unknown layer type %q (want %s)", s, strings.Join(allowed, " or "))))
			return nil
		}
		out[i] = s
	}
	return out
}

// intList reads an array of integers in [lo, hi].
func (r *hfReader) intList(o *jsonObj, key string, lo, hi int) ([]int, bool) {
	if r.err != nil {
		return nil, false
	}
	raw, ok, err := o.array(key, MaxLayers)
	if err != nil || !ok {
		r.fail(err)
		return nil, false
	}
	out := make([]int, len(raw))
	for i, v := range raw {
		p := jsonIndex(o.field(key), i)
		n, err := jsonIntValue(v, p)
		if err != nil {
			r.fail(err)
			return nil, false
		}
		if n < lo || n > hi {
			r.fail(fieldErr(p, fmt.Sprintf("%d out of range [%d, %d]", n, lo, hi)))
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// ssmDType: the option, else the config's key (none: ""), else def.
func (r *hfReader) ssmDType(def DType, key string) DType {
	if r.opt.SSMDType != DTypeInvalid {
		return r.opt.SSMDType
	}
	if key == "" {
		return def
	}
	return r.dtypeField(def, key)
}

// mtpLayers is the number of MTP layers to attach: 0 unless requested, then
// the config's key (def when absent), which must be > 0.
func (r *hfReader) mtpLayers(key string, def int) int {
	if !r.opt.MTP || r.err != nil {
		return 0
	}
	n := r.optInt(key, def, 0, 64)
	if n == 0 && r.err == nil {
		r.fail(&FieldError{Field: r.cfg.field(key), Msg: "MTP requested but the config has no MTP layers", Err: ErrUnsupported})
	}
	return n
}

func (r *hfReader) noMTP() {
	if r.opt.MTP && r.err == nil {
		r.fail(&FieldError{Field: "model_type", Msg: fmt.Sprintf("%s has no native MTP layers", r.modelType), Err: ErrUnsupported})
	}
}

func (r *hfReader) numLayers() int { return r.req("num_hidden_layers", MaxLayers) }

// ParseHFConfig imports a Hugging Face config.json. Unsupported model types
// are a *FieldError on "model_type" wrapping ErrUnsupported; a missing or
// bad field is a *FieldError naming its JSON path (for example
// "text_config.linear_num_value_heads"). The result passes Validate and the
// limits of our JSON format.
func ParseHFConfig(data []byte, opt HFOptions) (*Model, error) {
	raw, err := decodeJSONDocument(data, MaxHFConfigBytes, "config.json")
	if err != nil {
		return nil, err
	}
	root, err := decodeJSONObj(raw, "", true)
	if err != nil {
		return nil, err
	}
	return parseHFObj(root, opt)
}

func checkHFOptions(opt HFOptions) error {
	if opt.NumSpeculativeTokens < 0 || opt.NumSpeculativeTokens > maxNumSpecToks {
		return fieldErr("num_speculative_tokens", fmt.Sprintf("%d out of range [0, %d]", opt.NumSpeculativeTokens, maxNumSpecToks))
	}
	if opt.SSMDType != DTypeInvalid && opt.SSMDType.Size() == 0 {
		return fieldErr("ssm_dtype", "invalid dtype")
	}
	return nil
}

func hfArchitectures(root *jsonObj) ([]string, error) {
	raw, ok, err := root.array("architectures", 64)
	if err != nil || !ok {
		return nil, err
	}
	out := make([]string, len(raw))
	for i, v := range raw {
		if out[i], err = jsonStringValue(v, jsonIndex("architectures", i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func isEagle3(archs []string) bool {
	for _, a := range archs {
		if slices.Contains(eagle3Architectures, a) {
			return true
		}
	}
	return false
}

func parseHFObj(root *jsonObj, opt HFOptions) (*Model, error) {
	if err := checkHFOptions(opt); err != nil {
		return nil, err
	}
	archs, err := hfArchitectures(root)
	if err != nil {
		return nil, err
	}
	if isEagle3(archs) {
		return nil, &FieldError{Field: "architectures", Msg: "an Eagle3 draft model: attach it to its target with AttachEagle3FromHF", Err: ErrUnsupported}
	}
	mt, ok, err := root.str("model_type")
	if err != nil {
		return nil, err
	}
	if !ok || mt == "" {
		return nil, fieldErr("model_type", "required")
	}
	fam, ok := hfFamilies[mt]
	if !ok {
		return nil, &FieldError{Field: "model_type", Msg: fmt.Sprintf("%q is not supported (supported: %s)", mt, strings.Join(SupportedHFModelTypes(), ", ")), Err: ErrUnsupported}
	}
	r := &hfReader{root: root, cfg: root, modelType: mt, arch: fam.arch, opt: opt}
	if fam.text != nil {
		tc, ok, err := root.object("text_config")
		if err != nil {
			return nil, err
		}
		if ok {
			tmt, ok, err := tc.str("model_type")
			if err != nil {
				return nil, err
			}
			if ok && !slices.Contains(fam.text, tmt) {
				return nil, &FieldError{Field: "text_config.model_type", Msg: fmt.Sprintf("%q inside a %s config (want %s)", tmt, mt, strings.Join(fam.text, " or ")), Err: ErrUnsupported}
			}
			r.cfg = tc
		}
	}
	if r.name, err = hfName(r); err != nil {
		return nil, err
	}
	m, err := fam.build(r)
	if r.err != nil {
		return nil, r.err
	}
	if err != nil {
		return nil, err
	}
	if m, err = m.WithKVCacheDType(opt.KVCacheDType); err != nil {
		return nil, err
	}
	if err := checkModelLimits(m); err != nil {
		return nil, err
	}
	return m, nil
}

func hfName(r *hfReader) (string, error) {
	if r.opt.Name != "" {
		return r.opt.Name, checkName("name", r.opt.Name, maxNameBytes)
	}
	for _, o := range []*jsonObj{r.root, r.cfg} {
		s, ok, err := o.str("_name_or_path")
		if err != nil {
			return "", err
		}
		if ok && strings.TrimSpace(s) != "" {
			return s, checkName(o.field("_name_or_path"), s, maxNameBytes)
		}
	}
	n, _, _ := r.cfg.integer("num_hidden_layers")
	if n <= 0 {
		if p, _, _ := r.cfg.str("hybrid_override_pattern"); p != "" {
			n = len(p)
		}
	}
	return fmt.Sprintf("%s-%dl", r.modelType, n), nil
}

// qwen3_next, qwen3_5, qwen3_5_moe: GDN + gated full attention.
func hfQwen(r *hfReader, ssmDefault DType, mtpKey string) (*Model, error) {
	n := r.numLayers()
	c := Qwen35Config{Name: r.name, Architecture: r.arch, Layers: n}
	if types := r.layerTypes("layer_types", n, "linear_attention", "full_attention"); types != nil {
		c.FullAttention = make([]bool, n)
		for i, t := range types {
			c.FullAttention[i] = t == "full_attention"
		}
	} else {
		c.FullInterval = r.optInt("full_attention_interval", 4, 1, MaxLayers)
	}
	c.Heads = r.req("num_attention_heads", MaxKVHeads)
	c.KVHeads = r.req("num_key_value_heads", MaxKVHeads)
	c.HeadDim = r.headDim(256)
	c.LinearK = r.req("linear_num_key_heads", MaxDim)
	c.LinearV = r.req("linear_num_value_heads", MaxDim)
	c.LinearDK = r.req("linear_key_head_dim", MaxDim)
	c.LinearDV = r.req("linear_value_head_dim", MaxDim)
	c.ConvKernel = r.req("linear_conv_kernel_dim", MaxConvKernel)
	c.DType = r.kvDType()
	c.SSMDType = r.ssmDType(ssmDefault, "mamba_ssm_dtype")
	c.MTPLayers = r.mtpLayers(mtpKey, 1)
	c.NumSpeculativeTokens = r.opt.NumSpeculativeTokens
	if r.err != nil {
		return nil, r.err
	}
	return Qwen35(c)
}

// Qwen3-Next: SSM state bf16 unless mamba_ssm_dtype or the option say
// otherwise (vLLM default); MTP from num_nextn_predict_layers (default 1).
func hfQwenNext(r *hfReader) (*Model, error) { return hfQwen(r, BF16, "num_nextn_predict_layers") }

// Qwen3.5: SSM state from mamba_ssm_dtype, default fp32 (vLLM's config
// hook); MTP from mtp_num_hidden_layers (default 1).
func hfQwen35(r *hfReader) (*Model, error) { return hfQwen(r, FP32, "mtp_num_hidden_layers") }

// kimi_linear: KDA + MLA; linear_attn_config lists 1-indexed layers.
func hfKimiLinear(r *hfReader) (*Model, error) {
	n := r.numLayers()
	lac, ok, err := r.cfg.object("linear_attn_config")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fieldErr(r.cfg.field("linear_attn_config"), "required")
	}
	kda, ok := r.intList(lac, "kda_layers", 1, max(n, 1))
	if r.err == nil && !ok {
		r.fail(fieldErr(lac.field("kda_layers"), "required"))
	}
	if r.err != nil {
		return nil, r.err
	}
	isKDA := make([]bool, n)
	for i, l := range kda {
		if isKDA[l-1] {
			return nil, fieldErr(jsonIndex(lac.field("kda_layers"), i), fmt.Sprintf("layer %d listed twice", l))
		}
		isKDA[l-1] = true
	}
	mla := make([]bool, n)
	for i := range mla {
		mla[i] = !isKDA[i] // vLLM: is_kda_layer(i) = (i+1) in kda_layers
	}
	if full, ok := r.intList(lac, "full_attn_layers", 1, max(n, 1)); ok {
		seen := make([]bool, n)
		for i, l := range full {
			p := jsonIndex(lac.field("full_attn_layers"), i)
			if isKDA[l-1] {
				return nil, fieldErr(p, fmt.Sprintf("layer %d is also in kda_layers", l))
			}
			if seen[l-1] {
				return nil, fieldErr(p, fmt.Sprintf("layer %d listed twice", l))
			}
			seen[l-1] = true
		}
		for i := range seen {
			if !seen[i] && !isKDA[i] {
				return nil, fieldErr(lac.field("full_attn_layers"), fmt.Sprintf("layer %d (1-indexed) is in neither kda_layers nor full_attn_layers", i+1))
			}
		}
	}
	c := KimiLinearConfig{Name: r.name, Architecture: r.arch, Layers: n, MLA: mla, NumSpeculativeTokens: r.opt.NumSpeculativeTokens}
	if slices.Contains(mla, true) {
		c.LatentDim = r.req("kv_lora_rank", MaxDim)
		c.RopeDim = r.optInt("qk_rope_head_dim", 0, 0, MaxDim)
		if r.err == nil && !r.cfg.has("qk_rope_head_dim") {
			r.fail(fieldErr(r.cfg.field("qk_rope_head_dim"), "required"))
		}
	}
	if len(kda) > 0 {
		c.KDAHeads = r.kimiLinearField(lac, "num_heads", "linear_num_heads", MaxDim)
		c.KDAHeadDim = r.kimiLinearField(lac, "head_dim", "linear_head_dim", MaxDim)
		c.ConvKernel = r.kimiLinearField(lac, "short_conv_kernel_size", "linear_conv_kernel_dim", MaxConvKernel)
	}
	c.DType = r.kvDType()
	r.noMTPUnless("num_nextn_predict_layers")
	if r.err != nil {
		return nil, r.err
	}
	return KimiLinear(c)
}

// kimiLinearField reads linear_attn_config.<inner>, else the top-level
// <outer> (transformers' spelling); the error names the inner field.
func (r *hfReader) kimiLinearField(lac *jsonObj, inner, outer string, hi int) int {
	if r.err != nil {
		return 0
	}
	if lac.has(inner) {
		return r.reqFrom(lac, hi, inner)
	}
	if r.cfg.has(outer) {
		return r.req(outer, hi)
	}
	r.fail(fieldErr(lac.field(inner), "required (or "+r.cfg.field(outer)+")"))
	return 0
}

// noMTPUnless refuses MTP for a family whose vLLM implementation has none
// (Kimi Linear), naming the config's MTP count.
func (r *hfReader) noMTPUnless(key string) {
	if r.opt.MTP && r.err == nil {
		r.fail(&FieldError{Field: r.cfg.field(key), Msg: fmt.Sprintf("MTP is not supported for %s", r.modelType), Err: ErrUnsupported})
	}
}

// deepseek_v3, deepseek_v32, kimi_k2, kimi_k25: MLA on every layer,
// DeepSeek-V3.2's indexer cache when index_head_dim is set.
func hfDeepSeek(r *hfReader) (*Model, error) {
	c := MLAConfig{Name: r.name, Architecture: r.arch, Layers: r.numLayers()}
	c.LatentDim = r.req("kv_lora_rank", MaxDim)
	c.RopeDim = r.optInt("qk_rope_head_dim", -1, 0, MaxDim)
	if c.RopeDim < 0 && r.err == nil {
		r.fail(fieldErr(r.cfg.field("qk_rope_head_dim"), "required"))
	}
	if r.modelType == "deepseek_v32" || r.cfg.has("index_head_dim") {
		c.IndexerHeadDim = r.req("index_head_dim", MaxDim)
		if r.err == nil && c.IndexerHeadDim%128 != 0 {
			r.fail(fieldErr(r.cfg.field("index_head_dim"), fmt.Sprintf("%d is not a multiple of 128 (one fp32 scale per 128 values)", c.IndexerHeadDim)))
		}
	}
	c.DType = r.kvDType()
	c.MTPLayers = r.mtpLayers("num_nextn_predict_layers", 1)
	c.NumSpeculativeTokens = r.opt.NumSpeculativeTokens
	if r.err != nil {
		return nil, r.err
	}
	return DeepSeekMLA(c)
}

// gemma3, gemma3_text: sliding layers per layer_types, else every
// sliding_window_pattern-th layer (1-based) is global (default 6).
func hfGemma3(r *hfReader) (*Model, error) {
	n := r.numLayers()
	c := AttentionConfig{Name: r.name, Architecture: r.arch, Layers: n}
	if types := r.layerTypes("layer_types", n, "sliding_attention", "full_attention"); types != nil {
		c.Sliding = make([]bool, n)
		for i, t := range types {
			c.Sliding[i] = t == "sliding_attention"
		}
	} else {
		key := "sliding_window_pattern"
		if !r.cfg.has(key) && r.cfg.has("_sliding_window_pattern") {
			key = "_sliding_window_pattern"
		}
		period := r.optInt(key, 6, 1, MaxLayers)
		c.Sliding = make([]bool, n)
		for i := range c.Sliding {
			c.Sliding[i] = (i+1)%period != 0
		}
	}
	c.Window = r.optInt("sliding_window", 4096, 1, MaxWindow)
	return r.attentionModel(c, 256)
}

// gpt_oss: layer_types, else alternating starting with sliding.
func hfGptOSS(r *hfReader) (*Model, error) {
	n := r.numLayers()
	c := AttentionConfig{Name: r.name, Architecture: r.arch, Layers: n, Sliding: make([]bool, n)}
	if types := r.layerTypes("layer_types", n, "sliding_attention", "full_attention"); types != nil {
		for i, t := range types {
			c.Sliding[i] = t == "sliding_attention"
		}
	} else {
		for i := range c.Sliding {
			c.Sliding[i] = i%2 == 0
		}
	}
	c.Window = r.optInt("sliding_window", 128, 1, MaxWindow)
	return r.attentionModel(c, 64)
}

// llama and mistral: full attention; mistral with sliding_window set has
// sliding layers throughout.
func hfLlama(r *hfReader) (*Model, error) {
	n := r.numLayers()
	c := AttentionConfig{Name: r.name, Architecture: r.arch, Layers: n}
	if r.modelType == "mistral" && r.cfg.has("sliding_window") {
		c.Window = r.req("sliding_window", MaxWindow)
		c.Sliding = make([]bool, n)
		for i := range c.Sliding {
			c.Sliding[i] = true
		}
	}
	if !r.cfg.has("num_key_value_heads") {
		// transformers: num_key_value_heads defaults to num_attention_heads.
		c.KVHeads = r.req("num_attention_heads", MaxKVHeads)
	}
	return r.attentionModel(c, 0)
}

func (r *hfReader) attentionModel(c AttentionConfig, headDimDefault int) (*Model, error) {
	c.Heads = r.req("num_attention_heads", MaxKVHeads)
	if c.KVHeads == 0 {
		c.KVHeads = r.req("num_key_value_heads", MaxKVHeads)
	}
	c.HeadDim = r.headDim(headDimDefault)
	c.DType = r.kvDType()
	c.NumSpeculativeTokens = r.opt.NumSpeculativeTokens
	r.noMTP()
	if r.err != nil {
		return nil, r.err
	}
	return AttentionModel(c)
}

// nemotron_h: hybrid_override_pattern, M = Mamba2, * = attention, - = MLP,
// E = MoE.
func hfNemotronH(r *hfReader) (*Model, error) {
	pat, ok, err := r.cfg.str("hybrid_override_pattern")
	if err != nil {
		return nil, err
	}
	if !ok || pat == "" {
		return nil, fieldErr(r.cfg.field("hybrid_override_pattern"), "required")
	}
	if len(pat) > MaxLayers {
		return nil, fieldErr(r.cfg.field("hybrid_override_pattern"), fmt.Sprintf("more than %d layers", MaxLayers))
	}
	if i := strings.IndexFunc(pat, func(c rune) bool { return !strings.ContainsRune("M*-E", c) }); i >= 0 {
		return nil, fieldErr(r.cfg.field("hybrid_override_pattern"), fmt.Sprintf("unknown layer character %q at %d (want M, *, - or E)", pat[i], i))
	}
	if n := r.optInt("num_hidden_layers", len(pat), 1, MaxLayers); n != len(pat) && r.err == nil {
		return nil, fieldErr(r.cfg.field("num_hidden_layers"), fmt.Sprintf("%d, but hybrid_override_pattern has %d layers", n, len(pat)))
	}
	c := NemotronHConfig{Name: r.name, Architecture: r.arch, Pattern: pat}
	if strings.Contains(pat, "*") {
		c.Heads = r.req("num_attention_heads", MaxKVHeads)
		c.KVHeads = r.req("num_key_value_heads", MaxKVHeads)
		c.HeadDim = r.headDim(0)
	}
	if strings.Contains(pat, "M") {
		c.MambaHeads = r.req("mamba_num_heads", MaxDim)
		c.MambaHeadDim = r.req("mamba_head_dim", MaxDim)
		c.State = r.req("ssm_state_size", MaxDim)
		c.NGroups = r.req("n_groups", MaxDim)
		c.ConvKernel = r.optInt("conv_kernel", 4, 2, MaxConvKernel)
	}
	c.DType = r.kvDType()
	c.SSMDType = r.ssmDType(FP32, "mamba_ssm_cache_dtype")
	r.noMTP()
	if r.err != nil {
		return nil, r.err
	}
	m, err := NemotronH(c)
	if err != nil {
		return nil, err
	}
	m.NumSpeculativeTokens = r.opt.NumSpeculativeTokens
	return m, m.Validate()
}

// AttachEagle3FromHF attaches the Eagle3 draft described by draftConfig (a
// config.json whose architectures name LlamaForCausalLMEagle3 or
// Eagle3LlamaForCausalLM) to target, returning a new model named
// "<target>-eagle3" with nspec speculative tokens (0: 3). Fields read:
// num_hidden_layers (default 1), num_key_value_heads (default
// num_attention_heads), head_dim (default hidden_size /
// num_attention_heads), torch_dtype or dtype (default bf16).
func AttachEagle3FromHF(target *Model, draftConfig []byte, nspec int) (*Model, error) {
	if target == nil {
		return nil, fmt.Errorf("%w: nil target model", ErrInvalidSpec)
	}
	if nspec == 0 {
		nspec = 3
	}
	if nspec < 0 || nspec > maxNumSpecToks {
		return nil, fieldErr("num_speculative_tokens", fmt.Sprintf("%d out of range [0, %d]", nspec, maxNumSpecToks))
	}
	raw, err := decodeJSONDocument(draftConfig, MaxHFConfigBytes, "draft config.json")
	if err != nil {
		return nil, err
	}
	root, err := decodeJSONObj(raw, "", true)
	if err != nil {
		return nil, err
	}
	archs, err := hfArchitectures(root)
	if err != nil {
		return nil, err
	}
	if !isEagle3(archs) {
		return nil, &FieldError{Field: "architectures", Msg: fmt.Sprintf("%q is not an Eagle3 draft (want %s)", archs, strings.Join(eagle3Architectures, " or ")), Err: ErrUnsupported}
	}
	r := &hfReader{root: root, cfg: root, modelType: "eagle3"}
	d := Eagle3Draft{NumSpeculativeTokens: nspec}
	d.Layers = r.optInt("num_hidden_layers", 1, 1, 64)
	d.Heads = r.req("num_attention_heads", MaxKVHeads)
	if root.has("num_key_value_heads") {
		d.KVHeads = r.req("num_key_value_heads", MaxKVHeads)
	} else {
		d.KVHeads = r.req("num_attention_heads", MaxKVHeads)
	}
	d.HeadDim = r.headDim(0)
	d.DType = r.kvDType()
	if r.err != nil {
		return nil, r.err
	}
	if err := checkModelLimits(target); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	m, err := AttachEagle3(target, target.Name+"-eagle3", d)
	if err != nil {
		return nil, err
	}
	if err := checkModelLimits(m); err != nil {
		return nil, err
	}
	return m, nil
}

// ParseModelFile reads a model file: our JSON format (it has a "format"
// key; of opt only KVCacheDType applies, its dtypes are explicit
// otherwise) or a Hugging Face config.json (it has "model_type" or
// "architectures"), parsed with opt.
func ParseModelFile(path string, opt HFOptions) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max(MaxModelJSONBytes, MaxHFConfigBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := ParseModelBytes(data, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ParseModelBytes is ParseModelFile on bytes already read.
func ParseModelBytes(data []byte, opt HFOptions) (*Model, error) {
	raw, err := decodeJSONDocument(data, max(MaxModelJSONBytes, MaxHFConfigBytes), "model file")
	if err != nil {
		return nil, err
	}
	root, err := decodeJSONObj(raw, "", true)
	if err != nil {
		return nil, err
	}
	switch {
	case root.has("format"):
		m, err := ParseModelJSON(data)
		if err != nil {
			return nil, err
		}
		return m.WithKVCacheDType(opt.KVCacheDType)
	case root.has("model_type") || root.has("architectures"):
		return parseHFObj(root, opt)
	}
	return nil, fmt.Errorf("%w: neither a hybridxfer model (no \"format\" key) nor a Hugging Face config.json (no \"model_type\" or \"architectures\")", ErrInvalidSpec)
}
