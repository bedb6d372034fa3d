package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/tokenizer"
)

const fakeModel = "ref-model"

// fakeBackend is a deterministic Backend. Role prefill requires
// do_remote_decode and answers with KV params naming itself; role decode
// requires KV params. It is a HoldAborter that records its calls.
type fakeBackend struct {
	name     string
	role     Role
	err      error // returned by Generate after errAfter tokens
	errAfter int
	noEmit   bool // never call emit
	// gate, when set, holds Generate after the first token until closed.
	gate chan struct{}
	// block makes Generate announce itself on started, wait for its ctx to
	// end, and report ctx.Err() on ctxErr.
	block   bool
	started chan struct{}
	ctxErr  chan error

	abortErr error // returned by AbortHold

	mu       sync.Mutex
	ready    error // Ready's answer; set with setReady
	reqs     []GenRequest
	lastEmit func(string) error
	aborts   []abortRequest
}

func (f *fakeBackend) ModelName() string { return fakeModel }

func (f *fakeBackend) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fakeBackend) setReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = err
}

func (f *fakeBackend) AbortHold(id, grant string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aborts = append(f.aborts, abortRequest{RemoteRequestID: id, RemoteGrant: grant})
	return f.abortErr
}

func (f *fakeBackend) abortCalls() []abortRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]abortRequest(nil), f.aborts...)
}

func (f *fakeBackend) requests() []GenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]GenRequest(nil), f.reqs...)
}

// fakeOutput is the fake's deterministic output for prompt.
func fakeOutput(prompt string, n int) []uint32 {
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

func fakeText(prompt string, n int) string {
	var sb strings.Builder
	for _, t := range fakeOutput(prompt, n) {
		sb.WriteString(tokenizer.Detokenize(t))
	}
	return sb.String()
}

// fakeKV is what fake prefill engine name answers for request id.
func fakeKV(name, id string, promptTokens int) *KVTransferParams {
	return &KVTransferParams{
		RemoteEngineID:  name,
		RemoteRequestID: id,
		RemoteHost:      "10.0.0.1",
		RemotePort:      5600,
		TPSize:          2,
		RemoteBlockIDs:  [][]int{{1, 2, 3}, {9}},
		NumTokens:       promptTokens - 1,
		LeaseExpiryUnix: 1.75e9,
		Handoff:         DecodeComputesLast,
		RemoteBootID:    name + "-boot",
		RemoteGrant:     "grant-" + id,
	}
}

func (f *fakeBackend) Generate(ctx context.Context, req GenRequest, emit func(string) error) (*GenResult, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.lastEmit = emit
	f.mu.Unlock()
	if f.block {
		f.started <- struct{}{}
		<-ctx.Done()
		f.ctxErr <- ctx.Err()
		return nil, fmt.Errorf("fake: %w", ctx.Err())
	}
	prompt := len(tokenizer.Tokenize(req.Prompt))
	var kv *KVTransferParams
	switch f.role {
	case RolePrefill:
		if req.KV == nil || !req.KV.DoRemoteDecode {
			return nil, fmt.Errorf("fake %s: %w: want do_remote_decode", f.name, ErrWrongRole)
		}
		kv = fakeKV(f.name, req.ID, prompt)
	case RoleDecode:
		if req.KV == nil || req.KV.RemoteRequestID == "" {
			return nil, fmt.Errorf("fake %s: %w: want kv_transfer_params", f.name, ErrWrongRole)
		}
	}
	toks := fakeOutput(req.Prompt, req.MaxTokens)
	var text strings.Builder
	for i, t := range toks {
		if f.err != nil && i == f.errAfter {
			return nil, f.err
		}
		text.WriteString(tokenizer.Detokenize(t))
		if emit != nil && !f.noEmit {
			if err := emit(tokenizer.Detokenize(t)); err != nil {
				return nil, err
			}
		}
		if i == 0 && f.gate != nil {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	return &GenResult{
		Text:             text.String(),
		Tokens:           toks,
		PromptTokens:     prompt,
		CompletionTokens: len(toks),
		FinishReason:     "length",
		KV:               kv,
	}, nil
}

func newAPI(t *testing.T, f *fakeBackend) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewHandler(f, nil, nil))
	t.Cleanup(srv.Close)
	return srv
}

// post sends body to url with optional headers (name, value pairs).
func apiPost(t *testing.T, url, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// decodeBody decodes a JSON response into v, failing on a wrong status.
func apiDecode(t *testing.T, resp *http.Response, status int, v any) {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
}

// errorBody is an OpenAI error response.
type errorBody struct {
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Param   string `json:"param"`
		Code    string `json:"code"`
	} `json:"error"`
}

func apiDecodeError(t *testing.T, resp *http.Response, status int) errorBody {
	t.Helper()
	var e errorBody
	apiDecode(t, resp, status, &e)
	if e.Error == nil || e.Error.Message == "" || e.Error.Type == "" || e.Error.Code == "" {
		t.Fatalf("incomplete error object: %+v", e.Error)
	}
	return e
}

// readSSE reads a Server-Sent Events body to EOF and returns each event's
// data. Every event must be one "data: " line followed by a blank line.
func readSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	br := bufio.NewReader(r)
	var events []string
	for {
		ev, err := nextEvent(br)
		if err == io.EOF {
			return events
		}
		if err != nil {
			t.Fatalf("event %d: %v", len(events), err)
		}
		events = append(events, ev)
	}
}

