package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Request validation: the rules the API applies to the OpenAI fields of
// /v1/completions and /v1/chat/completions before the engine sees a
// request. The proxy applies the very same rules (decodeGenBody) before it
// sends anything upstream, so a request an instance would refuse costs no
// prefill. Every refusal is a 400 in OpenAI's error shape whose "param"
// names the field ("messages[1].role", "stop[2]", ...). null is the same
// as an absent field. Field names match case-insensitively, as
// encoding/json matches them. Fields not listed are accepted and ignored
// (OpenAI clients send many: user, stream_options, response_format, ...).
//
// The reference model samples greedily: temperature, top_p, seed and the
// penalties are validated, so a client's mistake is reported, but they do
// not change the output.
//
//	field                  endpoint     rule
//	---------------------  -----------  --------------------------------------------------------------
//	model                  both         a string; the served model's name or empty (instances only:
//	                                    the proxy does not know the model)
//	prompt                 completions  required: a string or an array of exactly one string
//	messages               chat         required, non-empty array of objects
//	messages[i].role       chat         "system", "user", "assistant", "tool" or "developer"
//	messages[i].content    chat         a string, or an array of {"type":"text","text":STRING} parts;
//	                                    null or absent only for role "assistant" (tool calls)
//	max_tokens             both         an integer in [1, MaxMaxTokens]; default DefaultMaxTokens.
//	                                    chat: not checked and not used when max_completion_tokens is set
//	max_completion_tokens  chat         an integer in [1, MaxMaxTokens]; wins over max_tokens
//	                       (both)       prompt tokens + max tokens <= the engine's max_model_len: the
//	                                    engine checks it (400 bad_request naming max_model_len); the
//	                                    API does not know the limit
//	stream                 both         a bool
//	temperature            both         a number in [0, 2] (no effect: greedy)
//	top_p                  both         a number in (0, 1] (no effect: greedy)
//	n                      both         absent or 1: the engine produces one choice per request
//	best_of                completions  absent or 1: the engine produces one choice per request
//	presence_penalty       both         a number in [-2, 2] (no effect)
//	frequency_penalty      both         a number in [-2, 2] (no effect)
//	seed                   both         an integer (JSON integer, int64) (no effect: greedy)
//	stop                   both         a string or an array of at most 4 strings, all empty: the
//	                                    engine cannot end its output at a stop sequence, so a
//	                                    non-empty one is refused rather than ignored
//	logprobs               both         absent, null or false: log probabilities are not supported
//	top_logprobs           chat         absent, null or 0: log probabilities are not supported
//	echo                   completions  absent, null or false: echoing the prompt is not supported
//	kv_transfer_params     both         an object (KVTransferParams); instances with an internal
//	                                    token accept it only from the proxy (403); the proxy refuses
//	                                    it from clients (400)
//	previous_kv_transfer_params  both   proxy only: the previous turn's decode export (see
//	                                    proxy.PreviousTurnField); an instance ignores it like any
//	                                    unknown field
//	X-Request-Id (header)  both         1 to 128 visible ASCII characters
const (
	// maxStopSequences is the most stop sequences a request may carry.
	maxStopSequences = 4
	// Bounds of the OpenAI sampling fields.
	minTemperature, maxTemperature = 0, 2
	minPenalty, maxPenalty         = -2, 2
)

// chatRoles are the roles a chat message may have.
var chatRoles = []string{"system", "user", "assistant", "tool", "developer"}

// samplingFields are the OpenAI fields both endpoints validate, decoded
// with the request (embedded in completionRequest and chatRequest).
type samplingFields struct {
	Temperature      json.RawMessage `json:"temperature"`
	TopP             json.RawMessage `json:"top_p"`
	N                json.RawMessage `json:"n"`
	PresencePenalty  json.RawMessage `json:"presence_penalty"`
	FrequencyPenalty json.RawMessage `json:"frequency_penalty"`
	Seed             json.RawMessage `json:"seed"`
	Stop             json.RawMessage `json:"stop"`
	Logprobs         json.RawMessage `json:"logprobs"`
}

