package openaitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/hybridxfer/hybridxfer/tokenizer"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	Key1          = "sk-test-key-one-0123456789"
	Key2          = "sk-test-key-two-0123456789"
	InternalToken = "internal-token-0123456789abcdef"
)

const (
	CompletionsPath = "/v1/completions"
	ChatPath        = "/v1/chat/completions"
	// chatMsg is a valid messages array.
	ChatMessages = `"messages":[{"role":"user","content":"a"}]`
)

const Model = "ref-model"

// fakeBackend is a deterministic Backend. Role prefill requires
// do_remote_decode and answers with KV params naming itself; role decode
// requires KV params. It is a HoldAborter that records its calls.
type Backend struct {
	Name     string
	Role     backend.Role
	Err      error // returned by Generate after errAfter tokens
	ErrAfter int
	NoEmit   bool // never call emit
	// gate, when set, holds Generate after the first token until closed.
	Gate chan struct{}
	// block makes Generate announce itself on started, wait for its ctx to
	// end, and report ctx.Err() on ctxErr.
	Block   bool
	Started chan struct{}
	CtxErr  chan error

	AbortErr error // returned by AbortHold

	mu       sync.Mutex
	ready    error // Ready's answer; set with setReady
	reqs     []backend.GenRequest
	lastEmit func(string) error
	aborts   []openai.AbortRequest
}

func (f *Backend) ModelName() string { return Model }

func (f *Backend) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *Backend) SetReady(Err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = Err
}

func (f *Backend) AbortHold(id, grant string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aborts = append(f.aborts, openai.AbortRequest{RemoteRequestID: id, RemoteGrant: grant})
	return f.AbortErr
}

func (f *Backend) AbortCalls() []openai.AbortRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]openai.AbortRequest(nil), f.aborts...)
}

func (f *Backend) Requests() []backend.GenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]backend.GenRequest(nil), f.reqs...)
}

// fakeOutput is the fake's deterministic output for prompt.
func Output(prompt string, n int) []uint32 {
	var sum uint32
	for _, t := range tokenizer.Tokenize(prompt) {
		sum += t
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = (sum + uint32(7*i)) % 64
	}
	return out
}

func Text(prompt string, n int) string {
	var sb strings.Builder
	for _, t := range Output(prompt, n) {
		sb.WriteString(tokenizer.Detokenize(t))
	}
	return sb.String()
}

// fakeKV is what fake prefill engine name answers for request id.
func KV(Name, id string, promptTokens int) *backend.KVTransferParams {
	return &backend.KVTransferParams{
		RemoteEngineID:  Name,
		RemoteRequestID: id,
		RemoteHost:      "10.0.0.1",
		RemotePort:      5600,
		TPSize:          2,
		RemoteBlockIDs:  [][]int{{1, 2, 3}, {9}},
		NumTokens:       promptTokens - 1,
		LeaseExpiryUnix: 1.75e9,
		Handoff:         backend.DecodeComputesLast,
		RemoteBootID:    Name + "-boot",
		RemoteGrant:     "grant-" + id,
	}
}

