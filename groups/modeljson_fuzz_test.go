package groups_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

func addFiles(f *testing.F, glob string, add func(b []byte)) {
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files %s: %v", glob, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

// checkAccepted: what a parser accepts is valid and survives our format.
func checkAccepted(t *testing.T, m *groups.Model) {
	if err := m.Validate(); err != nil {
		t.Fatalf("accepted an invalid model: %v", err)
	}
	roundTrip(t, m)
}

// FuzzParseModelJSON: any input gives a model or an error, never a panic;
// an accepted model validates and round-trips.
func FuzzParseModelJSON(f *testing.F) {
	addFiles(f, filepath.Join("testdata", "models", "*.json"), func(b []byte) { f.Add(b) })
	for _, m := range allPresetVariants(f) {
		b, err := groups.MarshalModelJSON(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(validDoc))
	f.Add([]byte(`{"format":"hybridxfer.model/v1","name":"m","layer_specs":{"a":{"kind":"mla","mla":{"latent_dim":8,"rope_dim":0,"dtype":"fp8"}},` +
		`"i":{"kind":"indexer","indexer":{"head_dim":128}}},"layers":[["a","i"],"-",{"name":"x","spec":"a"}],"draft":"eagle3","draft_layers":["a"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := groups.ParseModelJSON(data)
		if err != nil {
			if m != nil {
				t.Fatal("model and error")
			}
			return
		}
		checkAccepted(t, m)
	})
}

// FuzzParseHFConfig: any config.json and options give a model or an error,
// never a panic; an accepted model validates and round-trips through our
// format. Eagle3 drafts are attached to a fixed target the same way.
func FuzzParseHFConfig(f *testing.F) {
	addFiles(f, filepath.Join("testdata", "hf", "*.json"), func(b []byte) {
		f.Add(b, false, uint8(0), uint8(0))
		f.Add(b, true, uint8(3), uint8(groups.FP32))
	})
	// Small configs give the mutator leverage.
	for _, doc := range []string{
		`{"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"hidden_size":64}`,
		`{"model_type":"mistral","num_hidden_layers":2,"num_key_value_heads":2,"head_dim":16,"sliding_window":8}`,
		`{"model_type":"qwen3_next","num_hidden_layers":4,"num_key_value_heads":2,"head_dim":8,"linear_num_key_heads":2,"linear_num_value_heads":4,"linear_key_head_dim":8,"linear_value_head_dim":8,"linear_conv_kernel_dim":4}`,
		`{"model_type":"qwen3_5","text_config":{"layer_types":["linear_attention","full_attention"],"num_hidden_layers":2,"num_key_value_heads":2,"head_dim":8,"linear_num_key_heads":2,"linear_num_value_heads":4,"linear_key_head_dim":8,"linear_value_head_dim":8,"linear_conv_kernel_dim":4}}`,
		`{"model_type":"kimi_linear","num_hidden_layers":3,"kv_lora_rank":16,"qk_rope_head_dim":4,"linear_attn_config":{"kda_layers":[1,2],"full_attn_layers":[3],"num_heads":2,"head_dim":8,"short_conv_kernel_size":4}}`,
		`{"model_type":"deepseek_v32","num_hidden_layers":2,"kv_lora_rank":16,"qk_rope_head_dim":4,"index_head_dim":128,"num_nextn_predict_layers":1}`,
		`{"model_type":"gemma3","text_config":{"num_hidden_layers":7,"num_key_value_heads":2,"head_dim":8,"sliding_window":16}}`,
		`{"model_type":"gpt_oss","num_hidden_layers":2,"num_key_value_heads":2,"head_dim":8,"sliding_window":4,"layer_types":["sliding_attention","full_attention"]}`,
		`{"model_type":"nemotron_h","hybrid_override_pattern":"M-*E","num_key_value_heads":2,"head_dim":8,"mamba_num_heads":4,"mamba_head_dim":4,"ssm_state_size":8,"n_groups":2}`,
		`{"architectures":["LlamaForCausalLMEagle3"],"num_key_value_heads":2,"head_dim":8}`,
	} {
		f.Add([]byte(doc), false, uint8(0), uint8(0))
		f.Add([]byte(doc), true, uint8(1), uint8(groups.BF16))
	}
	target, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, mtp bool, nspec, ssm uint8) {
		opt := groups.HFOptions{MTP: mtp, NumSpeculativeTokens: int(nspec % 70), SSMDType: groups.DType(ssm % 8)}
		m, err := groups.ParseHFConfig(data, opt)
		if err == nil {
			checkAccepted(t, m)
		}
		m, err = groups.AttachEagle3FromHF(target, data, int(nspec%70))
		if err == nil {
			checkAccepted(t, m)
		}
		m, err = groups.ParseModelBytes(data, opt)
		if err == nil {
			checkAccepted(t, m)
		}
	})
}