// completionOnlyFields are fields of /v1/completions only.
type completionOnlyFields struct {
	BestOf json.RawMessage `json:"best_of"`
	Echo   json.RawMessage `json:"echo"`
}

// chatOnlyFields are fields of /v1/chat/completions only.
type chatOnlyFields struct {
	TopLogprobs json.RawMessage `json:"top_logprobs"`
}

// absent reports whether a raw field is absent or null.
func absent(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// rawNumber returns raw as a JSON number, or false when it is not one.
func rawNumber(raw json.RawMessage) (json.Number, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return "", false
	}
	n, ok := v.(json.Number)
	return n, ok
}

// inRange checks an optional number against [lo, hi] (loOpen: (lo, hi]).
func inRange(param string, raw json.RawMessage, lo, hi float64, loOpen bool, note string) *APIError {
	if absent(raw) {
		return nil
	}
	lb := "["
	if loOpen {
		lb = "("
	}
	n, isNum := rawNumber(raw)
	v, err := n.Float64()
	if !isNum || err != nil {
		return BadRequest(param, "%s must be a number in %s%g, %g], got %s", param, lb, lo, hi, bytes.TrimSpace(raw))
	}
	ok := v >= lo
	if loOpen {
		ok = v > lo
	}
	if ok && v <= hi {
		return nil
	}
	return BadRequest(param, "%s must be in %s%g, %g], got %g%s", param, lb, lo, hi, v, note)
}

// onlyOne checks a field that must be absent or the number 1.
func onlyOne(param string, raw json.RawMessage) *APIError {
	if absent(raw) {
		return nil
	}
	n, ok := rawNumber(raw)
	if f, err := n.Float64(); ok && err == nil && f == 1 {
		return nil
	}
	return BadRequest(param, "%s must be 1 (got %s): the engine produces one choice per request", param, raw)
}

// onlyFalse checks a field that must be absent, null or false (or, with
// zeroOK, the number 0): a feature the engine does not have.
func onlyFalse(param string, raw json.RawMessage, zeroOK bool, what string) *APIError {
	raw = bytes.TrimSpace(raw)
	if absent(raw) || string(raw) == "false" {
		return nil
	}
	if n, ok := rawNumber(raw); ok && zeroOK {
		if f, err := n.Float64(); err == nil && f == 0 {
			return nil
		}
	}
	return BadRequest(param, "%s is not supported (got %s): %s", param, raw, what)
}

// validate checks the sampling fields of a request.
func (s *samplingFields) validate() *APIError {
	const greedy = " (the reference model samples greedily: it does not change the output)"
	if e := inRange("temperature", s.Temperature, minTemperature, maxTemperature, false, greedy); e != nil {
		return e
	}
	if e := inRange("top_p", s.TopP, 0, 1, true, greedy); e != nil {
		return e
	}
	if e := onlyOne("n", s.N); e != nil {
		return e
	}
	if e := inRange("presence_penalty", s.PresencePenalty, minPenalty, maxPenalty, false, ""); e != nil {
		return e
	}
	if e := inRange("frequency_penalty", s.FrequencyPenalty, minPenalty, maxPenalty, false, ""); e != nil {
		return e
	}
	if !absent(s.Seed) {
		if n, ok := rawNumber(s.Seed); !ok || !isInt64(n) {
			return BadRequest("seed", "seed must be an integer, got %s", s.Seed)
		}
	}
	if e := validateStop(s.Stop); e != nil {
		return e
	}
	return onlyFalse("logprobs", s.Logprobs, false, "the engine returns no log probabilities")
}

func isInt64(n json.Number) bool {
	_, err := n.Int64()
	return err == nil
}

