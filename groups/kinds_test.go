package groups_test

import (
	"fmt"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Every kind has a name that parses back, a skipped-token rule within
// [0, n] that never moves backwards as n grows, and a sample layer that
// validates and shards at tp 1, 2, 4 and 8; every recurrent family too.
func TestEveryKindHasItsRules(t *testing.T) {
	names := map[string]bool{}
	for _, k := range groups.Kinds() {
		if !k.Valid() {
			t.Fatalf("%v listed but not valid", k)
		}
		name := k.String()
		if names[name] {
			t.Fatalf("two kinds named %q", name)
		}
		names[name] = true
		if back, err := groups.ParseKind(name); err != nil || back != k {
			t.Fatalf("ParseKind(%q) = %v, %v", name, back, err)
		}
		if k.PerToken() == (k == groups.Recurrent) {
			t.Fatalf("%v: PerToken %v", k, k.PerToken())
		}
	}
	if groups.KindInvalid.Valid() || groups.KindInvalid.PerToken() || groups.Kind(200).Valid() {
		t.Fatal("an invalid kind reports valid")
	}
	m := groups.KindSampleModel()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	seenKinds, seenTypes := map[groups.Kind]bool{}, map[groups.RecurrentType]bool{}
	for i := range m.Layers {
		l := &m.Layers[i]
		seenKinds[l.Kind] = true
		if l.Recurrent != nil {
			seenTypes[l.Recurrent.Type] = true
		}
		prev := 0
		for n := 0; n <= 40; n++ {
			s := l.LiveStart(n)
			if s < 0 || s > n || s < prev {
				t.Fatalf("%s: LiveStart(%d) = %d after %d", l.Name, n, s, prev)
			}
			if l.Kind == groups.SlidingWindow && n-s > l.Attention.Window-1 {
				t.Fatalf("%s: %d tokens live after %d, window %d", l.Name, n-s, n, l.Attention.Window)
			}
			if lt := l.LiveTokens(n); lt < 0 || lt > n {
				t.Fatalf("%s: LiveTokens(%d) = %d", l.Name, n, lt)
			}
			prev = s
		}
		for _, tp := range []int{1, 2, 4, 8} {
			if _, err := m.Shape(i, tp, tp-1); err != nil {
				t.Fatalf("%s at tp %d: %v", l.Name, tp, err)
			}
		}
	}
	if len(seenKinds) != len(groups.Kinds()) || len(seenTypes) != len(groups.RecurrentTypes()) {
		t.Fatalf("sample model covers kinds %v and types %v", seenKinds, seenTypes)
	}
	if _, err := groups.NewGeometry(m, groups.InstanceConfig{TP: 8}, 3); err != nil {
		t.Fatal(err)
	}
}

// The rules themselves, against their definitions.
func TestSkippedTokens(t *testing.T) {
	for n := 0; n < 30; n++ {
		for _, c := range []struct {
			k    groups.Kind
			want int
		}{
			{groups.FullAttention, 0}, {groups.MLA, 0}, {groups.Indexer, 0},
			{groups.SlidingWindow, max(0, n-5+1)},
			{groups.ChunkedLocal, n - n%6},
			{groups.Recurrent, max(0, n-1)},
		} {
			if got := groups.SkippedTokens(c.k, 5, 6, n); got != c.want {
				t.Errorf("%v n=%d: %d, want %d", c.k, n, got, c.want)
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for an invalid kind")
		}
	}()
	groups.SkippedTokens(groups.KindInvalid, 0, 0, 3)
}

// A recurrent type outside RecurrentTypes is refused by Validate.
func TestUnknownRecurrentTypeRefused(t *testing.T) {
	m := groups.KindSampleModel()
	for i := range m.Layers {
		if m.Layers[i].Recurrent != nil {
			m.Layers[i].Recurrent.Type = "mamba3"
			break
		}
	}
	if err := m.Validate(); err == nil {
		t.Fatal(fmt.Sprint("recurrent type mamba3 accepted"))
	}
}