// nextEvent reads one event's data; io.EOF at a clean end of stream.
func nextEvent(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err == io.EOF && line == "" {
		return "", io.EOF
	}
	if err != nil {
		return "", fmt.Errorf("partial line %q: %w", line, err)
	}
	data, ok := strings.CutPrefix(line, "data: ")
	if !ok {
		return "", fmt.Errorf("line %q is not a data line", line)
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\n" {
		return "", fmt.Errorf("want a blank line after data, got %q, %v", blank, err)
	}
	return strings.TrimSuffix(data, "\n"), nil
}

// streamChunk is a streamed chunk of either endpoint.
type streamChunk struct {
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
	Usage *apiUsage         `json:"usage"`
	KV    *KVTransferParams `json:"kv_transfer_params"`
	Error *json.RawMessage  `json:"error"`
}

// readStream reads a streaming response and checks its framing: 200,
// event-stream, every event a chunk, [DONE] last.
func readStream(t *testing.T, resp *http.Response) []streamChunk {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	events := readSSE(t, resp.Body)
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", events)
	}
	chunks := make([]streamChunk, len(events)-1)
	for i, ev := range events[:len(events)-1] {
		if err := json.Unmarshal([]byte(ev), &chunks[i]); err != nil {
			t.Fatalf("event %d %q: %v", i, ev, err)
		}
		if c := chunks[i]; c.Error != nil || len(c.Choices) != 1 || c.Choices[0].Index != 0 || c.Model != fakeModel {
			t.Fatalf("event %d: bad chunk %q", i, ev)
		}
	}
	return chunks
}

// completionResponse is a non-streaming response of either endpoint.
type completionResponse struct {
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
	Usage apiUsage          `json:"usage"`
	KV    *KVTransferParams `json:"kv_transfer_params"`
}

