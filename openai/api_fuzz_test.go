package openai_test

// Fuzz targets for what the instance API and the proxy read from clients:
// request bodies (through the public handlers), kv_transfer_params and chat
// messages. They assert the shape of every answer (status class, JSON error
// object), not the API's messages, which may change.

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
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/proxy"

	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// fzModel is the model the fuzz backends serve.
const fzModel = "fuzz-model"

// fzTimeout bounds one request's context; a handler that has not returned
// fzTimeout after its context ended is reported as a hang.
const fzTimeout = 10 * time.Second

// fzBackend is a deterministic backend.Backend and backend.HoldAborter. Role
// prefill accepts only do_remote_decode requests and answers with
// fzKV(id); role decode accepts only requests with a remote_request_id;
// role both accepts everything. It records the requests it accepted.
type fzBackend struct {
	role backend.Role

	mu       sync.Mutex
	accepted []backend.GenRequest
	refused  int
	aborts   []string
}

func (b *fzBackend) ModelName() string { return fzModel }
func (b *fzBackend) Ready() error      { return nil }

func (b *fzBackend) AbortHold(id, grant string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.aborts = append(b.aborts, id)
	return nil
}

func (b *fzBackend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.accepted, b.refused, b.aborts = nil, 0, nil
}

func (b *fzBackend) seen() ([]backend.GenRequest, int, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]backend.GenRequest(nil), b.accepted...), b.refused, len(b.aborts)
}

// fzKV is what the prefill fake answers for request id.
func fzKV(id string) *backend.KVTransferParams {
	return &backend.KVTransferParams{
		RemoteEngineID:  "p0",
		RemoteRequestID: id,
		RemoteHost:      "10.0.0.1",
		RemotePort:      5600,
		TPSize:          1,
		RemoteBlockIDs:  [][]int{{1, 2}, {7}},
		NumTokens:       3,
		LeaseExpiryUnix: 1.75e9,
		Handoff:         backend.DecodeComputesLast,
		RemoteBootID:    "boot-p0",
		RemoteGrant:     "grant-" + id,
	}
}

func (b *fzBackend) Generate(ctx context.Context, req backend.GenRequest, emit func(string) error) (*backend.GenResult, error) {
	refuse := ""
	switch b.role {
	case backend.RolePrefill:
		if req.KV == nil || !req.KV.DoRemoteDecode {
			refuse = "want do_remote_decode"
		}
	case backend.RoleDecode:
		if req.KV == nil || req.KV.RemoteRequestID == "" {
			refuse = "want kv_transfer_params"
		}
	}
	b.mu.Lock()
	if refuse != "" {
		b.refused++
	} else {
		b.accepted = append(b.accepted, req)
	}
	b.mu.Unlock()
	if refuse != "" {
		return nil, fmt.Errorf("fuzz %s: %w: %s", b.role, backend.ErrWrongRole, refuse)
	}
	n := min(req.MaxTokens, 3) // a short answer keeps executions fast
	var text strings.Builder
	toks := make([]uint32, n)
	for i := range toks {
		toks[i] = uint32(len(req.Prompt)+7*i) % 64
		s := tokenizer.Detokenize(toks[i])
		text.WriteString(s)
		if emit != nil {
			if err := emit(s); err != nil {
				return nil, err
			}
		}
	}
	res := &backend.GenResult{Text: text.String(), Tokens: toks, PromptTokens: len(tokenizer.Tokenize(req.Prompt)),
		CompletionTokens: n, FinishReason: "length"}
	if b.role == backend.RolePrefill {
		res.KV = fzKV(req.ID)
	}
	return res, nil
}

var fzGenPaths = []string{"/v1/completions", "/v1/chat/completions"}

// fzServe runs one POST through h with a bounded context and returns the
// recorded answer. A handler still running fzTimeout after its context
// ended fails the test (a hang); a panic crashes the fuzz worker, which
// the fuzzer reports with the input.
func fzServe(t *testing.T, h http.Handler, path, reqID string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fzTimeout)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if reqID != "" {
		req.Header.Set(openai.HeaderRequestID, reqID)
	}
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
	case <-time.After(2 * fzTimeout):
		t.Fatalf("POST %s did not return %v after its context ended (body %q)", path, fzTimeout, body)
	}
	return rec
}

