package openai_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"

	"github.com/hybridxfer/hybridxfer/tokenizer"
	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestCompletions(t *testing.T) {
	for _, prompt := range []string{`"hello world"`, `["hello world"]`} {
		t.Run(prompt, func(t *testing.T) {
			f := &openaitest.Backend{}
			srv := openaitest.Serve(t, f)
			resp := openaitest.Post(t, srv.URL+"/v1/completions",
				`{"model":"`+openaitest.Model+`","prompt":`+prompt+`,"max_tokens":5,"temperature":0.7,"top_p":1}`,
				openai.HeaderRequestID, "req-1")
			if got := resp.Header.Get(openai.HeaderRequestID); got != "req-1" {
				t.Errorf("response %s %q", openai.HeaderRequestID, got)
			}
			var c openaitest.CompletionResponse
			openaitest.Decode(t, resp, http.StatusOK, &c)
			want := openaitest.Text("hello world", 5)
			if c.ID != "cmpl-req-1" || c.Object != "text_completion" || c.Model != openaitest.Model || c.Created == 0 {
				t.Errorf("envelope %+v", c)
			}
			if len(c.Choices) != 1 || c.Choices[0].Text != want || c.Choices[0].FinishReason != "length" ||
				string(c.Choices[0].Logprobs) != "null" || c.Choices[0].Index != 0 {
				t.Errorf("choices %+v, want text %q", c.Choices, want)
			}
			if c.Usage != (openai.Usage{11, 5, 16}) {
				t.Errorf("usage %+v", c.Usage)
			}
			if c.KV != nil {
				t.Errorf("kv_transfer_params %+v, want none", c.KV)
			}
			reqs := f.Requests()
			if len(reqs) != 1 || !reflect.DeepEqual(reqs[0], backend.GenRequest{ID: "req-1", Prompt: "hello world", MaxTokens: 5}) {
				t.Errorf("Generate saw %+v", reqs)
			}
			if f.Emitter() != nil {
				t.Errorf("a non-streaming request got an emit callback")
			}
		})
	}
}

func TestCompletionsDefaults(t *testing.T) {
	f := &openaitest.Backend{}
	srv := openaitest.Serve(t, f)
	resp := openaitest.Post(t, srv.URL+"/v1/completions", `{"prompt":""}`)
	var c openaitest.CompletionResponse
	openaitest.Decode(t, resp, http.StatusOK, &c)
	reqs := f.Requests()
	if len(reqs) != 1 || reqs[0].MaxTokens != openai.DefaultMaxTokens || reqs[0].ID == "" {
		t.Fatalf("Generate saw %+v", reqs)
	}
	if got := resp.Header.Get(openai.HeaderRequestID); got != reqs[0].ID || c.ID != "cmpl-"+reqs[0].ID {
		t.Errorf("generated id %q, header %q, response id %q", reqs[0].ID, got, c.ID)
	}
	if c.Usage.CompletionTokens != openai.DefaultMaxTokens || c.Usage.PromptTokens != 1 {
		t.Errorf("usage %+v", c.Usage)
	}
	// A second request gets a different id.
	openaitest.Post(t, srv.URL+"/v1/completions", `{"prompt":"x"}`)
	if reqs = f.Requests(); reqs[0].ID == reqs[1].ID {
		t.Errorf("two requests got id %q", reqs[0].ID)
	}
}

func TestCompletionsStream(t *testing.T) {
	for _, role := range []backend.Role{backend.RoleBoth, backend.RolePrefill} {
		t.Run(string(role), func(t *testing.T) {
			f := &openaitest.Backend{Name: "p0", Role: role}
			srv := openaitest.Serve(t, f)
			resp := openaitest.Post(t, srv.URL+"/v1/completions",
				`{"prompt":"abc","max_tokens":4,"stream":true,"kv_transfer_params":{"do_remote_decode":true}}`,
				openai.HeaderRequestID, "s1")
			chunks := openaitest.ReadStream(t, resp)
			toks := openaitest.Output("abc", 4)
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
				if c.Usage == nil || *c.Usage != (openai.Usage{3, 4, 7}) {
					t.Errorf("final usage %+v", c.Usage)
				}
				var want *backend.KVTransferParams
				if role == backend.RolePrefill {
					want = openaitest.KV("p0", "s1", 3)
				}
				if !reflect.DeepEqual(c.KV, want) {
					t.Errorf("final kv_transfer_params %+v, want %+v", c.KV, want)
				}
			}
			if reqs := f.Requests(); len(reqs) != 1 || reqs[0].KV == nil || !reqs[0].KV.DoRemoteDecode {
				t.Errorf("Generate saw %+v", reqs)
			}
		})
	}
}

