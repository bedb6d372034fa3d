package refmodel

import (
	"slices"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// TestKeyArrayFollowsRewrites: a run that rewrites a position it already
// committed (the same cache computes position 5 again with another
// token) must attend over the new values afterwards, as a fresh run
// reading the store does; a key array that kept the old entry would
// compute different logits at position 6.
func TestKeyArrayFollowsRewrites(t *testing.T) {
	spec, err := groups.Preset("llama-3.1-8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mini, err := Miniature(spec)
	if err != nil {
		t.Fatal(err)
	}
	m := New(mini, 4)
	s := NewMapStore(mini)
	cache := newRunCache(s)
	for pos := range 10 {
		if _, err := m.forward(s, pos, uint32(pos*5+1)%Vocab, cache); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.forward(s, 5, 63, cache); err != nil {
		t.Fatal(err)
	}
	got, err := m.forward(s, 6, 9, cache)
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.forward(s, 6, 9, newRunCache(s))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Logits, want.Logits) {
		t.Fatalf("position 6 after rewriting 5: logits %v, a fresh run computes %v", got.Logits[:4], want.Logits[:4])
	}
}
