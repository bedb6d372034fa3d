package groups

import (
	"errors"
	"strings"
	"testing"
)

// The reference numbers of shared/reference/models.md section 1 (TP 1, bf16
// KV, no block rounding). They were computed independently of this package.
var referenceTable = []struct {
	name            string
	attnPerToken    int64 // all attention layers, including sliding ones
	fixed           int64
	at4k, at32k     int64
	attnLayers, lin int
}{
	{"qwen3.5-0.8b", 12288, 19537920, 69869568, 422191104, 6, 18},
	{"qwen3.5-2b", 12288, 19537920, 69869568, 422191104, 6, 18},
	{"qwen3.5-4b", 32768, 51511296, 185729024, 1125253120, 8, 24},
	{"qwen3.5-9b", 32768, 51511296, 185729024, 1125253120, 8, 24},
	{"qwen3.5-27b", 65536, 153944064, 422379520, 2301427712, 16, 48},
	{"qwen3.5-35b-a3b", 20480, 64389120, 148275200, 735477760, 10, 30},
	{"qwen3.5-122b-a10b", 24576, 153649152, 254312448, 958955520, 12, 36},
	{"qwen3.5-397b-a17b", 30720, 192061440, 317890560, 1198694400, 15, 45},
	{"qwen3-next-80b-a3b", 24576, 39518208, 140181504, 844824576, 12, 36},
	{"kimi-linear-48b-a3b", 8064, 43417600, 76447744, 307658752, 7, 20},
	{"kimi-k2.5", 70272, 0, 287834112, 2302672896, 61, 0},
	{"deepseek-v3", 70272, 0, 287834112, 2302672896, 61, 0},
	{"deepseek-v3.2", 78324, 0, 320815104, 2566520832, 122, 0},
	{"gemma-3-4b", 20480 + 118784, 0, 205520896, 792723456, 34, 0},
	{"gemma-3-12b", 65536 + 327680, 0, 603979776, 2483027968, 48, 0},
	{"gemma-3-27b", 81920 + 425984, 0, 771751936, 3120562176, 62, 0},
	{"gpt-oss-20b", 24576 + 24576, 0, 103809024, 808452096, 24, 0},
	{"gpt-oss-120b", 36864 + 36864, 0, 155713536, 1212678144, 36, 0},
	{"nemotron-3-nano-30b-a3b", 6144, 49082368, 74248192, 250408960, 6, 23},
	{"nemotron-nano-9b-v2", 16384, 143548416, 210657280, 680419328, 4, 27},
	{"llama-3.1-8b", 131072, 0, 536870912, 4294967296, 32, 0},
	{"llama-3.1-70b", 327680, 0, 1342177280, 10737418240, 80, 0},
	// Not in models.md: computed from the testdata/hf config.json files by
	// an independent script of vLLM's formulas (mamba_utils' shape and
	// dtype calculators, max(1, kv/tp) heads), state tensors only.
	{"jamba-1.5-mini", 16384, 8716288, 75825152, 545587200, 4, 28},
	{"falcon-h1-7b", 45056, 70152192, 254701568, 1546547200, 44, 44},
	{"granite-4.0-h-tiny", 8192, 29030400, 62584832, 297465856, 4, 36},
	{"lfm2-1.2b", 12288, 81920, 50413568, 402735104, 6, 10},
	{"bamba-9b", 12288, 62287360, 112619008, 464940544, 3, 29},
}

