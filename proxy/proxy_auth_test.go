package proxy

import (
	"fmt"
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
)

// upstreamReq is one request an instance received, as far as auth goes.
type upstreamReq struct {
	method, path string
	internal     []string
	auth         []string
}

// headerLog records the requests an instance receives.
type headerLog struct {
	mu   sync.Mutex
	reqs []upstreamReq
}

func (l *headerLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, upstreamReq{r.Method, r.URL.Path, r.Header.Values(openai.HeaderInternal), r.Header.Values("Authorization")})
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *headerLog) all() []upstreamReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]upstreamReq(nil), l.reqs...)
}

// authCluster is a proxy with client API keys in front of a P and a D that
// require the internal token (and API keys of their own, which the proxy
// does not have).
type authCluster struct {
	p, d       *openaitest.Backend
	pLog, dLog *headerLog
	proxy      *Proxy
	srv        *httptest.Server
}

// dErr, when not nil, fails every decode.
func newAuthCluster(t *testing.T, dErr error) *authCluster {
	t.Helper()
	x := &authCluster{p: &openaitest.Backend{Name: "p0", Role: backend.RolePrefill}, d: &openaitest.Backend{Name: "d0", Role: backend.RoleDecode, Err: dErr},
		pLog: &headerLog{}, dLog: &headerLog{}}
	inst := openai.HandlerOptions{APIKeys: []string{openaitest.Key2}, InternalToken: openaitest.InternalToken}
	pSrv := httptest.NewServer(x.pLog.wrap(openai.NewHandlerWithOptions(x.p, nil, nil, inst)))
	t.Cleanup(pSrv.Close)
	dSrv := httptest.NewServer(x.dLog.wrap(openai.NewHandlerWithOptions(x.d, nil, nil, inst)))
	t.Cleanup(dSrv.Close)
	var err error
	x.proxy, err = NewWithOptions([]string{pSrv.URL}, []string{dSrv.URL}, Options{
		HealthInterval: time.Hour, APIKeys: []string{openaitest.Key1}, InternalToken: openaitest.InternalToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.proxy.Close() })
	x.srv = httptest.NewServer(x.proxy)
	t.Cleanup(x.srv.Close)
	return x
}

// upstream is every request P and D received.
func (x *authCluster) upstream() []upstreamReq { return append(x.pLog.all(), x.dLog.all()...) }