// A backend that never calls emit still streams its whole text.
func TestStreamWithoutEmit(t *testing.T) {
	f := &openaitest.Backend{NoEmit: true}
	srv := openaitest.Serve(t, f)
	chunks := openaitest.ReadStream(t, openaitest.Post(t, srv.URL+"/v1/completions", `{"prompt":"abc","max_tokens":3,"stream":true}`))
	if len(chunks) != 2 || *chunks[0].Choices[0].Text != openaitest.Text("abc", 3) || chunks[1].Choices[0].FinishReason == nil {
		t.Fatalf("chunks %+v", chunks)
	}
}

// emit called after Generate returned is refused, not written.
func TestEmitAfterFinish(t *testing.T) {
	f := &openaitest.Backend{}
	srv := openaitest.Serve(t, f)
	openaitest.ReadStream(t, openaitest.Post(t, srv.URL+"/v1/completions", `{"prompt":"abc","max_tokens":1,"stream":true}`))
	emit := f.Emitter()
	if err := emit("late"); !errors.Is(err, openai.ErrStreamClosed) {
		t.Fatalf("late emit: %v, want errStreamClosed", err)
	}
}

func TestChat(t *testing.T) {
	f := &openaitest.Backend{}
	srv := openaitest.Serve(t, f)
	body := `{"model":"` + openaitest.Model + `","messages":[{"role":"system","content":"be brief"},` +
		`{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],` +
		`"max_tokens":9,"max_completion_tokens":3}`
	var c openaitest.CompletionResponse
	openaitest.Decode(t, openaitest.Post(t, srv.URL+"/v1/chat/completions", body, openai.HeaderRequestID, "c1"), http.StatusOK, &c)
	prompt := "system: be brief\nuser: hi there\nassistant: "
	want := openaitest.Text(prompt, 3)
	if c.ID != "chatcmpl-c1" || c.Object != "chat.completion" || len(c.Choices) != 1 {
		t.Fatalf("response %+v", c)
	}
	ch := c.Choices[0]
	if ch.Message == nil || ch.Message.Role != "assistant" || ch.Message.Content != want || ch.FinishReason != "length" {
		t.Errorf("choice %+v, want content %q", ch, want)
	}
	if c.Usage != (openai.Usage{len(prompt), 3, len(prompt) + 3}) {
		t.Errorf("usage %+v", c.Usage)
	}
	if reqs := f.Requests(); len(reqs) != 1 || reqs[0].Prompt != prompt || reqs[0].MaxTokens != 3 {
		t.Errorf("Generate saw %+v", reqs)
	}
}

func TestChatStream(t *testing.T) {
	f := &openaitest.Backend{}
	srv := openaitest.Serve(t, f)
	body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,` +
		`"kv_transfer_params":{"remote_request_id":"x","remote_block_ids":[[1],[2]]}}`
	chunks := openaitest.ReadStream(t, openaitest.Post(t, srv.URL+"/v1/chat/completions", body, openai.HeaderRequestID, "c2"))
	toks := openaitest.Output("user: hi\nassistant: ", 4)
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
	want := &backend.KVTransferParams{RemoteRequestID: "x", RemoteBlockIDs: [][]int{{1}, {2}}}
	if reqs := f.Requests(); len(reqs) != 1 || !reflect.DeepEqual(reqs[0].KV, want) {
		t.Errorf("Generate saw %+v", reqs)
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{backend.ErrBadRequest, 400, "bad_request"},
		{backend.ErrWrongRole, 400, "wrong_role"},
		{backend.ErrOverloaded, 503, "overloaded"},
		{backend.ErrShuttingDown, 503, "shutting_down"},
		{backend.ErrKVLoad, 502, "kv_load_failed"},
		{backend.ErrPeer, 502, "peer_unreachable"},
		{context.Canceled, backend.StatusClientClosedRequest, "canceled"},
		{context.DeadlineExceeded, 504, "deadline_exceeded"},
		{errors.New("boom"), 500, "internal_error"},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", c.code, stream), func(t *testing.T) {
				err := fmt.Errorf("engine: request r: %w", c.err)
				srv := openaitest.Serve(t, &openaitest.Backend{Err: err})
				resp := openaitest.Post(t, srv.URL+"/v1/completions", fmt.Sprintf(`{"prompt":"p","stream":%v}`, stream))
				e := openaitest.DecodeError(t, resp, c.status)
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
			srv := openaitest.Serve(t, &openaitest.Backend{Err: fmt.Errorf("load: %w", backend.ErrKVLoad), ErrAfter: 2})
			resp := openaitest.Post(t, srv.URL+path, `{"prompt":"p","messages":[{"role":"user","content":"p"}],"stream":true}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			events := openaitest.ReadSSE(t, resp.Body)
			wantN := 3 // 2 tokens + error
			if path == "/v1/chat/completions" {
				wantN++ // role delta
			}
			if len(events) != wantN {
				t.Fatalf("events %q, want %d", events, wantN)
			}
			var e openaitest.ErrorBody
			if err := json.Unmarshal([]byte(events[len(events)-1]), &e); err != nil || e.Error == nil ||
				e.Error.Code != "kv_load_failed" || !strings.Contains(e.Error.Message, "load") {
				t.Fatalf("last event %q: %v", events[len(events)-1], err)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	cases := openaitest.BadRequestCases
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			f := &openaitest.Backend{}
			srv := openaitest.Serve(t, f)
			e := openaitest.DecodeError(t, openaitest.Post(t, srv.URL+c.Path, c.Body, c.Hdr...), c.Status)
			if e.Error.Param != c.Param || !strings.Contains(e.Error.Message, c.Contains) {
				t.Errorf("error %+v, want param %q and %q in the message", e.Error, c.Param, c.Contains)
			}
			if n := len(f.Requests()); n != 0 {
				t.Errorf("Generate called %d times", n)
			}
		})
	}
}

