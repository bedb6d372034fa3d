package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

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