// End to end: the proxy authenticates its clients, sends the internal
// token on every upstream request and never the client's Authorization.
func TestProxyAuthEndToEnd(t *testing.T) {
	x := newAuthCluster(t, nil)
	client := []string{"Authorization", "Bearer " + openaitest.Key1}

	// Refused at the proxy: nothing reaches an instance.
	for _, c := range []struct {
		name string
		hdr  []string
	}{
		{"no key", nil},
		{"wrong key", []string{"Authorization", "Bearer sk-test-key-three-012345"}},
		{"an instance's key", []string{"Authorization", "Bearer " + openaitest.Key2}},
		{"the internal token", []string{openai.HeaderInternal, openaitest.InternalToken}},
		{"internal token as key", []string{"Authorization", "Bearer " + openaitest.InternalToken}},
	} {
		t.Run(c.name, func(t *testing.T) {
			openaitest.CheckRefused(t, openaitest.Send(t, "POST", x.srv.URL+openaitest.CompletionsPath, `{"prompt":"abc","max_tokens":3}`, c.hdr...),
				http.StatusUnauthorized, "invalid_api_key", nil)
			openaitest.CheckRefused(t, openaitest.Send(t, "GET", x.srv.URL+"/v1/models", "", c.hdr...), http.StatusUnauthorized, "invalid_api_key", nil)
		})
	}
	if up := x.upstream(); len(up) != 0 {
		t.Fatalf("refused client requests reached the instances: %+v", up)
	}

	// Accepted: both legs, a stream, /v1/models, /health.
	var r openaitest.CompletionResponse
	openaitest.Decode(t, openaitest.Send(t, "POST", x.srv.URL+openaitest.CompletionsPath, `{"prompt":"abc","max_tokens":3}`, client...), http.StatusOK, &r)
	if want := openaitest.Text("abc", 3); len(r.Choices) != 1 || r.Choices[0].Text != want {
		t.Errorf("answer %+v, want %q", r, want)
	}
	openaitest.ReadStream(t, openaitest.Send(t, "POST", x.srv.URL+openaitest.ChatPath, `{`+openaitest.ChatMessages+`,"stream":true}`, client...))
	openaitest.Decode(t, openaitest.Send(t, "GET", x.srv.URL+"/v1/models", "", client...), http.StatusOK, &map[string]any{})
	if resp := openaitest.Send(t, "GET", x.srv.URL+"/health", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("proxy /health without a key: status %d", resp.StatusCode)
	}
	// A failed decode leg: the proxy aborts P's hold, with the token.
	y := newAuthCluster(t, fmt.Errorf("load: %w", backend.ErrKVLoad))
	checkRefused502(t, openaitest.Send(t, "POST", y.srv.URL+openaitest.CompletionsPath, `{"prompt":"xyz","max_tokens":3}`, client...))
	for _, c := range []*authCluster{x, y} {
		c.srv.Close()
		c.proxy.Close() // waits for the abort
	}

	if n, m := len(x.p.Requests()), len(x.d.Requests()); n != 2 || m != 2 {
		t.Errorf("P ran %d, D %d generations; want 2 each", n, m)
	}
	if n, m := len(y.p.Requests()), len(y.d.Requests()); n != 1 || m != 1 {
		t.Errorf("failing decode: P ran %d, D %d generations; want 1 each", n, m)
	}
	if a := y.p.AbortCalls(); len(a) != 1 || a[0].RemoteRequestID == "" {
		t.Errorf("aborts %+v, want one", a)
	}
	seen := map[string]int{}
	for _, u := range append(x.upstream(), y.upstream()...) {
		seen[u.method+" "+u.path]++
		if !reflect.DeepEqual(u.internal, []string{openaitest.InternalToken}) || len(u.auth) != 0 {
			t.Errorf("%s %s reached an instance with %s %q and Authorization %q; want the token and no Authorization",
				u.method, u.path, openai.HeaderInternal, u.internal, u.auth)
		}
	}
	want := map[string]int{"POST " + openaitest.CompletionsPath: 4, "POST " + openaitest.ChatPath: 2, "GET /v1/models": 1, "GET /health": 2, "POST /v1/kv/abort": 1}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("instances received %v, want %v", seen, want)
	}
}

func checkRefused502(t *testing.T, resp *http.Response) {
	t.Helper()
	if e := openaitest.DecodeError(t, resp, http.StatusBadGateway); e.Error.Code != "kv_load_failed" {
		t.Errorf("error %+v", e.Error)
	}
}

