package engine

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"
	"github.com/hybridxfer/hybridxfer/proxy"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Prompt tokens + max_tokens above max_model_len is left to the engine
// (the API does not know the limit): a 400 naming max_model_len, and P
// holds nothing.
func TestMaxModelLenIs400(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 1}, func(p, _ *Config) { p.MaxModelLen = 64 })
	srv := httptest.NewServer(openai.NewHandler(x.p, nil, nil))
	defer srv.Close()
	long := strings.Repeat("a", 62)
	body := `{"prompt":"` + long + `","max_tokens":3,"kv_transfer_params":{"do_remote_decode":true}}`
	e := openaitest.DecodeError(t, openaitest.Post(t, srv.URL+openaitest.CompletionsPath, body), http.StatusBadRequest)
	if e.Error.Code != "bad_request" || !strings.Contains(e.Error.Message, "max_model_len") {
		t.Errorf("error %+v, want bad_request naming max_model_len", e.Error)
	}
	// Within the limit it runs (the refusal above was the length).
	body = `{"prompt":"` + long + `","max_tokens":2,"kv_transfer_params":{"do_remote_decode":true}}`
	var r openaitest.CompletionResponse
	openaitest.Decode(t, openaitest.Post(t, srv.URL+openaitest.CompletionsPath, body), http.StatusOK, &r)
	if r.KV == nil || r.KV.RemoteRequestID == "" {
		t.Fatalf("prefill answered %+v", r)
	}
	abort := `{"remote_request_id":"` + r.KV.RemoteRequestID + `","remote_grant":"` + r.KV.RemoteGrant + `"}`
	openaitest.Decode(t, openaitest.Post(t, srv.URL+"/v1/kv/abort", abort), http.StatusOK, &map[string]bool{})
	waitIdle(t, x.p)
}

// With a real prefill engine (lease an hour): a failed decode leg frees
// P's blocks at once, through the abort and P's grant.
func TestProxyAbortFreesEngineHold(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2}, nil)
	pSrv := httptest.NewServer(openai.NewHandler(x.p, nil, nil))
	defer pSrv.Close()
	d := &openaitest.Backend{Name: "d0", Role: backend.RoleDecode, Err: fmt.Errorf("load: %w", backend.ErrKVLoad)}
	proxy, err := proxy.NewWithOptions([]string{pSrv.URL}, []string{openaitest.Serve(t, d).URL}, proxy.Options{HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	openaitest.PostError(t, srv.URL, http.StatusBadGateway)
	if kv := d.Requests()[0].KV; kv.RemoteGrant == "" || kv.RemoteBootID == "" {
		t.Errorf("D got kv %+v: want P's grant and boot id", kv)
	}
	waitIdle(t, x.p)
}
