package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"

	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// pdFixture is a proxy over fake prefill and decode instances served by the real
// API handler.
type pdFixture struct {
	ps, ds     []*openaitest.Backend
	pSrv, dSrv []*httptest.Server
	p          *Proxy
	proxy      *httptest.Server
}

// newProxyFixture's proxy runs no health probe during a test: an instance
// is excluded only by a failed connection.
func newProxyFixture(t *testing.T, nP, nD int) *pdFixture {
	t.Helper()
	return newProxyFixtureWith(t, nP, nD, Options{HealthInterval: time.Hour})
}

func newProxyFixtureWith(t *testing.T, nP, nD int, opts Options) *pdFixture {
	t.Helper()
	x := &pdFixture{}
	var pURLs, dURLs []string
	for i := range nP {
		f := &openaitest.Backend{Name: fmt.Sprintf("p%d", i), Role: backend.RolePrefill}
		srv := openaitest.Serve(t, f)
		x.ps, x.pSrv, pURLs = append(x.ps, f), append(x.pSrv, srv), append(pURLs, srv.URL)
	}
	for i := range nD {
		f := &openaitest.Backend{Name: fmt.Sprintf("d%d", i), Role: backend.RoleDecode}
		srv := openaitest.Serve(t, f)
		x.ds, x.dSrv, dURLs = append(x.ds, f), append(x.dSrv, srv), append(dURLs, srv.URL+"/")
	}
	p, err := NewWithOptions(pURLs, dURLs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	x.p = p
	x.proxy = httptest.NewServer(p)
	t.Cleanup(x.proxy.Close) // first: handlers end, then p.Close waits for their aborts
	return x
}

// drain ends the proxy's requests and its aborts in flight.
func (x *pdFixture) drain() {
	x.proxy.Close()
	x.p.Close()
}

func TestProxyCompletions(t *testing.T) {
	x := newProxyFixture(t, 2, 2)
	const n = 8
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		prompt := fmt.Sprintf("prompt %d", i)
		resp := openaitest.Post(t, x.proxy.URL+"/v1/completions",
			fmt.Sprintf(`{"model":%q,"prompt":%q,"max_tokens":%d}`, openaitest.Model, prompt, i+2), openai.HeaderRequestID, id)
		if got := resp.Header.Get(openai.HeaderRequestID); got != id {
			t.Errorf("request %d: response %s %q", i, openai.HeaderRequestID, got)
		}
		var c openaitest.CompletionResponse
		openaitest.Decode(t, resp, http.StatusOK, &c)
		if want := openaitest.Text(prompt, i+2); len(c.Choices) != 1 || c.Choices[0].Text != want || c.ID != "cmpl-"+id {
			t.Errorf("request %d: %+v, want text %q", i, c, want)
		}
	}
	// One request at a time, so loads tie: request i went to P i%2 and
	// D (i/2)%2, every (P, D) pair twice (independent round robins would
	// pair P k with D k only).
	seen := map[string][2]int{} // request id -> P, D
	for k := range 2 {
		for _, r := range x.ps[k].Requests() {
			v := seen[r.ID]
			v[0] = k + 1
			seen[r.ID] = v
		}
		for _, r := range x.ds[k].Requests() {
			v := seen[r.ID]
			v[1] = k + 1
			seen[r.ID] = v
		}
	}
	pairs := map[[2]int]int{}
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		got := seen[id]
		if want := [2]int{i%2 + 1, (i/2)%2 + 1}; got != want {
			t.Errorf("request %d went to P%d D%d, want P%d D%d", i, got[0]-1, got[1]-1, want[0]-1, want[1]-1)
		}
		pairs[got]++
	}
	if len(pairs) != 4 {
		t.Errorf("pairs used: %v, want all four twice", pairs)
	}
	for k := range 2 {
		for _, p := range x.ps[k].Requests() {
			id := p.ID
			if p.MaxTokens != 1 || p.KV == nil || !reflect.DeepEqual(*p.KV, backend.KVTransferParams{DoRemoteDecode: true}) {
				t.Errorf("request %s: P saw max_tokens %d kv %+v", id, p.MaxTokens, p.KV)
			}
			// D got exactly what P k answered.
			var d *backend.GenRequest
			for j := range 2 {
				for _, r := range x.ds[j].Requests() {
					if r.ID == id {
						d = &r
					}
				}
			}
			var i int
			fmt.Sscanf(id, "r%d", &i)
			want := openaitest.KV(x.ps[k].Name, id, len(tokenizer.Tokenize(p.Prompt)))
			if d == nil || d.MaxTokens != i+2 || d.Prompt != p.Prompt || !reflect.DeepEqual(d.KV, want) {
				t.Errorf("request %d: D saw %+v, want max_tokens %d kv %+v", i, d, i+2, want)
			}
		}
	}
}

