package refmodel_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/proptest"
	"pgregory.net/rapid"
)

// checkMiniature checks that mini is a faithful miniature of m.
// sameCount: a miniature's head or unit count m of an original count u is
// u up to MaxMiniatureTP, and beyond it any count that every tp up to
// MaxMiniatureTP shards as groups.ShardUnits shards u: split when tp
// divides it, else replicate when it divides tp, else refuse.
func sameCount(u, m int) bool {
	if u <= refmodel.MaxMiniatureTP {
		return u == m
	}
	how := func(n, tp int) int {
		switch {
		case n%tp == 0:
			return 0
		case tp%n == 0:
			return 1
		}
		return 2
	}
	for tp := 1; tp <= refmodel.MaxMiniatureTP; tp++ {
		if how(u, tp) != how(m, tp) {
			return false
		}
	}
	return m <= u
}

func checkMiniature(m, mini *groups.Model) error {
	if mini.Name != m.Name+"-mini" {
		return fmt.Errorf("name %q", mini.Name)
	}
	if err := mini.Validate(); err != nil {
		return err
	}
	if err := refmodel.New(mini, 1).Err(); err != nil {
		return err
	}
	if len(mini.Layers) != len(m.Layers) || mini.NumSpeculativeTokens != m.NumSpeculativeTokens || mini.Draft != m.Draft {
		return fmt.Errorf("layers %d/%d, spec tokens %d/%d, draft %q/%q", len(mini.Layers), len(m.Layers),
			mini.NumSpeculativeTokens, m.NumSpeculativeTokens, mini.Draft, m.Draft)
	}
	for i := range m.Layers {
		a, b := &m.Layers[i], &mini.Layers[i]
		if a.Name != b.Name || a.Kind != b.Kind || a.Draft != b.Draft {
			return fmt.Errorf("layer %d: %s/%s %v/%v draft %t/%t", i, a.Name, b.Name, a.Kind, b.Kind, a.Draft, b.Draft)
		}
		switch {
		case a.Attention != nil:
			x, y := a.Attention, b.Attention
			if !sameCount(x.KVHeads, y.KVHeads) || x.Scales != y.Scales || x.Window != y.Window || x.Chunk != y.Chunk || (x.HeadDimV == 0) != (y.HeadDimV == 0) {
				return fmt.Errorf("layer %d: attention %+v -> %+v", i, *x, *y)
			}
		case a.Recurrent != nil:
			x, y := a.Recurrent, b.Recurrent
			if x.Type != y.Type || x.ConvKernel != y.ConvKernel || len(x.Segments) != len(y.Segments) || len(x.States) != len(y.States) {
				return fmt.Errorf("layer %d: recurrent %+v -> %+v", i, *x, *y)
			}
			for j := range x.Segments {
				if !sameCount(x.Segments[j].Units, y.Segments[j].Units) || x.Segments[j].Replicate != y.Segments[j].Replicate {
					return fmt.Errorf("layer %d segment %d: %+v -> %+v", i, j, x.Segments[j], y.Segments[j])
				}
			}
			for j := range x.States {
				if !sameCount(x.States[j].Heads, y.States[j].Heads) || len(x.States[j].Dims) != len(y.States[j].Dims) {
					return fmt.Errorf("layer %d state %d: %+v -> %+v", i, j, x.States[j], y.States[j])
				}
			}
		}
	}
	if a, b := m.KVGroups(), mini.KVGroups(); !reflect.DeepEqual(a, b) {
		return fmt.Errorf("KV cache groups differ:\n%+v\n%+v", a, b)
	}
	for tp := 1; tp <= refmodel.MaxMiniatureTP; tp++ {
		if (m.CheckTP(tp) == nil) != (mini.CheckTP(tp) == nil) {
			return fmt.Errorf("tp %d: original %v, miniature %v", tp, m.CheckTP(tp), mini.CheckTP(tp))
		}
	}
	return nil
}