// validateStop checks stop: a string or an array of at most
// maxStopSequences strings.
func validateStop(raw json.RawMessage) *APIError {
	if absent(raw) {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "" {
			return errStopUnsupported()
		}
		return nil
	}
	var arr []json.RawMessage
	if json.Unmarshal(raw, &arr) != nil {
		return BadRequest("stop", "stop must be a string or an array of strings")
	}
	if len(arr) > maxStopSequences {
		return BadRequest("stop", "stop has %d sequences, at most %d are allowed", len(arr), maxStopSequences)
	}
	for i, el := range arr {
		if json.Unmarshal(el, &s) != nil || absent(el) {
			return BadRequest(fmt.Sprintf("stop[%d]", i), "stop[%d] must be a string", i)
		}
	}
	for _, el := range arr {
		if json.Unmarshal(el, &s); s != "" {
			return errStopUnsupported()
		}
	}
	return nil
}

// errStopUnsupported: the engine cannot cut its output at stop sequences,
// and an answer that runs past one would be wrong, so they are refused.
func errStopUnsupported() *APIError {
	return BadRequest("stop", "stop sequences are not supported: the engine would not end the output at them (send none, or an empty one)")
}

func (c *completionOnlyFields) validate() *APIError {
	if e := onlyOne("best_of", c.BestOf); e != nil {
		return e
	}
	return onlyFalse("echo", c.Echo, false, "the engine does not echo the prompt")
}

func (c *chatOnlyFields) validate() *APIError {
	return onlyFalse("top_logprobs", c.TopLogprobs, true, "the engine returns no log probabilities")
}

// decodeMessages validates chat messages and decodes them: each an object
// with a known role and text content (see the table above).
func decodeMessages(raws []json.RawMessage) ([]ChatMessage, *APIError) {
	if len(raws) == 0 {
		return nil, BadRequest("messages", "messages must not be empty")
	}
	out := make([]ChatMessage, len(raws))
	for i, raw := range raws {
		p := fmt.Sprintf("messages[%d]", i)
		var m struct {
			Role    json.RawMessage `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if absent(raw) || bytes.TrimSpace(raw)[0] != '{' || json.Unmarshal(raw, &m) != nil {
			return nil, BadRequest(p, "%s must be an object with a role and a content", p)
		}
		var role string
		if absent(m.Role) {
			return nil, BadRequest(p+".role", "%s.role is required", p)
		}
		if json.Unmarshal(m.Role, &role) != nil || !isChatRole(role) {
			return nil, BadRequest(p+".role", "%s.role must be one of %s, got %s", p, strings.Join(chatRoles, ", "), m.Role)
		}
		if e := checkContent(p+".content", role, m.Content); e != nil {
			return nil, e
		}
		if err := json.Unmarshal(raw, &out[i]); err != nil { // checked above: cannot happen
			return nil, BadRequest(p, "%s: %v", p, err)
		}
	}
	return out, nil
}

func isChatRole(r string) bool {
	for _, c := range chatRoles {
		if r == c {
			return true
		}
	}
	return false
}

// checkContent checks one message's content (param names it).
func checkContent(param, role string, raw json.RawMessage) *APIError {
	if absent(raw) {
		if role == "assistant" {
			return nil
		}
		return BadRequest(param, "%s is required for role %q", param, role)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return nil
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return BadRequest(param, "%s must be a string or an array of text parts", param)
	}
	for j, part := range parts {
		pp := fmt.Sprintf("%s[%d]", param, j)
		var p struct {
			Type json.RawMessage `json:"type"`
			Text json.RawMessage `json:"text"`
		}
		if absent(part) || bytes.TrimSpace(part)[0] != '{' || json.Unmarshal(part, &p) != nil {
			return BadRequest(pp, "%s must be an object {\"type\":\"text\",\"text\":...}", pp)
		}
		var typ string
		if json.Unmarshal(p.Type, &typ) != nil || typ != "text" {
			got := string(bytes.TrimSpace(p.Type))
			if absent(p.Type) {
				got = "(none)"
			}
			return BadRequest(pp+".type", "content part of type %s is not supported: only \"text\" parts are", got)
		}
		if absent(p.Text) || json.Unmarshal(p.Text, &s) != nil {
			return BadRequest(pp+".text", "%s.text must be a string", pp)
		}
	}
	return nil
}
