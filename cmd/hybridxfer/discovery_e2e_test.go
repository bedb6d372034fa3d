package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/discovery"
)

// TestDiscoveryCluster runs a cluster found through a real etcd (embedded
// in the test): 2 prefill and 2 decode processes register with
// --discovery, the proxy watches and routes to them (answers equal the
// monolithic model); a prefill instance that drains disappears from the
// proxy's instances while it is still running (it holds a lease, so it
// keeps draining); a decode instance killed with SIGKILL disappears when
// its lease expires, and requests still succeed on the other one.
func TestDiscoveryCluster(t *testing.T) {
	bin := buildCLI(t)
	etcd, err := discovery.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	f := &fleet{t: t, bin: bin}
	defer f.stopAll()
	const model, seed = "qwen3.5-27b", 9
	common := []string{"--model", model, "--seed", fmt.Sprint(seed), "--discovery", etcd.Endpoint, "--discovery-ttl", "2s", "--lease-ttl", "2m"}
	for i, tp := range []int{2, 1} {
		f.ps = append(f.ps, newInstance(t, fmt.Sprintf("P%d", i), append([]string{"serve", "--role", "prefill", "--tp", fmt.Sprint(tp)}, common...)...))
	}
	for i, tp := range []int{2, 1} {
		f.ds = append(f.ds, newInstance(t, fmt.Sprintf("D%d", i), append([]string{"serve", "--role", "decode", "--tp", fmt.Sprint(tp)}, common...)...))
	}
	for _, in := range append(slices.Clone(f.ps), f.ds...) {
		f.start(in)
	}
	f.proxy = newInstance(t, "proxy", "proxy", "--discovery", etcd.Endpoint, "--model", model, "--health-interval", "200ms")
	f.start(f.proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	if err := waitUpstreams(ctx, f.proxy.url, 4); err != nil {
		t.Fatal(err)
	}
	ref := referenceModel(t, model, seed)
	ask := func(what string, n int) {
		t.Helper()
		for i := range n {
			prompt := fmt.Sprintf("discovered %s %d", what, i)
			got, err := chat(ctx, f.proxy.url, model, prompt, 3, i%2 == 1)
			if err != nil {
				t.Fatalf("%s request %d: %v", what, i, err)
			}
			if want, err := monolithicAnswer(ref, prompt, 3); err != nil || got != want {
				t.Fatalf("%s request %d: %q, monolithic %q (%v)", what, i, got, want, err)
			}
		}
	}
	ask("all up", 6)

	// P0 holds a lease nobody reads, then drains: it leaves the proxy's
	// instances at once and is still running (draining) afterwards.
	body := fmt.Sprintf(`{"model":%q,"prompt":"held","max_tokens":1,"kv_transfer_params":{"do_remote_decode":true}}`, model)
	resp, err := http.Post(f.ps[0].url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := f.ps[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !waitListed(ctx, f.proxy.url, f.ps[0].url, false) {
		t.Fatal("the draining P0 is still among the proxy's instances")
	}
	if status := waitHealth(ctx, f.ps[0].url, "draining"); status != "draining" {
		t.Fatalf("P0 left the proxy but is not draining: /health %q (it should stop only after)", status)
	}
	ask("P0 draining", 4)
	f.ps[0].cmd.Process.Signal(syscall.SIGTERM) // the second signal: stop now
	waitExit(ctx, f.ps[0])

	// D0 killed: its record goes when its lease (2 s) expires.
	f.kill(f.ds[0])
	if !waitListed(ctx, f.proxy.url, f.ds[0].url, false) {
		t.Fatal("the killed D0 is still among the proxy's instances")
	}
	ask("D0 killed", 4)
	if got := proxyUpstreams(ctx, f.proxy.url); !slices.Equal(got, []string{f.ps[1].url, f.ds[1].url}) {
		t.Fatalf("the proxy's instances at the end: %v, want P1 and D1", got)
	}
}

// proxyUpstreams lists the URLs of the proxy's instances (its /health).
func proxyUpstreams(ctx context.Context, proxyURL string) []string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+"/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var h struct {
		Upstreams []struct {
			URL string `json:"url"`
		} `json:"upstreams"`
	}
	json.NewDecoder(resp.Body).Decode(&h)
	var out []string
	for _, u := range h.Upstreams {
		out = append(out, u.URL)
	}
	return out
}

// waitListed waits until url is (listed true) or is not among the proxy's
// instances; false when 60 s pass first (a hang guard).
func waitListed(ctx context.Context, proxyURL, url string, listed bool) bool {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if slices.Contains(proxyUpstreams(ctx, proxyURL), url) == listed {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