// TestProxyLeastOutstanding: with one decode instance busy (a request
// blocked on it), new requests go to the idle one, whatever the round
// robin would pick; when the busy one finishes, ties resume.
func TestProxyLeastOutstanding(t *testing.T) {
	x := newProxyFixture(t, 1, 2)
	gate := make(chan struct{})
	x.ds[0].Gate = gate
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := openaitest.PostInBackground(ctx, x.proxy.URL+"/v1/completions",
		fmt.Sprintf(`{"model":%q,"prompt":"slow","max_tokens":2}`, openaitest.Model))
	deadline := time.Now().Add(30 * time.Second) // a hang guard, not a timing assertion
	for len(x.ds[0].Requests()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached D0")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 4 {
		id := fmt.Sprintf("q%d", i)
		resp := openaitest.Post(t, x.proxy.URL+"/v1/completions",
			fmt.Sprintf(`{"model":%q,"prompt":"p","max_tokens":2}`, openaitest.Model), openai.HeaderRequestID, id)
		openaitest.Decode(t, resp, http.StatusOK, &openaitest.CompletionResponse{})
	}
	close(gate)
	if err := openaitest.RecvOrFail(t, first, "the blocked request"); err != nil {
		t.Fatalf("the blocked request: %v", err)
	}
	if got := len(x.ds[0].Requests()); got != 1 {
		t.Errorf("busy D0 got %d requests, want only the blocked one", got)
	}
	if got := len(x.ds[1].Requests()); got != 4 {
		t.Errorf("idle D1 got %d requests, want 4", got)
	}
}

func TestProxyChatStream(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	body := `{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":5,"stream":true,` +
		`"stream_options":{"include_usage":true}}`
	chunks := openaitest.ReadStream(t, openaitest.Post(t, x.proxy.URL+"/v1/chat/completions", body, openai.HeaderRequestID, "cs"))
	toks := openaitest.Output("user: hi\nassistant: ", 5)
	if len(chunks) != len(toks)+2 || chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Fatalf("chunks %+v", chunks)
	}
	for i, tok := range toks {
		if c := chunks[i+1]; c.Choices[0].Delta.Content != tokenizer.Detokenize(tok) || c.ID != "chatcmpl-cs" {
			t.Errorf("chunk %d: %+v, want %q", i+1, c.Choices[0].Delta, tokenizer.Detokenize(tok))
		}
	}
	if last := chunks[len(chunks)-1]; last.Choices[0].FinishReason == nil || last.Usage == nil {
		t.Errorf("final chunk %+v", last)
	}
	if p := x.ps[0].Requests(); len(p) != 1 || p[0].MaxTokens != 1 {
		t.Errorf("P saw %+v", p)
	}
	if d := x.ds[0].Requests(); len(d) != 1 || d[0].MaxTokens != 5 || d[0].KV == nil || d[0].KV.RemoteEngineID != "p0" {
		t.Errorf("D saw %+v", d)
	}
}

func TestProxyCompletionsStream(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	chunks := openaitest.ReadStream(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":3,"stream":true}`))
	toks := openaitest.Output("abc", 3)
	if len(chunks) != len(toks)+1 {
		t.Fatalf("%d chunks, want %d", len(chunks), len(toks)+1)
	}
	for i, tok := range toks {
		if got := *chunks[i].Choices[0].Text; got != tokenizer.Detokenize(tok) {
			t.Errorf("chunk %d: %q, want %q", i, got, tokenizer.Detokenize(tok))
		}
	}
	if p, d := x.ps[0].Requests(), x.ds[0].Requests(); len(p) != 1 || len(d) != 1 || p[0].ID != d[0].ID || p[0].ID == "" {
		t.Errorf("P saw %+v, D saw %+v: want one request each with the same generated id", p, d)
	}
}

// recorder is a raw upstream that records bodies and answers with a fixed
// response.
type recorder struct {
	mu     sync.Mutex
	bodies []map[string]json.RawMessage
	ids    []string
	status int
	answer string
	srv    *httptest.Server
}

func newRecorder(t *testing.T, status int, answer string) *recorder {
	rec := &recorder{status: status, answer: answer}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("upstream got a bad body: %v", err)
		}
		rec.mu.Lock()
		rec.bodies, rec.ids = append(rec.bodies, m), append(rec.ids, r.Header.Get(openai.HeaderRequestID))
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.status)
		io.WriteString(w, rec.answer)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

