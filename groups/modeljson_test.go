package groups_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/proptest"
	"pgregory.net/rapid"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/models")

// fataler is what roundTrip needs of *testing.T, *testing.F's T and *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

func helper(t fataler) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
}

// roundTrip marshals m, parses the result, and checks identity and that a
// second marshal gives the same bytes.
func roundTrip(t fataler, m *groups.Model) []byte {
	helper(t)
	b, err := groups.MarshalModelJSON(m)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	got, err := groups.ParseModelJSON(b)
	if err != nil {
		t.Fatalf("parse of marshalled model: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip changed the model\nmarshalled:\n%s\ndiff: %s", b, diffModels(m, got))
	}
	b2, err := groups.MarshalModelJSON(got)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("marshal is not stable:\n%s\n---\n%s", b, b2)
	}
	return b
}

func diffModels(a, b *groups.Model) string {
	if a.Name != b.Name || a.Architecture != b.Architecture || a.NumSpeculativeTokens != b.NumSpeculativeTokens || a.Draft != b.Draft {
		return fmt.Sprintf("header %q %q %d %q vs %q %q %d %q", a.Name, a.Architecture, a.NumSpeculativeTokens, a.Draft,
			b.Name, b.Architecture, b.NumSpeculativeTokens, b.Draft)
	}
	if len(a.Layers) != len(b.Layers) {
		return fmt.Sprintf("%d layers vs %d", len(a.Layers), len(b.Layers))
	}
	for i := range a.Layers {
		if !reflect.DeepEqual(a.Layers[i], b.Layers[i]) {
			return fmt.Sprintf("layer %d: %+v vs %+v", i, a.Layers[i], b.Layers[i])
		}
	}
	return "no difference found"
}

