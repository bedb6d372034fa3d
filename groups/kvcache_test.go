package groups_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

func TestParseKVCacheDType(t *testing.T) {
	for in, want := range map[string]groups.KVCacheDType{"": groups.KVCacheAuto, "auto": groups.KVCacheAuto, "fp8": groups.KVCacheFP8,
		"FP8_E4M3": groups.KVCacheFP8, "fp8_e5m2": groups.KVCacheFP8E5M2, "fp8_ds_mla": groups.KVCacheFP8DSMLA} {
		got, err := groups.ParseKVCacheDType(in)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v", in, got, err)
		}
	}
	for _, in := range groups.KVCacheDTypes() {
		if _, err := groups.ParseKVCacheDType(in); err != nil {
			t.Errorf("listed value %q refused: %v", in, err)
		}
	}
	var fe *groups.FieldError
	if _, err := groups.ParseKVCacheDType("int4"); !errors.As(err, &fe) || fe.Field != "kv_cache_dtype" {
		t.Fatalf("int4: %v", err)
	}
}

func summary(t *testing.T, m *groups.Model, tokens, tp int) groups.Summary {
	t.Helper()
	s, err := groups.Summarize(m, tokens, tp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fp8: attention K/V one byte per element plus an fp32 scale per token,
// head and K/V; MLA latents one byte; recurrent and indexer state as
// before; the compatibility hash changes.
func TestKVCacheFP8(t *testing.T) {
	auto, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{})
	fp8, err := groups.Preset("qwen3.5-9b", groups.PresetOptions{KVCacheDType: groups.KVCacheFP8})
	if err != nil {
		t.Fatal(err)
	}
	sa, s8 := summary(t, auto, 4096, 2), summary(t, fp8, 4096, 2)
	// 8 full layers x K,V x 2 heads per rank x (256 x 1 B + 4 B scale).
	if want := int64(8 * 2 * 2 * (256 + 4)); s8.AttnTokenB != want {
		t.Errorf("fp8 attention bytes/token/rank %d, want %d (bf16: %d)", s8.AttnTokenB, want, sa.AttnTokenB)
	}
	if s8.FixedB != sa.FixedB {
		t.Errorf("recurrent state changed: %d -> %d", sa.FixedB, s8.FixedB)
	}
	for _, l := range fp8.Layers {
		if l.Attention != nil && (l.Attention.DType != groups.FP8E4M3 || !l.Attention.Scales) {
			t.Fatalf("%s: %+v", l.Name, l.Attention)
		}
	}
	if groups.CompatHash(auto, 2) == groups.CompatHash(fp8, 2) {
		t.Fatal("auto and fp8 share a compatibility hash")
	}
	if fa, f8 := groups.CompatFields(auto, 2)["dtypes"], groups.CompatFields(fp8, 2)["dtypes"]; fa == f8 || !strings.Contains(f8, "fp8_e4m3") {
		t.Errorf("the mismatch is not explained by dtypes: %q vs %q", fa, f8)
	}
	e5, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{KVCacheDType: groups.KVCacheFP8E5M2})
	if groups.CompatHash(e5, 2) == groups.CompatHash(fp8, 2) {
		t.Fatal("fp8_e4m3 and fp8_e5m2 share a compatibility hash")
	}
	k, _ := groups.Preset("kimi-k2.5", groups.PresetOptions{KVCacheDType: groups.KVCacheFP8})
	if got := summary(t, k, 1, 1).AttnTokenB; got != 61*576 {
		t.Errorf("kimi-k2.5 fp8: %d B/token, want %d", got, 61*576)
	}
}

// fp8_ds_mla: DeepSeek-V3.2 with its indexer is 48,068 B/token
// (shared/reference/models.md); refused where it cannot apply.
func TestKVCacheFP8DSMLA(t *testing.T) {
	m, err := groups.Preset("deepseek-v3.2", groups.PresetOptions{KVCacheDType: groups.KVCacheFP8DSMLA})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(t, m, 1, 1).AttnTokenB; got != 48068 {
		t.Errorf("deepseek-v3.2 fp8_ds_mla + indexer: %d B/token, want 48068", got)
	}
	if s := summary(t, m, 4096, 1).StateBytes; s != 196886528 {
		t.Errorf("at 4k: %d, want 196886528", s)
	}
	for name, want := range map[string]string{
		"qwen3.5-9b":       "layers.3.attn",
		"kimi-k2.5-eagle3": "draft.0.attn",
		"gemma-3-4b":       "layers.0.attn",
	} {
		_, err := groups.Preset(name, groups.PresetOptions{KVCacheDType: groups.KVCacheFP8DSMLA})
		var fe *groups.FieldError
		if !errors.As(err, &fe) || fe.Field != "kv_cache_dtype" || !strings.Contains(err.Error(), want) {
			t.Errorf("%s with fp8_ds_mla: %v", name, err)
		}
	}
	if _, err := m.WithKVCacheDType(groups.KVCacheFP8); err == nil {
		t.Error("fp8 over an fp8_ds_mla cache accepted")
	}
	small, _ := groups.DeepSeekMLA(groups.MLAConfig{Name: "small", Layers: 2, LatentDim: 256, RopeDim: 32, DType: groups.BF16})
	if _, err := small.WithKVCacheDType(groups.KVCacheFP8DSMLA); err == nil || !strings.Contains(err.Error(), "512 + 64") {
		t.Errorf("fp8_ds_mla on latent 256: %v", err)
	}
	if _, err := small.WithKVCacheDType("int4"); err == nil {
		t.Error("unknown value accepted")
	}
}

// The option gives the same model through the importer, our JSON format
// and the presets.
func TestKVCacheDTypeEveryPath(t *testing.T) {
	for _, kv := range []groups.KVCacheDType{groups.KVCacheAuto, groups.KVCacheFP8} {
		want, err := groups.Preset("qwen3.5-9b", groups.PresetOptions{KVCacheDType: kv})
		if err != nil {
			t.Fatal(err)
		}
		got, err := groups.ParseHFConfig(readHF(t, "qwen3.5-9b"), groups.HFOptions{KVCacheDType: kv})
		if err != nil {
			t.Fatal(err)
		}
		sameModel(t, got, want)
		plain, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{})
		doc, err := groups.MarshalModelJSON(plain)
		if err != nil {
			t.Fatal(err)
		}
		fromJSON, err := groups.ParseModelBytes(doc, groups.HFOptions{KVCacheDType: kv})
		if err != nil {
			t.Fatal(err)
		}
		sameModel(t, fromJSON, want)
	}
}
