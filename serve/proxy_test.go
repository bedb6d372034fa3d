package serve

import (
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
)

// pdFixture is a proxy over fake prefill and decode instances served by the real
// API handler.
type pdFixture struct {
	ps, ds     []*fakeBackend
	pSrv, dSrv []*httptest.Server
	proxy      *httptest.Server
}

func newProxyFixture(t *testing.T, nP, nD int) *pdFixture {
	t.Helper()
	x := &pdFixture{}
	var pURLs, dURLs []string
	for i := range nP {
		f := &fakeBackend{name: fmt.Sprintf("p%d", i), role: RolePrefill}
		srv := newAPI(t, f)
		x.ps, x.pSrv, pURLs = append(x.ps, f), append(x.pSrv, srv), append(pURLs, srv.URL)
	}
	for i := range nD {
		f := &fakeBackend{name: fmt.Sprintf("d%d", i), role: RoleDecode}
		srv := newAPI(t, f)
		x.ds, x.dSrv, dURLs = append(x.ds, f), append(x.dSrv, srv), append(dURLs, srv.URL+"/")
	}
	p, err := NewProxy(pURLs, dURLs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	x.proxy = httptest.NewServer(p)
	t.Cleanup(x.proxy.Close)
	return x
}

func TestProxyCompletions(t *testing.T) {
	x := newProxyFixture(t, 2, 2)
	const n = 6
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		prompt := fmt.Sprintf("prompt %d", i)
		resp := apiPost(t, x.proxy.URL+"/v1/completions",
			fmt.Sprintf(`{"model":%q,"prompt":%q,"max_tokens":%d}`, fakeModel, prompt, i+2), HeaderRequestID, id)
		if got := resp.Header.Get(HeaderRequestID); got != id {
			t.Errorf("request %d: response %s %q", i, HeaderRequestID, got)
		}
		var c completionResponse
		apiDecode(t, resp, http.StatusOK, &c)
		if want := fakeText(prompt, i+2); len(c.Choices) != 1 || c.Choices[0].Text != want || c.ID != "cmpl-"+id {
			t.Errorf("request %d: %+v, want text %q", i, c, want)
		}
	}
	// Round robin: request i went to P i%2 and D i%2.
	for k := range 2 {
		preqs, dreqs := x.ps[k].requests(), x.ds[k].requests()
		if len(preqs) != n/2 || len(dreqs) != n/2 {
			t.Fatalf("instance %d: P saw %d, D saw %d requests, want %d each", k, len(preqs), len(dreqs), n/2)
		}
		for j := range n / 2 {
			i := 2*j + k
			id := fmt.Sprintf("r%d", i)
			p, d := preqs[j], dreqs[j]
			if p.ID != id || d.ID != id {
				t.Errorf("request %d: ids P %q D %q", i, p.ID, d.ID)
			}
			if p.MaxTokens != 1 || p.KV == nil || !reflect.DeepEqual(*p.KV, KVTransferParams{DoRemoteDecode: true}) {
				t.Errorf("request %d: P saw max_tokens %d kv %+v", i, p.MaxTokens, p.KV)
			}
			// D got exactly what P k answered.
			want := fakeKV(x.ps[k].name, id, len(Tokenize(p.Prompt)))
			if d.MaxTokens != i+2 || d.Prompt != p.Prompt || !reflect.DeepEqual(d.KV, want) {
				t.Errorf("request %d: D saw %+v kv %+v, want max_tokens %d kv %+v", i, d, d.KV, i+2, want)
			}
		}
	}
}

func TestProxyChatStream(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	body := `{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":5,"stream":true,` +
		`"stream_options":{"include_usage":true}}`
	chunks := readStream(t, apiPost(t, x.proxy.URL+"/v1/chat/completions", body, HeaderRequestID, "cs"))
	toks := fakeOutput("user: hi\nassistant: ", 5)
	if len(chunks) != len(toks)+2 || chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Fatalf("chunks %+v", chunks)
	}
	for i, tok := range toks {
		if c := chunks[i+1]; c.Choices[0].Delta.Content != Detokenize(tok) || c.ID != "chatcmpl-cs" {
			t.Errorf("chunk %d: %+v, want %q", i+1, c.Choices[0].Delta, Detokenize(tok))
		}
	}
	if last := chunks[len(chunks)-1]; last.Choices[0].FinishReason == nil || last.Usage == nil {
		t.Errorf("final chunk %+v", last)
	}
	if p := x.ps[0].requests(); len(p) != 1 || p[0].MaxTokens != 1 {
		t.Errorf("P saw %+v", p)
	}
	if d := x.ds[0].requests(); len(d) != 1 || d[0].MaxTokens != 5 || d[0].KV == nil || d[0].KV.RemoteEngineID != "p0" {
		t.Errorf("D saw %+v", d)
	}
}

