package groups_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

func readHF(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hf", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameModel checks that got equals want but for the name, and that both
// give the same bytes at 4k and 32k tokens, at tp 1 and 2.
func sameModel(t *testing.T, got, want *groups.Model) {
	t.Helper()
	g := *got
	g.Name = want.Name
	if !reflect.DeepEqual(&g, want) {
		t.Fatalf("imported model differs from the preset: %s", diffModels(want, &g))
	}
	for _, tok := range []int{4096, 32768} {
		for _, tp := range []int{1, 2} {
			sg, errG := groups.Summarize(got, tok, tp)
			sw, errW := groups.Summarize(want, tok, tp)
			if (errG == nil) != (errW == nil) {
				t.Fatalf("tp %d: %v vs %v", tp, errG, errW)
			}
			if sg.StateBytes != sw.StateBytes || sg.DraftBytes != sw.DraftBytes || sg.FixedB != sw.FixedB {
				t.Errorf("%d tokens tp %d: state %d draft %d, preset %d %d", tok, tp, sg.StateBytes, sg.DraftBytes, sw.StateBytes, sw.DraftBytes)
			}
		}
	}
}

// Every testdata/hf config imports to exactly its preset's layers.
func TestHFConfigPresets(t *testing.T) {
	cases := []struct {
		file   string
		preset string
		opt    groups.HFOptions
		popt   groups.PresetOptions
	}{
		{"qwen3.5-9b", "qwen3.5-9b", groups.HFOptions{}, groups.PresetOptions{}},
		{"qwen3.5-9b", "qwen3.5-9b", groups.HFOptions{MTP: true, NumSpeculativeTokens: 3}, groups.PresetOptions{MTP: true, NumSpeculativeTokens: 3}},
		{"qwen3.5-397b-a17b", "qwen3.5-397b-a17b", groups.HFOptions{}, groups.PresetOptions{}},
		{"qwen3.5-397b-a17b", "qwen3.5-397b-a17b", groups.HFOptions{MTP: true, SSMDType: groups.BF16}, groups.PresetOptions{MTP: true, SSMDType: groups.BF16}},
		{"qwen3-next-80b-a3b", "qwen3-next-80b-a3b", groups.HFOptions{}, groups.PresetOptions{}},
		{"qwen3-next-80b-a3b", "qwen3-next-80b-a3b", groups.HFOptions{SSMDType: groups.FP32, MTP: true}, groups.PresetOptions{SSMDType: groups.FP32, MTP: true}},
		{"kimi-linear-48b-a3b", "kimi-linear-48b-a3b", groups.HFOptions{}, groups.PresetOptions{}},
		{"kimi-linear-48b-a3b", "kimi-linear-48b-a3b", groups.HFOptions{NumSpeculativeTokens: 2, SSMDType: groups.BF16}, groups.PresetOptions{NumSpeculativeTokens: 2}},
		{"kimi-k2.5", "kimi-k2.5", groups.HFOptions{}, groups.PresetOptions{}},
		{"deepseek-v3", "deepseek-v3", groups.HFOptions{}, groups.PresetOptions{}},
		{"deepseek-v3", "deepseek-v3", groups.HFOptions{MTP: true}, groups.PresetOptions{MTP: true}},
		{"deepseek-v3.2", "deepseek-v3.2", groups.HFOptions{}, groups.PresetOptions{}},
		{"deepseek-v3.2", "deepseek-v3.2", groups.HFOptions{MTP: true, NumSpeculativeTokens: 2}, groups.PresetOptions{MTP: true, NumSpeculativeTokens: 2}},
		{"gemma-3-27b", "gemma-3-27b", groups.HFOptions{}, groups.PresetOptions{}},
		{"gpt-oss-20b", "gpt-oss-20b", groups.HFOptions{}, groups.PresetOptions{}},
		{"nemotron-nano-9b-v2", "nemotron-nano-9b-v2", groups.HFOptions{}, groups.PresetOptions{}},
		{"nemotron-3-nano-30b-a3b", "nemotron-3-nano-30b-a3b", groups.HFOptions{}, groups.PresetOptions{}},
		{"nemotron-3-nano-30b-a3b", "nemotron-3-nano-30b-a3b", groups.HFOptions{SSMDType: groups.BF16}, groups.PresetOptions{SSMDType: groups.BF16}},
		{"llama-3.1-8b", "llama-3.1-8b", groups.HFOptions{}, groups.PresetOptions{}},
		{"jamba-1.5-mini", "jamba-1.5-mini", groups.HFOptions{}, groups.PresetOptions{}},
		{"jamba-1.5-mini", "jamba-1.5-mini", groups.HFOptions{SSMDType: groups.FP32, KVCacheDType: groups.KVCacheFP8}, groups.PresetOptions{SSMDType: groups.FP32, KVCacheDType: groups.KVCacheFP8}},
		{"falcon-h1-7b", "falcon-h1-7b", groups.HFOptions{}, groups.PresetOptions{}},
		{"falcon-h1-7b", "falcon-h1-7b", groups.HFOptions{NumSpeculativeTokens: 2, SSMDType: groups.FP32}, groups.PresetOptions{NumSpeculativeTokens: 2, SSMDType: groups.FP32}},
		{"granite-4.0-h-tiny", "granite-4.0-h-tiny", groups.HFOptions{}, groups.PresetOptions{}},
		{"lfm2-1.2b", "lfm2-1.2b", groups.HFOptions{}, groups.PresetOptions{}},
		{"lfm2-1.2b", "lfm2-1.2b", groups.HFOptions{NumSpeculativeTokens: 1}, groups.PresetOptions{NumSpeculativeTokens: 1}},
		{"bamba-9b", "bamba-9b", groups.HFOptions{}, groups.PresetOptions{}},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		seen[c.file] = true
		t.Run(c.file, func(t *testing.T) {
			got, err := groups.ParseHFConfig(readHF(t, c.file), c.opt)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != c.file { // from _name_or_path
				t.Errorf("name %q, want %q", got.Name, c.file)
			}
			want, err := groups.Preset(c.preset, c.popt)
			if err != nil {
				t.Fatal(err)
			}
			sameModel(t, got, want)
			roundTrip(t, got)
		})
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "hf", "*.json"))
	for _, f := range files {
		n := strings.TrimSuffix(filepath.Base(f), ".json")
		if !seen[n] && !strings.HasSuffix(n, "-draft") {
			t.Errorf("testdata/hf/%s.json has no case", n)
		}
	}
}

