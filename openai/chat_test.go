package openai

import (
	"encoding/json"
	"testing"
)

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
