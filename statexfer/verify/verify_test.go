package verify

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
)

func TestPresetsSmall(t *testing.T) {
	for _, name := range []string{"qwen3.5-0.8b", "gemma-3-4b", "kimi-linear-48b-a3b", "nemotron-3-nano-30b-a3b", "deepseek-v3.2", "gpt-oss-20b"} {
		m, err := groups.Preset(name, groups.PresetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tp := range [][2]int{{1, 2}, {2, 1}, {2, 4}, {4, 2}} {
			for _, mode := range []plan.Mode{plan.Direct, plan.Staged} {
				res, err := Run(Config{Model: m, P: groups.InstanceConfig{TP: tp[0], AttnLayout: groups.NHD, ConvLayout: groups.SD},
					D: groups.InstanceConfig{TP: tp[1]}, PromptTokens: 1500, Requests: 3, Seed: 7, Mode: mode})
				if err != nil {
					t.Fatalf("%s %v %v: %v", name, tp, mode, err)
				}
				if !res.OK() {
					t.Errorf("%s %v %v: %+v", name, tp, mode, res)
				}
			}
		}
	}
}