func TestProxyCompletionsStream(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	chunks := readStream(t, apiPost(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":3,"stream":true}`))
	toks := fakeOutput("abc", 3)
	if len(chunks) != len(toks)+1 {
		t.Fatalf("%d chunks, want %d", len(chunks), len(toks)+1)
	}
	for i, tok := range toks {
		if got := *chunks[i].Choices[0].Text; got != Detokenize(tok) {
			t.Errorf("chunk %d: %q, want %q", i, got, Detokenize(tok))
		}
	}
	if p, d := x.ps[0].requests(), x.ds[0].requests(); len(p) != 1 || len(d) != 1 || p[0].ID != d[0].ID || p[0].ID == "" {
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
		rec.bodies, rec.ids = append(rec.bodies, m), append(rec.ids, r.Header.Get(HeaderRequestID))
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
	const pKV = `{"remote_engine_id":"p9","remote_block_ids":[[4,5],[6]],"future_field":{"x":[1,2]}}`
	p := newRecorder(t, 200, `{"id":"cmpl-x","choices":[{"text":"a"}],"kv_transfer_params":`+pKV+`}`)
	d := newRecorder(t, 200, `{"id":"cmpl-x","choices":[{"text":"abc"}]}`)
	proxy, err := NewProxy([]string{p.srv.URL}, []string{d.srv.URL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	client := `{"model":"m","prompt":"abc","max_tokens":7,"stream":false,"temperature":0.5,` +
		`"stream_options":{"include_usage":true},"kv_transfer_params":{"kv_load_failure_policy":"recompute"}}`
	resp := apiPost(t, srv.URL+"/v1/completions", client, HeaderRequestID, "rw")
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

// proxyError posts through x's proxy and returns the error the client got.
func proxyError(t *testing.T, url string, status int) string {
	t.Helper()
	e := apiDecodeError(t, apiPost(t, url+"/v1/completions", `{"prompt":"abc","max_tokens":3}`), status)
	return e.Error.Message
}

func TestProxyPrefillError(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ps[0].err = fmt.Errorf("no blocks left: %w", ErrOverloaded)
	msg := proxyError(t, x.proxy.URL, http.StatusServiceUnavailable)
	for _, want := range []string{"prefill", x.pSrv[0].URL, "no blocks left"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if n := len(x.ds[0].requests()); n != 0 {
		t.Errorf("D saw %d requests after P failed", n)
	}
}

func TestProxyDecodeError(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ds[0].err = fmt.Errorf("read of block 3 failed: %w", ErrKVLoad)
	msg := proxyError(t, x.proxy.URL, http.StatusBadGateway)
	for _, want := range []string{"decode", x.dSrv[0].URL, "read of block 3 failed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

// A decode error during the stream reaches the client as D sent it.
func TestProxyDecodeStreamError(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ds[0].err, x.ds[0].errAfter = fmt.Errorf("peer died: %w", ErrPeer), 1
	resp := apiPost(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":3,"stream":true}`)
	events := readSSE(t, resp.Body)
	if len(events) != 2 || !strings.Contains(events[1], "peer died") || !strings.Contains(events[1], `"error"`) {
		t.Fatalf("events %q", events)
	}
}

// A P that answers without kv_transfer_params (not a prefill instance).
func TestProxyPrefillWithoutKV(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	x.ps[0].role = RoleBoth
	msg := proxyError(t, x.proxy.URL, http.StatusBadGateway)
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
			msg := proxyError(t, x.proxy.URL, http.StatusBadGateway)
			for _, want := range []string{side, dead.URL, "unreachable"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
		})
	}
}

func TestProxyBadRequest(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for _, body := range []string{`{"prompt":`, `[]`, `null`, `{"prompt":"a","max_tokens":0}`, `{"prompt":"a","max_tokens":"x"}`} {
		e := apiDecodeError(t, apiPost(t, x.proxy.URL+"/v1/completions", body), http.StatusBadRequest)
		if strings.Contains(body, "max_tokens") && e.Error.Param != "max_tokens" {
			t.Errorf("%s: error %+v does not name max_tokens", body, e.Error)
		}
	}
	if n := len(x.ps[0].requests()); n != 0 {
		t.Errorf("P saw %d bad requests", n)
	}
}

func TestProxyClientDisconnect(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	d := x.ds[0]
	d.block, d.started, d.ctxErr = true, make(chan struct{}, 1), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := postInBackground(ctx, x.proxy.URL+"/v1/completions", `{"prompt":"abc","stream":true}`)
	recvOrFail(t, d.started, "D's Generate to start")
	cancel()
	if err := recvOrFail(t, d.ctxErr, "D's Generate to see its ctx end"); !errors.Is(err, context.Canceled) {
		t.Errorf("D's ctx.Err() = %v, want context.Canceled", err)
	}
	recvOrFail(t, done, "the client to return")
}

func TestProxyHealth(t *testing.T) {
	x := newProxyFixture(t, 2, 2)
	var ok map[string]any
	apiDecode(t, apiGet(t, x.proxy.URL+"/health"), http.StatusOK, &ok)
	if ok["status"] != "ok" {
		t.Errorf("healthy: %v", ok)
	}
	x.ds[1].ready = errors.New("draining")
	x.pSrv[0].Close()
	var bad struct {
		Status    string           `json:"status"`
		Unhealthy []upstreamHealth `json:"unhealthy"`
	}
	apiDecode(t, apiGet(t, x.proxy.URL+"/health"), http.StatusServiceUnavailable, &bad)
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
}

func TestProxyModels(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	var m struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	apiDecode(t, apiGet(t, x.proxy.URL+"/v1/models"), http.StatusOK, &m)
	if len(m.Data) != 1 || m.Data[0].ID != fakeModel {
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
		if _, err := NewProxy(c.p, c.d, nil, nil); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: err %v, want one naming %q", c.name, err, c.wantErr)
		}
	}
	p, err := NewProxy([]string{"http://a:1/", "https://b/prefix/"}, good, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://a:1", "https://b/prefix"}; !reflect.DeepEqual(p.prefill, want) {
		t.Errorf("normalized %v, want %v", p.prefill, want)
	}
}

func TestProxyStreamFlushesEachToken(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	if events := streamFirstEvent(t, x.proxy.URL, x.ds[0]); len(events) != 5 || events[4] != "[DONE]" {
		t.Errorf("events %q", events)
	}
}