func TestReferenceTable(t *testing.T) {
	seen := map[string]bool{}
	for _, want := range referenceTable {
		seen[want.name] = true
		t.Run(want.name, func(t *testing.T) {
			m, err := Preset(want.name, PresetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				tokens int
				bytes  int64
			}{{4096, want.at4k}, {32768, want.at32k}} {
				s, err := Summarize(m, tc.tokens, 1)
				if err != nil {
					t.Fatal(err)
				}
				if s.StateBytes != tc.bytes {
					t.Errorf("%d tokens: state_bytes %d, want %d", tc.tokens, s.StateBytes, tc.bytes)
				}
				if got := s.AttnTokenB + s.SlidingTokenB; got != want.attnPerToken {
					t.Errorf("attention bytes/token %d, want %d", got, want.attnPerToken)
				}
				if s.FixedB != want.fixed {
					t.Errorf("fixed %d, want %d", s.FixedB, want.fixed)
				}
				if got := s.Layers - s.LayersByKind["recurrent"]; got != want.attnLayers {
					t.Errorf("attention layers %d, want %d", got, want.attnLayers)
				}
				if got := s.LayersByKind["recurrent"]; got != want.lin {
					t.Errorf("recurrent layers %d, want %d", got, want.lin)
				}
				if s.DraftBytes != 0 {
					t.Errorf("draft bytes %d without draft", s.DraftBytes)
				}
			}
		})
	}
	// kimi-k2.5-eagle3: the K2.5 target plus a 32,768 B/token Eagle3 draft.
	m, err := Preset("kimi-k2.5-eagle3", PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(m, 4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s.StateBytes != 287834112 || s.DraftTokenB != 32768 || s.DraftBytes != 32768*4096 {
		t.Errorf("kimi-k2.5-eagle3: state %d draft/token %d draft %d", s.StateBytes, s.DraftTokenB, s.DraftBytes)
	}
	seen["kimi-k2.5-eagle3"] = true
	for _, n := range PresetNames() {
		if !seen[n] {
			t.Errorf("preset %s has no reference row", n)
		}
	}
	if len(PresetNames()) != 28 {
		t.Errorf("%d presets, want 28", len(PresetNames()))
	}
}

// Per-rank figures of the same independent script at tp 2, 4 and 8
// (4,096 tokens): attention bytes per token, fixed state, state bytes.
func TestReferenceTPHybrids(t *testing.T) {
	for _, c := range []struct {
		name                string
		tp                  int
		attn, fixed, at4096 int64
	}{
		{"jamba-1.5-mini", 2, 8192, 4358144, 37912576},
		{"jamba-1.5-mini", 8, 2048, 1089536, 9478144},
		{"falcon-h1-7b", 2, 22528, 35143680, 127418368},
		{"falcon-h1-7b", 4, 22528, 17639424, 109914112}, // 2 KV heads replicated, 1 Mamba2 group padded to 4
		{"granite-4.0-h-tiny", 4, 2048, 7299072, 15687680},
		{"lfm2-1.2b", 8, 1536, 10240, 6301696},
		{"bamba-9b", 4, 3072, 15605248, 28188160},
		{"bamba-9b", 8, 1536, 7824896, 14116352},
	} {
		m, _ := Preset(c.name, PresetOptions{})
		s, err := Summarize(m, 4096, c.tp)
		if err != nil {
			t.Fatal(err)
		}
		if s.AttnTokenB != c.attn || s.FixedB != c.fixed || s.StateBytes != c.at4096 {
			t.Errorf("%s tp %d: attn/token %d fixed %d state %d, want %d %d %d", c.name, c.tp, s.AttnTokenB, s.FixedB, s.StateBytes, c.attn, c.fixed, c.at4096)
		}
	}
	// Speculative tokens widen Mamba2 and short-conv rows, never Mamba1 (refused).
	m, _ := Preset("falcon-h1-7b", PresetOptions{NumSpeculativeTokens: 2})
	if s, _ := Summarize(m, 1, 1); s.FixedB != 70782976 {
		t.Errorf("falcon-h1-7b, 2 speculative tokens: fixed %d, want 70782976", s.FixedB)
	}
	m, _ = Preset("lfm2-1.2b", PresetOptions{NumSpeculativeTokens: 2})
	if s, _ := Summarize(m, 1, 1); s.FixedB != 163840 {
		t.Errorf("lfm2-1.2b, 2 speculative tokens: fixed %d, want 163840", s.FixedB)
	}
	if _, err := Preset("jamba-1.5-mini", PresetOptions{NumSpeculativeTokens: 1}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("jamba with speculative tokens: %v", err)
	}
}

// Per-rank figures quoted in models.md section 6.
func TestReferenceTP(t *testing.T) {
	m, _ := Preset("qwen3.5-397b-a17b", PresetOptions{})
	s, err := Summarize(m, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	if s.AttnTokenB != 15360 || s.FixedB != 24007680 {
		t.Errorf("qwen3.5-397b tp8: attn/token %d (want 15360) fixed %d (want 24007680)", s.AttnTokenB, s.FixedB)
	}
	m, _ = Preset("qwen3-next-80b-a3b", PresetOptions{})
	s, err = Summarize(m, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if s.FixedB != 9879552 {
		t.Errorf("qwen3-next tp4 fixed %d, want 9879552", s.FixedB)
	}
	m, _ = Preset("qwen3-next-80b-a3b", PresetOptions{SSMDType: FP32})
	s, _ = Summarize(m, 32768, 1)
	if s.StateBytes != 882573312 {
		t.Errorf("qwen3-next fp32 32k: %d, want 882573312", s.StateBytes)
	}
	// MTP with 3 speculative tokens: conv rows 3+3, plus one 2,048 B/token draft layer.
	m, _ = Preset("qwen3.5-397b-a17b", PresetOptions{MTP: true, NumSpeculativeTokens: 3})
	s, _ = Summarize(m, 4096, 1)
	if s.FixedB != 45*(6*12288*2+4194304) || s.DraftTokenB != 2048 {
		t.Errorf("qwen3.5-397b mtp: fixed %d draft/token %d", s.FixedB, s.DraftTokenB)
	}
}

// vLLM's attention asserts num_attention_heads % tp == 0: the presets
// carry the query head count and refuse such a tp.
func TestQueryHeadsLimitTP(t *testing.T) {
	for name, bad := range map[string]int{"falcon-h1-7b": 8, "granite-4.0-h-tiny": 8, "qwen3.5-27b": 16, "qwen3.5-0.8b": 16, "gemma-3-4b": 16} {
		m, _ := Preset(name, PresetOptions{})
		if err := m.CheckTP(bad); !errors.Is(err, ErrImpossibleTP) || !strings.Contains(err.Error(), "query heads") {
			t.Errorf("%s tp %d: %v", name, bad, err)
		}
		if err := m.CheckTP(bad / 2); err != nil {
			t.Errorf("%s tp %d: %v", name, bad/2, err)
		}
	}
}