// fzCheckShape checks an answer's status against allowed, and its body:
// an error status carries a JSON {"error": {"message": ...}} object; a 200
// is a JSON object, or Server-Sent Events of JSON objects ending in
// [DONE], with no error event (the fakes never fail once they accepted).
func fzCheckShape(t *testing.T, what string, rec *httptest.ResponseRecorder, allowed ...int) int {
	t.Helper()
	st, body := rec.Code, rec.Body.Bytes()
	ok := false
	for _, a := range allowed {
		ok = ok || st == a
	}
	if !ok {
		t.Fatalf("%s: status %d, want one of %v; body %.500s", what, st, allowed, body)
	}
	ct := rec.Header().Get("Content-Type")
	if st != http.StatusOK {
		if !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s: status %d with Content-Type %q", what, st, ct)
		}
		var e struct {
			Error *struct {
				Message *string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == nil || *e.Error.Message == "" {
			t.Fatalf("%s: status %d without a JSON error object (%v): %.500s", what, st, err, body)
		}
		return st
	}
	if strings.HasPrefix(ct, "text/event-stream") {
		events, err := openaitest.ParseSSE(body)
		if err != nil || len(events) == 0 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("%s: stream does not end with data: [DONE] (%v): %.500s", what, err, body)
		}
		for i, data := range events[:len(events)-1] {
			var obj map[string]json.RawMessage
			if json.Unmarshal([]byte(data), &obj) != nil || obj == nil {
				t.Fatalf("%s: event %d is not data: {JSON object}: %q", what, i, data)
			}
			if _, bad := obj["error"]; bad {
				t.Fatalf("%s: error event in a stream the backend completed: %q", what, data)
			}
		}
		return st
	}
	var obj map[string]json.RawMessage
	if !strings.HasPrefix(ct, "application/json") || json.Unmarshal(body, &obj) != nil || obj == nil {
		t.Fatalf("%s: 200 with Content-Type %q and a body that is not a JSON object: %.500s", what, ct, body)
	}
	if _, bad := obj["error"]; bad {
		t.Fatalf("%s: 200 carrying an error: %.500s", what, body)
	}
	return st
}

