package serve

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	testKey1     = "sk-test-key-one-0123456789"
	testKey2     = "sk-test-key-two-0123456789"
	testInternal = "internal-token-0123456789abcdef"
)

func writeKeyFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return path
}

func TestLoadAPIKeys(t *testing.T) {
	good := "# production keys\n\n  " + testKey1 + "  \r\n#" + "old-key-commented-out-000\n" + testKey2 + "\n" + testKey1 + "\n"
	path := writeKeyFile(t, good, 0o600)
	keys, err := LoadAPIKeys(path)
	if want := []string{testKey1, testKey2}; err != nil || !reflect.DeepEqual(keys, want) {
		t.Fatalf("LoadAPIKeys = %q, %v; want %q", keys, err, want)
	}
	if keys, err := LoadAPIKeys(writeKeyFile(t, testKey1, 0o400)); err != nil || len(keys) != 1 {
		t.Errorf("mode 0400: %q, %v", keys, err)
	}

	dir := t.TempDir()
	cases := []struct {
		name, content string
		mode          os.FileMode
		want          []string // in the error
	}{
		{"empty", "", 0o600, []string{"holds no key"}},
		{"comments only", "# a\n\n   \n#" + testKey1 + "\n", 0o600, []string{"holds no key"}},
		{"short key", testKey1 + "\nshort-key-15chr\n", 0o600, []string{"line 2", "15 characters", "at least 16"}},
		{"space in key", "sk-test key-with-a-space-0\n", 0o600, []string{"line 1", "visible ASCII"}},
		{"group readable", testKey1 + "\n", 0o640, []string{"0640", "chmod 600"}},
		{"world readable", testKey1 + "\n", 0o604, []string{"0604", "chmod 600"}},
		{"group writable", testKey1 + "\n", 0o620, []string{"0620", "chmod 600"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeKeyFile(t, c.content, c.mode)
			keys, err := LoadAPIKeys(path)
			if err == nil {
				t.Fatalf("LoadAPIKeys accepted it: %q", keys)
			}
			for _, w := range append(c.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "sk-test") {
				t.Errorf("error %q shows a key", err)
			}
		})
	}
	if _, err := LoadAPIKeys(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAPIKeys(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

// rawError is an error response kept as JSON, to check "param": null.
type rawError struct {
	Error map[string]any `json:"error"`
}

// checkRefused asserts status, code and param (nil: JSON null) of an
// error response.
func checkRefused(t *testing.T, resp *http.Response, status int, code string, param any) rawError {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e rawError
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
func send(t *testing.T, method, url, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func newAuthAPI(t *testing.T, f Backend, o HandlerOptions) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "auth_test_total", Help: "t"}))
	srv := httptest.NewServer(NewHandlerWithOptions(f, reg, nil, o))
	t.Cleanup(srv.Close)
	return srv
}

// With API keys, every request but /health and /metrics needs one; the
// refused ones reach nothing.
func TestAPIKeys(t *testing.T) {
	f := &fakeBackend{}
	srv := newAuthAPI(t, f, HandlerOptions{APIKeys: []string{testKey1, testKey2}})
	const cmpl = `{"prompt":"a","max_tokens":2}`
	refused := []struct {
		name, method, path, body string
		hdr                      []string
	}{
		{"no header", "POST", cmplPath, cmpl, nil},
		{"wrong key", "POST", cmplPath, cmpl, []string{"Authorization", "Bearer sk-test-key-three-012345"}},
		{"prefix of a key", "POST", cmplPath, cmpl, []string{"Authorization", "Bearer " + testKey1[:len(testKey1)-1]}},
		{"key plus a byte", "POST", cmplPath, cmpl, []string{"Authorization", "Bearer " + testKey1 + "x"}},
		{"no scheme", "POST", cmplPath, cmpl, []string{"Authorization", testKey1}},
		{"basic", "POST", cmplPath, cmpl, []string{"Authorization", "Basic " + testKey1}},
		{"empty bearer", "POST", cmplPath, cmpl, []string{"Authorization", "Bearer "}},
		{"two headers", "POST", cmplPath, cmpl, []string{"Authorization", "Bearer " + testKey1, "Authorization", "Bearer " + testKey2}},
		{"key as internal token", "POST", cmplPath, cmpl, []string{HeaderInternal, testKey1}},
		{"chat", "POST", chatPath, `{` + chatMsg + `}`, nil},
		{"models", "GET", "/v1/models", "", nil},
		{"abort", "POST", "/v1/kv/abort", `{"remote_request_id":"r1"}`, []string{"Authorization", "Bearer nope"}},
		{"unknown path", "GET", "/v1/other", "", nil},
		{"wrong method", "GET", cmplPath, "", nil},
		{"invalid body", "POST", cmplPath, `{"prompt":`, nil},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			e := checkRefused(t, send(t, c.method, srv.URL+c.path, c.body, c.hdr...), http.StatusUnauthorized, "invalid_api_key", nil)
			if msg := fmt.Sprint(e.Error["message"]); strings.Contains(msg, "sk-test") {
				t.Errorf("message %q shows a key", msg)
			}
		})
	}
	if n, a := len(f.requests()), len(f.abortCalls()); n != 0 || a != 0 {
		t.Fatalf("refused requests reached the backend: %d generations, %d aborts", n, a)
	}

	for _, auth := range []string{"Bearer " + testKey1, "bearer " + testKey2, "Bearer  " + testKey2 + " "} {
		var r completionResponse
		apiDecode(t, send(t, "POST", srv.URL+cmplPath, cmpl, "Authorization", auth), http.StatusOK, &r)
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d generations after 3 authenticated requests", n)
	}
	resp := send(t, "POST", srv.URL+"/v1/kv/abort", `{"remote_request_id":"r1"}`, "Authorization", "Bearer "+testKey1)
	apiDecode(t, resp, http.StatusOK, &map[string]bool{})
	// Open without a key: load balancers and Prometheus.
	for _, path := range []string{"/health", "/metrics"} {
		if resp := send(t, "GET", srv.URL+path, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a key: status %d", path, resp.StatusCode)
		}
	}
}

