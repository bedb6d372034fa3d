package refmodel_test

import (
	"errors"
	"math"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/proptest"
	"pgregory.net/rapid"
)

func presetMini(t tb, name string, o groups.PresetOptions) *groups.Model {
	t.Helper()
	m, err := groups.Preset(name, o)
	if err != nil {
		t.Fatal(err)
	}
	mini, err := refmodel.Miniature(m)
	if err != nil {
		t.Fatal(err)
	}
	return mini
}

// trace runs Generate and returns the tokens, every step's logits (bits)
// and the final snapshot.
func trace(t tb, m *refmodel.Model, s refmodel.Store, prompt []uint32, n int) ([]uint32, [][]uint32, *refmodel.Snapshot) {
	t.Helper()
	var logits [][]uint32
	var out []uint32
	for pos := 0; pos < refmodel.Computed(len(prompt), n); pos++ {
		tok := prompt[min(pos, len(prompt)-1)]
		if pos >= len(prompt) {
			tok = out[len(out)-1]
		}
		o, err := m.Forward(s, pos, tok)
		if err != nil {
			t.Fatalf("position %d: %v", pos, err)
		}
		bits := make([]uint32, 0, len(o.Logits)+len(o.DraftLogits))
		for _, v := range append(o.Logits, o.DraftLogits...) {
			bits = append(bits, math.Float32bits(v))
		}
		logits = append(logits, append(bits, o.Next, o.Draft))
		if pos >= len(prompt)-1 {
			out = append(out, o.Next)
		}
	}
	snap, err := m.Snapshot(s, refmodel.Computed(len(prompt), n))
	if err != nil {
		t.Fatal(err)
	}
	return out, logits, snap
}

func TestReproducible(t *testing.T) {
	for _, mini := range []*groups.Model{
		presetMini(t, "qwen3.5-0.8b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 1}),
		presetMini(t, "deepseek-v3.2", groups.PresetOptions{MTP: true}),
		presetMini(t, "nemotron-nano-9b-v2", groups.PresetOptions{}),
		presetMini(t, "kimi-linear-48b-a3b", groups.PresetOptions{}),
		presetMini(t, "gemma-3-4b", groups.PresetOptions{}),
	} {
		prompt := []uint32{3, 14, 15, 9, 26, 5, 35, 8, 9, 7}
		a, b := refmodel.New(mini, 42), refmodel.New(mini, 42)
		ta, la, sa := trace(t, a, refmodel.NewMapStore(mini), prompt, 6)
		tb, lb, sb := trace(t, b, refmodel.NewMapStore(mini), prompt, 6)
		if !equalTokens(ta, tb) {
			t.Fatalf("%s: tokens %v vs %v", mini.Name, ta, tb)
		}
		for i := range la {
			for j := range la[i] {
				if la[i][j] != lb[i][j] {
					t.Fatalf("%s: position %d logit %d differs", mini.Name, i, j)
				}
			}
		}
		if err := sa.Diff(sb); err != nil {
			t.Fatalf("%s: %v", mini.Name, err)
		}
		gen, err := a.Generate(refmodel.NewMapStore(mini), prompt, 0, 6)
		if err != nil || !equalTokens(gen, ta) {
			t.Fatalf("%s: Generate = %v, %v; trace %v", mini.Name, gen, err, ta)
		}
		// Another seed is another model.
		_, lc, _ := trace(t, refmodel.New(mini, 43), refmodel.NewMapStore(mini), prompt, 6)
		same := true
		for j := range la[0] {
			same = same && la[0][j] == lc[0][j]
		}
		if same {
			t.Fatalf("%s: seeds 42 and 43 give the same logits", mini.Name)
		}
	}
}

// TestMapStoreMatchesRankStore: the model on a RankStore (every tp,
// layout, block size) computes exactly what it computes on a MapStore, and
// replicated coordinates hold the same bits on every rank.
func TestMapStoreMatchesRankStore(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mini := drawMini(t)
		cfg := proptestInstance(t, "rank")
		if mini.CheckTP(cfg.TP) != nil {
			t.Skip("tp cannot shard the model")
		}
		prompt := drawPrompt(t, rapid.IntRange(1, 16).Draw(t, "prompt_len"))
		n := rapid.IntRange(1, 4).Draw(t, "generate")
		m := refmodel.New(mini, rapid.Uint64().Draw(t, "seed"))
		total := refmodel.Computed(len(prompt), n)
		inst := newInstance(t, mini, cfg, total, 0, rapid.Uint64().Draw(t, "layout_seed"))
		tm, lm, sm := trace(t, m, refmodel.NewMapStore(mini), prompt, n)
		tr, lr, sr := trace(t, m, inst.store, prompt, n)
		if !equalTokens(tm, tr) {
			t.Fatalf("tokens: map %v, ranks %v", tm, tr)
		}
		for i := range lm {
			for j := range lm[i] {
				if lm[i][j] != lr[i][j] {
					t.Fatalf("position %d logit %d differs", i, j)
				}
			}
		}
		if err := sm.Diff(sr); err != nil {
			t.Fatal(err)
		}
		for _, e := range sr.Elems {
			holders := inst.store.Holders(e.Coord)
			if len(holders) == 0 {
				t.Fatalf("%+v held by no rank", e.Coord)
			}
			for _, r := range holders {
				v := make([]float32, len(e.Values))
				if err := inst.store.ReadRank(r, e.Coord, v); err != nil {
					t.Fatal(err)
				}
				for i := range v {
					if math.Float32bits(v[i]) != math.Float32bits(e.Values[i]) {
						t.Fatalf("%+v on rank %d differs from rank %d", e.Coord, r, holders[0])
					}
				}
			}
		}
	})
}