func TestCompletions(t *testing.T) {
	for _, prompt := range []string{`"hello world"`, `["hello world"]`} {
		t.Run(prompt, func(t *testing.T) {
			f := &fakeBackend{}
			srv := newAPI(t, f)
			resp := apiPost(t, srv.URL+"/v1/completions",
				`{"model":"`+fakeModel+`","prompt":`+prompt+`,"max_tokens":5,"temperature":0.7,"top_p":1}`,
				HeaderRequestID, "req-1")
			if got := resp.Header.Get(HeaderRequestID); got != "req-1" {
				t.Errorf("response %s %q", HeaderRequestID, got)
			}
			var c completionResponse
			apiDecode(t, resp, http.StatusOK, &c)
			want := fakeText("hello world", 5)
			if c.ID != "cmpl-req-1" || c.Object != "text_completion" || c.Model != fakeModel || c.Created == 0 {
				t.Errorf("envelope %+v", c)
			}
			if len(c.Choices) != 1 || c.Choices[0].Text != want || c.Choices[0].FinishReason != "length" ||
				string(c.Choices[0].Logprobs) != "null" || c.Choices[0].Index != 0 {
				t.Errorf("choices %+v, want text %q", c.Choices, want)
			}
			if c.Usage != (apiUsage{11, 5, 16}) {
				t.Errorf("usage %+v", c.Usage)
			}
			if c.KV != nil {
				t.Errorf("kv_transfer_params %+v, want none", c.KV)
			}
			reqs := f.requests()
			if len(reqs) != 1 || !reflect.DeepEqual(reqs[0], GenRequest{ID: "req-1", Prompt: "hello world", MaxTokens: 5}) {
				t.Errorf("Generate saw %+v", reqs)
			}
			if f.lastEmit != nil {
				t.Errorf("a non-streaming request got an emit callback")
			}
		})
	}
}

func TestCompletionsDefaults(t *testing.T) {
	f := &fakeBackend{}
	srv := newAPI(t, f)
	resp := apiPost(t, srv.URL+"/v1/completions", `{"prompt":""}`)
	var c completionResponse
	apiDecode(t, resp, http.StatusOK, &c)
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].MaxTokens != DefaultMaxTokens || reqs[0].ID == "" {
		t.Fatalf("Generate saw %+v", reqs)
	}
	if got := resp.Header.Get(HeaderRequestID); got != reqs[0].ID || c.ID != "cmpl-"+reqs[0].ID {
		t.Errorf("generated id %q, header %q, response id %q", reqs[0].ID, got, c.ID)
	}
	if c.Usage.CompletionTokens != DefaultMaxTokens || c.Usage.PromptTokens != 1 {
		t.Errorf("usage %+v", c.Usage)
	}
	// A second request gets a different id.
	apiPost(t, srv.URL+"/v1/completions", `{"prompt":"x"}`)
	if reqs = f.requests(); reqs[0].ID == reqs[1].ID {
		t.Errorf("two requests got id %q", reqs[0].ID)
	}
}

func TestCompletionsStream(t *testing.T) {
	for _, role := range []Role{RoleBoth, RolePrefill} {
		t.Run(string(role), func(t *testing.T) {
			f := &fakeBackend{name: "p0", role: role}
			srv := newAPI(t, f)
			resp := apiPost(t, srv.URL+"/v1/completions",
				`{"prompt":"abc","max_tokens":4,"stream":true,"kv_transfer_params":{"do_remote_decode":true}}`,
				HeaderRequestID, "s1")
			chunks := readStream(t, resp)
			toks := fakeOutput("abc", 4)
			if len(chunks) != len(toks)+1 {
				t.Fatalf("%d chunks, want %d", len(chunks), len(toks)+1)
			}
			for i, c := range chunks {
				ch := c.Choices[0]
				if c.ID != "cmpl-s1" || c.Object != "text_completion" || ch.Text == nil {
					t.Fatalf("chunk %d: %+v", i, c)
				}
				if i < len(toks) {
					if *ch.Text != tokenizer.Detokenize(toks[i]) || ch.FinishReason != nil || c.Usage != nil {
						t.Errorf("chunk %d: text %q finish %v, want %q", i, *ch.Text, ch.FinishReason, tokenizer.Detokenize(toks[i]))
					}
					continue
				}
				if *ch.Text != "" || ch.FinishReason == nil || *ch.FinishReason != "length" {
					t.Errorf("final chunk %+v", c)
				}
				if c.Usage == nil || *c.Usage != (apiUsage{3, 4, 7}) {
					t.Errorf("final usage %+v", c.Usage)
				}
				var want *KVTransferParams
				if role == RolePrefill {
					want = fakeKV("p0", "s1", 3)
				}
				if !reflect.DeepEqual(c.KV, want) {
					t.Errorf("final kv_transfer_params %+v, want %+v", c.KV, want)
				}
			}
			if reqs := f.requests(); len(reqs) != 1 || reqs[0].KV == nil || !reqs[0].KV.DoRemoteDecode {
				t.Errorf("Generate saw %+v", reqs)
			}
		})
	}
}