// The proxy rewrites only what it must: P gets do_remote_decode, stream
// false and max_tokens 1; D gets the client's body with P's
// kv_transfer_params byte for byte, unknown fields included.
func TestProxyRewritesBodies(t *testing.T) {
	const pKV = `{"remote_engine_id":"p9","remote_request_id":"rw-9","remote_block_ids":[[4,5],[6]],"future_field":{"x":[1,2]}}`
	p := newRecorder(t, 200, `{"id":"cmpl-x","choices":[{"text":"a"}],"kv_transfer_params":`+pKV+`}`)
	d := newRecorder(t, 200, `{"id":"cmpl-x","choices":[{"text":"abc"}]}`)
	proxy, err := New([]string{p.srv.URL}, []string{d.srv.URL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	client := `{"model":"m","prompt":"abc","max_tokens":7,"stream":false,"temperature":0.5,` +
		`"stream_options":{"include_usage":true}}`
	resp := openaitest.Post(t, srv.URL+"/v1/completions", client, openai.HeaderRequestID, "rw")
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != d.answer {
		t.Fatalf("client got %d %s, want D's answer", resp.StatusCode, got)
	}
	if len(p.bodies) != 1 || len(d.bodies) != 1 || p.ids[0] != "rw" || d.ids[0] != "rw" {
		t.Fatalf("P saw %v (ids %v), D saw %v (ids %v)", p.bodies, p.ids, d.bodies, d.ids)
	}
	var orig map[string]json.RawMessage
	if err := json.Unmarshal([]byte(client), &orig); err != nil {
		t.Fatal(err)
	}
	wantP := map[string]string{
		"model": `"m"`, "prompt": `"abc"`, "max_tokens": `1`, "stream": `false`, "temperature": `0.5`,
		"kv_transfer_params": `{"do_remote_decode":true}`,
	}
	if !reflect.DeepEqual(strs(p.bodies[0]), wantP) {
		t.Errorf("P body %v, want %v", strs(p.bodies[0]), wantP)
	}
	wantD := strs(orig)
	wantD["kv_transfer_params"] = pKV
	if !reflect.DeepEqual(strs(d.bodies[0]), wantD) {
		t.Errorf("D body %v, want %v", strs(d.bodies[0]), wantD)
	}
}

func strs(m map[string]json.RawMessage) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func TestProxyPrefillError(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ps[0].Err = fmt.Errorf("no blocks left: %w", backend.ErrOverloaded)
	msg := openaitest.PostError(t, x.proxy.URL, http.StatusServiceUnavailable)
	for _, want := range []string{"prefill", x.pSrv[0].URL, "no blocks left"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if n := len(x.ds[0].Requests()); n != 0 {
		t.Errorf("D saw %d requests after P failed", n)
	}
}

func TestProxyDecodeError(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ds[0].Err = fmt.Errorf("read of block 3 failed: %w", backend.ErrKVLoad)
	msg := openaitest.PostError(t, x.proxy.URL, http.StatusBadGateway)
	for _, want := range []string{"decode", x.dSrv[0].URL, "read of block 3 failed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	// The P that prefilled is told to release the request's state.
	id := x.ps[0].Requests()[0].ID
	waitAborts(t, x.ps[0], openai.AbortRequest{RemoteRequestID: id, RemoteGrant: "grant-" + id})
}

// A decode error during the stream reaches the client as D sent it.
func TestProxyDecodeStreamError(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ds[0].Err, x.ds[0].ErrAfter = fmt.Errorf("peer died: %w", backend.ErrPeer), 1
	resp := openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":3,"stream":true}`)
	events := openaitest.ReadSSE(t, resp.Body)
	if len(events) != 2 || !strings.Contains(events[1], "peer died") || !strings.Contains(events[1], `"error"`) {
		t.Fatalf("events %q", events)
	}
}

// A P that answers without kv_transfer_params (not a prefill instance).
func TestProxyPrefillWithoutKV(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ps[0].Role = backend.RoleBoth
	msg := openaitest.PostError(t, x.proxy.URL, http.StatusBadGateway)
	for _, want := range []string{"prefill", x.pSrv[0].URL, "kv_transfer_params"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestProxyUnreachable(t *testing.T) {
	for _, side := range []string{"prefill", "decode"} {
		t.Run(side, func(t *testing.T) {
			x := newProxyFixture(t, 1, 1)
			dead := x.dSrv[0]
			if side == "prefill" {
				dead = x.pSrv[0]
			}
			dead.Close()
			msg := openaitest.PostError(t, x.proxy.URL, http.StatusBadGateway)
			for _, want := range []string{side, dead.URL, "unreachable"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			if side == "decode" {
				id := x.ps[0].Requests()[0].ID
				waitAborts(t, x.ps[0], openai.AbortRequest{RemoteRequestID: id, RemoteGrant: "grant-" + id})
				return
			}
			x.drain()
			if a := x.ps[0].AbortCalls(); len(a) != 0 {
				t.Errorf("aborts %+v after a failed prefill", a)
			}
		})
	}
}

func TestProxyBadRequest(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for _, body := range []string{`{"prompt":`, `[]`, `null`, `{"prompt":"a","max_tokens":0}`, `{"prompt":"a","max_tokens":"x"}`} {
		e := openaitest.DecodeError(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", body), http.StatusBadRequest)
		if strings.Contains(body, "max_tokens") && e.Error.Param != "max_tokens" {
			t.Errorf("%s: error %+v does not name max_tokens", body, e.Error)
		}
	}
	if n := len(x.ps[0].Requests()); n != 0 {
		t.Errorf("P saw %d bad requests", n)
	}
}

func TestProxyClientDisconnect(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	d := x.ds[0]
	d.Block, d.Started, d.CtxErr = true, make(chan struct{}, 1), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := openaitest.PostInBackground(ctx, x.proxy.URL+"/v1/completions", `{"prompt":"abc","stream":true}`)
	openaitest.RecvOrFail(t, d.Started, "D's Generate to start")
	cancel()
	if err := openaitest.RecvOrFail(t, d.CtxErr, "D's Generate to see its ctx end"); !errors.Is(err, context.Canceled) {
		t.Errorf("D's ctx.Err() = %v, want context.Canceled", err)
	}
	openaitest.RecvOrFail(t, done, "the client to return")
	// P's hold is released although the client's context is over.
	id := d.Requests()[0].ID
	waitAborts(t, x.ps[0], openai.AbortRequest{RemoteRequestID: id, RemoteGrant: "grant-" + id})
}

func TestProxyHealth(t *testing.T) {
	x := newProxyFixture(t, 2, 2)
	var ok map[string]any
	openaitest.Decode(t, openaitest.Get(t, x.proxy.URL+"/health"), http.StatusOK, &ok)
	if ok["status"] != "ok" {
		t.Errorf("healthy: %v", ok)
	}
	x.ds[1].SetReady(errors.New("draining"))
	x.pSrv[0].Close()
	var bad struct {
		Status    string           `json:"status"`
		Unhealthy []upstreamHealth `json:"unhealthy"`
	}
	openaitest.Decode(t, openaitest.Get(t, x.proxy.URL+"/health"), http.StatusServiceUnavailable, &bad)
	if len(bad.Unhealthy) != 2 || bad.Status != "unavailable" {
		t.Fatalf("unhealthy: %+v", bad)
	}
	p, d := bad.Unhealthy[0], bad.Unhealthy[1]
	if p.Role != "prefill" || p.URL != x.pSrv[0].URL || p.Error == "" {
		t.Errorf("prefill entry %+v", p)
	}
	if d.Role != "decode" || d.URL != x.dSrv[1].URL || !strings.Contains(d.Error, "503") || !strings.Contains(d.Error, "draining") {
		t.Errorf("decode entry %+v", d)
	}
	// Its probes exclude and re-admit like the health checker's.
	if !x.p.ups.Load().prefill[0].excluded.Load() || !x.p.ups.Load().decode[1].excluded.Load() || x.p.ups.Load().decode[0].excluded.Load() {
		t.Errorf("excluded: P0 %v D0 %v D1 %v, want P0 and D1", x.p.ups.Load().prefill[0].excluded.Load(),
			x.p.ups.Load().decode[0].excluded.Load(), x.p.ups.Load().decode[1].excluded.Load())
	}
	x.ds[1].SetReady(nil)
	openaitest.Decode(t, openaitest.Get(t, x.proxy.URL+"/health"), http.StatusServiceUnavailable, &bad)
	if len(bad.Unhealthy) != 1 || x.p.ups.Load().decode[1].excluded.Load() {
		t.Errorf("after D1 recovered: %+v, D1 excluded %v", bad, x.p.ups.Load().decode[1].excluded.Load())
	}
}

func TestProxyModels(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	var m struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	openaitest.Decode(t, openaitest.Get(t, x.proxy.URL+"/v1/models"), http.StatusOK, &m)
	if len(m.Data) != 1 || m.Data[0].ID != openaitest.Model {
		t.Errorf("models %+v", m)
	}
}

func TestNewProxyValidation(t *testing.T) {
	good := []string{"http://127.0.0.1:8000"}
	cases := []struct {
		name    string
		p, d    []string
		wantErr string
	}{
		{"no prefill", nil, good, "prefill"},
		{"no decode", good, nil, "decode"},
		{"scheme", []string{"ftp://h:1"}, good, "scheme"},
		{"no host", good, []string{"http://"}, "no host"},
		{"relative", good, []string{"localhost:8000"}, "decode"},
		{"query", []string{"http://h:1/?x=1"}, good, "prefill"},
		{"unparsable", good, []string{"http://h:1/%zz"}, "decode"},
	}
	for _, c := range cases {
		if p, err := New(c.p, c.d, nil, nil); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			if p != nil {
				p.Close()
			}
			t.Errorf("%s: err %v, want one naming %q", c.name, err, c.wantErr)
		}
	}
	p, err := New([]string{"http://a:1/", "https://b/prefix/"}, good, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var got []string
	for _, u := range p.ups.Load().prefill {
		got = append(got, u.url)
	}
	if want := []string{"http://a:1", "https://b/prefix"}; !reflect.DeepEqual(got, want) {
		t.Errorf("normalized %v, want %v", got, want)
	}
}

func TestProxyStreamFlushesEachToken(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	if events := openaitest.StreamFirstEvent(t, x.proxy.URL, x.ds[0]); len(events) != 5 || events[4] != "[DONE]" {
		t.Errorf("events %q", events)
	}
}

// eventually polls cond until it holds, failing the test after a generous
// deadline (a hang guard, not a timing assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitAborts waits until f has seen exactly the aborts want.
func waitAborts(t *testing.T, f *openaitest.Backend, want ...openai.AbortRequest) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s to see aborts %+v", f.Name, want), func() bool { return len(f.AbortCalls()) >= len(want) })
	if got := f.AbortCalls(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s saw aborts %+v, want %+v", f.Name, got, want)
	}
}

// The proxy refuses what the API refuses, with the API's own error, and P
// never sees it. Only the model name is left to the instances.
func TestProxyRefusesWhatTheAPIRefuses(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for _, c := range openaitest.BadRequestCases {
		if c.Name == "wrong model" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			direct := openaitest.DecodeError(t, openaitest.Post(t, x.dSrv[0].URL+c.Path, c.Body, c.Hdr...), c.Status)
			proxied := openaitest.DecodeError(t, openaitest.Post(t, x.proxy.URL+c.Path, c.Body, c.Hdr...), c.Status)
			if *proxied.Error != *direct.Error {
				t.Errorf("proxy refused with %+v, D with %+v", proxied.Error, direct.Error)
			}
		})
	}
	if n := len(x.ps[0].Requests()); n != 0 {
		t.Errorf("P saw %d requests the API refuses", n)
	}
}

// ... and accepts what the API accepts: the same max_tokens rules.
func TestProxyAcceptsWhatTheAPIAccepts(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	cases := []struct {
		path, body, prompt string
		n                  int
	}{
		// completions ignore max_completion_tokens
		{"/v1/completions", `{"prompt":"ab","max_tokens":2,"max_completion_tokens":0}`, "ab", 2},
		// chat: max_completion_tokens wins over max_tokens
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":0,"max_completion_tokens":3}`,
			"user: hi\nassistant: ", 3},
	}
	for _, c := range cases {
		var r openaitest.CompletionResponse
		openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+c.path, c.body), http.StatusOK, &r)
		got := r.Choices[0].Text
		if r.Choices[0].Message != nil {
			got = r.Choices[0].Message.Content
		}
		if want := openaitest.Text(c.prompt, c.n); got != want {
			t.Errorf("%s: %q, want %q", c.body, got, want)
		}
	}
}

// The client's answer does not wait for the abort, and the abort has a
// context of its own, bounded by AbortTimeout.
func TestProxyAbortDoesNotBlock(t *testing.T) {
	started, gone := make(chan struct{}, 1), make(chan error, 1)
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/kv/abort" {
			io.ReadAll(r.Body) // then the server watches the connection
			started <- struct{}{}
			<-r.Context().Done() // never answers: the proxy gives up
			gone <- r.Context().Err()
			return
		}
		openai.WriteJSON(w, http.StatusOK, map[string]any{"kv_transfer_params": openaitest.KV("p0", "r", 3)})
	}))
	defer p.Close()
	d := &openaitest.Backend{Name: "d0", Role: backend.RoleDecode, Err: fmt.Errorf("load: %w", backend.ErrKVLoad)}
	proxy, err := NewWithOptions([]string{p.URL}, []string{openaitest.Serve(t, d).URL},
		Options{HealthInterval: time.Hour, AbortTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Post(srv.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"abc"}`))
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	openaitest.RecvOrFail(t, started, "the abort to reach P")
	if status := openaitest.RecvOrFail(t, answered, "the client's answer while P sits on the abort"); status != http.StatusBadGateway {
		t.Errorf("client got status %d, want 502", status)
	}
	openaitest.RecvOrFail(t, gone, "the proxy to give up on the abort")
}

func TestProxySkipsClosedPrefill(t *testing.T) {
	x := newProxyFixture(t, 2, 1)
	x.pSrv[0].Close()
	const n = 4
	for i := range n {
		var c openaitest.CompletionResponse
		openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", fmt.Sprintf(`{"prompt":"p%d","max_tokens":2}`, i)), http.StatusOK, &c)
		if want := openaitest.Text(fmt.Sprintf("p%d", i), 2); c.Choices[0].Text != want {
			t.Errorf("request %d: %q, want %q", i, c.Choices[0].Text, want)
		}
	}
	if got := len(x.ps[1].Requests()); got != n {
		t.Errorf("P1 saw %d requests, want %d", got, n)
	}
	if !x.p.ups.Load().prefill[0].excluded.Load() || x.p.ups.Load().prefill[1].excluded.Load() {
		t.Errorf("excluded: P0 %v P1 %v, want only P0", x.p.ups.Load().prefill[0].excluded.Load(), x.p.ups.Load().prefill[1].excluded.Load())
	}
}

// A 5xx from P is retried on another P, which is not excluded for it.
func TestProxyRetriesPrefill5xx(t *testing.T) {
	x := newProxyFixture(t, 2, 1)
	x.ps[0].Err = errors.New("boom") // 500
	for i := range 2 {
		id := fmt.Sprintf("r%d", i)
		var c openaitest.CompletionResponse
		openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":2}`, openai.HeaderRequestID, id), http.StatusOK, &c)
		if c.Choices[0].Text != openaitest.Text("abc", 2) {
			t.Errorf("request %d: %+v", i, c)
		}
	}
	// Request 0: P0 (500), then P1. Request 1: P1.
	if p0, p1 := x.ps[0].Requests(), x.ps[1].Requests(); len(p0) != 1 || len(p1) != 2 || p0[0].ID != "r0" {
		t.Errorf("P0 saw %+v, P1 saw %+v", p0, p1)
	}
	for _, d := range x.ds[0].Requests() {
		if d.KV == nil || d.KV.RemoteEngineID != "p1" {
			t.Errorf("D got kv %+v, want P1's", d.KV)
		}
	}
	if x.p.ups.Load().prefill[0].excluded.Load() {
		t.Error("P0 excluded for a 500")
	}
}

