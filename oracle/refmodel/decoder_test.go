package refmodel_test

import (
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"pgregory.net/rapid"
)

// specPresets are presets with drafters: native MTP layers, and Eagle3.
var specPresets = []struct {
	name string
	mtp  bool
}{{"qwen3.5-9b", true}, {"qwen3-next-80b-a3b", true}, {"deepseek-v3", true}, {"kimi-k2.5-eagle3", false}}

func drawSpecMini(t *rapid.T) *groups.Model {
	p := rapid.SampledFrom(specPresets).Draw(t, "preset")
	k := rapid.IntRange(1, 4).Draw(t, "num_speculative_tokens")
	return presetMini(t, p.name, groups.PresetOptions{MTP: p.mtp, NumSpeculativeTokens: k})
}

// TestSpeculativeIsLossless: greedy speculative decoding emits the tokens
// plain greedy decoding emits and leaves every computed position's state
// bit-equal to it, on a MapStore and on rank memory at any tp and layout,
// whatever the drafter proposes: its own guesses, or (through Propose)
// the true continuation with random mistakes, so that every accept length
// from none to all occurs.
func TestSpeculativeIsLossless(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mini := drawSpecMini(t)
		m := refmodel.New(mini, rapid.Uint64().Draw(t, "seed"))
		prompt := drawPrompt(t, rapid.IntRange(1, 24).Draw(t, "prompt_len"))
		n := rapid.IntRange(1, 14).Draw(t, "n")
		ref := refmodel.NewMapStore(mini)
		want, err := m.Generate(ref, prompt, 0, n)
		if err != nil {
			t.Fatal(err)
		}
		wantSnap, err := m.Snapshot(ref, refmodel.Computed(len(prompt), n))
		if err != nil {
			t.Fatal(err)
		}
		var s refmodel.SlotStore = refmodel.NewMapStore(mini)
		if rapid.Bool().Draw(t, "rank_store") {
			cfg := proptestInstance(t, "inst")
			total := len(prompt) + n + mini.NumSpeculativeTokens
			s = newScratchInstance(t, mini, cfg, total, 0, mini.NumSpeculativeTokens, rapid.Uint64().Draw(t, "mem_seed")).store
		}
		dec := m.NewDecoder()
		oracleProposals := rapid.Bool().Draw(t, "oracle")
		always := oracleProposals && rapid.Bool().Draw(t, "always_right")
		if oracleProposals {
			seq := append(append([]uint32(nil), prompt...), want...)
			dec.Propose = func(pos int, draft uint32) uint32 {
				if pos < len(seq) && (always || rapid.Bool().Draw(t, "right")) {
					return seq[pos]
				}
				return draft
			}
		}
		got, err := m.GenerateSpeculative(s, prompt, 0, n, dec)
		if err != nil {
			t.Fatal(err)
		}
		if !equalTokens(got, want) {
			t.Fatalf("speculative %v, plain %v (stats %+v)", got, want, dec.Stats)
		}
		snap, err := m.Snapshot(s, refmodel.Computed(len(prompt), n))
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Diff(wantSnap); err != nil {
			t.Fatalf("state after speculative decoding (stats %+v): %v", dec.Stats, err)
		}
		st := dec.Stats
		if st.Accepted > st.Drafted || st.Steps > n || (n > 2 && st.Drafted == 0) {
			t.Fatalf("stats %+v for %d tokens", st, n)
		}
		if always && st.Accepted != st.Drafted {
			t.Fatalf("true continuation proposed, %d of %d drafts accepted", st.Accepted, st.Drafted)
		}
		if sum := st.Steps + st.Accepted; sum != n {
			t.Fatalf("%d steps and %d accepted drafts emitted %d tokens", st.Steps, st.Accepted, n)
		}
	})
}

// inPlace is a SlotStore without scratch slots: every position writes the
// request's state slot.
type inPlace struct{ *refmodel.MapStore }

func (s inPlace) Slots(int, int) refmodel.Store { return s.MapStore }

