package openaitest

import (
	"slices"
	"testing"
)

// The SDK's decoder tolerates what our API must never send; the framing
// check refuses each of those bodies, and accepts the well-formed ones.
func TestSSEFraming(t *testing.T) {
	for _, c := range []struct {
		body string
		want []string // nil: refused
	}{
		{"data: {\"a\":1}\n\ndata: [DONE]\n\n", []string{`{"a":1}`, "[DONE]"}},
		{"", []string{}},
		{"data: \n\n", []string{""}},
		{"data:{}\n\n", nil},                // no space after the colon
		{"data: a\ndata: b\n\n", nil},       // two data lines in one event
		{": keepalive\n\ndata: a\n\n", nil}, // a comment
		{"event: x\ndata: a\n\n", nil},      // a named event
		{"data: a\n", nil},                  // the last event not closed
		{"data: a\n\ndata: b", nil},         // a partial last line
		{"data: a\r\n\r\n", nil},            // CRLF
		{"data: a\n\n\ndata: b\n\n", nil},   // an extra blank line
		{"id: 1\ndata: a\n\n", nil},         // an id field
	} {
		got, err := ParseSSE([]byte(c.body))
		if c.want == nil {
			if err == nil {
				t.Errorf("%q: accepted as %q", c.body, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: %q, %v; want %q", c.body, got, err, c.want)
		}
	}
}
