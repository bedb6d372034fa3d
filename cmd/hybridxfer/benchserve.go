package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/tokenizer"
	"github.com/spf13/cobra"
)

// serveBenchOptions are bench serve's flags.
type serveBenchOptions struct {
	url, instances         string
	reference              string
	model                  string
	seed                   uint64
	check                  bool
	concurrency, requests  int
	promptTokens, maxToks  int
	distinct               int
	stream, asJSON         bool
	apiKeyFile, clusterKey string
	settle, timeout        time.Duration
	plotPath               string
}

// latencies summarizes one latency distribution in milliseconds.
type latencies struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

func summarize(ds []time.Duration) latencies {
	if len(ds) == 0 {
		return latencies{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.999999) - 1 // nearest rank
		return float64(s[min(max(i, 0), len(s)-1)].Microseconds()) / 1000
	}
	return latencies{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(s[len(s)-1].Microseconds()) / 1000, N: len(s)}
}

// instanceAfter is one instance's pools once the run settled.
type instanceAfter struct {
	Role     string `json:"role"`
	URL      string `json:"url"`
	Requests int    `json:"requests"`
	Holds    int    `json:"holds"`
	Used     int    `json:"used_blocks"`
	Error    string `json:"error,omitempty"`
}

// serveBenchResult is bench serve's report (--json prints it as is).
type serveBenchResult struct {
	URL             string          `json:"url"`
	Requests        int             `json:"requests"`
	Concurrency     int             `json:"concurrency"`
	Stream          bool            `json:"stream"`
	PromptTokens    int             `json:"prompt_tokens"`
	MaxTokens       int             `json:"max_tokens"`
	OK              int             `json:"ok"`
	Errors          int             `json:"errors"`
	ErrorsByStatus  map[string]int  `json:"errors_by_status"`
	FirstErrors     []string        `json:"first_errors,omitempty"`
	Checked         bool            `json:"checked"`
	CheckedAgainst  string          `json:"checked_against,omitempty"` // "reference model" or --reference's URL
	Wrong           int             `json:"wrong"`
	DurationS       float64         `json:"duration_s"`
	RequestsPerS    float64         `json:"requests_per_s"`
	OutputTokPerS   float64         `json:"output_tokens_per_s"`
	TTFTms          latencies       `json:"ttft_ms"`
	ITLms           latencies       `json:"itl_ms"`
	Latencyms       latencies       `json:"latency_ms"`
	PoolsEmptyAfter bool            `json:"pools_empty_after"`
	Instances       []instanceAfter `json:"instances"`
}

// oneResult is what one request measured.
type oneResult struct {
	text    string
	status  int // 0: no response
	err     error
	ttft    time.Duration // time to the first token (non-streaming: the whole answer)
	gaps    []time.Duration
	latency time.Duration
	tokens  int
}