// A backend that never calls emit still streams its whole text.
func TestStreamWithoutEmit(t *testing.T) {
	f := &fakeBackend{noEmit: true}
	srv := newAPI(t, f)
	chunks := readStream(t, apiPost(t, srv.URL+"/v1/completions", `{"prompt":"abc","max_tokens":3,"stream":true}`))
	if len(chunks) != 2 || *chunks[0].Choices[0].Text != fakeText("abc", 3) || chunks[1].Choices[0].FinishReason == nil {
		t.Fatalf("chunks %+v", chunks)
	}
}

// emit called after Generate returned is refused, not written.
func TestEmitAfterFinish(t *testing.T) {
	f := &fakeBackend{}
	srv := newAPI(t, f)
	readStream(t, apiPost(t, srv.URL+"/v1/completions", `{"prompt":"abc","max_tokens":1,"stream":true}`))
	f.mu.Lock()
	emit := f.lastEmit
	f.mu.Unlock()
	if err := emit("late"); !errors.Is(err, errStreamClosed) {
		t.Fatalf("late emit: %v, want errStreamClosed", err)
	}
}

func TestChat(t *testing.T) {
	f := &fakeBackend{}
	srv := newAPI(t, f)
	body := `{"model":"` + fakeModel + `","messages":[{"role":"system","content":"be brief"},` +
		`{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],` +
		`"max_tokens":9,"max_completion_tokens":3}`
	var c completionResponse
	apiDecode(t, apiPost(t, srv.URL+"/v1/chat/completions", body, HeaderRequestID, "c1"), http.StatusOK, &c)
	prompt := "system: be brief\nuser: hi there\nassistant: "
	want := fakeText(prompt, 3)
	if c.ID != "chatcmpl-c1" || c.Object != "chat.completion" || len(c.Choices) != 1 {
		t.Fatalf("response %+v", c)
	}
	ch := c.Choices[0]
	if ch.Message == nil || ch.Message.Role != "assistant" || ch.Message.Content != want || ch.FinishReason != "length" {
		t.Errorf("choice %+v, want content %q", ch, want)
	}
	if c.Usage != (apiUsage{len(prompt), 3, len(prompt) + 3}) {
		t.Errorf("usage %+v", c.Usage)
	}
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Prompt != prompt || reqs[0].MaxTokens != 3 {
		t.Errorf("Generate saw %+v", reqs)
	}
}