// fzRequestKV is the kv_transfer_params a body that the API accepted
// carries, decoded the way the API decodes them.
func fzRequestKV(t *testing.T, body []byte) *backend.KVTransferParams {
	t.Helper()
	var in struct {
		KV *backend.KVTransferParams `json:"kv_transfer_params"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatalf("the API accepted a body encoding/json refuses: %v", err)
	}
	return in.KV
}

// fzSeedBodies are request bodies that reach deep paths: accepted
// requests of every form, and the refusals the API names.
var fzSeedBodies = []string{
	`{"prompt":"hello","max_tokens":2}`,
	`{"model":"fuzz-model","prompt":["one prompt"],"max_tokens":4096,"stream":true}`,
	`{"prompt":"a","kv_transfer_params":{"do_remote_prefill":true,"remote_engine_id":"p0","remote_request_id":"r1",` +
		`"remote_host":"10.0.0.1","remote_port":5600,"tp_size":2,"remote_block_ids":[[1,2,3],[9]],"num_tokens":4,` +
		`"lease_expiry":1750000000.5,"handoff":"prefill-samples-first","first_token":7,"kv_load_failure_policy":"recompute",` +
		`"remote_boot_id":"b","remote_grant":"SFhHAQA"}}`,
	`{"prompt":"a","kv_transfer_params":{"do_remote_decode":true}}`,
	`{"messages":[{"role":"user","content":"hi"}]}`,
	`{"messages":[{"role":"system","content":null},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],` +
		`"max_tokens":0,"max_completion_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`,
	`{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`,
	`{"model":"other","prompt":"a"}`,
	`{"prompt":[1,2]}`,
	`{"prompt":"a","max_tokens":"5"}`,
	`{"prompt":"a","kv_transfer_params":{"remote_port":"x"}}`,
	`{"prompt":"a"} {}`,
	`{"remote_request_id":"r1","remote_grant":"g"}`,
	`{"remote_request_id":""}`,
	`null`,
	`[1]`,
	``,
}

// FuzzAPI posts fuzzed bodies to /v1/completions, /v1/chat/completions and
// /v1/kv/abort of openai.NewHandler over a backend that accepts everything.
// Properties: the status is 200, 400 or 413 (never 5xx); 200 exactly when
// the backend accepted the request; every refusal is a JSON error object;
// the backend sees a checked max_tokens, the client's X-Request-Id, and
// the body's kv_transfer_params unchanged.
func FuzzAPI(f *testing.F) {
	for i, b := range fzSeedBodies {
		f.Add(uint8(i), "", []byte(b))
	}
	f.Add(uint8(0), "req-1", []byte(`{"prompt":"x"}`))
	f.Add(uint8(1), "a b", []byte(`{"messages":[{"role":"u","content":"x"}]}`))
	be := &fzBackend{role: backend.RoleBoth}
	h := openai.NewHandler(be, nil, nil)
	f.Fuzz(func(t *testing.T, route uint8, reqID string, body []byte) {
		be.reset()
		if route%3 == 2 {
			rec := fzServe(t, h, "/v1/kv/abort", reqID, body)
			st := fzCheckShape(t, "abort", rec, http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
			if _, _, aborts := be.seen(); (st == http.StatusOK) != (aborts == 1) || aborts > 1 {
				t.Fatalf("abort: status %d after %d AbortHold calls", st, aborts)
			}
			return
		}
		path := fzGenPaths[route%3]
		rec := fzServe(t, h, path, reqID, body)
		st := fzCheckShape(t, path, rec, http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
		acc, refused, _ := be.seen()
		if refused != 0 || (st == http.StatusOK) != (len(acc) == 1) || len(acc) > 1 {
			t.Fatalf("%s: status %d after the backend accepted %d requests", path, st, len(acc))
		}
		if st != http.StatusOK {
			return
		}
		r := acc[0]
		if r.MaxTokens < 1 || r.MaxTokens > openai.MaxMaxTokens {
			t.Fatalf("backend got max_tokens %d", r.MaxTokens)
		}
		if r.ID == "" || (reqID != "" && r.ID != reqID) {
			t.Fatalf("backend got id %q for X-Request-Id %q", r.ID, reqID)
		}
		if got := rec.Header().Get(openai.HeaderRequestID); got != r.ID {
			t.Fatalf("response X-Request-Id %q, request id %q", got, r.ID)
		}
		if want := fzRequestKV(t, body); !reflect.DeepEqual(r.KV, want) {
			t.Fatalf("backend got kv_transfer_params %+v, the body says %+v", r.KV, want)
		}
	})
}

// fzHasKVKey reports whether body is a JSON object with a key that
// encoding/json matches to kv_transfer_params (case and Unicode folding).
func fzHasKVKey(body []byte) bool {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(body, &fields)
	for k := range fields {
		if strings.EqualFold(k, "kv_transfer_params") {
			return true
		}
	}
	return false
}

// fzTransport serves requests to hosts it knows in process (no sockets);
// any other host is unreachable.
type fzTransport map[string]http.Handler

var errFzUnreachable = errors.New("fuzz: connection refused")

func (tr fzTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		defer r.Body.Close()
	}
	h, ok := tr[r.URL.Host]
	if !ok {
		return nil, errFzUnreachable
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// FuzzProxy posts fuzzed bodies to the proxy's /v1/completions and
// /v1/chat/completions, over a fake P and D (the real API handler, served
// in process) or over unreachable upstreams, and compares with the API
// itself over a backend that accepts everything. Properties, reachable:
// the status is the API's (200, 400 or 413); on 200 P saw the prompt with
// exactly {"do_remote_decode": true} and max_tokens 1, and D saw the same
// prompt and id, the client's max_tokens, and P's kv_transfer_params
// unchanged. Unreachable: 400/413 only for what the API refuses, else 502
// or 503. Every refusal is a JSON error object; nothing is 500.
func FuzzProxy(f *testing.F) {
	for i, b := range fzSeedBodies[:12] {
		f.Add(uint8(i), "", []byte(b))
	}
	f.Add(uint8(0), "req-1", []byte(`{"prompt":"x","max_tokens":3}`))
	f.Add(uint8(1), "", []byte(`{"messages":[{"role":"u","content":"x"}],"kv_transfer_params":{"remote_request_id":"client"}}`))
	pBe, dBe, ref := &fzBackend{role: backend.RolePrefill}, &fzBackend{role: backend.RoleDecode}, &fzBackend{role: backend.RoleBoth}
	direct := openai.NewHandler(ref, nil, nil)
	tr := fzTransport{"p0.fuzz": openai.NewHandler(pBe, nil, nil), "d0.fuzz": openai.NewHandler(dBe, nil, nil)}
	up, err := proxy.NewWithOptions([]string{"http://p0.fuzz"}, []string{"http://d0.fuzz"},
		proxy.Options{Client: &http.Client{Transport: tr}, HealthInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { up.Close() })
	down, err := proxy.NewWithOptions([]string{"http://p-down.fuzz"}, []string{"http://d-down.fuzz"},
		proxy.Options{Client: &http.Client{Transport: tr}, HealthInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { down.Close() })
	f.Fuzz(func(t *testing.T, route uint8, reqID string, body []byte) {
		path := fzGenPaths[route%2]
		ref.reset()
		want := fzCheckShape(t, "API "+path, fzServe(t, direct, path, reqID, body),
			http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
		if route&4 != 0 {
			st := fzCheckShape(t, "proxy (upstreams down) "+path, fzServe(t, down, path, reqID, body),
				http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusBadGateway, http.StatusServiceUnavailable)
			if st/100 == 4 && want/100 != 4 && !(st == http.StatusBadRequest && fzHasKVKey(body)) {
				t.Fatalf("proxy refused with %d what the API accepts with %d", st, want)
			}
			return
		}
		pBe.reset()
		dBe.reset()
		st := fzCheckShape(t, "proxy "+path, fzServe(t, up, path, reqID, body),
			http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
		// The proxy refuses what the API refuses; it may refuse more only
		// for client kv_transfer_params, which it never forwards.
		if st != want && !(st == http.StatusBadRequest && want == http.StatusOK && fzHasKVKey(body)) {
			t.Fatalf("proxy answered %d, the API %d", st, want)
		}
		pAcc, _, _ := pBe.seen()
		dAcc, _, _ := dBe.seen()
		if (st == http.StatusOK) != (len(dAcc) == 1) || len(dAcc) > 1 || len(pAcc) > 1 || len(dAcc) > len(pAcc) {
			t.Fatalf("proxy answered %d; P accepted %d, D %d requests", st, len(pAcc), len(dAcc))
		}
		if st != http.StatusOK {
			return
		}
		refAcc, _, _ := ref.seen()
		r, p, d := refAcc[0], pAcc[0], dAcc[0]
		if !reflect.DeepEqual(p.KV, &backend.KVTransferParams{DoRemoteDecode: true}) || p.MaxTokens != 1 {
			t.Fatalf("P got kv_transfer_params %+v and max_tokens %d, want only do_remote_decode and 1", p.KV, p.MaxTokens)
		}
		if p.Prompt != r.Prompt || d.Prompt != r.Prompt {
			t.Fatalf("prompts: API %q, P %q, D %q", r.Prompt, p.Prompt, d.Prompt)
		}
		if d.ID != p.ID || (reqID != "" && p.ID != reqID) {
			t.Fatalf("ids: P %q, D %q, client %q", p.ID, d.ID, reqID)
		}
		if d.MaxTokens != r.MaxTokens {
			t.Fatalf("D got max_tokens %d, the API %d", d.MaxTokens, r.MaxTokens)
		}
		if !reflect.DeepEqual(d.KV, fzKV(p.ID)) {
			t.Fatalf("D got kv_transfer_params %+v, P answered %+v", d.KV, fzKV(p.ID))
		}
	})
}

// FuzzKVTransferParams: whatever JSON decodes into backend.KVTransferParams
// encodes and decodes back to the same value, and that encoding is stable.
func FuzzKVTransferParams(f *testing.F) {
	ft := uint32(0)
	for _, kv := range []*backend.KVTransferParams{
		{DoRemoteDecode: true},
		fzKV("r1"),
		{DoRemotePrefill: true, RemoteRequestID: "r", RemoteBlockIDs: [][]int{{}, nil, {0}}, Handoff: backend.PrefillSamplesFirst,
			FirstToken: &ft, KVLoadFailurePolicy: backend.PolicyRecompute, LeaseExpiryUnix: -1.5e-300},
	} {
		b, err := json.Marshal(kv)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"remote_block_ids":[],"first_token":4294967295,"remote_port":-1,"lease_expiry":-0}`))
	f.Add([]byte(`{"REMOTE_HOST":"h","remote_host":"\u00e9\ud800","tp_size":1e0}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var kv backend.KVTransferParams
		if json.Unmarshal(b, &kv) != nil {
			return
		}
		enc, err := json.Marshal(&kv)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", kv, err)
		}
		var again backend.KVTransferParams
		if err := json.Unmarshal(enc, &again); err != nil {
			t.Fatalf("re-encoding %s does not decode: %v", enc, err)
		}
		// omitempty drops an empty remote_block_ids: nil and empty alike.
		if len(kv.RemoteBlockIDs) == 0 {
			kv.RemoteBlockIDs = nil
		}
		if !reflect.DeepEqual(kv, again) {
			t.Fatalf("round trip:\n got %+v\nwant %+v\n via %s", again, kv, enc)
		}
		enc2, err := json.Marshal(&again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding unstable: %s vs %s (%v)", enc, enc2, err)
		}
	})
}

// FuzzChatMessage: openai.ChatMessage accepts content as a string, null or
// an array of text parts; whatever it accepts re-encodes (content as a
// string) and decodes to the same message, and a message list renders to
// a prompt holding every role and content.
func FuzzChatMessage(f *testing.F) {
	for _, s := range []string{
		`{"role":"user","content":"hi"}`,
		`{"role":"user","content":null}`,
		`{"role":"system"}`,
		`{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b\u0000"}]}`,
		`{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}`,
		`{"role":"user","content":{"type":"text"}}`,
		`{"role":1}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m openai.ChatMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		var again openai.ChatMessage
		if err := json.Unmarshal(enc, &again); err != nil || again != m {
			t.Fatalf("round trip via %s: %+v, want %+v (%v)", enc, again, m, err)
		}
		p := openai.RenderChat([]openai.ChatMessage{m, m})
		if want := m.Role + ": " + m.Content + "\n"; p != want+want+"assistant: " {
			t.Fatalf("RenderChat = %q", p)
		}
	})
}