func benchServeCmd() *cobra.Command {
	var o serveBenchOptions
	c := &cobra.Command{
		Use:   "serve --url PROXY --concurrency C --requests N [--stream] [--json]",
		Short: "Drive a proxy with C concurrent clients: throughput, TTFT, inter-token latency, errors, wrong answers, pools afterwards",
		Long: `bench serve sends N completion requests through the proxy at --url with C clients
at a time (a real HTTP client, one connection per client) and reports throughput, the
time to the first token (TTFT; without --stream, the whole answer), the inter-token
latency (--stream only), errors by HTTP status, and, with --check (the default), how
many answers differ from the monolithic reference model (--model and --seed must be
the cluster's), or with --reference URL from a running monolithic instance (serve
--role both with the cluster's --model and --seed). Afterwards it asks every instance behind the proxy (the proxy's
/health lists them, or --instances) for its pools, waits up to --settle for the
prefill leases to be released, and reports pools_empty_after: every instance holds no
request, no lease and no block.

Prompts: --distinct different prompts of --prompt-tokens tokens each, used in turn.
Load goes only where --url points (127.0.0.1 or a test namespace): this is not a
traffic generator for other people's services.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			res, err := runServeBench(cmd.Context(), o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.asJSON {
				if err := writeJSON(out, res); err != nil {
					return err
				}
			} else {
				printServeBench(out, res)
			}
			if o.plotPath != "" {
				if err := plotServeBench(o.plotPath, res); err != nil {
					return err
				}
			}
			// A run with errors, wrong answers or blocks left fails, JSON or
			// not, so scripts and CI can rely on the exit status.
			if res.Errors > 0 || res.Wrong > 0 || !res.PoolsEmptyAfter {
				return fmt.Errorf("bench serve: %d errors, %d wrong answers, pools empty after: %v", res.Errors, res.Wrong, res.PoolsEmptyAfter)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.url, "url", "", "the proxy's base URL (required), e.g. http://127.0.0.1:8000")
	f.StringVar(&o.instances, "instances", "", "instance URLs to check afterwards (comma-separated; default: the ones the proxy's /health lists)")
	f.StringVar(&o.model, "model", "qwen3.5-27b", "the served model (a preset name)")
	f.Uint64Var(&o.seed, "seed", 1, "the cluster's --seed (for --check)")
	f.BoolVar(&o.check, "check", true, "compare every answer with the monolithic reference model")
	f.StringVar(&o.reference, "reference", "", "compare every answer with this monolithic instance's instead (serve --role both, same --model and --seed); implies --check")
	f.IntVar(&o.concurrency, "concurrency", 8, "clients sending at once")
	f.IntVar(&o.requests, "requests", 64, "requests in all")
	f.IntVar(&o.promptTokens, "prompt-tokens", 32, "tokens per prompt")
	f.IntVar(&o.maxToks, "max-tokens", 4, "max_tokens per request")
	f.IntVar(&o.distinct, "distinct", 64, "different prompts (used in turn)")
	f.BoolVar(&o.stream, "stream", false, "stream the answers (measures inter-token latency)")
	f.BoolVar(&o.asJSON, "json", false, "print JSON")
	f.StringVar(&o.apiKeyFile, "api-key-file", "", "a file whose first key is sent as Authorization: Bearer (proxy and instances with --api-key-file)")
	f.StringVar(&o.clusterKey, "cluster-key-file", "", "the cluster key: its internal token reads the instances' /debug/pools when they need credentials")
	f.DurationVar(&o.settle, "settle", 30*time.Second, "how long to wait, after the last answer, for every instance to hold nothing (decode instances with --bidirectional hold each answer for the conversation's next turn until --conversation-ttl: give more than that)")
	f.StringVar(&o.plotPath, "plot", "", "also draw the latency percentiles (TTFT, inter-token, latency: p50, p90, p99) to FILE.svg or FILE.png")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on the whole run after this long (requests still open count as errors)")
	return c
}

func (o *serveBenchOptions) validate() error {
	var fc flagChecks
	if o.plotPath != "" {
		if ext := strings.ToLower(filepath.Ext(o.plotPath)); ext != ".svg" && ext != ".png" {
			fc.fail("plot", "%q: want FILE.svg or FILE.png", o.plotPath)
		}
	}
	if u, err := url.Parse(o.url); o.url == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fc.fail("url", "%q is not an http(s) URL of a proxy", o.url)
	}
	if o.reference != "" {
		if u, err := url.Parse(o.reference); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fc.fail("reference", "%q is not an http(s) URL of an instance", o.reference)
		}
	}
	fc.intIn("concurrency", int64(o.concurrency), 1, 10000)
	fc.intIn("requests", int64(o.requests), 1, 10_000_000)
	fc.intIn("prompt-tokens", int64(o.promptTokens), 1, 1<<20)
	fc.intIn("max-tokens", int64(o.maxToks), 1, 1<<20)
	fc.intIn("distinct", int64(o.distinct), 1, 1<<20)
	fc.duration("settle", o.settle, 0, time.Hour)
	fc.duration("timeout", o.timeout, time.Second, 24*time.Hour)
	return fc.err()
}

// benchPrompt is prompt i of o: distinct prompts of exactly promptTokens
// tokens (the tokenizer is one token per byte).
func benchPrompt(o serveBenchOptions, i int) string {
	p := fmt.Sprintf("bench %d ", i%o.distinct)
	for len(p) < o.promptTokens {
		p += "abcdefghij"[len(p)%10 : len(p)%10+1]
	}
	return p[:o.promptTokens]
}

func runServeBench(ctx context.Context, o serveBenchOptions) (*serveBenchResult, error) {
	o.url = strings.TrimRight(o.url, "/")
	var apiKey, internal string
	if o.apiKeyFile != "" {
		keys, err := openai.LoadAPIKeys(o.apiKeyFile)
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("%w --api-key-file: %s holds no key", errFlag, o.apiKeyFile)
		}
		apiKey = keys[0]
	}
	if o.clusterKey != "" {
		k, err := grant.LoadKey(o.clusterKey)
		if err != nil {
			return nil, err
		}
		internal = k.InternalToken()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        o.concurrency,
		MaxIdleConnsPerHost: o.concurrency,
		IdleConnTimeout:     30 * time.Second,
	}}
	defer client.CloseIdleConnections()

	// The reference answers, one per distinct prompt, before the load so
	// that they do not compete with it: from --reference (a monolithic
	// instance, serve --role both), else from the reference model here.
	want, against, err := benchReference(ctx, client, o, apiKey)
	if err != nil {
		return nil, err
	}

	results := make([]oneResult, o.requests)
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range o.concurrency {
		wg.Go(func() {
			for i := range work {
				results[i] = benchOne(ctx, client, o, apiKey, benchPrompt(o, i))
			}
		})
	}
	for i := range o.requests {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)

	res := &serveBenchResult{URL: o.url, Requests: o.requests, Concurrency: o.concurrency, Stream: o.stream, PromptTokens: o.promptTokens,
		MaxTokens: o.maxToks, ErrorsByStatus: map[string]int{}, Checked: want != nil, CheckedAgainst: against, DurationS: elapsed.Seconds()}
	var ttft, itl, lat []time.Duration
	tokens := 0
	for i, r := range results {
		if r.err != nil {
			res.Errors++
			key := "no_response"
			if r.status != 0 {
				key = fmt.Sprint(r.status)
			}
			res.ErrorsByStatus[key]++
			if len(res.FirstErrors) < 5 {
				res.FirstErrors = append(res.FirstErrors, r.err.Error())
			}
			continue
		}
		res.OK++
		if want != nil && r.text != want[i%o.distinct] {
			res.Wrong++
			if len(res.FirstErrors) < 5 {
				res.FirstErrors = append(res.FirstErrors, fmt.Sprintf("request %d: answer %q, %s %q", i, r.text, against, want[i%o.distinct]))
			}
		}
		tokens += r.tokens
		ttft, lat = append(ttft, r.ttft), append(lat, r.latency)
		itl = append(itl, r.gaps...)
	}
	res.RequestsPerS = float64(res.OK) / elapsed.Seconds()
	res.OutputTokPerS = float64(tokens) / elapsed.Seconds()
	res.TTFTms, res.ITLms, res.Latencyms = summarize(ttft), summarize(itl), summarize(lat)

	insts, err := benchInstances(ctx, client, o, apiKey)
	if err != nil {
		return nil, err
	}
	res.Instances, res.PoolsEmptyAfter = settlePools(ctx, client, insts, apiKey, internal, o.settle)
	return res, nil
}

// benchOne sends one completion request and measures it.
func benchOne(ctx context.Context, client *http.Client, o serveBenchOptions, apiKey, prompt string) oneResult {
	body, _ := json.Marshal(map[string]any{"model": o.model, "prompt": prompt, "max_tokens": o.maxToks, "stream": o.stream})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return oneResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return oneResult{err: err}
	}
	defer resp.Body.Close()
	r := oneResult{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		r.err = fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		return r
	}
	if !o.stream {
		var c struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || len(c.Choices) != 1 {
			r.err = fmt.Errorf("answer: %v (%d choices)", err, len(c.Choices))
			return r
		}
		r.latency = time.Since(t0)
		r.ttft, r.text, r.tokens = r.latency, c.Choices[0].Text, c.Usage.CompletionTokens
		return r
	}
	var text strings.Builder
	last := t0
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var ev struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			r.err = fmt.Errorf("stream event %q: %v", data, err)
			return r
		}
		if ev.Error != nil {
			r.err = fmt.Errorf("stream error: %s", ev.Error.Message)
			return r
		}
		if len(ev.Choices) == 0 || ev.Choices[0].Text == "" {
			continue // a usage or role-only event
		}
		now := time.Now()
		if r.tokens == 0 {
			r.ttft = now.Sub(t0)
		} else {
			r.gaps = append(r.gaps, now.Sub(last))
		}
		last = now
		r.tokens += len(ev.Choices[0].Text) // one character per token
		text.WriteString(ev.Choices[0].Text)
	}
	if err := sc.Err(); err != nil || !done {
		r.err = fmt.Errorf("stream ended without [DONE]: %v", err)
		return r
	}
	r.latency, r.text = time.Since(t0), text.String()
	return r
}

// benchInstances lists the instances to check: --instances, else the
// proxy's /health "upstreams".
func benchInstances(ctx context.Context, client *http.Client, o serveBenchOptions, apiKey string) ([]instanceAfter, error) {
	if o.instances != "" {
		var out []instanceAfter
		for _, u := range strings.Split(o.instances, ",") {
			out = append(out, instanceAfter{URL: strings.TrimRight(strings.TrimSpace(u), "/")})
		}
		return out, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, o.url+"/health", nil)
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench serve: the proxy's /health: %w", err)
	}
	defer resp.Body.Close()
	var h struct {
		Upstreams []struct {
			Role string `json:"role"`
			URL  string `json:"url"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || len(h.Upstreams) == 0 {
		return nil, fmt.Errorf("bench serve: the proxy's /health lists no instances (%v); pass --instances", err)
	}
	var out []instanceAfter
	for _, u := range h.Upstreams {
		out = append(out, instanceAfter{Role: u.Role, URL: u.URL})
	}
	return out, nil
}

// settlePools polls every instance's /debug/pools until each holds no
// request, no lease and no block in use, or settle passes; it returns the
// last views and whether all were empty.
func settlePools(ctx context.Context, client *http.Client, insts []instanceAfter, apiKey, internal string, settle time.Duration) ([]instanceAfter, bool) {
	deadline := time.Now().Add(settle)
	for {
		empty := true
		for i := range insts {
			in := &insts[i]
			v, err := fetchPools(ctx, client, in.URL, apiKey, internal)
			in.Error = ""
			if err != nil {
				in.Error, empty = err.Error(), false
				continue
			}
			in.Requests, in.Holds, in.Used = v.Requests, v.Holds, 0
			for _, p := range v.Pools {
				in.Used += p.Used
			}
			if in.Role == "" {
				in.Role = string(v.Role)
			}
			empty = empty && in.Requests == 0 && in.Holds == 0 && in.Used == 0
		}
		if empty || time.Now().After(deadline) || ctx.Err() != nil {
			return insts, empty
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fetchPools(ctx context.Context, client *http.Client, base, apiKey, internal string) (*backend.PoolsView, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pools", nil)
	if err != nil {
		return nil, err
	}
	if internal != "" {
		req.Header.Set(openai.HeaderInternal, internal)
	} else if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("GET %s/debug/pools: status %d: %s", base, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var v backend.PoolsView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, fmt.Errorf("GET %s/debug/pools: %w", base, err)
	}
	return &v, nil
}

func printServeBench(w io.Writer, r *serveBenchResult) {
	fmt.Fprintf(w, "%d requests, %d at a time, %d-token prompts, max_tokens %d, stream %v, through %s\n",
		r.Requests, r.Concurrency, r.PromptTokens, r.MaxTokens, r.Stream, r.URL)
	checked := "not checked"
	if r.Checked {
		checked = "checked against " + r.CheckedAgainst
	}
	fmt.Fprintf(w, "ok %d, errors %d %v, wrong answers %d (%s)\n", r.OK, r.Errors, r.ErrorsByStatus, r.Wrong, checked)
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "%.2f s: %.1f requests/s, %.1f output tokens/s\n", r.DurationS, r.RequestsPerS, r.OutputTokPerS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ms\tp50\tp90\tp99\tmax\tn\t")
	for _, x := range []struct {
		name string
		l    latencies
	}{{"TTFT", r.TTFTms}, {"inter-token", r.ITLms}, {"latency", r.Latencyms}} {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", x.name, x.l.P50, x.l.P90, x.l.P99, x.l.Max, x.l.N)
	}
	tw.Flush()
	fmt.Fprintf(w, "pools empty after: %v\n", r.PoolsEmptyAfter)
	for _, in := range r.Instances {
		state := fmt.Sprintf("requests %d, holds %d, blocks used %d", in.Requests, in.Holds, in.Used)
		if in.Error != "" {
			state = in.Error
		}
		fmt.Fprintf(w, "  %-8s %s: %s\n", in.Role, in.URL, state)
	}
}

// plotServeBench draws the latency percentiles of r: one group per
// measure (TTFT, inter-token, latency), one bar per percentile, in ms.
func plotServeBench(path string, r *serveBenchResult) error {
	ls := []latencies{r.TTFTms, r.ITLms, r.Latencyms}
	series := []plotSeries{{Name: "p50"}, {Name: "p90"}, {Name: "p99"}}
	for _, l := range ls {
		series[0].Values = append(series[0].Values, l.P50)
		series[1].Values = append(series[1].Values, l.P90)
		series[2].Values = append(series[2].Values, l.P99)
	}
	title := fmt.Sprintf("bench serve: %d requests, %d in flight, %.1f req/s", r.Requests, r.Concurrency, r.RequestsPerS)
	return plotBars(path, title, "ms", []string{"TTFT", "inter-token", "latency"}, series)
}

// benchReference returns the expected answer of each distinct prompt and
// what it came from: --reference's answers (non-streaming, one at a
// time), else the monolithic reference model's; nil without --check.
func benchReference(ctx context.Context, client *http.Client, o serveBenchOptions, apiKey string) ([]string, string, error) {
	n := min(o.distinct, o.requests)
	var want []string
	if o.reference != "" {
		ro := o
		ro.url, ro.stream = strings.TrimRight(o.reference, "/"), false
		for i := range n {
			r := benchOne(ctx, client, ro, apiKey, benchPrompt(o, i))
			if r.err != nil {
				return nil, "", fmt.Errorf("bench serve: the reference %s: %w", ro.url, r.err)
			}
			want = append(want, r.text)
		}
		return want, ro.url, nil
	}
	if !o.check {
		return nil, "", nil
	}
	spec, err := groups.Preset(o.model, groups.PresetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("%w --model: %v (--check needs the cluster's preset, or --reference URL, or --check=false)", errFlag, err)
	}
	mini, err := refmodel.Miniature(spec)
	if err != nil {
		return nil, "", err
	}
	m := refmodel.New(mini, o.seed)
	for i := range n {
		out, err := m.Generate(refmodel.NewMapStore(mini), tokenizer.Tokenize(benchPrompt(o, i)), 0, o.maxToks)
		if err != nil {
			return nil, "", err
		}
		var b strings.Builder
		for _, t := range out {
			b.WriteString(tokenizer.Detokenize(t))
		}
		want = append(want, b.String())
	}
	return want, "reference model", nil
}
