package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBenchServe drives a real cluster (2 prefill and 2 decode processes
// of mixed tp and layouts behind the proxy) with bench serve: every
// answer is checked against the monolithic model, the report's counts
// add up (one TTFT per request, max_tokens-1 inter-token gaps per
// streamed request) and every pool is empty afterwards; with the wrong
// seed every answer is reported wrong and the exit status says so.
func TestBenchServe(t *testing.T) {
	bin := buildCLI(t)
	f := &fleet{t: t, bin: bin}
	defer f.stopAll()
	const seed = 6
	common := []string{"--model", "qwen3.5-27b", "--seed", fmt.Sprint(seed)}
	for i, tp := range []int{2, 1} {
		f.ps = append(f.ps, newInstance(t, fmt.Sprintf("P%d", i), append([]string{"serve", "--role", "prefill", "--tp", fmt.Sprint(tp)}, common...)...))
	}
	for i, extra := range [][]string{{"--tp", "2", "--layout", "NHD", "--block-layout", "cross-layer"}, {"--tp", "1"}} {
		f.ds = append(f.ds, newInstance(t, fmt.Sprintf("D%d", i), append(append([]string{"serve", "--role", "decode"}, common...), extra...)...))
	}
	var ps, ds []string
	for _, in := range f.ps {
		f.start(in)
		ps = append(ps, in.url)
	}
	for _, in := range f.ds {
		f.start(in)
		ds = append(ds, in.url)
	}
	f.proxy = newInstance(t, "proxy", "proxy", "--prefill", strings.Join(ps, ","), "--decode", strings.Join(ds, ","))
	f.start(f.proxy)
	// Monolithic instances to compare with: the cluster's seed, and a
	// wrong one.
	both := newInstance(t, "both", append([]string{"serve", "--role", "both"}, common...)...)
	other := newInstance(t, "both-other-seed", "serve", "--role", "both", "--model", "qwen3.5-27b", "--seed", fmt.Sprint(seed+1))
	f.start(both)
	f.start(other)

	run := func(seed int, extra ...string) (*serveBenchResult, error) {
		t.Helper()
		args := append([]string{"bench", "serve", "--url", f.proxy.url, "--seed", fmt.Sprint(seed), "--json", "--settle", "1m"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Env = workerEnv()
		out, err := cmd.Output()
		var r serveBenchResult
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			t.Fatalf("bench serve %v: %v, output %q (%v)", args, jerr, out, err)
		}
		return &r, err
	}
	const n, maxTokens = 48, 4
	r, err := run(seed, "--concurrency", "16", "--requests", fmt.Sprint(n), "--max-tokens", fmt.Sprint(maxTokens), "--stream", "--distinct", "12")
	if err != nil {
		t.Fatalf("bench serve: %v (%+v)", err, r)
	}
	if r.OK != n || r.Errors != 0 || r.Wrong != 0 || !r.Checked || !r.PoolsEmptyAfter {
		t.Fatalf("bench serve: %+v, want %d ok, no errors, no wrong answers, pools empty", r, n)
	}
	if r.TTFTms.N != n || r.ITLms.N != n*(maxTokens-1) || r.Latencyms.N != n {
		t.Errorf("counts: ttft %d, itl %d, latency %d; want %d, %d, %d", r.TTFTms.N, r.ITLms.N, r.Latencyms.N, n, n*(maxTokens-1), n)
	}
	if r.TTFTms.P50 > r.TTFTms.P90 || r.TTFTms.P90 > r.TTFTms.P99 || r.TTFTms.P99 > r.TTFTms.Max || r.TTFTms.P50 <= 0 {
		t.Errorf("TTFT percentiles out of order: %+v", r.TTFTms)
	}
	if len(r.Instances) != 4 {
		t.Errorf("instances checked: %+v, want the 4 behind the proxy", r.Instances)
	}
	// Against a running monolithic instance (serve --role both): the same
	// answers; against one with another seed every answer differs.
	r, err = run(seed, "--reference", both.url, "--concurrency", "16", "--requests", "32", "--max-tokens", "3", "--stream")
	if err != nil || r.OK != 32 || r.Wrong != 0 || r.CheckedAgainst != both.url || !r.PoolsEmptyAfter {
		t.Fatalf("bench serve --reference %s: %v %+v", both.url, err, r)
	}
	r, err = run(seed, "--reference", other.url, "--concurrency", "4", "--requests", "8", "--max-tokens", "3")
	if ee, ok := err.(*exec.ExitError); r.OK != 8 || r.Wrong != 8 || !ok || ee.ExitCode() == 0 {
		t.Fatalf("bench serve --reference with another seed: %+v, exit %v; want 8 wrong and a failing exit status", r, err)
	}
	r, err = run(seed+1, "--concurrency", "4", "--requests", "8", "--max-tokens", "3")
	ee, isExit := err.(*exec.ExitError)
	if r.OK != 8 || r.Wrong != 8 || !isExit || ee.ExitCode() == 0 {
		t.Fatalf("bench serve with the wrong seed: %+v, exit %v; want 8 wrong and a failing exit status", r, err)
	}
}

// TestSummarizePercentiles: nearest-rank percentiles of a known sample.
func TestSummarizePercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 ms, unsorted
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarize(ds)
	if got.P50 != 50 || got.P90 != 90 || got.P99 != 99 || got.Max != 100 || got.N != 100 {
		t.Fatalf("summarize 1..100 ms: %+v", got)
	}
	if z := summarize(nil); z.N != 0 {
		t.Fatalf("summarize of nothing: %+v", z)
	}
	o := serveBenchOptions{promptTokens: 37, distinct: 5}
	for i := range 12 {
		if p := benchPrompt(o, i); len(p) != 37 || p != benchPrompt(o, i+5) || p == benchPrompt(o, i+1) {
			t.Fatalf("prompt %d: %q", i, p)
		}
	}
}

// TestPlotServeBench: the latency chart is an SVG with the three measures,
// the percentiles and the unit.
func TestPlotServeBench(t *testing.T) {
	path := t.TempDir() + "/serve.svg"
	r := &serveBenchResult{Requests: 10, Concurrency: 2, RequestsPerS: 3.5,
		TTFTms: latencies{P50: 10, P90: 20, P99: 30}, ITLms: latencies{P50: 1, P90: 2, P99: 3}, Latencyms: latencies{P50: 12, P90: 22, P99: 33}}
	if err := plotServeBench(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "TTFT", "inter-token", "latency", "p50", "p99", "ms", "3.5 req/s"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the chart lacks %q", want)
		}
	}
	if err := (&serveBenchOptions{url: "http://a:1", concurrency: 1, requests: 1, promptTokens: 1, maxToks: 1, distinct: 1, timeout: time.Minute, plotPath: "x.jpg"}).validate(); err == nil {
		t.Error("--plot x.jpg accepted")
	}
}