func proptestInstance(t *rapid.T, label string) groups.InstanceConfig {
	return proptest.GenInstance(t, label, rapid.SampledFrom(smallTPs).Draw(t, label+"_tp"))
}

// TestTwiceFedDiverges: a recurrent state that saw a token twice is not
// the state that saw it once, and neither are the next logits ("is is
// Paris"). Position 0 starts from the zero state (a new request), so the
// token is fed again at a position >= 1.
func TestTwiceFedDiverges(t *testing.T) {
	check := func(t tb, mini *groups.Model, seed uint64, prompt []uint32, x uint32) {
		m := refmodel.New(mini, seed)
		at := len(prompt)
		once, twice := refmodel.NewMapStore(mini), refmodel.NewMapStore(mini)
		for _, s := range []refmodel.Store{once, twice} {
			if at > 0 {
				if _, err := m.Prefill(s, prompt, 0, at); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := m.Step(s, at, x); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := m.Step(twice, at, x); err != nil {
			t.Fatal(err)
		}
		a, err := m.Snapshot(once, at+1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.Snapshot(twice, at+1)
		if err != nil {
			t.Fatal(err)
		}
		for li := range mini.Layers {
			if mini.Layers[li].Kind != groups.Recurrent {
				continue
			}
			if err := layerOf(a, li).Diff(layerOf(b, li)); err == nil {
				t.Fatalf("%s layer %d: feeding token %d twice at %d left the state unchanged", mini.Name, li, x, at)
			}
		}
		la, _, err := m.Step(once, at+1, 1)
		if err != nil {
			t.Fatal(err)
		}
		lb, _, err := m.Step(twice, at+1, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := range la {
			if math.Float32bits(la[i]) != math.Float32bits(lb[i]) {
				return
			}
		}
		t.Fatalf("%s: logits after a twice-fed token equal the correct ones", mini.Name)
	}
	for _, name := range []string{"qwen3.5-0.8b", "nemotron-nano-9b-v2", "kimi-linear-48b-a3b"} {
		mini := presetMini(t, name, groups.PresetOptions{})
		check(t, mini, 7, []uint32{1}, 5)
		check(t, mini, 7, []uint32{1, 2, 3, 4}, 5)
	}
	rapid.Check(t, func(rt *rapid.T) {
		mini := drawMini(rt)
		if !hasKind(mini, groups.Recurrent) {
			rt.Skip("no recurrent layer")
		}
		prompt := drawPrompt(rt, rapid.IntRange(1, 8).Draw(rt, "prompt_len"))
		x := uint32(rapid.IntRange(0, refmodel.Vocab-1).Draw(rt, "x"))
		if prompt[len(prompt)-1] == x {
			x = (x + 1) % refmodel.Vocab // the same token twice in a row is a real input
		}
		check(rt, mini, rapid.Uint64().Draw(rt, "seed"), prompt, x)
	})
}

// layerOf is the part of s belonging to layer li.
func layerOf(s *refmodel.Snapshot, li int) *refmodel.Snapshot {
	out := &refmodel.Snapshot{N: s.N}
	for _, e := range s.Elems {
		if e.Coord.Layer == li {
			out.Elems = append(out.Elems, e)
		}
	}
	return out
}

// TestMissingState: reading state through a null block, or state that was
// never written, is ErrMissingState (never a panic), and a failed step
// leaves the store untouched.
func TestMissingState(t *testing.T) {
	mini := presetMini(t, "qwen3.5-0.8b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 1})
	m := refmodel.New(mini, 3)
	prompt := make([]uint32, 80)
	for i := range prompt {
		prompt[i] = uint32(i*7+3) % refmodel.Vocab
	}
	for _, memory := range []groups.MemoryLayout{groups.Unified, groups.Separate} {
		cfg := groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 2, Memory: memory}
		inst := newInstance(t, mini, cfg, len(prompt), 0, 1)
		attn := -1
		for gi, gg := range inst.side.Ranks[0].Groups {
			if gg.Kind == groups.FullAttention {
				attn = gi
				break
			}
		}
		bs := inst.side.Ranks[0].Groups[attn].BlockSize
		h := bs + 2
		if h+4 > len(prompt) {
			t.Fatalf("%s: attention block size %d too large for the test", memory, bs)
		}
		if _, err := m.Prefill(inst.store, prompt, 0, h); err != nil {
			t.Fatal(err)
		}
		// Null the attention block of positions [0, bs): D never got it.
		inst.tab[attn][0] = 0
		recurrent := recurrentSnapshot(t, m, inst.store, h)
		_, _, err := m.Step(inst.store, h, prompt[h])
		if !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%s: step over a null block: %v", memory, err)
		}
		if err := recurrent.Diff(recurrentSnapshot(t, m, inst.store, h)); err != nil {
			t.Fatalf("%s: failed step changed the recurrent state: %v", memory, err)
		}
		if _, err := m.Generate(inst.store, prompt, h, 3); !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%s: generate over a null block: %v", memory, err)
		}
		if _, err := m.Snapshot(inst.store, h); !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%s: snapshot over a null block: %v", memory, err)
		}
		li := attnLayer(inst, attn)
		v := make([]float32, 4)
		if err := inst.store.Read(refmodel.KCoord(li, 0, 1), v); !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%s: read of a null block: %v", memory, err)
		}
		if err := inst.store.Write(refmodel.KCoord(li, 0, 1), v); !errors.Is(err, refmodel.ErrNullBlock) {
			t.Fatalf("%s: write to a null block: %v", memory, err)
		}
		if err := inst.store.Read(refmodel.KCoord(li, 0, 10*len(prompt)), v); !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%s: read beyond the table: %v", memory, err)
		}
		inst.tab[attn][1] = 1 << 30
		if err := inst.store.Read(refmodel.KCoord(li, 0, bs), v); !errors.Is(err, refmodel.ErrBadBlock) {
			t.Fatalf("%s: read of a block beyond memory: %v", memory, err)
		}
	}
	// MapStore: a recurrent state that was not transferred.
	s := refmodel.NewMapStore(mini)
	if _, err := m.Prefill(s, prompt, 0, 5); err != nil {
		t.Fatal(err)
	}
	li := 0 // layers.0 is a GDN layer
	s.Delete(refmodel.StateCoord(li, 0, 1))
	if _, _, err := m.Step(s, 5, 1); !errors.Is(err, refmodel.ErrMissingState) {
		t.Fatalf("step without a recurrent state: %v", err)
	}
	// Bad coordinates and lengths are ErrCoord, never a panic.
	for _, c := range []oracle.Coord{
		{Layer: -1}, {Layer: len(mini.Layers)}, refmodel.KCoord(3, 99, 0), refmodel.KCoord(3, 0, -1),
		refmodel.ConvCoord(0, 9, 0, 0), refmodel.ConvCoord(0, 0, 1<<20, 0), refmodel.StateCoord(0, 0, 1<<20),
		refmodel.ScaleCoord(3, 0, 0, false), refmodel.TokenCoord(0, 0),
	} {
		if err := s.Read(c, make([]float32, 4)); !errors.Is(err, refmodel.ErrCoord) {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	if err := s.Write(refmodel.KCoord(3, 0, 0), make([]float32, 3)); !errors.Is(err, refmodel.ErrCoord) {
		t.Fatalf("short vector: %v", err)
	}
	if _, _, err := m.Step(s, 6, refmodel.Vocab); !errors.Is(err, refmodel.ErrToken) {
		t.Fatalf("token out of vocabulary: %v", err)
	}
	if _, err := m.Generate(s, prompt, len(prompt), 1); !errors.Is(err, refmodel.ErrRange) {
		t.Fatalf("generate from the end of the prompt: %v", err)
	}
}

func attnLayer(in *instance, group int) int { return in.side.Ranks[0].Groups[group].Layers[0] }

// recurrentSnapshot is the recurrent part of s's state after n positions.
func recurrentSnapshot(t tb, m *refmodel.Model, s refmodel.Store, n int) *refmodel.Snapshot {
	t.Helper()
	out := &refmodel.Snapshot{N: n}
	var err error
	refmodel.VisitState(m.Spec(), n, func(c oracle.Coord, size int) {
		if err != nil || (c.Part != oracle.PartConv && c.Part != oracle.PartState) {
			return
		}
		v := make([]float32, size)
		err = s.Read(c, v)
		out.Elems = append(out.Elems, refmodel.Elem{Coord: c, Values: v})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A Parallel layer reads the same input as the layer before it: marking
// it changes what the model computes, and the miniature keeps the flag.
func TestParallelLayersChangeTheComputation(t *testing.T) {
	m := &groups.Model{Name: "par", Layers: []groups.Layer{
		groups.AttentionLayer("layers.0.attn", 2, 8, groups.BF16),
		groups.RecurrentLayer("layers.0.mamba", groups.Mamba2State(2, 2, 1, 2, 4, groups.BF16, groups.FP32)),
	}}
	seq, err := refmodel.Miniature(m)
	if err != nil {
		t.Fatal(err)
	}
	m.Layers[1].Parallel = true
	par, err := refmodel.Miniature(m)
	if err != nil {
		t.Fatal(err)
	}
	if !par.Layers[1].Parallel || seq.Layers[1].Parallel {
		t.Fatal("miniature lost the parallel flag")
	}
	sa, err := refmodel.New(seq, 4).Forward(refmodel.NewMapStore(seq), 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := refmodel.New(par, 4).Forward(refmodel.NewMapStore(par), 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	same := true
	for i := range sa.Logits {
		same = same && sa.Logits[i] == sb.Logits[i]
	}
	if same {
		t.Fatal("parallel and sequential give the same logits")
	}
}
