package groups

import (
	"encoding/hex"
	"errors"
	"testing"
)

// Golden compatibility hashes: they must not change across runs, machines or
// Go versions. A change here means P and D of different builds would refuse
// each other; update only with a protocol version bump.
func TestCompatHashGolden(t *testing.T) {
	golden := map[string]string{
		// Changed when attention specs gained q_heads (vLLM refuses a tp
		// that does not divide num_attention_heads).
		"qwen3.5-9b":          "97de27c50016acfd90bf7c2a98f92079288fbbffaf429fccfb99be57583a973d",
		"kimi-linear-48b-a3b": "ebf590ee66a5e5b68c8b177d129802ad0a4730b1ff645fa2c807d9a8cd802e00",
		// Changed when its indexer became Parallel (it runs on the MLA's
		// input): a P and D of builds before and after compute
		// differently, so they must refuse each other.
		"deepseek-v3.2": "2c456c29305c374041d653dc7aa296549df33fafc5f8a53354a482312dc7324a",
	}
	for name, want := range golden {
		m, err := Preset(name, PresetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := CompatHash(m, 1)
		got := hex.EncodeToString(h[:])
		if got != want {
			t.Errorf("%s: hash %s, want %s", name, got, want)
		}
	}
}

func TestCompatHashSensitivity(t *testing.T) {
	base, _ := Preset("qwen3.5-9b", PresetOptions{})
	h0 := CompatHash(base, 1)
	if CompatHash(base, 2) == h0 {
		t.Error("protocol version not in hash")
	}
	changes := map[string]func(m *Model){
		"kv heads":   func(m *Model) { m.Layers[3].Attention.KVHeads = 8 },
		"head dim":   func(m *Model) { m.Layers[3].Attention.HeadDim = 128 },
		"kv dtype":   func(m *Model) { m.Layers[3].Attention.DType = FP8E4M3 },
		"ssm dtype":  func(m *Model) { m.Layers[0].Recurrent.States[0].DType = BF16 },
		"conv width": func(m *Model) { m.Layers[0].Recurrent.Segments[2].Units = 16 },
		"kernel":     func(m *Model) { m.Layers[0].Recurrent.ConvKernel = 3 },
		"spec":       func(m *Model) { m.NumSpeculativeTokens = 2 },
		"name":       func(m *Model) { m.Name = "other" },
		"layer kind": func(m *Model) { m.Layers[1], m.Layers[3] = m.Layers[3], m.Layers[1] },
		"drop layer": func(m *Model) { m.Layers = m.Layers[:len(m.Layers)-1] },
	}
	for name, f := range changes {
		m := base.Clone()
		f(m)
		if CompatHash(m, 1) == h0 {
			t.Errorf("%s: hash unchanged", name)
		}
	}
	if CompatHash(base.Clone(), 1) != h0 {
		t.Error("clone changed hash")
	}
}

func TestGeometryUnifiedPageSize(t *testing.T) {
	// qwen3.5-9b, tp 1: GDN page = 49,152 + 2,097,152 = 2,146,304 B; attention
	// 4 KV heads x 256 x 2 (K,V) x 2 B = 4,096 B/token. With a minimum block of
	// 16, the attention block grows to 16*ceil(2146304/(16*4096)) = 528 tokens.
	m, _ := Preset("qwen3.5-9b", PresetOptions{})
	g, err := NewGeometry(m, InstanceConfig{TP: 1, BlockSize: 16}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Pools) != 1 || g.Pools[0].PageStride != 528*4096 {
		t.Fatalf("pools %+v", g.Pools)
	}
	for _, gg := range g.Groups {
		if gg.Kind == FullAttention && gg.BlockSize != 528 {
			t.Errorf("attention block size %d, want 528", gg.BlockSize)
		}
		if gg.Kind == Recurrent && gg.PageBytes != 2146304 {
			t.Errorf("recurrent page %d", gg.PageBytes)
		}
	}
	// At tp 4 KV heads are 1 per rank (1,024 B/token) and the GDN page is
	// 2,146,304/4 = 536,576 B: 16*ceil(536576/16384) = 528 again.
	g4, err := NewGeometry(m, InstanceConfig{TP: 4, BlockSize: 16}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if g4.Pools[0].PageStride != 528*1024 {
		t.Errorf("tp4 page %d", g4.Pools[0].PageStride)
	}
	// Separate layout: attention block size as given, recurrent page unpadded.
	gs, err := NewGeometry(m, InstanceConfig{TP: 1, BlockSize: 32, Memory: Separate}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs.Pools) != 2 {
		t.Fatalf("separate pools %d", len(gs.Pools))
	}
	for _, gg := range gs.Groups {
		want := 32 * 4096
		if gg.Kind == Recurrent {
			want = 2146304
		}
		if gg.PageBytes != want || gs.Pools[gg.Pool].PageStride != want {
			t.Errorf("group %d page %d stride %d, want %d", gg.ID, gg.PageBytes, gs.Pools[gg.Pool].PageStride, want)
		}
	}
}

func TestKVGroupsVLLMRule(t *testing.T) {
	cases := []struct {
		name   string
		opts   PresetOptions
		groups map[Kind][]int // layers per group, by kind
	}{
		// 6 full / 18 GDN: group size 6, one attention group and three GDN groups.
		{"qwen3.5-0.8b", PresetOptions{}, map[Kind][]int{FullAttention: {6}, Recurrent: {6, 6, 6}}},
		// Gemma-3-27B: 52 SW + 10 full -> group size 10: 6 SW groups (52 = 8x... dealt 9,9,9,9,8,8) + 1 full.
		{"gemma-3-27b", PresetOptions{}, map[Kind][]int{FullAttention: {10}, SlidingWindow: {9, 9, 9, 9, 8, 8}}},
		// gpt-oss-20b: 12 + 12.
		{"gpt-oss-20b", PresetOptions{}, map[Kind][]int{FullAttention: {12}, SlidingWindow: {12}}},
		// With MTP the draft joins the attention bucket: 7 attention (eagle group), GDN 18 -> 3 groups.
		{"qwen3.5-0.8b", PresetOptions{MTP: true}, map[Kind][]int{FullAttention: {7}, Recurrent: {6, 6, 6}}},
	}
	for _, c := range cases {
		m, err := Preset(c.name, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		got := map[Kind][]int{}
		seen := map[int]bool{}
		for _, g := range m.KVGroups() {
			got[g.Kind] = append(got[g.Kind], len(g.Layers))
			for _, l := range g.Layers {
				if seen[l] {
					t.Errorf("%s: layer %d in two groups", c.name, l)
				}
				seen[l] = true
				if m.Layers[l].Kind != g.Kind {
					t.Errorf("%s: layer %d kind %s in %s group", c.name, l, m.Layers[l].Kind, g.Kind)
				}
			}
			if g.Eagle != (c.opts.MTP && g.Kind == FullAttention) {
				t.Errorf("%s: group %d eagle=%v", c.name, g.ID, g.Eagle)
			}
		}
		if len(seen) != len(m.Layers) {
			t.Errorf("%s: %d of %d layers grouped", c.name, len(seen), len(m.Layers))
		}
		for k, want := range c.groups {
			if !equalInts(got[k], want) {
				t.Errorf("%s: %s groups %v, want %v", c.name, k, got[k], want)
			}
		}
	}
	// A draft with no equal target spec is its own group and does not shrink
	// the group size: kimi-k2.5-eagle3 keeps one MLA group of 61 layers.
	m, _ := Preset("kimi-k2.5-eagle3", PresetOptions{})
	gs := m.KVGroups()
	if len(gs) != 2 || len(gs[0].Layers) != 61 || !gs[1].Eagle || len(gs[1].Layers) != 1 {
		t.Errorf("kimi-k2.5-eagle3 groups: %+v", gs)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestImpossibleTP(t *testing.T) {
	m, _ := Preset("qwen3.5-9b", PresetOptions{})
	for _, tp := range []int{3, 5, 6, 7, 32} {
		if err := m.CheckTP(tp); !errors.Is(err, ErrImpossibleTP) {
			t.Errorf("tp %d: %v, want ErrImpossibleTP", tp, err)
		}
	}
	for _, tp := range []int{1, 2, 4, 8, 16} {
		if err := m.CheckTP(tp); err != nil {
			t.Errorf("tp %d: %v", tp, err)
		}
	}
	// Nemotron: 8 Mamba2 groups cannot follow 128 heads over tp 16: vLLM's
	// MambaMixer2 pads n_groups up to tp only when n_groups == 1.
	n, _ := Preset("nemotron-nano-9b-v2", PresetOptions{})
	if err := n.CheckTP(16); !errors.Is(err, ErrImpossibleTP) {
		t.Errorf("nemotron tp16: %v, want ErrImpossibleTP", err)
	}
	// One group (Falcon-H1, Granite 4.0, Bamba) is replicated on every rank.
	one := &Model{Name: "one-group", Layers: []Layer{RecurrentLayer("m", Mamba2State(16, 4, 1, 8, 4, BF16, BF16))}}
	s, err := one.Shape(0, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	if s.Segments[1].First != 0 || s.Segments[1].Count != 1 || s.Segments[1].Replicas != 4 || s.ConvDim != 16*4/4+2*8 {
		t.Errorf("one group tp 4 rank 3: B %+v, conv dim %d", s.Segments[1], s.ConvDim)
	}
	if _, err := NewGeometry(m, InstanceConfig{TP: 2, BlockSize: 24, KernelBlockSize: 16}, 0); !errors.Is(err, ErrBadGeometry) {
		t.Errorf("block 24 / kernel 16: %v", err)
	}
}
