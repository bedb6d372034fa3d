package tokenizer

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

func TestTokenize(t *testing.T) {
	cases := []struct {
		in   string
		want []uint32
	}{
		{"", []uint32{0}},
		{"A", []uint32{65 % 64}},
		{"a?\x00\xff", []uint32{97 % 64, 63, 0, 255 % 64}},
	}
	for _, c := range cases {
		if got := Tokenize(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Tokenize(%q) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, tok := range Tokenize("héllo, wörld ✓") {
		if tok >= refmodel.Vocab {
			t.Fatalf("token %d outside the vocabulary", tok)
		}
	}
}

func TestDetokenize(t *testing.T) {
	seen := map[string]uint32{}
	for tok := uint32(0); tok < refmodel.Vocab; tok++ {
		s := Detokenize(tok)
		r := []rune(s)
		if len(r) != 1 || !unicode.IsPrint(r[0]) {
			t.Fatalf("Detokenize(%d) = %q, want one printable character", tok, s)
		}
		if prev, dup := seen[s]; dup {
			t.Fatalf("Detokenize(%d) = Detokenize(%d) = %q", tok, prev, s)
		}
		seen[s] = tok
	}
	if got := Detokenize(refmodel.Vocab); got != "\uFFFD" {
		t.Errorf("Detokenize(Vocab) = %q", got)
	}
}

func TestTokenTextRoundTrips(t *testing.T) {
	var toks []uint32
	for v := uint32(0); v < refmodel.Vocab; v++ {
		toks = append(toks, v, refmodel.Vocab-1-v)
	}
	if got := Tokenize(TokenText(toks)); fmt.Sprint(got) != fmt.Sprint(toks) {
		t.Fatalf("Tokenize(TokenText(%v)) = %v", toks, got)
	}
}

// Retokenize inverts Detokenize over the whole vocabulary and refuses
// text Detokenize never produces.
func TestRetokenize(t *testing.T) {
	var toks []uint32
	var text strings.Builder
	for v := uint32(0); v < refmodel.Vocab; v++ {
		toks = append(toks, refmodel.Vocab-1-v)
		text.WriteString(Detokenize(refmodel.Vocab - 1 - v))
	}
	got, ok := Retokenize(text.String())
	if !ok || fmt.Sprint(got) != fmt.Sprint(toks) {
		t.Fatalf("Retokenize = %v, %v; want %v", got, ok, toks)
	}
	for _, bad := range []string{"a,b", "\uFFFD", "x\n"} {
		if _, ok := Retokenize(bad); ok {
			t.Errorf("Retokenize(%q) accepted", bad)
		}
	}
}
