package proptest

import (
	"github.com/hybridxfer/hybridxfer/groups"
	"pgregory.net/rapid"
)

// GenPresetModel draws a preset of any family (every groups preset, so a
// family added there is drawn here), with its native MTP layers sometimes,
// 0 to 4 speculative tokens and the KV cache dtype auto or fp8. Its real
// shapes are large: the serving and reference-model properties run its
// miniature (refmodel.Miniature keeps how every tp up to 64 shards it).
func GenPresetModel() *rapid.Generator[*groups.Model] {
	return rapid.Custom(func(t *rapid.T) *groups.Model {
		name := rapid.SampledFrom(groups.PresetNames()).Draw(t, "preset")
		o := groups.PresetOptions{
			MTP:                  groups.HasMTP(name) && rapid.Bool().Draw(t, "mtp"),
			NumSpeculativeTokens: rapid.IntRange(0, 4).Draw(t, "preset_nspec"),
			KVCacheDType:         rapid.SampledFrom([]groups.KVCacheDType{groups.KVCacheAuto, groups.KVCacheFP8}).Draw(t, "kv_cache_dtype"),
		}
		if !groups.AcceptsSpeculativeTokens(name) {
			o.NumSpeculativeTokens = 0
		}
		m, err := groups.Preset(name, o)
		if err != nil {
			t.Fatalf("preset %s %+v: %v", name, o, err)
		}
		return m
	})
}

// GenServingModel draws the model of a serving or reference-model run: a
// small random hybrid (GenTransferModel) three times in four, else a
// preset of any family (GenPresetModel).
func GenServingModel() *rapid.Generator[*groups.Model] {
	return rapid.Custom(func(t *rapid.T) *groups.Model {
		if rapid.IntRange(0, 3).Draw(t, "from_preset") == 0 {
			return GenPresetModel().Draw(t, "preset_model")
		}
		return GenTransferModel().Draw(t, "random_model")
	})
}

// DrawTP draws, from candidates, a tensor-parallel size that shards m
// (candidates must hold at least one, 1 always does).
func DrawTP(t *rapid.T, m *groups.Model, candidates []int, label string) int {
	var ok []int
	for _, tp := range candidates {
		if m.CheckTP(tp) == nil {
			ok = append(ok, tp)
		}
	}
	if len(ok) == 0 {
		t.Fatalf("%s: no tp of %v shards %s", label, candidates, m.Name)
	}
	return rapid.SampledFrom(ok).Draw(t, label)
}

// GenSpeculativeModel draws a model that decodes speculatively: a drafter
// and 1 to 4 speculative tokens. Half the time a preset with native MTP
// layers (attached) or an Eagle3 drafter, else a random transfer model
// with draft layers.
func GenSpeculativeModel() *rapid.Generator[*groups.Model] {
	return rapid.Custom(func(t *rapid.T) *groups.Model {
		k := rapid.IntRange(1, 4).Draw(t, "num_speculative_tokens")
		if rapid.Bool().Draw(t, "from_preset") {
			var names []string
			for _, n := range groups.PresetNames() {
				if m, err := groups.Preset(n, groups.PresetOptions{}); groups.HasMTP(n) || (err == nil && m.Draft == groups.DraftEagle3) {
					names = append(names, n)
				}
			}
			name := rapid.SampledFrom(names).Draw(t, "preset")
			m, err := groups.Preset(name, groups.PresetOptions{MTP: groups.HasMTP(name), NumSpeculativeTokens: k})
			if err != nil {
				t.Fatalf("preset %s with %d speculative tokens: %v", name, k, err)
			}
			return m
		}
		return GenTransferModel().Filter(func(m *groups.Model) bool {
			return m.Draft != groups.DraftNone && m.NumSpeculativeTokens >= 1 && m.NumSpeculativeTokens <= 4
		}).Draw(t, "random_model")
	})
}
