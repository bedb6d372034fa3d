package serve

import (
	"encoding/json"
	"fmt"
	"reflect"
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

func TestRenderChat(t *testing.T) {
	got := RenderChat([]ChatMessage{{"system", "be brief"}, {"user", "hi"}})
	if want := "system: be brief\nuser: hi\nassistant: "; got != want {
		t.Errorf("RenderChat = %q, want %q", got, want)
	}
	if got := RenderChat(nil); got != "assistant: " {
		t.Errorf("RenderChat(nil) = %q", got)
	}
}

func TestChatMessageContent(t *testing.T) {
	cases := []struct {
		in      string
		want    ChatMessage
		wantErr bool
	}{
		{`{"role":"user","content":"hi"}`, ChatMessage{"user", "hi"}, false},
		{`{"role":"assistant","content":null}`, ChatMessage{"assistant", ""}, false},
		{`{"role":"user"}`, ChatMessage{"user", ""}, false},
		{`{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}`, ChatMessage{"user", "ab"}, false},
		{`{"role":"user","content":[{"type":"image_url"}]}`, ChatMessage{}, true},
		{`{"role":"user","content":7}`, ChatMessage{}, true},
	}
	for _, c := range cases {
		var m ChatMessage
		err := json.Unmarshal([]byte(c.in), &m)
		if (err != nil) != c.wantErr || (!c.wantErr && m != c.want) {
			t.Errorf("%s: got %+v, %v", c.in, m, err)
		}
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