func TestClientDisconnectCancelsGenerate(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			f := &openaitest.Backend{Block: true, Started: make(chan struct{}, 1), CtxErr: make(chan error, 1)}
			srv := openaitest.Serve(t, f)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := fmt.Sprintf(`{"prompt":"p","stream":%v}`, stream)
			done := openaitest.PostInBackground(ctx, srv.URL+"/v1/completions", body)
			openaitest.RecvOrFail(t, f.Started, "Generate to start")
			cancel()
			if err := openaitest.RecvOrFail(t, f.CtxErr, "Generate to see its ctx end"); !errors.Is(err, context.Canceled) {
				t.Errorf("Generate's ctx.Err() = %v, want context.Canceled", err)
			}
			if err := openaitest.RecvOrFail(t, done, "the client to return"); err == nil {
				t.Errorf("client request succeeded after cancel")
			}
		})
	}
}

func TestHealth(t *testing.T) {
	f := &openaitest.Backend{}
	srv := openaitest.Serve(t, f)
	var ok map[string]string
	openaitest.Decode(t, openaitest.Get(t, srv.URL+"/health"), http.StatusOK, &ok)
	if ok["status"] != "ok" {
		t.Errorf("healthy: %v", ok)
	}
	f.SetReady(errors.New("loading weights"))
	var bad map[string]string
	openaitest.Decode(t, openaitest.Get(t, srv.URL+"/health"), http.StatusServiceUnavailable, &bad)
	if bad["status"] == "ok" || bad["reason"] != "loading weights" {
		t.Errorf("unhealthy: %v", bad)
	}
}

func TestModels(t *testing.T) {
	srv := openaitest.Serve(t, &openaitest.Backend{})
	var m struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	openaitest.Decode(t, openaitest.Get(t, srv.URL+"/v1/models"), http.StatusOK, &m)
	if m.Object != "list" || len(m.Data) != 1 || m.Data[0].ID != openaitest.Model || m.Data[0].Object != "model" {
		t.Errorf("models %+v", m)
	}
}

func TestUnknownRoute(t *testing.T) {
	srv := openaitest.Serve(t, &openaitest.Backend{})
	openaitest.DecodeError(t, openaitest.Get(t, srv.URL+"/v1/embeddings"), http.StatusNotFound)
	if resp := openaitest.Get(t, srv.URL+"/v1/completions"); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/completions: status %d", resp.StatusCode)
	}
	if resp := openaitest.Get(t, srv.URL+"/metrics"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics without a registry: status %d", resp.StatusCode)
	}
}

func TestDecodeJSONNamesField(t *testing.T) {
	var req openai.CompletionRequest
	e := openai.DecodeJSON([]byte(`{"stream":"yes"}`), &req)
	if e == nil || e.Param != "stream" || !bytes.Contains([]byte(e.Message), []byte(`"stream"`)) {
		t.Fatalf("got %+v", e)
	}
}

func TestStreamFlushesEachToken(t *testing.T) {
	f := &openaitest.Backend{}
	if events := openaitest.StreamFirstEvent(t, openaitest.Serve(t, f).URL, f); len(events) != 5 || events[4] != "[DONE]" {
		t.Errorf("events %q", events)
	}
}

// noAbortBackend is a Backend that is not a HoldAborter.
type noAbortBackend struct{ backend.Backend }