func TestChatStream(t *testing.T) {
	f := &fakeBackend{}
	srv := newAPI(t, f)
	body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,` +
		`"kv_transfer_params":{"remote_request_id":"x","remote_block_ids":[[1],[2]]}}`
	chunks := readStream(t, apiPost(t, srv.URL+"/v1/chat/completions", body, HeaderRequestID, "c2"))
	toks := fakeOutput("user: hi\nassistant: ", 4)
	if len(chunks) != len(toks)+2 {
		t.Fatalf("%d chunks, want %d", len(chunks), len(toks)+2)
	}
	for i, c := range chunks {
		ch := c.Choices[0]
		if c.ID != "chatcmpl-c2" || c.Object != "chat.completion.chunk" || ch.Delta == nil || ch.Text != nil {
			t.Fatalf("chunk %d: %+v", i, c)
		}
		switch {
		case i == 0:
			if ch.Delta.Role != "assistant" || ch.Delta.Content != "" || ch.FinishReason != nil {
				t.Errorf("first chunk %+v", ch)
			}
		case i <= len(toks):
			if ch.Delta.Content != tokenizer.Detokenize(toks[i-1]) || ch.Delta.Role != "" || ch.FinishReason != nil {
				t.Errorf("chunk %d: %+v, want content %q", i, ch.Delta, tokenizer.Detokenize(toks[i-1]))
			}
		default:
			if ch.Delta.Content != "" || ch.FinishReason == nil || *ch.FinishReason != "length" || c.Usage == nil {
				t.Errorf("final chunk %+v", c)
			}
		}
	}
	want := &KVTransferParams{RemoteRequestID: "x", RemoteBlockIDs: [][]int{{1}, {2}}}
	if reqs := f.requests(); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].KV, want) {
		t.Errorf("Generate saw %+v", reqs)
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{ErrBadRequest, 400, "bad_request"},
		{ErrWrongRole, 400, "wrong_role"},
		{ErrOverloaded, 503, "overloaded"},
		{ErrShuttingDown, 503, "shutting_down"},
		{ErrKVLoad, 502, "kv_load_failed"},
		{ErrPeer, 502, "peer_unreachable"},
		{context.Canceled, StatusClientClosedRequest, "canceled"},
		{context.DeadlineExceeded, 504, "deadline_exceeded"},
		{errors.New("boom"), 500, "internal_error"},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", c.code, stream), func(t *testing.T) {
				err := fmt.Errorf("engine: request r: %w", c.err)
				srv := newAPI(t, &fakeBackend{err: err})
				resp := apiPost(t, srv.URL+"/v1/completions", fmt.Sprintf(`{"prompt":"p","stream":%v}`, stream))
				e := apiDecodeError(t, resp, c.status)
				if e.Error.Code != c.code || e.Error.Message != err.Error() {
					t.Errorf("error %+v, want code %s message %q", e.Error, c.code, err)
				}
			})
		}
	}
}

// An error after the first token ends the stream with an error event and
// no [DONE].
func TestStreamErrorAfterStart(t *testing.T) {
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		t.Run(path, func(t *testing.T) {
			srv := newAPI(t, &fakeBackend{err: fmt.Errorf("load: %w", ErrKVLoad), errAfter: 2})
			resp := apiPost(t, srv.URL+path, `{"prompt":"p","messages":[{"role":"user","content":"p"}],"stream":true}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			events := readSSE(t, resp.Body)
			wantN := 3 // 2 tokens + error
			if path == "/v1/chat/completions" {
				wantN++ // role delta
			}
			if len(events) != wantN {
				t.Fatalf("events %q, want %d", events, wantN)
			}
			var e errorBody
			if err := json.Unmarshal([]byte(events[len(events)-1]), &e); err != nil || e.Error == nil ||
				e.Error.Code != "kv_load_failed" || !strings.Contains(e.Error.Message, "load") {
				t.Fatalf("last event %q: %v", events[len(events)-1], err)
			}
		})
	}
}