func allPresetVariants(t testing.TB) []*groups.Model {
	var out []*groups.Model
	for _, name := range groups.PresetNames() {
		opts := []groups.PresetOptions{{}, {NumSpeculativeTokens: 3, SSMDType: groups.BF16}}
		if !groups.AcceptsSpeculativeTokens(name) {
			opts[1].NumSpeculativeTokens = 0
		}
		if groups.HasMTP(name) {
			opts = append(opts, groups.PresetOptions{MTP: true}, groups.PresetOptions{MTP: true, NumSpeculativeTokens: 4, SSMDType: groups.FP32})
		}
		for _, o := range opts {
			m, err := groups.Preset(name, o)
			if err != nil {
				t.Fatalf("%s %+v: %v", name, o, err)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestModelJSONRoundTripPresets(t *testing.T) {
	for _, m := range allPresetVariants(t) {
		b := roundTrip(t, m)
		// Dedup: one spec per distinct layer shape, so a preset is short.
		if lines := bytes.Count(b, []byte("\n")); lines > 120 {
			t.Errorf("%s: %d lines, want a short document\n%s", m.Name, lines, b)
		}
	}
}

// Presets whose layer names follow "layers.<i>.<kind>" get the short form
// for every layer: no {"name": ...} objects.
func TestModelJSONCompact(t *testing.T) {
	for _, name := range []string{"qwen3.5-397b-a17b", "deepseek-v3.2", "nemotron-nano-9b-v2", "kimi-linear-48b-a3b", "llama-3.1-70b"} {
		m, err := groups.Preset(name, groups.PresetOptions{MTP: groups.HasMTP(name)})
		if err != nil {
			t.Fatal(err)
		}
		b := roundTrip(t, m)
		if bytes.Contains(b, []byte(`"name": "layers.`)) || bytes.Contains(b, []byte(`"name": "mtp.`)) {
			t.Errorf("%s: layers not in short form:\n%s", name, b)
		}
	}
	m, _ := groups.Preset("qwen3.5-397b-a17b", groups.PresetOptions{})
	b, _ := groups.MarshalModelJSON(m)
	if n := bytes.Count(b, []byte(`"kind"`)); n != 2 {
		t.Errorf("qwen3.5-397b: %d specs, want 2 (attn, gdn)", n)
	}
	// DeepSeek-V3.2: MLA and indexer share a decoder layer: ["mla", "indexer"].
	m, _ = groups.Preset("deepseek-v3.2", groups.PresetOptions{})
	b, _ = groups.MarshalModelJSON(m)
	if !bytes.Contains(b, []byte(`["mla", "indexer"]`)) {
		t.Errorf("deepseek-v3.2: no grouped entry:\n%s", b)
	}
	// Nemotron: decoder layers without cache are "-".
	m, _ = groups.Preset("nemotron-nano-9b-v2", groups.PresetOptions{})
	b, _ = groups.MarshalModelJSON(m)
	if !bytes.Contains(b, []byte(`"mamba", "-", "mamba"`)) {
		t.Errorf("nemotron: no gap entries:\n%s", b)
	}
}

func TestModelJSONRoundTripRapid(t *testing.T) {
	forms := map[string]int{}
	rapid.Check(t, func(t *rapid.T) {
		m := proptest.GenModel().Draw(t, "model")
		if err := m.Validate(); err != nil {
			t.Fatalf("generated model invalid: %v", err)
		}
		b := roundTrip(t, m)
		for form, marker := range map[string]string{"gap": `"-"`, "group": `["`, "object": `{"name": `, "draft": `"draft_layers"`, "parallel object": `"parallel": true`} {
			if bytes.Contains(b, []byte(marker)) {
				forms[form]++
			}
		}
	})
	// The generator must exercise every form of entry.
	for _, form := range []string{"gap", "group", "object", "draft", "parallel object"} {
		if forms[form] == 0 {
			t.Errorf("no generated model used the %s form", form)
		}
	}
}

// The golden documents: the format of a preset must not change by accident.
// Regenerate with go test ./groups/ -run TestModelJSONGolden -update.
func TestModelJSONGolden(t *testing.T) {
	for _, name := range []string{"qwen3.5-9b", "deepseek-v3.2", "gemma-3-27b", "nemotron-3-nano-30b-a3b"} {
		m, err := groups.Preset(name, groups.PresetOptions{MTP: groups.HasMTP(name)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := groups.MarshalModelJSON(m)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", "models", name+".json")
		if *update {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s: output differs from %s:\n%s", name, path, b)
		}
	}
}

// The hand-written examples (docs/model-spec.md) parse to what they say.
func TestModelJSONExamples(t *testing.T) {
	m, err := groups.ParseModelFile(filepath.Join("testdata", "models", "tiny-hybrid.json"), groups.HFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range m.Layers {
		names = append(names, fmt.Sprintf("%s:%s", l.Name, l.Kind))
	}
	want := "layers.0.gdn:recurrent layers.1.gdn:recurrent layers.2.gdn:recurrent layers.3.attn:full_attention " +
		"layers.5.swa:sliding_window layers.6.mla:mla layers.6.indexer:indexer " +
		"layers.7.mamba:recurrent my-conv:recurrent mtp.0.attn:full_attention"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("layers:\n got %s\nwant %s", got, want)
	}
	if m.Draft != groups.DraftMTP || m.NumSpeculativeTokens != 2 || !m.Layers[len(m.Layers)-1].Draft {
		t.Errorf("draft config: %q %d", m.Draft, m.NumSpeculativeTokens)
	}
	s, err := groups.Summarize(m, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	// 3 GDN: conv (4-1+2) rows x (2*2*64 + 4*64) ch x 2 B + ssm 4x64x64x4 B.
	gdn := int64(5*512*2 + 4*64*64*4)
	mamba := int64(5*(8*32+2*2*64)*2 + 8*32*64*4)
	conv := int64(5 * 128 * 2)
	if s.FixedB != 3*gdn+mamba+conv {
		t.Errorf("fixed bytes %d, want %d", s.FixedB, 3*gdn+mamba+conv)
	}
	roundTrip(t, m)
}

const validDoc = `{
  "format": "hybridxfer.model/v1",
  "name": "t",
  "num_speculative_tokens": 0,
  "layer_specs": {
    "attn": {"kind": "full_attention", "attention": {"kv_heads": 2, "head_dim": 64, "dtype": "bf16"}},
    "gdn": {"kind": "recurrent", "recurrent": {"type": "gdn", "conv_kernel": 4, "conv_dtype": "bf16",
      "segments": [{"name": "q", "units": 2, "unit_width": 8}],
      "states": [{"name": "ssm", "heads": 2, "dims": [8, 8], "dtype": "fp32"}]}}
  },
  "layers": ["gdn", "attn"]
}`

// edit replaces old by new in validDoc, checking old is there.
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(validDoc, old) {
		t.Fatalf("edit: %q not in the base document", old)
	}
	return strings.Replace(validDoc, old, new, 1)
}

func TestParseModelJSONRejects(t *testing.T) {
	if _, err := groups.ParseModelJSON([]byte(validDoc)); err != nil {
		t.Fatalf("base document: %v", err)
	}
	many := `"attn"` + strings.Repeat(`, "attn"`, groups.MaxLayers)
	cases := []struct {
		name, doc, field string
		sentinel         error
	}{
		{"missing format", edit(t, `"format": "hybridxfer.model/v1",`, ""), "format", groups.ErrInvalidSpec},
		{"other version", edit(t, `hybridxfer.model/v1`, "hybridxfer.model/v2"), "format", groups.ErrUnsupported},
		{"foreign format", edit(t, `hybridxfer.model/v1`, "onnx"), "format", groups.ErrInvalidSpec},
		{"format not a string", edit(t, `"hybridxfer.model/v1"`, "1"), "format", groups.ErrInvalidSpec},
		{"unknown top-level field", edit(t, `"name": "t",`, `"name": "t", "nme": 1,`), "nme", groups.ErrInvalidSpec},
		{"duplicated key", edit(t, `"name": "t",`, `"name": "t", "name": "u",`), "name", groups.ErrInvalidSpec},
		{"missing name", edit(t, `"name": "t",`, ""), "name", groups.ErrInvalidSpec},
		{"empty name", edit(t, `"name": "t",`, `"name": " ",`), "name", groups.ErrInvalidSpec},
		{"control char in name", edit(t, `"name": "t",`, `"name": "a\u0001",`), "name", groups.ErrInvalidSpec},
		{"null", edit(t, `"name": "t",`, `"name": "t", "architecture": null,`), "architecture", groups.ErrInvalidSpec},
		{"spec tokens negative", edit(t, `"num_speculative_tokens": 0`, `"num_speculative_tokens": -1`), "num_speculative_tokens", groups.ErrInvalidSpec},
		{"spec tokens float", edit(t, `"num_speculative_tokens": 0`, `"num_speculative_tokens": 1.5`), "num_speculative_tokens", groups.ErrInvalidSpec},
		{"spec tokens huge", edit(t, `"num_speculative_tokens": 0`, `"num_speculative_tokens": 99999999999999999999`), "num_speculative_tokens", groups.ErrInvalidSpec},
		{"unknown draft kind", edit(t, `"name": "t",`, `"name": "t", "draft": "medusa",`), "draft", groups.ErrInvalidSpec},
		{"draft without draft layers", edit(t, `"name": "t",`, `"name": "t", "draft": "mtp",`), "draft_layers", groups.ErrInvalidSpec},
		{"draft layers without draft", edit(t, `"layers": ["gdn", "attn"]`, `"layers": ["gdn", "attn"], "draft_layers": ["attn"]`), "draft", groups.ErrInvalidSpec},
		{"recurrent draft", edit(t, `"name": "t",`, `"name": "t", "draft": "mtp",`) + "", "draft_layers", groups.ErrInvalidSpec},
		{"missing layer_specs", strings.Replace(validDoc, `"layer_specs"`, `"layer_specz"`, 1), "layer_specz", groups.ErrInvalidSpec},
		{"unknown spec field", edit(t, `"kind": "full_attention",`, `"kind": "full_attention", "kv_heads": 2,`), "layer_specs.attn.kv_heads", groups.ErrInvalidSpec},
		{"unknown attention field", edit(t, `"head_dim": 64,`, `"head_dim": 64, "heads": 2,`), "layer_specs.attn.attention.heads", groups.ErrInvalidSpec},
		{"unknown kind", edit(t, `"full_attention"`, `"linear"`), "layer_specs.attn.kind", groups.ErrInvalidSpec},
		{"missing kind", edit(t, `"kind": "full_attention", `, ``), "layer_specs.attn.kind", groups.ErrInvalidSpec},
		{"kind payload mismatch", edit(t, `"full_attention"`, `"mla"`), "layer_specs.attn.mla", groups.ErrInvalidSpec},
		{"zero kv heads", edit(t, `"kv_heads": 2`, `"kv_heads": 0`), "layer_specs.attn.attention.kv_heads", groups.ErrInvalidSpec},
		{"kv heads a string", edit(t, `"kv_heads": 2`, `"kv_heads": "2"`), "layer_specs.attn.attention.kv_heads", groups.ErrInvalidSpec},
		{"too many kv heads", edit(t, `"kv_heads": 2`, `"kv_heads": 65537`), "layer_specs.attn.attention.kv_heads", groups.ErrInvalidSpec},
		{"query heads not a multiple", edit(t, `"kv_heads": 2`, `"kv_heads": 2, "q_heads": 3`), "layer_specs.attn.attention.q_heads", groups.ErrInvalidSpec},
		{"query heads negative", edit(t, `"kv_heads": 2`, `"kv_heads": 2, "q_heads": -2`), "layer_specs.attn.attention.q_heads", groups.ErrInvalidSpec},
		{"head dim too large", edit(t, `"head_dim": 64`, `"head_dim": 1048577`), "layer_specs.attn.attention.head_dim", groups.ErrInvalidSpec},
		{"unknown dtype", edit(t, `"dtype": "bf16"`, `"dtype": "bf17"`), "layer_specs.attn.attention.dtype", groups.ErrInvalidSpec},
		{"missing dtype", edit(t, `, "dtype": "bf16"}`, `}`), "layer_specs.attn.attention.dtype", groups.ErrInvalidSpec},
		{"window on full attention", edit(t, `"head_dim": 64,`, `"head_dim": 64, "window": 4,`), "layer_specs.attn.attention", groups.ErrInvalidSpec},
		{"bad spec name", edit(t, `"attn": {`, `"at tn": {`), "layer_specs.at tn", groups.ErrInvalidSpec},
		{"reserved spec name", edit(t, `"attn": {`, `"-": {`), "layer_specs.-", groups.ErrInvalidSpec},
		{"segment units zero", edit(t, `"units": 2`, `"units": 0`), "layer_specs.gdn.recurrent.segments[0].units", groups.ErrInvalidSpec},
		{"unknown segment field", edit(t, `"unit_width": 8`, `"unit_width": 8, "width": 8`), "layer_specs.gdn.recurrent.segments[0].width", groups.ErrInvalidSpec},
		{"state dim zero", edit(t, `"dims": [8, 8]`, `"dims": [8, 0]`), "layer_specs.gdn.recurrent.states[0].dims[1]", groups.ErrInvalidSpec},
		{"state dim not int", edit(t, `"dims": [8, 8]`, `"dims": [8, "x"]`), "layer_specs.gdn.recurrent.states[0].dims[1]", groups.ErrInvalidSpec},
		{"state too large", edit(t, `"dims": [8, 8]`, `"dims": [1048576, 1048576, 1048576]`), "layer_specs.gdn.recurrent.states[0]", groups.ErrInvalidSpec},
		{"too many dims", edit(t, `"dims": [8, 8]`, `"dims": [1,1,1,1,1,1,1,1,1]`), "layer_specs.gdn.recurrent.states[0].dims", groups.ErrInvalidSpec},
		{"duplicated segment", edit(t, `"segments": [{"name": "q", "units": 2, "unit_width": 8}]`,
			`"segments": [{"name": "q", "units": 2, "unit_width": 8}, {"name": "q", "units": 2, "unit_width": 8}]`),
			"layer_specs.gdn.recurrent.segments[1].name", groups.ErrInvalidSpec},
		{"conv kernel 1", edit(t, `"conv_kernel": 4`, `"conv_kernel": 1`), "layer_specs.gdn.recurrent.conv_kernel", groups.ErrInvalidSpec},
		{"unknown recurrent type", edit(t, `"type": "gdn"`, `"type": "rwkv"`), "layer_specs.gdn.recurrent.type", groups.ErrInvalidSpec},
		{"unknown spec referenced", edit(t, `["gdn", "attn"]`, `["gdn", "atn"]`), "layers[1]", groups.ErrInvalidSpec},
		{"unused spec", edit(t, `["gdn", "attn"]`, `["gdn", "gdn"]`), "layer_specs.attn", groups.ErrInvalidSpec},
		{"no layers", edit(t, `["gdn", "attn"]`, `[]`), "layers", groups.ErrInvalidSpec},
		{"only gaps", edit(t, `["gdn", "attn"]`, `["-", "-"]`), "layers", groups.ErrInvalidSpec},
		{"layers not array", edit(t, `["gdn", "attn"]`, `"gdn"`), "layers", groups.ErrInvalidSpec},
		{"entry a number", edit(t, `["gdn", "attn"]`, `["gdn", 3]`), "layers[1]", groups.ErrInvalidSpec},
		{"empty group", edit(t, `["gdn", "attn"]`, `["gdn", [], "attn"]`), "layers[1]", groups.ErrInvalidSpec},
		{"gap in group", edit(t, `["gdn", "attn"]`, `["gdn", ["attn", "-"]]`), "layers[1][1]", groups.ErrInvalidSpec},
		{"duplicated layer name", edit(t, `["gdn", "attn"]`, `["gdn", "attn", {"name": "layers.1.attn", "spec": "attn"}]`), "layers[2].spec", groups.ErrInvalidSpec},
		{"duplicated name in group", edit(t, `["gdn", "attn"]`, `["gdn", ["attn", "attn"]]`), "layers[1][1]", groups.ErrInvalidSpec},
		{"object without name", edit(t, `["gdn", "attn"]`, `["gdn", {"spec": "attn"}]`), "layers[1].name", groups.ErrInvalidSpec},
		{"first layer parallel", edit(t, `["gdn", "attn"]`, `[{"name": "a", "spec": "gdn", "parallel": true}, "attn"]`), "layers[0].parallel", groups.ErrInvalidSpec},
		{"parallel not a bool", edit(t, `["gdn", "attn"]`, `["gdn", {"name": "a", "spec": "attn", "parallel": 1}]`), "layers[1].parallel", groups.ErrInvalidSpec},
		{"object unknown field", edit(t, `["gdn", "attn"]`, `["gdn", {"name": "a", "spec": "attn", "draft": true}]`), "layers[1].draft", groups.ErrInvalidSpec},
		{"too many layers", edit(t, `["gdn", "attn"]`, `["gdn", `+many+`]`), "layers[4096]", groups.ErrInvalidSpec},
	}
	// The recurrent-draft case needs draft_layers naming the GDN spec.
	cases[16].doc = strings.Replace(cases[16].doc, `"layers": ["gdn", "attn"]`, `"layers": ["gdn", "attn"], "draft_layers": ["gdn"]`, 1)
	cases[16].field = "draft_layers[0]"
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := groups.ParseModelJSON([]byte(c.doc))
			checkFieldErr(t, err, c.field, c.sentinel)
		})
	}
}

func checkFieldErr(t *testing.T, err error, field string, sentinel error) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want an error on %q", field)
	}
	var fe *groups.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FieldError", err)
	}
	if fe.Field != field {
		t.Errorf("error names %q, want %q (%v)", fe.Field, field, err)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %v does not wrap %v", err, sentinel)
	}
}