func TestKVAbort(t *testing.T) {
	f := &openaitest.Backend{Name: "p0", Role: backend.RolePrefill}
	srv := openaitest.Serve(t, f)
	var ok map[string]bool
	openaitest.Decode(t, openaitest.Post(t, srv.URL+"/v1/kv/abort", `{"remote_request_id":"r1","remote_grant":"g1"}`), http.StatusOK, &ok)
	openaitest.Decode(t, openaitest.Post(t, srv.URL+"/v1/kv/abort", `{"remote_request_id":"r2"}`), http.StatusOK, &ok)
	if !ok["aborted"] {
		t.Errorf("answer %v", ok)
	}
	if got, want := f.AbortCalls(), []openai.AbortRequest{{"r1", "g1"}, {"r2", ""}}; !reflect.DeepEqual(got, want) {
		t.Errorf("AbortHold calls %+v, want %+v", got, want)
	}

	for _, c := range []struct{ body, param string }{
		{`{"remote_grant":"g"}`, "remote_request_id"},
		{`{"remote_request_id":""}`, "remote_request_id"},
		{`{"remote_request_id":7}`, "remote_request_id"},
		{`{"remote_request_id":`, ""},
		{``, ""},
	} {
		e := openaitest.DecodeError(t, openaitest.Post(t, srv.URL+"/v1/kv/abort", c.body), http.StatusBadRequest)
		if e.Error.Param != c.param {
			t.Errorf("%s: error %+v, want param %q", c.body, e.Error, c.param)
		}
	}
	if n := len(f.AbortCalls()); n != 2 {
		t.Errorf("bad aborts reached AbortHold: %d calls", n)
	}

	// The backend's error is classified like Generate's.
	f.AbortErr = fmt.Errorf("grant mismatch: %w", backend.ErrBadRequest)
	e := openaitest.DecodeError(t, openaitest.Post(t, srv.URL+"/v1/kv/abort", `{"remote_request_id":"r3","remote_grant":"x"}`), http.StatusBadRequest)
	if !strings.Contains(e.Error.Message, "grant mismatch") || !strings.Contains(e.Error.Message, "r3") {
		t.Errorf("error %+v", e.Error)
	}

	plain := httptest.NewServer(openai.NewHandler(noAbortBackend{&openaitest.Backend{}}, nil, nil))
	defer plain.Close()
	if e := openaitest.DecodeError(t, openaitest.Post(t, plain.URL+"/v1/kv/abort", `{"remote_request_id":"r1"}`), http.StatusNotImplemented); e.Error.Code != "not_implemented" {
		t.Errorf("without HoldAborter: %+v", e.Error)
	}
	if resp := openaitest.Get(t, srv.URL+"/v1/kv/abort"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/kv/abort: status %d", resp.StatusCode)
	}
}

// The official OpenAI Go client (openai-go) talks to the API as users'
// code does: completions and chat, streamed or not, get the backend's text
// and, on a prefill instance, the kv_transfer_params the SDK does not
// know, read from its extra fields (and sent with option.WithJSONSet).
func TestOpenAIGoClient(t *testing.T) {
	for _, role := range []backend.Role{backend.RoleBoth, backend.RolePrefill} {
		f := &openaitest.Backend{Name: "p0", Role: role}
		c := openaitest.SDK(openaitest.Serve(t, f).URL)
		for i, mode := range []struct{ chat, stream bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
			id, prompt, max := fmt.Sprintf("sdk-%s-%d", role, i), fmt.Sprintf("prompt %d", i), 2+i
			var opts []option.RequestOption
			if role == backend.RolePrefill {
				opts = append(opts, option.WithJSONSet("kv_transfer_params", map[string]any{"do_remote_decode": true}))
			}
			text, kv, err := openaitest.SDKAnswer(context.Background(), c, id, prompt, max, mode.chat, mode.stream, opts...)
			if err != nil {
				t.Fatalf("%s %+v: %v", role, mode, err)
			}
			seen := prompt
			if mode.chat {
				seen = "user: " + prompt + "\nassistant: "
			}
			if want := openaitest.Text(seen, max); text != want {
				t.Errorf("%s %+v: text %q, want %q", role, mode, text, want)
			}
			var want *backend.KVTransferParams
			if role == backend.RolePrefill {
				want = openaitest.KV("p0", id, len(tokenizer.Tokenize(seen)))
			}
			if !reflect.DeepEqual(kv, want) {
				t.Errorf("%s %+v: kv_transfer_params %+v, want %+v", role, mode, kv, want)
			}
		}
	}
	// A refused request is an error the SDK reports, with our status.
	_, _, err := openaitest.SDKAnswer(context.Background(), openaitest.SDK(openaitest.Serve(t, &openaitest.Backend{}).URL), "a b", "x", 1, false, false)
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad request id through the SDK: %v, want a 400 *openai.Error", err)
	}
}