// With an internal token, kv_transfer_params and aborts need it, and it
// stands in for an API key.
func TestInternalToken(t *testing.T) {
	pKV := `{"prompt":"a","max_tokens":1,"kv_transfer_params":{"do_remote_decode":true}}`
	dKV := `{"prompt":"a","max_tokens":2,"kv_transfer_params":` + mustJSON(t, fakeKV("p0", "r1", 1)) + `}`
	chatKV := `{` + chatMsg + `,"kv_transfer_params":{"do_remote_decode":true}}`
	abort := `{"remote_request_id":"r1","remote_grant":"g"}`
	for _, keys := range [][]string{nil, {testKey1}} {
		t.Run(fmt.Sprintf("keys=%d", len(keys)), func(t *testing.T) {
			p := &fakeBackend{name: "p0", role: RolePrefill}
			d := &fakeBackend{name: "d0", role: RoleDecode}
			o := HandlerOptions{APIKeys: keys, InternalToken: testInternal}
			pSrv, dSrv := newAuthAPI(t, p, o), newAuthAPI(t, d, o)
			key := []string{"Authorization", "Bearer " + testKey1} // a client's key: not enough
			refused := []struct {
				name, url, path, body string
				hdr                   []string
				param                 any
			}{
				{"prefill params", pSrv.URL, cmplPath, pKV, key, "kv_transfer_params"},
				{"prefill params chat", pSrv.URL, chatPath, chatKV, key, "kv_transfer_params"},
				{"decode params", dSrv.URL, cmplPath, dKV, key, "kv_transfer_params"},
				{"empty params", dSrv.URL, cmplPath, `{"prompt":"a","kv_transfer_params":{}}`, key, "kv_transfer_params"},
				{"other spelling", pSrv.URL, cmplPath, `{"prompt":"a","KV_Transfer_Params":{"do_remote_decode":true}}`, key, "kv_transfer_params"},
				{"wrong token", pSrv.URL, cmplPath, pKV, append([]string{HeaderInternal, testInternal + "x"}, key...), "kv_transfer_params"},
				{"token prefix", pSrv.URL, cmplPath, pKV, append([]string{HeaderInternal, testInternal[:8]}, key...), "kv_transfer_params"},
				{"two tokens", pSrv.URL, cmplPath, pKV, append([]string{HeaderInternal, testInternal, HeaderInternal, testInternal}, key...), "kv_transfer_params"},
				{"abort", pSrv.URL, "/v1/kv/abort", abort, key, nil},
				{"abort wrong token", pSrv.URL, "/v1/kv/abort", abort, append([]string{HeaderInternal, "x"}, key...), nil},
			}
			for _, c := range refused {
				t.Run(c.name, func(t *testing.T) {
					e := checkRefused(t, send(t, "POST", c.url+c.path, c.body, c.hdr...), http.StatusForbidden, "internal_only", c.param)
					if msg := fmt.Sprint(e.Error["message"]); !strings.Contains(msg, HeaderInternal) {
						t.Errorf("message %q does not name %s", msg, HeaderInternal)
					}
				})
			}
			if n, m, a := len(p.requests()), len(d.requests()), len(p.abortCalls()); n != 0 || m != 0 || a != 0 {
				t.Fatalf("refused requests reached the backends: P %d, D %d generations, %d aborts", n, m, a)
			}

			// The token alone passes: no API key needed.
			tok := []string{HeaderInternal, testInternal}
			var r completionResponse
			apiDecode(t, send(t, "POST", pSrv.URL+cmplPath, pKV, tok...), http.StatusOK, &r)
			if r.KV == nil || r.KV.RemoteRequestID == "" {
				t.Errorf("P answered %+v", r)
			}
			apiDecode(t, send(t, "POST", dSrv.URL+cmplPath, dKV, tok...), http.StatusOK, &r)
			apiDecode(t, send(t, "POST", pSrv.URL+"/v1/kv/abort", abort, tok...), http.StatusOK, &map[string]bool{})
			apiDecode(t, send(t, "GET", pSrv.URL+"/v1/models", "", tok...), http.StatusOK, &map[string]any{})
			if n, m, a := len(p.requests()), len(d.requests()), len(p.abortCalls()); n != 1 || m != 1 || a != 1 {
				t.Errorf("with the token: P %d, D %d generations, %d aborts; want 1 each", n, m, a)
			}

			// A plain request needs no token; kv_transfer_params null is absent.
			both := &fakeBackend{}
			srv := newAuthAPI(t, both, o)
			for _, body := range []string{`{"prompt":"a"}`, `{"prompt":"a","kv_transfer_params":null}`} {
				apiDecode(t, send(t, "POST", srv.URL+cmplPath, body, key...), http.StatusOK, &r)
			}
			if reqs := both.requests(); len(reqs) != 2 || reqs[0].KV != nil || reqs[1].KV != nil {
				t.Errorf("plain requests: %+v", reqs)
			}
			if len(keys) > 0 {
				checkRefused(t, send(t, "POST", srv.URL+cmplPath, `{"prompt":"a"}`), http.StatusUnauthorized, "invalid_api_key", nil)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

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
		l.reqs = append(l.reqs, upstreamReq{r.Method, r.URL.Path, r.Header.Values(HeaderInternal), r.Header.Values("Authorization")})
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
	p, d       *fakeBackend
	pLog, dLog *headerLog
	proxy      *Proxy
	srv        *httptest.Server
}

// dErr, when not nil, fails every decode.
func newAuthCluster(t *testing.T, dErr error) *authCluster {
	t.Helper()
	x := &authCluster{p: &fakeBackend{name: "p0", role: RolePrefill}, d: &fakeBackend{name: "d0", role: RoleDecode, err: dErr},
		pLog: &headerLog{}, dLog: &headerLog{}}
	inst := HandlerOptions{APIKeys: []string{testKey2}, InternalToken: testInternal}
	pSrv := httptest.NewServer(x.pLog.wrap(NewHandlerWithOptions(x.p, nil, nil, inst)))
	t.Cleanup(pSrv.Close)
	dSrv := httptest.NewServer(x.dLog.wrap(NewHandlerWithOptions(x.d, nil, nil, inst)))
	t.Cleanup(dSrv.Close)
	var err error
	x.proxy, err = NewProxyWithOptions([]string{pSrv.URL}, []string{dSrv.URL}, ProxyOptions{
		HealthInterval: time.Hour, APIKeys: []string{testKey1}, InternalToken: testInternal})
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
	client := []string{"Authorization", "Bearer " + testKey1}

	// Refused at the proxy: nothing reaches an instance.
	for _, c := range []struct {
		name string
		hdr  []string
	}{
		{"no key", nil},
		{"wrong key", []string{"Authorization", "Bearer sk-test-key-three-012345"}},
		{"an instance's key", []string{"Authorization", "Bearer " + testKey2}},
		{"the internal token", []string{HeaderInternal, testInternal}},
		{"internal token as key", []string{"Authorization", "Bearer " + testInternal}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkRefused(t, send(t, "POST", x.srv.URL+cmplPath, `{"prompt":"abc","max_tokens":3}`, c.hdr...),
				http.StatusUnauthorized, "invalid_api_key", nil)
			checkRefused(t, send(t, "GET", x.srv.URL+"/v1/models", "", c.hdr...), http.StatusUnauthorized, "invalid_api_key", nil)
		})
	}
	if up := x.upstream(); len(up) != 0 {
		t.Fatalf("refused client requests reached the instances: %+v", up)
	}

	// Accepted: both legs, a stream, /v1/models, /health.
	var r completionResponse
	apiDecode(t, send(t, "POST", x.srv.URL+cmplPath, `{"prompt":"abc","max_tokens":3}`, client...), http.StatusOK, &r)
	if want := fakeText("abc", 3); len(r.Choices) != 1 || r.Choices[0].Text != want {
		t.Errorf("answer %+v, want %q", r, want)
	}
	readStream(t, send(t, "POST", x.srv.URL+chatPath, `{`+chatMsg+`,"stream":true}`, client...))
	apiDecode(t, send(t, "GET", x.srv.URL+"/v1/models", "", client...), http.StatusOK, &map[string]any{})
	if resp := send(t, "GET", x.srv.URL+"/health", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("proxy /health without a key: status %d", resp.StatusCode)
	}
	// A failed decode leg: the proxy aborts P's hold, with the token.
	y := newAuthCluster(t, fmt.Errorf("load: %w", ErrKVLoad))
	checkRefused502(t, send(t, "POST", y.srv.URL+cmplPath, `{"prompt":"xyz","max_tokens":3}`, client...))
	for _, c := range []*authCluster{x, y} {
		c.srv.Close()
		c.proxy.Close() // waits for the abort
	}

	if n, m := len(x.p.requests()), len(x.d.requests()); n != 2 || m != 2 {
		t.Errorf("P ran %d, D %d generations; want 2 each", n, m)
	}
	if n, m := len(y.p.requests()), len(y.d.requests()); n != 1 || m != 1 {
		t.Errorf("failing decode: P ran %d, D %d generations; want 1 each", n, m)
	}
	if a := y.p.abortCalls(); len(a) != 1 || a[0].RemoteRequestID == "" {
		t.Errorf("aborts %+v, want one", a)
	}
	seen := map[string]int{}
	for _, u := range append(x.upstream(), y.upstream()...) {
		seen[u.method+" "+u.path]++
		if !reflect.DeepEqual(u.internal, []string{testInternal}) || len(u.auth) != 0 {
			t.Errorf("%s %s reached an instance with %s %q and Authorization %q; want the token and no Authorization",
				u.method, u.path, HeaderInternal, u.internal, u.auth)
		}
	}
	want := map[string]int{"POST " + cmplPath: 4, "POST " + chatPath: 2, "GET /v1/models": 1, "GET /health": 2, "POST /v1/kv/abort": 1}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("instances received %v, want %v", seen, want)
	}
}

func checkRefused502(t *testing.T, resp *http.Response) {
	t.Helper()
	if e := apiDecodeError(t, resp, http.StatusBadGateway); e.Error.Code != "kv_load_failed" {
		t.Errorf("error %+v", e.Error)
	}
}

// A proxy without the token cannot use instances that require it: the
// instances' 403 reaches the client, and P held nothing.
func TestProxyWithoutTokenRefused(t *testing.T) {
	p := &fakeBackend{name: "p0", role: RolePrefill}
	d := &fakeBackend{name: "d0", role: RoleDecode}
	o := HandlerOptions{InternalToken: testInternal}
	proxy, err := NewProxyWithOptions([]string{newAuthAPI(t, p, o).URL}, []string{newAuthAPI(t, d, o).URL},
		ProxyOptions{HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	e := apiDecodeError(t, send(t, "POST", srv.URL+cmplPath, `{"prompt":"abc"}`), http.StatusForbidden)
	if e.Error.Code != "internal_only" || e.Error.Param != "kv_transfer_params" {
		t.Errorf("error %+v", e.Error)
	}
	if n, m := len(p.requests()), len(d.requests()); n != 0 || m != 0 {
		t.Errorf("P ran %d, D %d generations", n, m)
	}
}

// Clients must not inject kv_transfer_params, under any spelling the
// instances would decode, null included: 400 at the proxy, nothing sent
// upstream.
func TestProxyRefusesClientKV(t *testing.T) {
	x := newAuthCluster(t, nil)
	client := []string{"Authorization", "Bearer " + testKey1}
	victim := mustJSON(t, fakeKV("p0", "victim", 4))
	for _, c := range []struct{ name, path, body string }{
		{"decode params", cmplPath, `{"prompt":"abc","kv_transfer_params":` + victim + `}`},
		{"do_remote_decode", cmplPath, `{"prompt":"abc","kv_transfer_params":{"do_remote_decode":true}}`},
		{"policy only", chatPath, `{` + chatMsg + `,"kv_transfer_params":{"kv_load_failure_policy":"recompute"}}`},
		{"empty", cmplPath, `{"prompt":"abc","kv_transfer_params":{}}`},
		{"null", cmplPath, `{"prompt":"abc","kv_transfer_params":null}`},
		{"upper case", cmplPath, `{"prompt":"abc","KV_TRANSFER_PARAMS":` + victim + `}`},
		{"kelvin sign", cmplPath, `{"prompt":"abc","\u212av_transfer_params":` + victim + `}`},
		{"kelvin sign null", cmplPath, `{"prompt":"abc","\u212av_transfer_params":null}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := checkRefused(t, send(t, "POST", x.srv.URL+c.path, c.body, client...), http.StatusBadRequest,
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
		{cmplPath, `{"prompt":"abc","max_tokens":3,"MAX_TOKENS":3,"max_token\u017f":3,"\u017ftream":true,"Stream":true}`, "abc"},
		{chatPath, `{` + chatMsg + `,"max_completion_tokens":3,"Max_Completion_Tokens":3,"max_completion_token\u017f":3,"\u017ftream":true}`,
			"user: a\nassistant: "},
	} {
		resp := apiPost(t, x.proxy.URL+c.path, c.body)
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%s: want D's stream, got status %d %q", c.body, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		readStream(t, resp)
	}
	p, d := x.ps[0].requests(), x.ds[0].requests()
	if len(p) != 2 || len(d) != 2 {
		t.Fatalf("P saw %d, D %d requests", len(p), len(d))
	}
	for i := range p {
		if p[i].MaxTokens != 1 || !reflect.DeepEqual(p[i].KV, &KVTransferParams{DoRemoteDecode: true}) || d[i].MaxTokens != 3 {
			t.Errorf("request %d: P max_tokens %d kv %+v, D max_tokens %d", i, p[i].MaxTokens, p[i].KV, d[i].MaxTokens)
		}
	}
}