// TestRejectedDraftWithoutScratchCorruptsState: the scratch slots are what
// keeps a rejected draft out of the recurrent state. A store whose slots
// all alias the state slot, given a wrong draft, ends with a state (or
// tokens) unlike plain decoding.
func TestRejectedDraftWithoutScratchCorruptsState(t *testing.T) {
	mini := presetMini(t, "qwen3.5-9b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 2})
	m := refmodel.New(mini, 5)
	prompt := []uint32{3, 1, 4, 1, 5, 9, 2, 6}
	const n = 6
	ref := refmodel.NewMapStore(mini)
	want, err := m.Generate(ref, prompt, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	wantSnap, err := m.Snapshot(ref, refmodel.Computed(len(prompt), n))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		store   refmodel.SlotStore
		corrupt bool
	}{{"scratch slots", refmodel.NewMapStore(mini), false}, {"in place", inPlace{refmodel.NewMapStore(mini)}, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dec := m.NewDecoder()
			// Always propose a wrong token: every draft is rejected.
			dec.Propose = func(pos int, draft uint32) uint32 {
				if pos < len(prompt)+len(want) && pos >= len(prompt) {
					return want[pos-len(prompt)] + 1
				}
				return draft
			}
			got, err := m.GenerateSpeculative(tc.store, prompt, 0, n, dec)
			if err != nil {
				t.Fatal(err)
			}
			if dec.Stats.Drafted == 0 || dec.Stats.Accepted != 0 {
				t.Fatalf("stats %+v: want drafts, all rejected", dec.Stats)
			}
			snap, err := m.Snapshot(tc.store, refmodel.Computed(len(prompt), n))
			if err != nil {
				t.Fatal(err)
			}
			differs := !equalTokens(got, want) || snap.Diff(wantSnap) != nil
			if differs != tc.corrupt {
				t.Fatalf("differs from plain decoding: %t, want %t (tokens %v vs %v)", differs, tc.corrupt, got, want)
			}
		})
	}
}

// TestDraftChainWritesOnlyDraftState: Draft continues from the drafter's
// hidden state: it reads the draft layers' KV of earlier positions (an
// empty store is ErrMissingState) and writes theirs at its position, and
// nothing of the target layers.
func TestDraftChainWritesOnlyDraftState(t *testing.T) {
	for _, p := range specPresets {
		t.Run(p.name, func(t *testing.T) {
			mini := presetMini(t, p.name, groups.PresetOptions{MTP: p.mtp, NumSpeculativeTokens: 3})
			m := refmodel.New(mini, 11)
			s := refmodel.NewMapStore(mini)
			out, err := m.Forward(s, 0, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(out.DraftHidden) != refmodel.Hidden || len(out.DraftLogits) != refmodel.Vocab {
				t.Fatalf("draft output: %d hidden, %d logits", len(out.DraftHidden), len(out.DraftLogits))
			}
			if _, err := m.Draft(refmodel.NewMapStore(mini), 1, out.DraftHidden, out.Draft); !errors.Is(err, refmodel.ErrMissingState) {
				t.Fatalf("draft at position 1 on an empty store: %v, want ErrMissingState", err)
			}
			before := s.Len()
			if _, err := m.Draft(s, 1, out.DraftHidden, out.Draft); err != nil {
				t.Fatal(err)
			}
			if s.Len() == before {
				t.Fatal("the chained draft wrote nothing")
			}
			for li, l := range mini.Layers {
				var c oracle.Coord
				switch l.Kind {
				case groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal:
					c = refmodel.KCoord(li, 0, 1)
				case groups.MLA, groups.Indexer:
					c = refmodel.TokenCoord(li, 1)
				default:
					continue
				}
				size, _ := refmodel.VectorLen(mini, c)
				err := s.Read(c, make([]float32, size))
				if l.Draft != (err == nil) {
					t.Fatalf("layer %d (%s, draft %t) at position 1 after the chain: read %v", li, l.Name, l.Draft, err)
				}
			}
		})
	}
}