// A P's 4xx is the client's answer: no retry.
func TestProxyPrefill4xxNotRetried(t *testing.T) {
	x := newProxyFixture(t, 2, 1)
	x.ps[0].Err = fmt.Errorf("prompt too long: %w", backend.ErrBadRequest)
	msg := openaitest.PostError(t, x.proxy.URL, http.StatusBadRequest)
	if !strings.Contains(msg, "prompt too long") || !strings.Contains(msg, x.pSrv[0].URL) {
		t.Errorf("message %q", msg)
	}
	if n := len(x.ps[1].Requests()); n != 0 {
		t.Errorf("P1 saw %d requests after P0's 400", n)
	}
}

func TestProxyAllPrefillDown(t *testing.T) {
	x := newProxyFixture(t, 2, 1)
	x.pSrv[0].Close()
	x.pSrv[1].Close()
	// Each P is tried once, then both are excluded.
	if msg := openaitest.PostError(t, x.proxy.URL, http.StatusBadGateway); !strings.Contains(msg, "unreachable") {
		t.Errorf("first request: %q", msg)
	}
	client := &http.Client{Timeout: 30 * time.Second} // a hang guard
	for range 3 {
		resp, err := client.Post(x.proxy.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"a"}`))
		if err != nil {
			t.Fatal(err)
		}
		e := openaitest.DecodeError(t, resp, http.StatusServiceUnavailable)
		resp.Body.Close()
		if e.Error.Code != "no_upstream" || !strings.Contains(e.Error.Message, "no prefill instance available") {
			t.Errorf("error %+v", e.Error)
		}
	}
	if n := len(x.ds[0].Requests()); n != 0 {
		t.Errorf("D saw %d requests", n)
	}
}

// A D whose connection fails is excluded; P's hold is aborted. With no D
// left the proxy answers 503 before any P sees the request.
func TestProxyExcludesDecode(t *testing.T) {
	x := newProxyFixture(t, 1, 2)
	x.dSrv[0].Close()
	openaitest.PostError(t, x.proxy.URL, http.StatusBadGateway)
	for range 3 {
		openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":2}`), http.StatusOK, &openaitest.CompletionResponse{})
	}
	if n := len(x.ds[1].Requests()); n != 3 {
		t.Errorf("D1 saw %d requests, want 3", n)
	}
	id := x.ps[0].Requests()[0].ID
	waitAborts(t, x.ps[0], openai.AbortRequest{RemoteRequestID: id, RemoteGrant: "grant-" + id})

	x.dSrv[1].Close()
	openaitest.PostError(t, x.proxy.URL, http.StatusBadGateway)
	e := openaitest.DecodeError(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc"}`), http.StatusServiceUnavailable)
	if e.Error.Code != "no_upstream" || !strings.Contains(e.Error.Message, "no decode instance available") {
		t.Errorf("error %+v", e.Error)
	}
	if n := len(x.ps[0].Requests()); n != 5 {
		t.Errorf("P saw %d requests, want 5 (none once every D is excluded)", n)
	}
	e = openaitest.DecodeError(t, openaitest.Get(t, x.proxy.URL+"/v1/models"), http.StatusServiceUnavailable)
	if e.Error.Code != "no_upstream" {
		t.Errorf("/v1/models: %+v", e.Error)
	}
}