func TestMiniaturePresets(t *testing.T) {
	for _, name := range groups.PresetNames() {
		for _, mtp := range []bool{false, true} {
			if mtp && !groups.HasMTP(name) {
				continue
			}
			nspec := 2
			if !groups.AcceptsSpeculativeTokens(name) {
				nspec = 0
			}
			m, err := groups.Preset(name, groups.PresetOptions{MTP: mtp, NumSpeculativeTokens: nspec})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			mini, err := refmodel.Miniature(m)
			if err != nil {
				t.Fatalf("%s mtp=%t: %v", name, mtp, err)
			}
			if err := checkMiniature(m, mini); err != nil {
				t.Errorf("%s mtp=%t: %v", name, mtp, err)
			}
		}
	}
}

func TestMiniatureRandom(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := proptest.GenModel().Draw(t, "model")
		mini, err := refmodel.Miniature(m)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if err := checkMiniature(m, mini); err != nil {
			t.Fatalf("%v", err)
		}
	})
}

// TestMiniatureKeepsSpecsDistinct: specs that differ only in what
// shrinking erases (dtype, dims) stay distinct, so grouping is unchanged.
func TestMiniatureKeepsSpecsDistinct(t *testing.T) {
	m := &groups.Model{Name: "distinct", Layers: []groups.Layer{
		groups.AttentionLayer("a0", 2, 64, groups.BF16),
		groups.AttentionLayer("a1", 2, 128, groups.BF16),
		groups.AttentionLayer("a2", 2, 64, groups.FP8E4M3),
		groups.AttentionLayer("a3", 2, 64, groups.BF16),
		groups.MLALayer("m0", 512, 64, groups.FP8E4M3, groups.MLAFP8DS),
		groups.MLALayer("m1", 512, 64, groups.BF16, groups.MLAPlain),
		groups.RecurrentLayer("r0", groups.GDNState(2, 4, 8, 8, 4, groups.BF16, groups.FP32)),
		groups.RecurrentLayer("r1", groups.GDNState(2, 4, 8, 8, 4, groups.BF16, groups.BF16)),
	}}
	mini, err := refmodel.Miniature(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMiniature(m, mini); err != nil {
		t.Fatal(err)
	}
	if got := len(mini.KVGroups()); got != len(m.KVGroups()) {
		t.Fatalf("%d groups, want %d", got, len(m.KVGroups()))
	}
}

func TestNotMiniature(t *testing.T) {
	if _, err := refmodel.Miniature(nil); !errors.Is(err, refmodel.ErrNotMiniature) {
		t.Fatalf("nil model: %v", err)
	}
	if _, err := refmodel.Miniature(&groups.Model{Name: "empty"}); !errors.Is(err, refmodel.ErrNotMiniature) {
		t.Fatalf("invalid model: %v", err)
	}
	full, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := refmodel.New(full, 1) // bf16: not runnable
	if !errors.Is(m.Err(), refmodel.ErrNotMiniature) {
		t.Fatalf("New(bf16 model).Err() = %v", m.Err())
	}
	if _, _, err := m.Step(refmodel.NewMapStore(full), 0, 1); !errors.Is(err, refmodel.ErrNotMiniature) {
		t.Fatalf("Step on a bf16 model: %v", err)
	}
	if _, err := refmodel.NewRankStore(nil, nil, nil); !errors.Is(err, refmodel.ErrStoreConfig) {
		t.Fatalf("empty rank store: %v", err)
	}
}

// Shrunk counts shard and replicate exactly like the originals for every
// tp up to MaxMiniatureTP.
func TestMiniUnitsKeepSharding(t *testing.T) {
	for u := 1; u <= 20000; u++ {
		m := refmodel.MiniUnitsForTest(u)
		if u <= refmodel.MaxMiniatureTP && m != u || m > u {
			t.Fatalf("%d -> %d", u, m)
		}
		if !sameCount(u, m) {
			t.Fatalf("%d -> %d shards differently", u, m)
		}
	}
	if got := refmodel.MiniUnitsForTest(8192); got != 64 {
		t.Errorf("8192 -> %d, want 64", got)
	}
}
