package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
)

// post sends body to url with the given headers; it returns the status
// and the decoded JSON answer.
func post(t *testing.T, url string, headers map[string]string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %d %q: %v", url, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, out
}

func errorOf(ans map[string]any) (param, code, msg string) {
	e, _ := ans["error"].(map[string]any)
	param, _ = e["param"].(string)
	code, _ = e["code"].(string)
	msg, _ = e["message"].(string)
	return
}

// TestSecureCluster runs P, two Ds and a proxy as processes with the
// cluster key, CURVE and API keys on, and tries what a hostile client
// would: every attempt is refused with its exact status, the genuine path
// still answers as the monolithic model, and P holds nothing afterwards.
func TestSecureCluster(t *testing.T) {
	bin := buildCLI(t)
	dir, pk, dk, xk, err := demoKeys(false)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	apiKey := "test-client-key-0123456789"
	keyFile := filepath.Join(dir, "api.keys")
	if err := os.WriteFile(keyFile, []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stranger, err := zmqchan.GenerateCurveKey() // a D whose key P does not allow
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stranger.key"), []byte(stranger.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ck, err := grant.LoadKey(filepath.Join(dir, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	const model = "qwen3.5-0.8b"
	base := []string{"--model", model, "--seed", "5", "--api-key-file", keyFile}
	f := &fleet{t: t, bin: bin}
	defer f.stopAll()
	p := newInstance(t, "P", append(append([]string{"serve", "--role", "prefill", "--lease-ttl", "5s"}, base...), pk...)...)
	d := newInstance(t, "D", append(append([]string{"serve", "--role", "decode"}, base...), dk...)...)
	strangerArgs := append([]string{"serve", "--role", "decode"}, base...)
	strangerArgs = append(strangerArgs, "--cluster-key-file", filepath.Join(dir, "cluster.key"), "--handshake-key", filepath.Join(dir, "stranger.key"),
		"--handshake-server-pub", filepath.Join(dir, "prefill.pub"))
	d2 := newInstance(t, "D2", strangerArgs...)
	f.ps, f.ds = []*instance{p}, []*instance{d, d2}
	for _, in := range []*instance{p, d, d2} {
		f.start(in)
	}
	f.proxy = newInstance(t, "proxy", append([]string{"proxy", "--prefill", p.url, "--decode", d.url, "--api-key-file", keyFile}, xk...)...)
	f.start(f.proxy)

	ref := referenceModel(t, model, 5)
	bearer := map[string]string{"Authorization": "Bearer " + apiKey}
	internal := map[string]string{openai.HeaderInternal: ck.InternalToken()}
	chatBody := func(content string, kv any) map[string]any {
		b := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": content}}, "max_tokens": 4}
		if kv != nil {
			b["kv_transfer_params"] = kv
		}
		return b
	}
	answer := func(ans map[string]any) string {
		ch, _ := ans["choices"].([]any)
		if len(ch) == 0 {
			return ""
		}
		msg, _ := ch[0].(map[string]any)["message"].(map[string]any)
		s, _ := msg["content"].(string)
		return s
	}
	// The genuine path.
	st, ans := post(t, f.proxy.url+"/v1/chat/completions", bearer, chatBody("a secure hello", nil))
	want, _ := monolithicAnswer(ref, "a secure hello", 4)
	if st != 200 || answer(ans) != want {
		t.Fatalf("through the proxy: %d %v, want 200 %q", st, ans, want)
	}
	if st, ans := post(t, f.proxy.url+"/v1/chat/completions", nil, chatBody("no key", nil)); st != 401 {
		t.Errorf("no API key: %d %v", st, ans)
	}
	if st, ans := post(t, f.proxy.url+"/v1/chat/completions", map[string]string{"Authorization": "Bearer wrong-key-0123456789"}, chatBody("bad key", nil)); st != 401 {
		t.Errorf("wrong API key: %d %v", st, ans)
	}
	// P's params for a prompt, asked for as the proxy would.
	prefill := func(content string) map[string]any {
		t.Helper()
		b := chatBody(content, map[string]any{"do_remote_decode": true})
		b["max_tokens"] = 1
		st, ans := post(t, p.url+"/v1/chat/completions", internal, b)
		kv, _ := ans["kv_transfer_params"].(map[string]any)
		if st != 200 || kv == nil {
			t.Fatalf("prefill: %d %v", st, ans)
		}
		return kv
	}
	if st, ans := post(t, p.url+"/v1/chat/completions", bearer, chatBody("x", map[string]any{"do_remote_decode": true})); st != 403 {
		t.Errorf("do_remote_decode with an API key but no internal token: %d %v", st, ans)
	}
	victim := prefill("the victim's prompt")
	if st, ans := post(t, d.url+"/v1/chat/completions", bearer, chatBody("the victim's prompt", victim)); st != 403 {
		t.Errorf("params straight to D without the internal token: %d %v", st, ans)
	}
	forged := map[string]any{}
	for k, v := range victim {
		forged[k] = v
	}
	forged["remote_block_ids"] = [][]int{{1}, {2}, {3}, {4}}
	st, ans = post(t, d.url+"/v1/chat/completions", internal, chatBody("the victim's prompt", forged))
	if param, code, _ := errorOf(ans); st != 400 || param != "kv_transfer_params.remote_block_ids" || code != "invalid_grant" {
		t.Errorf("forged block ids: %d %v", st, ans)
	}
	st, ans = post(t, d.url+"/v1/chat/completions", internal, chatBody("the attacker's prompt", victim))
	if param, _, _ := errorOf(ans); st != 400 || param != "prompt" {
		t.Errorf("the victim's params with another prompt: %d %v", st, ans)
	}
	// The victim's own request still works (nothing was released), once.
	st, ans = post(t, d.url+"/v1/chat/completions", internal, chatBody("the victim's prompt", victim))
	want, _ = monolithicAnswer(ref, "the victim's prompt", 4)
	if st != 200 || answer(ans) != want {
		t.Fatalf("the victim's genuine params: %d %v, want %q", st, ans, want)
	}
	if st, ans := post(t, d.url+"/v1/chat/completions", internal, chatBody("the victim's prompt", victim)); st != 409 {
		t.Errorf("replayed params: %d %v", st, ans)
	}
	// A D whose CURVE key P does not allow gets no metadata.
	st, ans = post(t, d2.url+"/v1/chat/completions", internal, chatBody("to the stranger", prefill("to the stranger")))
	if _, _, msg := errorOf(ans); st != 502 || !strings.Contains(msg, "allow-list") {
		t.Errorf("a D that is not on the allow-list: %d %v", st, ans)
	}
	// P holds nothing once the stranger's abort (or the lease) freed its
	// request: poll its metrics.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(p.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		used := 0.0
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "hybridxfer_pool_blocks_used{") {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				used += v
			}
		}
		if used == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("P still uses %v blocks", used)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