func TestParseModelJSONRejectsDocument(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":            "",
		"not json":         "{",
		"trailing garbage": validDoc + " {}",
		"trailing text":    validDoc + "x",
		"array":            "[]",
		"string":           `"x"`,
		"too large":        `{"format": "` + strings.Repeat("x", groups.MaxModelJSONBytes) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := groups.ParseModelJSON([]byte(doc)); !errors.Is(err, groups.ErrInvalidSpec) {
				t.Errorf("got %v, want ErrInvalidSpec", err)
			}
		})
	}
	if _, err := groups.ParseModelJSON([]byte(validDoc + "\n\t ")); err != nil {
		t.Errorf("trailing whitespace refused: %v", err)
	}
}

func TestMarshalModelJSONRejects(t *testing.T) {
	base := func() *groups.Model {
		m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
		return m
	}
	cases := []struct {
		name  string
		mut   func(m *groups.Model)
		field string
	}{
		{"invalid model", func(m *groups.Model) { m.Layers[3].Attention.KVHeads = 0 }, "layers[3].attention.kv_heads"},
		{"too many kv heads", func(m *groups.Model) { m.Layers[3].Attention.KVHeads, m.Layers[3].Attention.QHeads = 1<<17, 0 }, "layers[3].attention.kv_heads"},
		{"query heads not a multiple", func(m *groups.Model) { a := m.Layers[3].Attention; a.QHeads = 2*a.KVHeads + 1 }, "layers[3].attention.q_heads"},
		{"huge state", func(m *groups.Model) { m.Layers[0].Recurrent.States[0].Dims = []int{1 << 20, 1 << 20, 1 << 20} }, "layers[0].recurrent.states[0]"},
		{"overflowing state", func(m *groups.Model) {
			m.Layers[0].Recurrent.States[0].Dims = []int{1 << 62, 1 << 62}
		}, "layers[0].recurrent.states[0].dims[0]"},
		{"invalid utf-8 name", func(m *groups.Model) { m.Layers[1].Name = "a\xff" }, "layers[1].name"},
		{"long name", func(m *groups.Model) { m.Name = strings.Repeat("n", 300) }, "name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := base()
			c.mut(m)
			_, err := groups.MarshalModelJSON(m)
			checkFieldErr(t, err, c.field, groups.ErrInvalidSpec)
		})
	}
	if _, err := groups.MarshalModelJSON(nil); !errors.Is(err, groups.ErrInvalidSpec) {
		t.Errorf("nil model: %v", err)
	}
}

// Names that do not follow the convention, and names that collide with
// another spec's, are kept through objects.
func TestModelJSONNames(t *testing.T) {
	m := &groups.Model{Name: "n", Layers: []groups.Layer{
		groups.AttentionLayer("layers.0.attn", 2, 64, groups.BF16),
		groups.SlidingLayer("layers.1.attn", 2, 64, 128, groups.BF16), // same suffix, other spec
		groups.AttentionLayer("custom name", 2, 64, groups.BF16),
		groups.AttentionLayer("layers.00.attn", 2, 64, groups.BF16), // not canonical
		groups.AttentionLayer("layers.2.full_attention", 4, 64, groups.BF16),
		groups.AttentionLayer("layers.9.attn", 2, 64, groups.BF16),
	}}
	b := roundTrip(t, m)
	for _, want := range []string{`{"name": "custom name", "spec": "attn"}`, `{"name": "layers.00.attn", "spec": "attn"}`,
		`{"name": "layers.1.attn", "spec": "sliding_window"}`, `"-", "-", "attn"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("missing %s in\n%s", want, b)
		}
	}
}
