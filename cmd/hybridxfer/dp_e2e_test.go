package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeDataParallel: one prefill process with --data-parallel-size 2
// serves two engines on port and port+1 (their own handshake ports and
// engine ids), the proxy routes to both ranks as instances, every answer
// equals the monolithic one, both ranks did work, and one SIGTERM drains
// both and exits 0.
func TestServeDataParallel(t *testing.T) {
	bin := buildCLI(t)
	f := &fleet{t: t, bin: bin}
	defer f.stopAll()
	const model, seed = "qwen3.5-27b", 8
	common := []string{"--model", model, "--seed", strconv.Itoa(seed)}
	p := newInstancePorts(t, "P-dp", 2, append([]string{"serve", "--role", "prefill", "--tp", "2", "--data-parallel-size", "2", "--lease-ttl", "3s"}, common...)...)
	f.ps = []*instance{p}
	f.start(p)
	port, _ := strconv.Atoi(p.url[strings.LastIndex(p.url, ":")+1:])
	rank1 := fmt.Sprintf("http://127.0.0.1:%d", port+1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang guard
	defer cancel()
	if err := waitHealthy(ctx, rank1, nil); err != nil {
		t.Fatalf("dp rank 1: %v", err)
	}
	d := newInstance(t, "D", append([]string{"serve", "--role", "decode", "--tp", "1"}, common...)...)
	f.ds = []*instance{d}
	f.start(d)
	f.proxy = newInstance(t, "proxy", "proxy", "--prefill", p.url+","+rank1, "--decode", d.url)
	f.start(f.proxy)
	ref := referenceModel(t, model, seed)
	for i := range 6 {
		prompt := fmt.Sprintf("data parallel %d", i)
		got, err := chat(ctx, f.proxy.url, model, prompt, 3, i%2 == 0)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if want, err := monolithicAnswer(ref, prompt, 3); err != nil || got != want {
			t.Fatalf("request %d: %q, monolithic %q (%v)", i, got, want, err)
		}
	}
	for r, u := range []string{p.url, rank1} {
		m, err := scrape(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if n := metricValue(m, "hybridxfer_requests_total"); n < 1 {
			t.Errorf("dp rank %d served %v requests, want some", r, n)
		}
		if want := fmt.Sprintf(`engine_id="prefill-127.0.0.1-%d-dp%d"`, port+r, r); !strings.Contains(m, want) {
			t.Errorf("dp rank %d metrics lack %s", r, want)
		}
	}
	// Each rank's kv_transfer_params name it (the grant binds the field).
	for r, u := range []string{p.url, rank1} {
		body := fmt.Sprintf(`{"model":%q,"prompt":"which rank","max_tokens":1,"kv_transfer_params":{"do_remote_decode":true}}`, model)
		resp, err := http.Post(u+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			KV map[string]any `json:"kv_transfer_params"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		got, _ := out.KV["remote_dp_rank"].(float64) // absent for rank 0
		if int(got) != r || out.KV["remote_port"] == nil {
			t.Errorf("dp rank %d answered kv_transfer_params %v, want remote_dp_rank %d", r, out.KV, r)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(ctx, p); err != nil {
		t.Fatalf("the dp process after SIGTERM: %v, want exit status 0", err)
	}
}
