package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// alphabet renders token t as alphabet[t]: exactly refmodel.Vocab distinct
// printable characters.
const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ."

// The alphabet must cover the vocabulary exactly; a mismatch is a negative
// array length, so it fails to compile.
var (
	_ [len(alphabet) - refmodel.Vocab]struct{}
	_ [refmodel.Vocab - len(alphabet)]struct{}
)

// Tokenize maps text to the reference model's token ids, one token per
// byte: b -> b mod Vocab. It is deterministic and total. The empty string
// becomes the single token 0, so a prompt is never empty.
func Tokenize(s string) []uint32 {
	if s == "" {
		return []uint32{0}
	}
	toks := make([]uint32, len(s))
	for i := 0; i < len(s); i++ {
		toks[i] = uint32(s[i]) % refmodel.Vocab
	}
	return toks
}

// Detokenize renders one token as a single printable character. Ids
// outside the vocabulary render as U+FFFD.
func Detokenize(t uint32) string {
	if t >= refmodel.Vocab {
		return "\uFFFD"
	}
	return alphabet[t : t+1]
}

// TokenText is text that Tokenize maps back to toks exactly (byte
// Vocab+t for token t; Detokenize's printable rendering does not
// round-trip): a follow-up prompt that continues a conversation with its
// answer, token for token.
func TokenText(toks []uint32) string {
	b := make([]byte, len(toks))
	for i, t := range toks {
		b[i] = byte(refmodel.Vocab + t%refmodel.Vocab)
	}
	return string(b)
}

// ChatMessage is one message of a /v1/chat/completions request. Content is
// a string or, as OpenAI allows, an array of parts, of which only "text"
// parts are accepted; they are concatenated.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// UnmarshalJSON accepts content as a string, null, or an array of text parts.
func (m *ChatMessage) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	m.Role, m.Content = raw.Role, ""
	c := raw.Content
	if len(c) == 0 || string(c) == "null" {
		return nil
	}
	if c[0] == '"' {
		return json.Unmarshal(c, &m.Content)
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(c, &parts); err != nil {
		return errors.New("content must be a string or an array of text parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return fmt.Errorf("content part of type %q is not supported", p.Type)
		}
		sb.WriteString(p.Text)
	}
	m.Content = sb.String()
	return nil
}

// RenderChat renders messages as the prompt the model sees: "role: content\n"
// per message, then "assistant: " for the reply.
func RenderChat(messages []ChatMessage) string {
	var sb strings.Builder
	for _, m := range messages {
		sb.WriteString(m.Role)
		sb.WriteString(": ")
		sb.WriteString(m.Content)
		sb.WriteByte('\n')
	}
	sb.WriteString("assistant: ")
	return sb.String()
}
