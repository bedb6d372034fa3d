package openai_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"
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
	good := "# production keys\n\n  " + openaitest.Key1 + "  \r\n#" + "old-key-commented-out-000\n" + openaitest.Key2 + "\n" + openaitest.Key1 + "\n"
	path := writeKeyFile(t, good, 0o600)
	keys, err := openai.LoadAPIKeys(path)
	if want := []string{openaitest.Key1, openaitest.Key2}; err != nil || !reflect.DeepEqual(keys, want) {
		t.Fatalf("LoadAPIKeys = %q, %v; want %q", keys, err, want)
	}
	if keys, err := openai.LoadAPIKeys(writeKeyFile(t, openaitest.Key1, 0o400)); err != nil || len(keys) != 1 {
		t.Errorf("mode 0400: %q, %v", keys, err)
	}

	dir := t.TempDir()
	cases := []struct {
		name, content string
		mode          os.FileMode
		want          []string // in the error
	}{
		{"empty", "", 0o600, []string{"holds no key"}},
		{"comments only", "# a\n\n   \n#" + openaitest.Key1 + "\n", 0o600, []string{"holds no key"}},
		{"short key", openaitest.Key1 + "\nshort-key-15chr\n", 0o600, []string{"line 2", "15 characters", "at least 16"}},
		{"space in key", "sk-test key-with-a-space-0\n", 0o600, []string{"line 1", "visible ASCII"}},
		{"group readable", openaitest.Key1 + "\n", 0o640, []string{"0640", "chmod 600"}},
		{"world readable", openaitest.Key1 + "\n", 0o604, []string{"0604", "chmod 600"}},
		{"group writable", openaitest.Key1 + "\n", 0o620, []string{"0620", "chmod 600"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeKeyFile(t, c.content, c.mode)
			keys, err := openai.LoadAPIKeys(path)
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
	if _, err := openai.LoadAPIKeys(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := openai.LoadAPIKeys(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

// With API keys, every request but /health and /metrics needs one; the
// refused ones reach nothing.
func TestAPIKeys(t *testing.T) {
	f := &openaitest.Backend{}
	srv := openaitest.ServeWith(t, f, openai.HandlerOptions{APIKeys: []string{openaitest.Key1, openaitest.Key2}})
	const cmpl = `{"prompt":"a","max_tokens":2}`
	refused := []struct {
		name, method, path, body string
		hdr                      []string
	}{
		{"no header", "POST", openaitest.CompletionsPath, cmpl, nil},
		{"wrong key", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", "Bearer sk-test-key-three-012345"}},
		{"prefix of a key", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", "Bearer " + openaitest.Key1[:len(openaitest.Key1)-1]}},
		{"key plus a byte", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", "Bearer " + openaitest.Key1 + "x"}},
		{"no scheme", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", openaitest.Key1}},
		{"basic", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", "Basic " + openaitest.Key1}},
		{"empty bearer", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", "Bearer "}},
		{"two headers", "POST", openaitest.CompletionsPath, cmpl, []string{"Authorization", "Bearer " + openaitest.Key1, "Authorization", "Bearer " + openaitest.Key2}},
		{"key as internal token", "POST", openaitest.CompletionsPath, cmpl, []string{openai.HeaderInternal, openaitest.Key1}},
		{"chat", "POST", openaitest.ChatPath, `{` + openaitest.ChatMessages + `}`, nil},
		{"models", "GET", "/v1/models", "", nil},
		{"abort", "POST", "/v1/kv/abort", `{"remote_request_id":"r1"}`, []string{"Authorization", "Bearer nope"}},
		{"unknown path", "GET", "/v1/other", "", nil},
		{"wrong method", "GET", openaitest.CompletionsPath, "", nil},
		{"invalid body", "POST", openaitest.CompletionsPath, `{"prompt":`, nil},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			e := openaitest.CheckRefused(t, openaitest.Send(t, c.method, srv.URL+c.path, c.body, c.hdr...), http.StatusUnauthorized, "invalid_api_key", nil)
			if msg := fmt.Sprint(e.Error["message"]); strings.Contains(msg, "sk-test") {
				t.Errorf("message %q shows a key", msg)
			}
		})
	}
	if n, a := len(f.Requests()), len(f.AbortCalls()); n != 0 || a != 0 {
		t.Fatalf("refused requests reached the backend: %d generations, %d aborts", n, a)
	}

	for _, auth := range []string{"Bearer " + openaitest.Key1, "bearer " + openaitest.Key2, "Bearer  " + openaitest.Key2 + " "} {
		var r openaitest.CompletionResponse
		openaitest.Decode(t, openaitest.Send(t, "POST", srv.URL+openaitest.CompletionsPath, cmpl, "Authorization", auth), http.StatusOK, &r)
	}
	if n := len(f.Requests()); n != 3 {
		t.Errorf("%d generations after 3 authenticated requests", n)
	}
	resp := openaitest.Send(t, "POST", srv.URL+"/v1/kv/abort", `{"remote_request_id":"r1"}`, "Authorization", "Bearer "+openaitest.Key1)
	openaitest.Decode(t, resp, http.StatusOK, &map[string]bool{})
	// Open without a key: load balancers and Prometheus.
	for _, path := range []string{"/health", "/metrics"} {
		if resp := openaitest.Send(t, "GET", srv.URL+path, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a key: status %d", path, resp.StatusCode)
		}
	}
}

// With an internal token, kv_transfer_params and aborts need it, and it
// stands in for an API key.
func TestInternalToken(t *testing.T) {
	pKV := `{"prompt":"a","max_tokens":1,"kv_transfer_params":{"do_remote_decode":true}}`
	dKV := `{"prompt":"a","max_tokens":2,"kv_transfer_params":` + openaitest.MustJSON(t, openaitest.KV("p0", "r1", 1)) + `}`
	chatKV := `{` + openaitest.ChatMessages + `,"kv_transfer_params":{"do_remote_decode":true}}`
	abort := `{"remote_request_id":"r1","remote_grant":"g"}`
	for _, keys := range [][]string{nil, {openaitest.Key1}} {
		t.Run(fmt.Sprintf("keys=%d", len(keys)), func(t *testing.T) {
			p := &openaitest.Backend{Name: "p0", Role: backend.RolePrefill}
			d := &openaitest.Backend{Name: "d0", Role: backend.RoleDecode}
			o := openai.HandlerOptions{APIKeys: keys, InternalToken: openaitest.InternalToken}
			pSrv, dSrv := openaitest.ServeWith(t, p, o), openaitest.ServeWith(t, d, o)
			key := []string{"Authorization", "Bearer " + openaitest.Key1} // a client's key: not enough
			refused := []struct {
				name, url, path, body string
				hdr                   []string
				param                 any
			}{
				{"prefill params", pSrv.URL, openaitest.CompletionsPath, pKV, key, "kv_transfer_params"},
				{"prefill params chat", pSrv.URL, openaitest.ChatPath, chatKV, key, "kv_transfer_params"},
				{"decode params", dSrv.URL, openaitest.CompletionsPath, dKV, key, "kv_transfer_params"},
				{"empty params", dSrv.URL, openaitest.CompletionsPath, `{"prompt":"a","kv_transfer_params":{}}`, key, "kv_transfer_params"},
				{"other spelling", pSrv.URL, openaitest.CompletionsPath, `{"prompt":"a","KV_Transfer_Params":{"do_remote_decode":true}}`, key, "kv_transfer_params"},
				{"wrong token", pSrv.URL, openaitest.CompletionsPath, pKV, append([]string{openai.HeaderInternal, openaitest.InternalToken + "x"}, key...), "kv_transfer_params"},
				{"token prefix", pSrv.URL, openaitest.CompletionsPath, pKV, append([]string{openai.HeaderInternal, openaitest.InternalToken[:8]}, key...), "kv_transfer_params"},
				{"two tokens", pSrv.URL, openaitest.CompletionsPath, pKV, append([]string{openai.HeaderInternal, openaitest.InternalToken, openai.HeaderInternal, openaitest.InternalToken}, key...), "kv_transfer_params"},
				{"abort", pSrv.URL, "/v1/kv/abort", abort, key, nil},
				{"abort wrong token", pSrv.URL, "/v1/kv/abort", abort, append([]string{openai.HeaderInternal, "x"}, key...), nil},
			}
			for _, c := range refused {
				t.Run(c.name, func(t *testing.T) {
					e := openaitest.CheckRefused(t, openaitest.Send(t, "POST", c.url+c.path, c.body, c.hdr...), http.StatusForbidden, "internal_only", c.param)
					if msg := fmt.Sprint(e.Error["message"]); !strings.Contains(msg, openai.HeaderInternal) {
						t.Errorf("message %q does not name %s", msg, openai.HeaderInternal)
					}
				})
			}
			if n, m, a := len(p.Requests()), len(d.Requests()), len(p.AbortCalls()); n != 0 || m != 0 || a != 0 {
				t.Fatalf("refused requests reached the backends: P %d, D %d generations, %d aborts", n, m, a)
			}

			// The token alone passes: no API key needed.
			tok := []string{openai.HeaderInternal, openaitest.InternalToken}
			var r openaitest.CompletionResponse
			openaitest.Decode(t, openaitest.Send(t, "POST", pSrv.URL+openaitest.CompletionsPath, pKV, tok...), http.StatusOK, &r)
			if r.KV == nil || r.KV.RemoteRequestID == "" {
				t.Errorf("P answered %+v", r)
			}
			openaitest.Decode(t, openaitest.Send(t, "POST", dSrv.URL+openaitest.CompletionsPath, dKV, tok...), http.StatusOK, &r)
			openaitest.Decode(t, openaitest.Send(t, "POST", pSrv.URL+"/v1/kv/abort", abort, tok...), http.StatusOK, &map[string]bool{})
			openaitest.Decode(t, openaitest.Send(t, "GET", pSrv.URL+"/v1/models", "", tok...), http.StatusOK, &map[string]any{})
			if n, m, a := len(p.Requests()), len(d.Requests()), len(p.AbortCalls()); n != 1 || m != 1 || a != 1 {
				t.Errorf("with the token: P %d, D %d generations, %d aborts; want 1 each", n, m, a)
			}

			// A plain request needs no token; kv_transfer_params null is absent.
			both := &openaitest.Backend{}
			srv := openaitest.ServeWith(t, both, o)
			for _, body := range []string{`{"prompt":"a"}`, `{"prompt":"a","kv_transfer_params":null}`} {
				openaitest.Decode(t, openaitest.Send(t, "POST", srv.URL+openaitest.CompletionsPath, body, key...), http.StatusOK, &r)
			}
			if reqs := both.Requests(); len(reqs) != 2 || reqs[0].KV != nil || reqs[1].KV != nil {
				t.Errorf("plain requests: %+v", reqs)
			}
			if len(keys) > 0 {
				openaitest.CheckRefused(t, openaitest.Send(t, "POST", srv.URL+openaitest.CompletionsPath, `{"prompt":"a"}`), http.StatusUnauthorized, "invalid_api_key", nil)
			}
		})
	}
}