// A proxy without the token cannot use instances that require it: the
// instances' 403 reaches the client, and P held nothing.
func TestProxyWithoutTokenRefused(t *testing.T) {
	p := &openaitest.Backend{Name: "p0", Role: backend.RolePrefill}
	d := &openaitest.Backend{Name: "d0", Role: backend.RoleDecode}
	o := openai.HandlerOptions{InternalToken: openaitest.InternalToken}
	proxy, err := NewWithOptions([]string{openaitest.ServeWith(t, p, o).URL}, []string{openaitest.ServeWith(t, d, o).URL},
		Options{HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	e := openaitest.DecodeError(t, openaitest.Send(t, "POST", srv.URL+openaitest.CompletionsPath, `{"prompt":"abc"}`), http.StatusForbidden)
	if e.Error.Code != "internal_only" || e.Error.Param != "kv_transfer_params" {
		t.Errorf("error %+v", e.Error)
	}
	if n, m := len(p.Requests()), len(d.Requests()); n != 0 || m != 0 {
		t.Errorf("P ran %d, D %d generations", n, m)
	}
}

// Clients must not inject kv_transfer_params, under any spelling the
// instances would decode, null included: 400 at the proxy, nothing sent
// upstream.
func TestProxyRefusesClientKV(t *testing.T) {
	x := newAuthCluster(t, nil)
	client := []string{"Authorization", "Bearer " + openaitest.Key1}
	victim := openaitest.MustJSON(t, openaitest.KV("p0", "victim", 4))
	for _, c := range []struct{ name, path, body string }{
		{"decode params", openaitest.CompletionsPath, `{"prompt":"abc","kv_transfer_params":` + victim + `}`},
		{"do_remote_decode", openaitest.CompletionsPath, `{"prompt":"abc","kv_transfer_params":{"do_remote_decode":true}}`},
		{"policy only", openaitest.ChatPath, `{` + openaitest.ChatMessages + `,"kv_transfer_params":{"kv_load_failure_policy":"recompute"}}`},
		{"empty", openaitest.CompletionsPath, `{"prompt":"abc","kv_transfer_params":{}}`},
		{"null", openaitest.CompletionsPath, `{"prompt":"abc","kv_transfer_params":null}`},
		{"upper case", openaitest.CompletionsPath, `{"prompt":"abc","KV_TRANSFER_PARAMS":` + victim + `}`},
		{"kelvin sign", openaitest.CompletionsPath, `{"prompt":"abc","\u212av_transfer_params":` + victim + `}`},
		{"kelvin sign null", openaitest.CompletionsPath, `{"prompt":"abc","\u212av_transfer_params":null}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := openaitest.CheckRefused(t, openaitest.Send(t, "POST", x.srv.URL+c.path, c.body, client...), http.StatusBadRequest,
				"internal_only", "kv_transfer_params")
			if msg := fmt.Sprint(e.Error["message"]); !strings.Contains(msg, "must not carry them") {
				t.Errorf("message %q", msg)
			}
		})
	}
	x.srv.Close()
	x.proxy.Close()
	if up := x.upstream(); len(up) != 0 {
		t.Errorf("refused requests reached the instances: %+v", up)
	}
}

// The proxy's own fields win over other spellings a client sends: P sees
// max_tokens 1, stream false, do_remote_decode, whatever the client's
// "MAX_TOKENS", "max_tokenſ" (U+017F folds to s) or "ſtream".
func TestProxyOverridesOtherSpellings(t *testing.T) {
	x := newProxyFixture(t, 1, 1)
	for _, c := range []struct{ path, body, prompt string }{
		{openaitest.CompletionsPath, `{"prompt":"abc","max_tokens":3,"MAX_TOKENS":3,"max_token\u017f":3,"\u017ftream":true,"Stream":true}`, "abc"},
		{openaitest.ChatPath, `{` + openaitest.ChatMessages + `,"max_completion_tokens":3,"Max_Completion_Tokens":3,"max_completion_token\u017f":3,"\u017ftream":true}`,
			"user: a\nassistant: "},
	} {
		resp := openaitest.Post(t, x.proxy.URL+c.path, c.body)
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%s: want D's stream, got status %d %q", c.body, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		openaitest.ReadStream(t, resp)
	}
	p, d := x.ps[0].Requests(), x.ds[0].Requests()
	if len(p) != 2 || len(d) != 2 {
		t.Fatalf("P saw %d, D %d requests", len(p), len(d))
	}
	for i := range p {
		if p[i].MaxTokens != 1 || !reflect.DeepEqual(p[i].KV, &backend.KVTransferParams{DoRemoteDecode: true}) || d[i].MaxTokens != 3 {
			t.Errorf("request %d: P max_tokens %d kv %+v, D max_tokens %d", i, p[i].MaxTokens, p[i].KV, d[i].MaxTokens)
		}
	}
}