// badRequestCases are requests the API refuses before the engine sees
// them. The proxy refuses them all (but wrong model) with the same error.
var badRequestCases = []struct {
	name, path, body string
	status           int
	param, contains  string
	hdr              []string
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
	{"huge", "/v1/completions", `{"prompt":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "", "exceeds", nil},
	{"bad id", "/v1/completions", `{"prompt":"a"}`, 400, "", HeaderRequestID, []string{HeaderRequestID, "a b"}},
}

func TestBadRequests(t *testing.T) {
	cases := badRequestCases
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeBackend{}
			srv := newAPI(t, f)
			e := apiDecodeError(t, apiPost(t, srv.URL+c.path, c.body, c.hdr...), c.status)
			if e.Error.Param != c.param || !strings.Contains(e.Error.Message, c.contains) {
				t.Errorf("error %+v, want param %q and %q in the message", e.Error, c.param, c.contains)
			}
			if n := len(f.requests()); n != 0 {
				t.Errorf("Generate called %d times", n)
			}
		})
	}
}

func TestClientDisconnectCancelsGenerate(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			f := &fakeBackend{block: true, started: make(chan struct{}, 1), ctxErr: make(chan error, 1)}
			srv := newAPI(t, f)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := fmt.Sprintf(`{"prompt":"p","stream":%v}`, stream)
			done := postInBackground(ctx, srv.URL+"/v1/completions", body)
			recvOrFail(t, f.started, "Generate to start")
			cancel()
			if err := recvOrFail(t, f.ctxErr, "Generate to see its ctx end"); !errors.Is(err, context.Canceled) {
				t.Errorf("Generate's ctx.Err() = %v, want context.Canceled", err)
			}
			if err := recvOrFail(t, done, "the client to return"); err == nil {
				t.Errorf("client request succeeded after cancel")
			}
		})
	}
}

// waitFor receives from ch, failing the test if nothing arrives in a
// generous deadline (a hang guard, not a timing assertion).
func recvOrFail[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func apiGet(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestHealth(t *testing.T) {
	f := &fakeBackend{}
	srv := newAPI(t, f)
	var ok map[string]string
	apiDecode(t, apiGet(t, srv.URL+"/health"), http.StatusOK, &ok)
	if ok["status"] != "ok" {
		t.Errorf("healthy: %v", ok)
	}
	f.setReady(errors.New("loading weights"))
	var bad map[string]string
	apiDecode(t, apiGet(t, srv.URL+"/health"), http.StatusServiceUnavailable, &bad)
	if bad["status"] == "ok" || bad["reason"] != "loading weights" {
		t.Errorf("unhealthy: %v", bad)
	}
}

func TestModels(t *testing.T) {
	srv := newAPI(t, &fakeBackend{})
	var m struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	apiDecode(t, apiGet(t, srv.URL+"/v1/models"), http.StatusOK, &m)
	if m.Object != "list" || len(m.Data) != 1 || m.Data[0].ID != fakeModel || m.Data[0].Object != "model" {
		t.Errorf("models %+v", m)
	}
}

func TestUnknownRoute(t *testing.T) {
	srv := newAPI(t, &fakeBackend{})
	apiDecodeError(t, apiGet(t, srv.URL+"/v1/embeddings"), http.StatusNotFound)
	if resp := apiGet(t, srv.URL+"/v1/completions"); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/completions: status %d", resp.StatusCode)
	}
	if resp := apiGet(t, srv.URL+"/metrics"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics without a registry: status %d", resp.StatusCode)
	}
}

func TestDecodeJSONNamesField(t *testing.T) {
	var req completionRequest
	e := decodeJSON([]byte(`{"stream":"yes"}`), &req)
	if e == nil || e.Param != "stream" || !bytes.Contains([]byte(e.Message), []byte(`"stream"`)) {
		t.Fatalf("got %+v", e)
	}
}

// streamFirstEvent starts a streaming completion at url against a backend
// gated after its first token, and checks that the first token's event
// reaches the client while the backend is still held: each event is
// flushed as it is produced. It then opens the gate and returns the rest.
func streamFirstEvent(t *testing.T, url string, gated *fakeBackend) []string {
	t.Helper()
	gated.gate = make(chan struct{})
	// Canceled before the servers close, so a held handler ends even when
	// the test fails.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type result struct {
		resp *http.Response
		br   *bufio.Reader
		ev   string
		err  error
	}
	first := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions",
			strings.NewReader(`{"prompt":"abc","max_tokens":3,"stream":true}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- result{err: err}
			return
		}
		br := bufio.NewReader(resp.Body)
		ev, err := nextEvent(br)
		first <- result{resp, br, ev, err}
	}()
	r := recvOrFail(t, first, "the first event while the backend is held (not flushed?)")
	close(gated.gate)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	var c streamChunk
	if err := json.Unmarshal([]byte(r.ev), &c); err != nil || r.resp.StatusCode != http.StatusOK ||
		*c.Choices[0].Text != tokenizer.Detokenize(fakeOutput("abc", 1)[0]) {
		t.Fatalf("status %d, first event %q: %v", r.resp.StatusCode, r.ev, err)
	}
	return append([]string{r.ev}, readSSE(t, r.br)...)
}