// The reference numbers of models.md through the importer.
func TestHFConfigReferenceBytes(t *testing.T) {
	for file, want := range map[string]int64{
		"qwen3.5-397b-a17b":   317890560,
		"qwen3-next-80b-a3b":  140181504,
		"kimi-linear-48b-a3b": 76447744,
		"deepseek-v3.2":       320815104,
		"gemma-3-27b":         771751936,
		"gpt-oss-20b":         103809024,
		"nemotron-nano-9b-v2": 210657280,
		"llama-3.1-8b":        536870912,
		// Computed from the config.json files by an independent script of
		// vLLM's formulas (mamba_utils' shape and dtype calculators).
		"jamba-1.5-mini":     75825152,
		"falcon-h1-7b":       254701568,
		"granite-4.0-h-tiny": 62584832,
		"lfm2-1.2b":          50413568,
		"bamba-9b":           112619008,
	} {
		m, err := groups.ParseHFConfig(readHF(t, file), groups.HFOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := groups.Summarize(m, 4096, 1)
		if err != nil {
			t.Fatal(err)
		}
		if s.StateBytes != want {
			t.Errorf("%s: %d bytes at 4k, want %d", file, s.StateBytes, want)
		}
	}
}

func TestAttachEagle3FromHF(t *testing.T) {
	target, err := groups.ParseHFConfig(readHF(t, "kimi-k2.5"), groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := groups.AttachEagle3FromHF(target, readHF(t, "kimi-k2.5-eagle3-draft"), 0)
	if err != nil {
		t.Fatal(err)
	}
	want, err := groups.Preset("kimi-k2.5-eagle3", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "kimi-k2.5-eagle3" {
		t.Errorf("name %q", got.Name)
	}
	sameModel(t, got, want)
	if target.Draft != groups.DraftNone || len(target.Layers) != 61 {
		t.Error("target modified")
	}
	got, err = groups.AttachEagle3FromHF(target, readHF(t, "kimi-k2.5-eagle3-draft"), 5)
	if err != nil || got.NumSpeculativeTokens != 5 {
		t.Errorf("nspec 5: %v %d", err, got.NumSpeculativeTokens)
	}
	// An Eagle3 config is a draft, not a model.
	_, err = groups.ParseHFConfig(readHF(t, "kimi-k2.5-eagle3-draft"), groups.HFOptions{})
	checkFieldErr(t, err, "architectures", groups.ErrUnsupported)
	// A model config is not a draft.
	_, err = groups.AttachEagle3FromHF(target, readHF(t, "llama-3.1-8b"), 0)
	checkFieldErr(t, err, "architectures", groups.ErrUnsupported)
	draft := setField(t, readHF(t, "kimi-k2.5-eagle3-draft"), "", "num_key_value_heads", 0)
	_, err = groups.AttachEagle3FromHF(target, draft, 0)
	checkFieldErr(t, err, "num_key_value_heads", groups.ErrInvalidSpec)
	_, err = groups.AttachEagle3FromHF(target, readHF(t, "kimi-k2.5-eagle3-draft"), -1)
	checkFieldErr(t, err, "num_speculative_tokens", groups.ErrInvalidSpec)
	withDraft, _ := groups.Preset("deepseek-v3", groups.PresetOptions{MTP: true})
	_, err = groups.AttachEagle3FromHF(withDraft, readHF(t, "kimi-k2.5-eagle3-draft"), 0)
	checkFieldErr(t, err, "draft", groups.ErrInvalidSpec)
	if _, err := groups.AttachEagle3FromHF(nil, readHF(t, "kimi-k2.5-eagle3-draft"), 0); !errors.Is(err, groups.ErrInvalidSpec) {
		t.Errorf("nil target: %v", err)
	}
}

// setField sets (or, with value nil, deletes) obj[key] where obj is the
// object at path ("" top level, "text_config", "linear_attn_config").
func setField(t *testing.T, data []byte, path, key string, value any) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	obj := doc
	if path != "" {
		for _, p := range strings.Split(path, ".") {
			o, ok := obj[p].(map[string]any)
			if !ok {
				t.Fatalf("no object %s", path)
			}
			obj = o
		}
	}
	if value == nil {
		if _, ok := obj[key]; !ok {
			t.Fatalf("setField: %s.%s absent", path, key)
		}
		delete(obj, key)
	} else {
		obj[key] = value
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseHFConfigRejects(t *testing.T) {
	type del struct{}
	cases := []struct {
		name, file, path, key string
		value                 any // del{}: delete
		opt                   groups.HFOptions
		field                 string
		sentinel              error
	}{
		{"unsupported model_type", "llama-3.1-8b", "", "model_type", "mamba", groups.HFOptions{}, "model_type", groups.ErrUnsupported},
		{"missing model_type", "llama-3.1-8b", "", "model_type", del{}, groups.HFOptions{}, "model_type", groups.ErrInvalidSpec},
		{"model_type not a string", "llama-3.1-8b", "", "model_type", 3, groups.HFOptions{}, "model_type", groups.ErrInvalidSpec},
		{"wrong text_config type", "qwen3.5-397b-a17b", "text_config", "model_type", "llama", groups.HFOptions{}, "text_config.model_type", groups.ErrUnsupported},
		{"qwen3.5 missing value heads", "qwen3.5-397b-a17b", "text_config", "linear_num_value_heads", del{}, groups.HFOptions{}, "text_config.linear_num_value_heads", groups.ErrInvalidSpec},
		{"qwen3.5 zero kv heads", "qwen3.5-397b-a17b", "text_config", "num_key_value_heads", 0, groups.HFOptions{}, "text_config.num_key_value_heads", groups.ErrInvalidSpec},
		{"qwen3.5 float layers", "qwen3.5-397b-a17b", "text_config", "num_hidden_layers", 60.5, groups.HFOptions{}, "text_config.num_hidden_layers", groups.ErrInvalidSpec},
		{"qwen3.5 bad ssm dtype", "qwen3.5-397b-a17b", "text_config", "mamba_ssm_dtype", "float33", groups.HFOptions{}, "text_config.mamba_ssm_dtype", groups.ErrInvalidSpec},
		{"qwen3.5 no mtp layers", "qwen3.5-9b", "", "mtp_num_hidden_layers", 0, groups.HFOptions{MTP: true}, "mtp_num_hidden_layers", groups.ErrUnsupported},
		{"qwen3.5 short layer_types", "qwen3.5-9b", "", "layer_types", []string{"full_attention"}, groups.HFOptions{}, "layer_types", groups.ErrInvalidSpec},
		{"qwen3.5 layer_types vs layers", "qwen3.5-9b", "", "num_hidden_layers", 1, groups.HFOptions{}, "layer_types", groups.ErrInvalidSpec},
		{"qwen3-next missing conv", "qwen3-next-80b-a3b", "", "linear_conv_kernel_dim", del{}, groups.HFOptions{}, "linear_conv_kernel_dim", groups.ErrInvalidSpec},
		{"qwen3-next huge layers", "qwen3-next-80b-a3b", "", "num_hidden_layers", 1 << 20, groups.HFOptions{}, "num_hidden_layers", groups.ErrInvalidSpec},
		{"kimi-linear no layer lists", "kimi-linear-48b-a3b", "", "linear_attn_config", del{}, groups.HFOptions{}, "linear_attn_config", groups.ErrInvalidSpec},
		{"kimi-linear layer out of range", "kimi-linear-48b-a3b", "linear_attn_config", "kda_layers", []int{0}, groups.HFOptions{}, "linear_attn_config.kda_layers[0]", groups.ErrInvalidSpec},
		{"kimi-linear overlap", "kimi-linear-48b-a3b", "linear_attn_config", "full_attn_layers", []int{1}, groups.HFOptions{}, "linear_attn_config.full_attn_layers[0]", groups.ErrInvalidSpec},
		{"kimi-linear uncovered", "kimi-linear-48b-a3b", "linear_attn_config", "full_attn_layers", []int{4}, groups.HFOptions{}, "linear_attn_config.full_attn_layers", groups.ErrInvalidSpec},
		{"kimi-linear no heads", "kimi-linear-48b-a3b", "linear_attn_config", "num_heads", del{}, groups.HFOptions{}, "linear_attn_config.num_heads", groups.ErrInvalidSpec},
		{"kimi-linear mtp", "kimi-linear-48b-a3b", "", "torch_dtype", "bfloat16", groups.HFOptions{MTP: true}, "num_nextn_predict_layers", groups.ErrUnsupported},
		{"deepseek missing rope", "deepseek-v3", "", "qk_rope_head_dim", del{}, groups.HFOptions{}, "qk_rope_head_dim", groups.ErrInvalidSpec},
		{"deepseek bad dtype", "deepseek-v3", "", "torch_dtype", "int4", groups.HFOptions{}, "torch_dtype", groups.ErrInvalidSpec},
		{"deepseek-v3.2 missing indexer", "deepseek-v3.2", "", "index_head_dim", del{}, groups.HFOptions{}, "index_head_dim", groups.ErrInvalidSpec},
		{"deepseek-v3.2 bad indexer", "deepseek-v3.2", "", "index_head_dim", 100, groups.HFOptions{}, "index_head_dim", groups.ErrInvalidSpec},
		{"kimi-k2.5 mtp", "kimi-k2.5", "text_config", "num_nextn_predict_layers", 0, groups.HFOptions{MTP: true}, "text_config.num_nextn_predict_layers", groups.ErrUnsupported},
		{"kimi-k2.5 missing latent", "kimi-k2.5", "text_config", "kv_lora_rank", del{}, groups.HFOptions{}, "text_config.kv_lora_rank", groups.ErrInvalidSpec},
		{"gemma bad layer type", "gemma-3-27b", "text_config", "layer_types", make([]string, 62), groups.HFOptions{}, "text_config.layer_types[0]", groups.ErrInvalidSpec},
		{"gemma mtp", "gemma-3-27b", "", "torch_dtype", "bfloat16", groups.HFOptions{MTP: true}, "model_type", groups.ErrUnsupported},
		{"gpt-oss window zero", "gpt-oss-20b", "", "sliding_window", 0, groups.HFOptions{}, "sliding_window", groups.ErrInvalidSpec},
		{"nemotron bad pattern", "nemotron-nano-9b-v2", "", "hybrid_override_pattern", "MX", groups.HFOptions{}, "hybrid_override_pattern", groups.ErrInvalidSpec},
		{"nemotron layer count", "nemotron-nano-9b-v2", "", "num_hidden_layers", 55, groups.HFOptions{}, "num_hidden_layers", groups.ErrInvalidSpec},
		{"nemotron missing groups", "nemotron-nano-9b-v2", "", "n_groups", del{}, groups.HFOptions{}, "n_groups", groups.ErrInvalidSpec},
		{"llama missing heads", "llama-3.1-8b", "", "num_attention_heads", del{}, groups.HFOptions{}, "num_attention_heads", groups.ErrInvalidSpec},
		{"jamba offset past period", "jamba-1.5-mini", "", "attn_layer_offset", 8, groups.HFOptions{}, "attn_layer_offset", groups.ErrInvalidSpec},
		{"jamba speculative tokens", "jamba-1.5-mini", "", "x", 1, groups.HFOptions{NumSpeculativeTokens: 1}, "num_speculative_tokens", groups.ErrUnsupported},
		{"jamba missing kv heads", "jamba-1.5-mini", "", "num_key_value_heads", del{}, groups.HFOptions{}, "num_key_value_heads", groups.ErrInvalidSpec},
		{"jamba missing hidden", "jamba-1.5-mini", "", "hidden_size", del{}, groups.HFOptions{}, "hidden_size", groups.ErrInvalidSpec},
		{"jamba mtp", "jamba-1.5-mini", "", "x", 1, groups.HFOptions{MTP: true}, "model_type", groups.ErrUnsupported},
		{"falcon missing d_ssm", "falcon-h1-7b", "", "mamba_d_ssm", del{}, groups.HFOptions{}, "mamba_d_ssm", groups.ErrInvalidSpec},
		{"falcon d_head inconsistent", "falcon-h1-7b", "", "mamba_d_head", 64, groups.HFOptions{}, "mamba_d_head", groups.ErrInvalidSpec},
		{"falcon d_head not auto", "falcon-h1-7b", "", "mamba_d_head", "big", groups.HFOptions{}, "mamba_d_head", groups.ErrInvalidSpec},
		{"falcon heads do not divide", "falcon-h1-7b", "", "mamba_n_heads", 25, groups.HFOptions{}, "mamba_n_heads", groups.ErrInvalidSpec},
		{"falcon groups do not divide", "falcon-h1-7b", "", "mamba_n_groups", 5, groups.HFOptions{}, "mamba_n_groups", groups.ErrInvalidSpec},
		{"granite missing layer_types", "granite-4.0-h-tiny", "", "layer_types", del{}, groups.HFOptions{}, "layer_types", groups.ErrInvalidSpec},
		{"granite bad layer type", "granite-4.0-h-tiny", "", "layer_types", make([]string, 40), groups.HFOptions{}, "layer_types[0]", groups.ErrInvalidSpec},
		{"granite hidden indivisible", "granite-4.0-h-tiny", "", "hidden_size", 1537, groups.HFOptions{}, "hidden_size", groups.ErrInvalidSpec},
		{"lfm2 attention index out of range", "lfm2-1.2b", "", "full_attn_idxs", []int{16}, groups.HFOptions{}, "full_attn_idxs[0]", groups.ErrInvalidSpec},
		{"lfm2 attention index twice", "lfm2-1.2b", "", "full_attn_idxs", []int{2, 2}, groups.HFOptions{}, "full_attn_idxs[1]", groups.ErrInvalidSpec},
		{"lfm2 bad conv kernel", "lfm2-1.2b", "", "conv_L_cache", 1, groups.HFOptions{}, "conv_L_cache", groups.ErrInvalidSpec},
		{"bamba index out of range", "bamba-9b", "", "attn_layer_indices", []int{32}, groups.HFOptions{}, "attn_layer_indices[0]", groups.ErrInvalidSpec},
		{"bamba missing hidden", "bamba-9b", "", "hidden_size", del{}, groups.HFOptions{}, "hidden_size", groups.ErrInvalidSpec},
		{"llama head_dim indivisible", "llama-3.1-8b", "", "hidden_size", 4095, groups.HFOptions{}, "head_dim", groups.ErrInvalidSpec},
		{"duplicated key", "llama-3.1-8b", "", "x", 1, groups.HFOptions{}, "num_hidden_layers", groups.ErrInvalidSpec},
		{"bad option nspec", "llama-3.1-8b", "", "x", 1, groups.HFOptions{NumSpeculativeTokens: 65}, "num_speculative_tokens", groups.ErrInvalidSpec},
		{"bad option ssm dtype", "llama-3.1-8b", "", "x", 1, groups.HFOptions{SSMDType: groups.DType(99)}, "ssm_dtype", groups.ErrInvalidSpec},
		{"bad name", "llama-3.1-8b", "", "_name_or_path", "a\x00b", groups.HFOptions{}, "_name_or_path", groups.ErrInvalidSpec},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v any = c.value
			if _, ok := v.(del); ok {
				v = nil
			}
			data := setField(t, readHF(t, c.file), c.path, c.key, v)
			if c.name == "duplicated key" {
				data = []byte(strings.Replace(string(data), `"num_hidden_layers":32`, `"num_hidden_layers":32,"num_hidden_layers":32`, 1))
			}
			_, err := groups.ParseHFConfig(data, c.opt)
			checkFieldErr(t, err, c.field, c.sentinel)
		})
	}
}

// Defaults: head_dim from hidden_size / num_attention_heads, kv heads from
// num_attention_heads (llama), interval 4 (qwen), pattern 6 and window 4096
// (gemma 3), bf16, names derived from model_type.
func TestParseHFConfigDefaults(t *testing.T) {
	data := setField(t, readHF(t, "llama-3.1-8b"), "", "num_key_value_heads", nil)
	data = setField(t, data, "", "torch_dtype", nil)
	data = setField(t, data, "", "_name_or_path", nil)
	m, err := groups.ParseHFConfig(data, groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a := m.Layers[0].Attention; a.KVHeads != 32 || a.HeadDim != 128 || a.DType != groups.BF16 || m.Name != "llama-32l" {
		t.Errorf("llama defaults: %+v name %q", a, m.Name)
	}
	data = setField(t, readHF(t, "llama-3.1-8b"), "", "model_type", "mistral")
	data = setField(t, data, "", "sliding_window", 4096)
	m, err = groups.ParseHFConfig(data, groups.HFOptions{Name: "mistral-7b"})
	if err != nil {
		t.Fatal(err)
	}
	if l := m.Layers[31]; l.Kind != groups.SlidingWindow || l.Attention.Window != 4096 || m.Name != "mistral-7b" {
		t.Errorf("mistral sliding: %+v %+v", l, l.Attention)
	}
	data = setField(t, readHF(t, "qwen3.5-9b"), "", "layer_types", nil)
	data = setField(t, data, "", "full_attention_interval", nil)
	data = setField(t, data, "", "mamba_ssm_dtype", nil)
	m, err = groups.ParseHFConfig(data, groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{})
	sameModel(t, m, want) // interval 4, ssm fp32
	data = setField(t, readHF(t, "gemma-3-27b"), "text_config", "sliding_window", nil)
	m, err = groups.ParseHFConfig(data, groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l := m.Layers[0]; l.Attention.Window != 4096 || m.Layers[5].Kind != groups.FullAttention || m.Layers[4].Kind != groups.SlidingWindow {
		t.Errorf("gemma defaults: %+v", l.Attention)
	}
	// The text form of Qwen3.5 (fields at the top level) and a text_config
	// without model_type give the same model.
	data = setField(t, readHF(t, "qwen3.5-397b-a17b"), "text_config", "model_type", nil)
	m, err = groups.ParseHFConfig(data, groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ = groups.Preset("qwen3.5-397b-a17b", groups.PresetOptions{})
	sameModel(t, m, want)
	// Qwen3-Next honours mamba_ssm_dtype in the config.
	data = setField(t, readHF(t, "qwen3-next-80b-a3b"), "", "mamba_ssm_dtype", "float32")
	m, err = groups.ParseHFConfig(data, groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ = groups.Preset("qwen3-next-80b-a3b", groups.PresetOptions{SSMDType: groups.FP32})
	sameModel(t, m, want)
}

func TestParseModelFile(t *testing.T) {
	m, err := groups.ParseModelFile(filepath.Join("testdata", "hf", "deepseek-v3.json"), groups.HFOptions{MTP: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.Draft != groups.DraftMTP {
		t.Error("HF options not applied")
	}
	m, err = groups.ParseModelFile(filepath.Join("testdata", "models", "qwen3.5-9b.json"), groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{MTP: true})
	if !reflect.DeepEqual(m, want) {
		t.Errorf("our format: %s", diffModels(want, m))
	}
	dir := t.TempDir()
	for name, doc := range map[string]string{"neither.json": `{"name": "x"}`, "garbage.json": `{"format": 1} x`, "array.json": `[1]`} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := groups.ParseModelFile(p, groups.HFOptions{}); !errors.Is(err, groups.ErrInvalidSpec) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := groups.ParseModelFile(filepath.Join(dir, "missing.json"), groups.HFOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestSupportedHFModelTypes(t *testing.T) {
	got := strings.Join(groups.SupportedHFModelTypes(), " ")
	want := "bamba deepseek_v3 deepseek_v32 falcon_h1 gemma3 gemma3_text gpt_oss granitemoehybrid jamba kimi_k2 kimi_k25 kimi_linear lfm2 llama mistral nemotron_h qwen3_5 qwen3_5_moe qwen3_5_moe_text qwen3_5_text qwen3_next"
	if got != want {
		t.Errorf("got %s", got)
	}
}
