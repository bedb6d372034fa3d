package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/spf13/cobra"
)

// modelFlags are the flags every command that loads a model shares.
type modelFlags struct {
	mtp      bool
	spec     string
	numSpec  int
	ssmDType string
	kvDType  string
}

func (f *modelFlags) register(c *cobra.Command) {
	c.Flags().BoolVar(&f.mtp, "mtp", false, "attach the model's native MTP draft layers (Qwen3.5, Qwen3-Next, DeepSeek-V3/V3.2)")
	c.Flags().StringVar(&f.spec, "speculative", "", "speculative decoding: mtp (attach the native MTP layers, like --mtp) or eagle3 (the model must have an Eagle3 drafter: kimi-k2.5-eagle3); a model with a drafter decodes speculatively; P and D must agree")
	c.Flags().IntVar(&f.numSpec, "num-speculative-tokens", 0, "speculative tokens per decode step (widens conv states; default 1 with --mtp, 3 for Eagle3 presets)")
	c.Flags().StringVar(&f.ssmDType, "ssm-dtype", "", "recurrent state dtype override, like vLLM's --mamba-ssm-cache-dtype (bf16, fp32)")
	c.Flags().StringVar(&f.kvDType, "kv-cache-dtype", "auto", "per-token cache storage, like vLLM's: "+strings.Join(groups.KVCacheDTypes(), ", ")+" (fp8: fp8 K/V with per-token-head fp32 scales; fp8_ds_mla: MLA models only); P and D must agree")
}

func (f *modelFlags) presetOptions() (groups.PresetOptions, error) {
	o := groups.PresetOptions{MTP: f.mtp || f.spec == string(groups.DraftMTP), NumSpeculativeTokens: f.numSpec}
	switch groups.DraftKind(f.spec) {
	case groups.DraftNone, groups.DraftMTP, groups.DraftEagle3:
	default:
		return o, fmt.Errorf("--speculative %q (want mtp or eagle3)", f.spec)
	}
	kv, err := groups.ParseKVCacheDType(f.kvDType)
	if err != nil {
		return o, err
	}
	o.KVCacheDType = kv
	if f.ssmDType != "" {
		d, err := groups.ParseDType(f.ssmDType)
		if err != nil {
			return o, err
		}
		o.SSMDType = d
	}
	return o, nil
}

// load resolves NAME|FILE: a preset name, or a path to our JSON or a Hugging
// Face config.json.
func (f *modelFlags) load(nameOrFile string) (*groups.Model, error) {
	o, err := f.presetOptions()
	if err != nil {
		return nil, err
	}
	var m *groups.Model
	if _, statErr := os.Stat(nameOrFile); statErr == nil || strings.ContainsAny(nameOrFile, "/\\") || strings.HasSuffix(nameOrFile, ".json") {
		m, err = groups.ParseModelFile(nameOrFile, groups.HFOptions{MTP: o.MTP, NumSpeculativeTokens: o.NumSpeculativeTokens, SSMDType: o.SSMDType, KVCacheDType: o.KVCacheDType})
	} else {
		m, err = groups.Preset(nameOrFile, o)
	}
	if err != nil {
		return nil, err
	}
	if f.spec != "" && string(m.Draft) != f.spec {
		have := "no drafter"
		if m.Draft != groups.DraftNone {
			have = "a " + string(m.Draft) + " drafter"
		}
		return nil, fmt.Errorf("--speculative %s: model %s has %s", f.spec, m.Name, have)
	}
	return m, nil
}