// restart serves h again at the address srv listened on.
func restart(t *testing.T, srv *httptest.Server, h http.Handler) *httptest.Server {
	t.Helper()
	addr := srv.Listener.Addr().String()
	var ln net.Listener
	eventually(t, "listening on "+addr+" again", func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// An excluded instance comes back once its /health is 200 again, whether
// it was excluded by a failed connection or by a failed probe.
func TestProxyReadmits(t *testing.T) {
	x := newProxyFixtureWith(t, 2, 1, Options{HealthInterval: 10 * time.Millisecond})
	p0, p1 := x.p.ups.Load().prefill[0], x.p.ups.Load().prefill[1]
	x.pSrv[0].Close()
	eventually(t, "P0 excluded", p0.excluded.Load)
	openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"a"}`), http.StatusOK, &openaitest.CompletionResponse{})

	restart(t, x.pSrv[0], openai.NewHandler(x.ps[0], nil, nil))
	eventually(t, "P0 re-admitted", func() bool { return !p0.excluded.Load() })
	before := len(x.ps[0].Requests())
	for range 2 { // round robin: one of two lands on P0
		openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"a"}`), http.StatusOK, &openaitest.CompletionResponse{})
	}
	if after := len(x.ps[0].Requests()); after != before+1 {
		t.Errorf("P0 saw %d requests after coming back, want 1", after-before)
	}

	x.ps[1].SetReady(errors.New("draining"))
	eventually(t, "P1 excluded by its /health", p1.excluded.Load)
	before = len(x.ps[1].Requests())
	for range 2 {
		openaitest.Decode(t, openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"a"}`), http.StatusOK, &openaitest.CompletionResponse{})
	}
	if n := len(x.ps[1].Requests()); n != before {
		t.Errorf("excluded P1 saw %d requests", n-before)
	}
	x.ps[1].SetReady(nil)
	eventually(t, "P1 re-admitted", func() bool { return !p1.excluded.Load() })
}

// Many requests in flight over 2 P and 2 D: every answer is right, each
// request went through exactly one P and one D with that P's params, and
// nothing was aborted.
func TestProxyConcurrent(t *testing.T) {
	x := newProxyFixtureWith(t, 2, 2, Options{HealthInterval: 10 * time.Millisecond})
	client := openaitest.SDK(x.proxy.URL) // the official OpenAI Go client, as users run it
	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, prompt, max := fmt.Sprintf("c%d", i), fmt.Sprintf("prompt number %d", i), 1+i%5
			chat, stream := i%2 == 1, i%4 >= 2
			text, kv, err := openaitest.SDKAnswer(context.Background(), client, id, prompt, max, chat, stream)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if kv != nil {
				t.Errorf("request %d: the proxy passed P's kv_transfer_params to the client: %+v", i, kv)
			}
			if chat {
				prompt = "user: " + prompt + "\nassistant: "
			}
			if want := openaitest.Text(prompt, max); text != want {
				t.Errorf("request %d: %q, want %q", i, text, want)
			}
		})
	}
	wg.Wait()
	x.drain()
	prefilled := map[string]string{} // request id -> P
	for _, p := range x.ps {
		for _, r := range p.Requests() {
			if _, dup := prefilled[r.ID]; dup {
				t.Errorf("%s prefilled twice", r.ID)
			}
			prefilled[r.ID] = p.Name
		}
		if a := p.AbortCalls(); len(a) != 0 {
			t.Errorf("%s saw aborts %+v", p.Name, a)
		}
	}
	decoded := 0
	for _, d := range x.ds {
		for _, r := range d.Requests() {
			decoded++
			if want := openaitest.KV(prefilled[r.ID], r.ID, len(tokenizer.Tokenize(r.Prompt))); !reflect.DeepEqual(r.KV, want) {
				t.Errorf("%s: D got kv %+v, want %+v", r.ID, r.KV, want)
			}
		}
	}
	if len(prefilled) != n || decoded != n {
		t.Errorf("%d requests prefilled, %d decoded, want %d each", len(prefilled), decoded, n)
	}
}

// TestProxyDecodeDrainingRetried: a decode instance that refuses with 503
// draining did nothing, so the proxy sends the request to the next one
// (the answer is 200 and right) and excludes the draining one; any other
// decode failure is still the client's answer, not retried.
func TestProxyDecodeDrainingRetried(t *testing.T) {
	x := newProxyFixture(t, 1, 2)
	x.ds[0].Err = backend.ErrDraining
	for i := range 2 {
		id := fmt.Sprintf("d%d", i)
		resp := openaitest.Post(t, x.proxy.URL+"/v1/completions",
			fmt.Sprintf(`{"model":%q,"prompt":"p q","max_tokens":3}`, openaitest.Model), openai.HeaderRequestID, id)
		var c openaitest.CompletionResponse
		openaitest.Decode(t, resp, http.StatusOK, &c)
		if want := openaitest.Text("p q", 3); len(c.Choices) != 1 || c.Choices[0].Text != want {
			t.Fatalf("request %d: %+v, want %q", i, c, want)
		}
	}
	if n := len(x.ds[0].Requests()); n != 1 {
		t.Errorf("draining D0 saw %d requests, want 1 (then excluded)", n)
	}
	if n := len(x.ds[1].Requests()); n != 2 {
		t.Errorf("D1 saw %d requests, want 2", n)
	}
	// A failed load may have read part of P's state: answered, not retried.
	y := newProxyFixture(t, 1, 2)
	y.ds[0].Err = backend.ErrKVLoad
	resp := openaitest.Post(t, y.proxy.URL+"/v1/completions",
		fmt.Sprintf(`{"model":%q,"prompt":"p","max_tokens":3}`, openaitest.Model), openai.HeaderRequestID, "kv")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("decode kv_load_failed: status %d, want 502 passed through", resp.StatusCode)
	}
	resp.Body.Close()
	if n := len(y.ds[1].Requests()); n != 0 {
		t.Errorf("a kv_load_failed decode was retried on D1 (%d requests)", n)
	}
}

// TestProxySetUpstreams: discovery swaps the instances. With none, a
// request is 503 no_upstream; once instances are set, requests go to them;
// with compatibility hashes known, decode legs go only to decode
// instances with the prefill instance's hash (never a pair that would
// refuse each other), and with no such instance the answer is 503 naming
// the hash; an instance that stays keeps its exclusion.
func TestProxySetUpstreams(t *testing.T) {
	x := newProxyFixture(t, 1, 2) // the fixture's servers; the proxy below starts empty
	p, err := NewWithOptions(nil, nil, Options{Dynamic: true, HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()
	post := func(id string) *http.Response {
		return openaitest.Post(t, srv.URL+"/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"p","max_tokens":2}`, openaitest.Model), openai.HeaderRequestID, id)
	}
	if e := openaitest.DecodeError(t, post("none"), http.StatusServiceUnavailable).Error; e == nil || e.Code != "no_upstream" || !strings.Contains(e.Message, "none is registered") {
		t.Errorf("no instances: %+v", e)
	}
	pu, d0, d1 := x.pSrv[0].URL, x.dSrv[0].URL, x.dSrv[1].URL
	if err := p.SetUpstreams([]Upstream{{URL: pu, CompatHash: "aa"}}, []Upstream{{URL: d0, CompatHash: "bb"}, {URL: d1, CompatHash: "aa"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		openaitest.Decode(t, post(fmt.Sprintf("c%d", i)), http.StatusOK, &openaitest.CompletionResponse{})
	}
	if n0, n1 := len(x.ds[0].Requests()), len(x.ds[1].Requests()); n0 != 0 || n1 != 4 {
		t.Errorf("decode legs: D0 (other hash) %d, D1 (P's hash) %d; want 0 and 4", n0, n1)
	}
	// Only an incompatible decode instance left.
	if err := p.SetUpstreams([]Upstream{{URL: pu, CompatHash: "aa"}}, []Upstream{{URL: d0, CompatHash: "bb"}}); err != nil {
		t.Fatal(err)
	}
	if e := openaitest.DecodeError(t, post("incompatible"), http.StatusServiceUnavailable).Error; e == nil || e.Code != "no_upstream" || !strings.Contains(e.Message, "hash aa") {
		t.Errorf("no compatible decode instance: %+v, want the hash named", e)
	}
	waitAborts(t, x.ps[0], openai.AbortRequest{RemoteRequestID: "incompatible", RemoteGrant: "grant-incompatible"})
	// An excluded instance that stays in the set stays excluded.
	set := p.ups.Load()
	set.decode[0].excluded.Store(true)
	if err := p.SetUpstreams([]Upstream{{URL: pu, CompatHash: "aa"}}, []Upstream{{URL: d0, CompatHash: "bb"}, {URL: d1, CompatHash: "aa"}}); err != nil {
		t.Fatal(err)
	}
	if now := p.ups.Load(); now.decode[0] != set.decode[0] || !now.decode[0].excluded.Load() || now.decode[1].excluded.Load() {
		t.Errorf("after the update: D0 kept %v excluded %v, D1 excluded %v", now.decode[0] == set.decode[0], now.decode[0].excluded.Load(), now.decode[1].excluded.Load())
	}
	// The same URL with another hash (restarted with another model) is a
	// new instance: fresh state, the new hash.
	if err := p.SetUpstreams([]Upstream{{URL: pu, CompatHash: "aa"}}, []Upstream{{URL: d0, CompatHash: "aa"}}); err != nil {
		t.Fatal(err)
	}
	if now := p.ups.Load(); now.decode[0] == set.decode[0] || now.decode[0].excluded.Load() || now.decode[0].compat != "aa" {
		t.Errorf("D0 with a new hash: reused %v, excluded %v, hash %q", now.decode[0] == set.decode[0], now.decode[0].excluded.Load(), now.decode[0].compat)
	}
	if err := p.SetUpstreams([]Upstream{{URL: "ftp://x"}}, nil); err == nil {
		t.Error("SetUpstreams took an ftp URL")
	}
}

// The previous turn's export travels from the client to P, and only to
// P: P's kv_transfer_params carry it as remote_prefix (re-encoded from
// the fields P knows), D's body does not carry it, and something that is
// not a decode instance's export is refused before any upstream call.
func TestProxyCarriesPreviousTurn(t *testing.T) {
	const pKV = `{"remote_engine_id":"p9","remote_request_id":"rw-9","remote_block_ids":[[4]]}`
	p := newRecorder(t, 200, `{"id":"cmpl-x","choices":[{"text":"a"}],"kv_transfer_params":`+pKV+`}`)
	d := newRecorder(t, 200, `{"id":"cmpl-x","choices":[{"text":"abc"}]}`)
	proxy, err := New([]string{p.srv.URL}, []string{d.srv.URL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	const export = `{"remote_engine_id":"d1","remote_request_id":"d-4-x","remote_host":"127.0.0.1","remote_port":7,` +
		`"tp_size":2,"remote_block_ids":[[3,4],[9]],"num_tokens":40,"lease_expiry":1.5e9,"handoff":"decode-export",` +
		`"remote_boot_id":"b","remote_grant":"g","token_chain":"00ff"}`
	resp := openaitest.Post(t, srv.URL+"/v1/completions", `{"model":"m","prompt":"abc","max_tokens":3,"Previous_KV_Transfer_Params":`+export+`}`)
	if got, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	var pkv struct {
		DoRemoteDecode bool            `json:"do_remote_decode"`
		RemotePrefix   json.RawMessage `json:"remote_prefix"`
	}
	if err := json.Unmarshal(p.bodies[0]["kv_transfer_params"], &pkv); err != nil || !pkv.DoRemoteDecode {
		t.Fatalf("P's kv_transfer_params %s (%v)", p.bodies[0]["kv_transfer_params"], err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(pkv.RemotePrefix, &got); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(export), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("P's remote_prefix %v, the client sent %v", got, want)
	}
	for _, body := range []map[string]json.RawMessage{p.bodies[0], d.bodies[0]} {
		for k := range body {
			if strings.EqualFold(k, PreviousTurnField) {
				t.Errorf("an upstream body carries %s", k)
			}
		}
	}
	if string(d.bodies[0]["kv_transfer_params"]) != pKV {
		t.Errorf("D's kv_transfer_params %s, want P's", d.bodies[0]["kv_transfer_params"])
	}
	for _, bad := range []string{`{"handoff":"decode-computes-last","remote_engine_id":"p"}`, `{"do_remote_decode":true,"handoff":"decode-export"}`, `[1]`, `"x"`} {
		resp := openaitest.Post(t, srv.URL+"/v1/completions", `{"model":"m","prompt":"abc","max_tokens":3,"previous_kv_transfer_params":`+bad+`}`)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 || !strings.Contains(string(b), PreviousTurnField) {
			t.Errorf("previous turn %s: %d %s, want 400 naming the field", bad, resp.StatusCode, b)
		}
	}
	if len(p.bodies) != 1 || len(d.bodies) != 1 {
		t.Errorf("refused requests reached upstreams: P %d, D %d bodies", len(p.bodies), len(d.bodies))
	}
}