func (f *Backend) Generate(ctx context.Context, req backend.GenRequest, emit func(string) error) (*backend.GenResult, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.lastEmit = emit
	f.mu.Unlock()
	if f.Block {
		f.Started <- struct{}{}
		<-ctx.Done()
		f.CtxErr <- ctx.Err()
		return nil, fmt.Errorf("fake: %w", ctx.Err())
	}
	prompt := len(tokenizer.Tokenize(req.Prompt))
	var kv *backend.KVTransferParams
	switch f.Role {
	case backend.RolePrefill:
		if req.KV == nil || !req.KV.DoRemoteDecode {
			return nil, fmt.Errorf("fake %s: %w: want do_remote_decode", f.Name, backend.ErrWrongRole)
		}
		kv = KV(f.Name, req.ID, prompt)
	case backend.RoleDecode:
		if req.KV == nil || req.KV.RemoteRequestID == "" {
			return nil, fmt.Errorf("fake %s: %w: want kv_transfer_params", f.Name, backend.ErrWrongRole)
		}
	}
	toks := Output(req.Prompt, req.MaxTokens)
	var text strings.Builder
	for i, t := range toks {
		if f.Err != nil && i == f.ErrAfter {
			return nil, f.Err
		}
		text.WriteString(tokenizer.Detokenize(t))
		if emit != nil && !f.NoEmit {
			if Err := emit(tokenizer.Detokenize(t)); Err != nil {
				return nil, Err
			}
		}
		if i == 0 && f.Gate != nil {
			select {
			case <-f.Gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if f.Err != nil {
		return nil, f.Err
	}
	return &backend.GenResult{
		Text:             text.String(),
		Tokens:           toks,
		PromptTokens:     prompt,
		CompletionTokens: len(toks),
		FinishReason:     "length",
		KV:               kv,
	}, nil
}

func Serve(t *testing.T, f *Backend) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(openai.NewHandler(f, nil, nil))
	t.Cleanup(srv.Close)
	return srv
}

// post sends body to url with optional headers (name, value pairs).
func Post(t *testing.T, url, body string, hdr ...string) *http.Response {
	t.Helper()
	req, Err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if Err != nil {
		t.Fatal(Err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, Err := http.DefaultClient.Do(req)
	if Err != nil {
		t.Fatal(Err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// decodeBody decodes a JSON response into v, failing on a wrong status.
func Decode(t *testing.T, resp *http.Response, status int, v any) {
	t.Helper()
	b, Err := io.ReadAll(resp.Body)
	if Err != nil {
		t.Fatal(Err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, b)
	}
	if Err := json.Unmarshal(b, v); Err != nil {
		t.Fatalf("decoding %s: %v", b, Err)
	}
}

// errorBody is an OpenAI error response.
type ErrorBody struct {
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Param   string `json:"param"`
		Code    string `json:"code"`
	} `json:"error"`
}

func DecodeError(t *testing.T, resp *http.Response, status int) ErrorBody {
	t.Helper()
	var e ErrorBody
	Decode(t, resp, status, &e)
	if e.Error == nil || e.Error.Message == "" || e.Error.Type == "" || e.Error.Code == "" {
		t.Fatalf("incomplete error object: %+v", e.Error)
	}
	return e
}

// ReadSSE reads a Server-Sent Events body to EOF and returns each event's
// data. The events are parsed by the OpenAI SDK's decoder (openai-go's
// ssestream, what a client runs); the wire format our API promises is
// checked on the raw bytes as well: every event one "data: " line and a
// blank line, nothing else, the last event complete.
func ReadSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	events, Err := newSSE(r).readAll(nil)
	if Err != nil {
		t.Fatal(Err)
	}
	return events
}

// ParseSSE is ReadSSE on a body already read, with an error instead of a
// test failure (for fuzz targets and table tests).
func ParseSSE(body []byte) ([]string, error) {
	return newSSE(bytes.NewReader(body)).readAll(nil)
}

// sse decodes an event stream with the SDK's decoder and keeps the raw
// bytes it read for checkFraming.
type sse struct {
	dec ssestream.Decoder
	raw *bytes.Buffer
}

func newSSE(r io.Reader) *sse {
	raw := &bytes.Buffer{}
	resp := &http.Response{
		Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body:   io.NopCloser(io.TeeReader(r, raw)),
	}
	return &sse{dec: ssestream.NewDecoder(resp), raw: raw}
}

// readAll appends the data of every event up to the end of the stream
// to events and checks the framing of the whole body.
func (s *sse) readAll(events []string) ([]string, error) {
	for {
		ev, ok, Err := s.next()
		if Err != nil {
			return events, fmt.Errorf("event %d: %w", len(events), Err)
		}
		if !ok {
			return events, s.checkFraming()
		}
		events = append(events, ev)
	}
}

// next returns the next event's data; ok false at the end of the stream.
// Our streams carry data-only events: a named event is an error.
func (s *sse) next() (data string, ok bool, Err error) {
	if !s.dec.Next() {
		return "", false, s.dec.Err()
	}
	ev := s.dec.Event()
	if ev.Type != "" {
		return "", false, fmt.Errorf("event type %q: our streams carry data-only events", ev.Type)
	}
	return strings.TrimSuffix(string(ev.Data), "\n"), true, nil
}

// sseFraming is the whole of a well-formed body: events of one data line
// each, every one closed by a blank line.
var sseFraming = regexp.MustCompile(`\A(?:data: [^\n]*\n\n)*\z`)

// checkFraming checks the bytes read so far (the whole body after the
// last next) against sseFraming.
func (s *sse) checkFraming() error {
	if b := s.raw.Bytes(); !sseFraming.Match(b) {
		return fmt.Errorf("body is not a sequence of \"data: ...\\n\\n\" events: %.500q", b)
	}
	return nil
}

// streamChunk is a streamed chunk of either endpoint.
type StreamChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int     `json:"index"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
		Delta        *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *openai.Usage             `json:"usage"`
	KV    *backend.KVTransferParams `json:"kv_transfer_params"`
	Error *json.RawMessage          `json:"error"`
}

// readStream reads a streaming response and checks its framing: 200,
// event-stream, every event a chunk, [DONE] last.
func ReadStream(t *testing.T, resp *http.Response) []StreamChunk {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	events := ReadSSE(t, resp.Body)
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", events)
	}
	chunks := make([]StreamChunk, len(events)-1)
	for i, ev := range events[:len(events)-1] {
		if Err := json.Unmarshal([]byte(ev), &chunks[i]); Err != nil {
			t.Fatalf("event %d %q: %v", i, ev, Err)
		}
		if c := chunks[i]; c.Error != nil || len(c.Choices) != 1 || c.Choices[0].Index != 0 || c.Model != Model {
			t.Fatalf("event %d: bad chunk %q", i, ev)
		}
	}
	return chunks
}

// completionResponse is a non-streaming response of either endpoint.
type CompletionResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int             `json:"index"`
		Text         string          `json:"text"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
		Message      *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage openai.Usage              `json:"usage"`
	KV    *backend.KVTransferParams `json:"kv_transfer_params"`
}

// waitFor receives from ch, failing the test if nothing arrives in a
// generous deadline (a hang guard, not a timing assertion).
func RecvOrFail[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func Get(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, Err := http.Get(url)
	if Err != nil {
		t.Fatal(Err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// badRequestCases are requests the API refuses before the engine sees
// them. The proxy refuses them all (but wrong model) with the same error.
var BadRequestCases = []struct {
	Name, Path, Body string
	Status           int
	Param, Contains  string
	Hdr              []string
}{
	{"malformed", "/v1/completions", `{"prompt":`, 400, "", "malformed JSON", nil},
	{"trailing", "/v1/completions", `{"prompt":"a"} {}`, 400, "", "after the object", nil},
	{"empty", "/v1/completions", ``, 400, "", "empty", nil},
	{"not object", "/v1/completions", `[1]`, 400, "", "JSON object", nil},
	{"max_tokens 0", "/v1/completions", `{"prompt":"a","max_tokens":0}`, 400, "max_tokens", "max_tokens", nil},
	{"max_tokens big", "/v1/completions", `{"prompt":"a","max_tokens":4097}`, 400, "max_tokens", "max_tokens", nil},
	{"max_tokens type", "/v1/completions", `{"prompt":"a","max_tokens":"5"}`, 400, "max_tokens", "max_tokens", nil},
	{"max_completion_tokens", "/v1/chat/completions", `{"messages":[{"role":"user","content":"a"}],"max_completion_tokens":-1}`,
		400, "max_completion_tokens", "max_completion_tokens", nil},
	{"wrong model", "/v1/completions", `{"model":"other","prompt":"a"}`, 400, "model", "other", nil},
	{"no prompt", "/v1/completions", `{"max_tokens":3}`, 400, "prompt", "prompt", nil},
	{"two prompts", "/v1/completions", `{"prompt":["a","b"]}`, 400, "prompt", "prompt", nil},
	{"token prompt", "/v1/completions", `{"prompt":[1,2]}`, 400, "prompt", "prompt", nil},
	{"kv type", "/v1/completions", `{"prompt":"a","kv_transfer_params":"x"}`, 400, "kv_transfer_params", "kv_transfer_params", nil},
	{"stream type", "/v1/completions", `{"prompt":"a","stream":"yes"}`, 400, "stream", "stream", nil},
	{"chat stream type", "/v1/chat/completions", `{"messages":[{"role":"user","content":"a"}],"stream":"yes"}`, 400, "stream", "stream", nil},
	{"kv field type", "/v1/completions", `{"prompt":"a","kv_transfer_params":{"remote_port":"x"}}`, 400, "kv_transfer_params.remote_port", "remote_port", nil},
	{"chat max_tokens", "/v1/chat/completions", `{"messages":[{"role":"user","content":"a"}],"max_tokens":0}`, 400, "max_tokens", "max_tokens", nil},
	{"messages type", "/v1/chat/completions", `{"messages":{"role":"user"}}`, 400, "messages", "messages", nil},
	{"null", "/v1/completions", `null`, 400, "prompt", "prompt", nil},
	{"no messages", "/v1/chat/completions", `{"messages":[]}`, 400, "messages", "messages", nil},
	{"no role", "/v1/chat/completions", `{"messages":[{"content":"a"}]}`, 400, "messages[0].role", "messages[0].role", nil},
	{"image part", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "messages[0].content[0].type", "image_url", nil},
	{"huge", "/v1/completions", `{"prompt":"` + strings.Repeat("a", openai.MaxBodyBytes) + `"}`, 413, "", "exceeds", nil},
	{"bad id", "/v1/completions", `{"prompt":"a"}`, 400, "", openai.HeaderRequestID, []string{openai.HeaderRequestID, "a b"}},
}

// streamFirstEvent starts a streaming completion at url against a backend
// gated after its first token, and checks that the first token's event
// reaches the client while the backend is still held: each event is
// flushed as it is produced. It then opens the gate and returns the rest.
func StreamFirstEvent(t *testing.T, url string, gated *Backend) []string {
	t.Helper()
	gated.Gate = make(chan struct{})
	// Canceled before the servers close, so a held handler ends even when
	// the test fails.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type result struct {
		resp *http.Response
		s    *sse
		ev   string
		Err  error
	}
	first := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions",
			strings.NewReader(`{"prompt":"abc","max_tokens":3,"stream":true}`))
		resp, Err := http.DefaultClient.Do(req)
		if Err != nil {
			first <- result{Err: Err}
			return
		}
		s := newSSE(resp.Body)
		ev, ok, Err := s.next()
		if Err == nil && !ok {
			Err = fmt.Errorf("stream ended before its first event")
		}
		first <- result{resp, s, ev, Err}
	}()
	r := RecvOrFail(t, first, "the first event while the backend is held (not flushed?)")
	close(gated.Gate)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	defer r.resp.Body.Close()
	var c StreamChunk
	if Err := json.Unmarshal([]byte(r.ev), &c); Err != nil || r.resp.StatusCode != http.StatusOK ||
		*c.Choices[0].Text != tokenizer.Detokenize(Output("abc", 1)[0]) {
		t.Fatalf("status %d, first event %q: %v", r.resp.StatusCode, r.ev, Err)
	}
	events, Err := r.s.readAll([]string{r.ev})
	if Err != nil {
		t.Fatal(Err)
	}
	return events
}

// postInBackground sends a POST with ctx from a goroutine and reports the
// client's error (the response body is closed at once).
func PostInBackground(ctx context.Context, url, body string) <-chan error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	done := make(chan error, 1)
	go func() {
		resp, Err := http.DefaultClient.Do(req)
		if Err == nil {
			resp.Body.Close()
		}
		done <- Err
	}()
	return done
}

// rawError is an error response kept as JSON, to check "param": null.
type RawError struct {
	Error map[string]any `json:"error"`
}

// checkRefused asserts status, code and param (nil: JSON null) of an
// error response.
func CheckRefused(t *testing.T, resp *http.Response, status int, code string, param any) RawError {
	t.Helper()
	b, Err := io.ReadAll(resp.Body)
	if Err != nil {
		t.Fatal(Err)
	}
	var e RawError
	if resp.StatusCode != status || json.Unmarshal(b, &e) != nil || e.Error == nil {
		t.Fatalf("status %d, body %s; want %d with an error object", resp.StatusCode, b, status)
	}
	p, hasParam := e.Error["param"]
	if e.Error["code"] != code || !hasParam || p != param || e.Error["type"] != "invalid_request_error" || e.Error["message"] == "" {
		t.Errorf("error %v, want code %q, type invalid_request_error and param %v", e.Error, code, param)
	}
	if status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("401 with WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
	}
	return e
}

// send makes one request with the given headers (name, value pairs; a
// name may repeat).
func Send(t *testing.T, method, url, body string, hdr ...string) *http.Response {
	t.Helper()
	req, Err := http.NewRequest(method, url, strings.NewReader(body))
	if Err != nil {
		t.Fatal(Err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, Err := http.DefaultClient.Do(req)
	if Err != nil {
		t.Fatal(Err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func MustJSON(t *testing.T, v any) string {
	t.Helper()
	b, Err := json.Marshal(v)
	if Err != nil {
		t.Fatal(Err)
	}
	return string(b)
}

// invalidCases are requests validate.go refuses: 400, code bad_request,
// the field in param and contains in the message.
var InvalidCases = []struct {
	Name, Path, Body string
	Param, Contains  string
}{
	{"temperature -3", CompletionsPath, `{"prompt":"a","temperature":-3}`, "temperature", "[0, 2]"},
	{"temperature 2.5 chat", ChatPath, `{` + ChatMessages + `,"temperature":2.5}`, "temperature", "greedily"},
	{"temperature type", CompletionsPath, `{"prompt":"a","temperature":"hot"}`, "temperature", "temperature"},
	{"temperature other spelling", CompletionsPath, `{"prompt":"a","Temperature":5}`, "temperature", "[0, 2]"},
	{"top_p 0", CompletionsPath, `{"prompt":"a","top_p":0}`, "top_p", "(0, 1]"},
	{"top_p 1.5", ChatPath, `{` + ChatMessages + `,"top_p":1.5}`, "top_p", "(0, 1]"},
	{"top_p -1", CompletionsPath, `{"prompt":"a","top_p":-1}`, "top_p", "(0, 1]"},
	{"n 5", CompletionsPath, `{"prompt":"a","n":5}`, "n", "one choice"},
	{"n 0 chat", ChatPath, `{` + ChatMessages + `,"n":0}`, "n", "one choice"},
	{"n 1.5", CompletionsPath, `{"prompt":"a","n":1.5}`, "n", "one choice"},
	{"n string", CompletionsPath, `{"prompt":"a","n":"1"}`, "n", "one choice"},
	{"best_of 2", CompletionsPath, `{"prompt":"a","best_of":2}`, "best_of", "one choice"},
	{"presence_penalty 3", CompletionsPath, `{"prompt":"a","presence_penalty":3}`, "presence_penalty", "[-2, 2]"},
	{"frequency_penalty -2.5", ChatPath, `{` + ChatMessages + `,"frequency_penalty":-2.5}`, "frequency_penalty", "[-2, 2]"},
	{"max_tokens 0", CompletionsPath, `{"prompt":"a","max_tokens":0}`, "max_tokens", "between 1"},
	{"max_tokens -1 chat", ChatPath, `{` + ChatMessages + `,"max_tokens":-1}`, "max_tokens", "between 1"},
	{"max_completion_tokens 0", ChatPath, `{` + ChatMessages + `,"max_completion_tokens":0}`, "max_completion_tokens", "between 1"},
	{"stop 5 strings", CompletionsPath, `{"prompt":"a","stop":["a","b","c","d","e"]}`, "stop", "at most 4"},
	{"stop number", ChatPath, `{` + ChatMessages + `,"stop":5}`, "stop", "string"},
	{"stop element", CompletionsPath, `{"prompt":"a","stop":["a",1]}`, "stop[1]", "stop[1]"},
	{"stop null element", CompletionsPath, `{"prompt":"a","stop":[null]}`, "stop[0]", "stop[0]"},
	{"stop string", CompletionsPath, `{"prompt":"a","stop":"\n"}`, "stop", "not supported"},
	{"stop in an array", ChatPath, `{` + ChatMessages + `,"stop":["", "x"]}`, "stop", "not supported"},
	{"seed 1.5", CompletionsPath, `{"prompt":"a","seed":1.5}`, "seed", "integer"},
	{"seed string", ChatPath, `{` + ChatMessages + `,"seed":"7"}`, "seed", "integer"},
	{"seed too big", CompletionsPath, `{"prompt":"a","seed":9223372036854775808}`, "seed", "integer"},
	{"logprobs true", ChatPath, `{` + ChatMessages + `,"logprobs":true}`, "logprobs", "not supported"},
	{"logprobs 5", CompletionsPath, `{"prompt":"a","logprobs":5}`, "logprobs", "not supported"},
	{"logprobs 0", CompletionsPath, `{"prompt":"a","logprobs":0}`, "logprobs", "not supported"},
	{"top_logprobs 3", ChatPath, `{` + ChatMessages + `,"top_logprobs":3}`, "top_logprobs", "not supported"},
	{"echo", CompletionsPath, `{"prompt":"a","echo":true}`, "echo", "not supported"},
	{"stream number", ChatPath, `{` + ChatMessages + `,"stream":1}`, "stream", "stream"},
	{"role wizard", ChatPath, `{"messages":[{"role":"wizard","content":"a"}]}`, "messages[0].role", "wizard"},
	{"role function", ChatPath, `{"messages":[{"role":"function","content":"a"}]}`, "messages[0].role", "developer"},
	{"role number", ChatPath, `{"messages":[{"role":7,"content":"a"}]}`, "messages[0].role", "one of"},
	{"second role missing", ChatPath, `{"messages":[{"role":"user","content":"a"},{"content":"b"}]}`, "messages[1].role", "required"},
	{"role empty", ChatPath, `{"messages":[{"role":"","content":"a"}]}`, "messages[0].role", "one of"},
	{"user content missing", ChatPath, `{"messages":[{"role":"user"}]}`, "messages[0].content", "required"},
	{"system content null", ChatPath, `{"messages":[{"role":"system","content":null}]}`, "messages[0].content", "required"},
	{"content number", ChatPath, `{"messages":[{"role":"user","content":5}]}`, "messages[0].content", "text parts"},
	{"content object", ChatPath, `{"messages":[{"role":"user","content":{"type":"text","text":"a"}}]}`, "messages[0].content", "text parts"},
	{"part without text", ChatPath, `{"messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text", "string"},
	{"part text number", ChatPath, `{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, "messages[0].content[0].text", "string"},
	{"part string", ChatPath, `{"messages":[{"role":"user","content":["a"]}]}`, "messages[0].content[0]", "object"},
	{"part without type", ChatPath, `{"messages":[{"role":"user","content":[{"text":"a"}]}]}`, "messages[0].content[0].type", "(none)"},
	{"image part", ChatPath, `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}]}`,
		"messages[0].content[1].type", "image_url"},
	{"message null", ChatPath, `{"messages":[null]}`, "messages[0]", "object"},
	{"message string", ChatPath, `{"messages":["hi"]}`, "messages[0]", "object"},
	{"messages empty", ChatPath, `{"messages":[]}`, "messages", "empty"},
	{"messages absent", ChatPath, `{"prompt":"a"}`, "messages", "empty"},
}

// checkInvalid asserts the 400 of an invalidCases case.
func CheckInvalid(t *testing.T, resp *http.Response, param, contains string) ErrorBody {
	t.Helper()
	e := DecodeError(t, resp, http.StatusBadRequest)
	if e.Error.Param != param || e.Error.Code != "bad_request" || e.Error.Type != "invalid_request_error" ||
		!strings.Contains(e.Error.Message, contains) {
		t.Errorf("error %+v, want param %q, code bad_request and %q in the message", e.Error, param, contains)
	}
	return e
}

// validCases are accepted: the backend runs them with prompt and n tokens.
var ValidCases = []struct {
	Name, Path, Body, Prompt string
	N                        int
}{
	{"temperature bounds", CompletionsPath, `{"prompt":"a","temperature":0,"top_p":1}`, "a", openai.DefaultMaxTokens},
	{"temperature 2", ChatPath, `{` + ChatMessages + `,"temperature":2,"top_p":0.01}`, "user: a\nassistant: ", openai.DefaultMaxTokens},
	{"nulls", CompletionsPath, `{"prompt":"a","temperature":null,"top_p":null,"n":null,"seed":null,"stop":null,"logprobs":null,` +
		`"presence_penalty":null,"frequency_penalty":null,"best_of":null,"echo":null,"max_tokens":null}`, "a", openai.DefaultMaxTokens},
	{"n 1", CompletionsPath, `{"prompt":"a","n":1,"best_of":1,"echo":false,"max_tokens":3}`, "a", 3},
	{"n 1.0 chat", ChatPath, `{` + ChatMessages + `,"n":1.0,"max_completion_tokens":2}`, "user: a\nassistant: ", 2},
	{"penalties", CompletionsPath, `{"prompt":"a","presence_penalty":-2,"frequency_penalty":2}`, "a", openai.DefaultMaxTokens},
	{"seeds", CompletionsPath, `{"prompt":"a","seed":-9223372036854775808}`, "a", openai.DefaultMaxTokens},
	{"stop empty string", CompletionsPath, `{"prompt":"a","stop":""}`, "a", openai.DefaultMaxTokens},
	{"stop 4 empty", ChatPath, `{` + ChatMessages + `,"stop":["","","",""]}`, "user: a\nassistant: ", openai.DefaultMaxTokens},
	{"stop empty", CompletionsPath, `{"prompt":"a","stop":[]}`, "a", openai.DefaultMaxTokens},
	{"logprobs false", ChatPath, `{` + ChatMessages + `,"logprobs":false,"top_logprobs":0}`, "user: a\nassistant: ", openai.DefaultMaxTokens},
	{"unknown fields", CompletionsPath, `{"prompt":"a","user":"u","suffix":null,"logit_bias":{"1":2},"response_format":{"type":"text"}}`,
		"a", openai.DefaultMaxTokens},
	{"every role", ChatPath, `{"messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},` +
		`{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},` +
		`{"role":"assistant","content":null,"tool_calls":[]},{"role":"assistant"},{"role":"tool","content":"t","tool_call_id":"c"}],` +
		`"tools":[],"max_tokens":4}`,
		"system: s\ndeveloper: d\nuser: ab\nassistant: \nassistant: \ntool: t\nassistant: ", 4},
	{"empty parts", ChatPath, `{"messages":[{"role":"user","content":[]}]}`, "user: \nassistant: ", openai.DefaultMaxTokens},
}

func ServeWith(t *testing.T, f backend.Backend, o openai.HandlerOptions) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "auth_test_total", Help: "t"}))
	srv := httptest.NewServer(openai.NewHandlerWithOptions(f, reg, nil, o))
	t.Cleanup(srv.Close)
	return srv
}

// proxyError posts through x's proxy and returns the error the client got.
func PostError(t *testing.T, url string, status int) string {
	t.Helper()
	e := DecodeError(t, Post(t, url+"/v1/completions", `{"prompt":"abc","max_tokens":3}`), status)
	return e.Error.Message
}

// Emitter is the emit function the last Generate call was given.
func (f *Backend) Emitter() func(string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastEmit
}