func TestStreamFlushesEachToken(t *testing.T) {
	f := &fakeBackend{}
	if events := streamFirstEvent(t, newAPI(t, f).URL, f); len(events) != 5 || events[4] != "[DONE]" {
		t.Errorf("events %q", events)
	}
}

// postInBackground sends a POST with ctx from a goroutine and reports the
// client's error (the response body is closed at once).
func postInBackground(ctx context.Context, url, body string) <-chan error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	return done
}

// noAbortBackend is a Backend that is not a HoldAborter.
type noAbortBackend struct{ Backend }

func TestKVAbort(t *testing.T) {
	f := &fakeBackend{name: "p0", role: RolePrefill}
	srv := newAPI(t, f)
	var ok map[string]bool
	apiDecode(t, apiPost(t, srv.URL+"/v1/kv/abort", `{"remote_request_id":"r1","remote_grant":"g1"}`), http.StatusOK, &ok)
	apiDecode(t, apiPost(t, srv.URL+"/v1/kv/abort", `{"remote_request_id":"r2"}`), http.StatusOK, &ok)
	if !ok["aborted"] {
		t.Errorf("answer %v", ok)
	}
	if got, want := f.abortCalls(), []abortRequest{{"r1", "g1"}, {"r2", ""}}; !reflect.DeepEqual(got, want) {
		t.Errorf("AbortHold calls %+v, want %+v", got, want)
	}

	for _, c := range []struct{ body, param string }{
		{`{"remote_grant":"g"}`, "remote_request_id"},
		{`{"remote_request_id":""}`, "remote_request_id"},
		{`{"remote_request_id":7}`, "remote_request_id"},
		{`{"remote_request_id":`, ""},
		{``, ""},
	} {
		e := apiDecodeError(t, apiPost(t, srv.URL+"/v1/kv/abort", c.body), http.StatusBadRequest)
		if e.Error.Param != c.param {
			t.Errorf("%s: error %+v, want param %q", c.body, e.Error, c.param)
		}
	}
	if n := len(f.abortCalls()); n != 2 {
		t.Errorf("bad aborts reached AbortHold: %d calls", n)
	}

	// The backend's error is classified like Generate's.
	f.abortErr = fmt.Errorf("grant mismatch: %w", ErrBadRequest)
	e := apiDecodeError(t, apiPost(t, srv.URL+"/v1/kv/abort", `{"remote_request_id":"r3","remote_grant":"x"}`), http.StatusBadRequest)
	if !strings.Contains(e.Error.Message, "grant mismatch") || !strings.Contains(e.Error.Message, "r3") {
		t.Errorf("error %+v", e.Error)
	}

	plain := httptest.NewServer(NewHandler(noAbortBackend{&fakeBackend{}}, nil, nil))
	defer plain.Close()
	if e := apiDecodeError(t, apiPost(t, plain.URL+"/v1/kv/abort", `{"remote_request_id":"r1"}`), http.StatusNotImplemented); e.Error.Code != "not_implemented" {
		t.Errorf("without HoldAborter: %+v", e.Error)
	}
	if resp := apiGet(t, srv.URL+"/v1/kv/abort"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/kv/abort: status %d", resp.StatusCode)
	}
}
