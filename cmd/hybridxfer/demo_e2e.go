package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hybridxfer/hybridxfer/discovery"
	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/proxy"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// proc is a child process of the demo.
type proc struct {
	name string
	cmd  *exec.Cmd
	tail *tailWriter   // the last lines it wrote to stderr
	done chan struct{} // closed once it has exited
	err  error         // its exit status, set before done closes
}

func startProc(ctx context.Context, name string, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, tail: &tailWriter{max: 4 << 10}, done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = workerEnv()
	cmd.Stdout = io.Discard
	cmd.Stderr = io.MultiWriter(&prefixWriter{prefix: "[" + name + "] ", w: os.Stderr}, p.tail)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// healthWait bounds how long an instance may take to answer /health: a
// loaded 2-core machine starting three processes at once needs tens of
// seconds.
const healthWait = 2 * time.Minute

// errExited is waitHealthy's answer when the process exited before it was
// healthy: no point polling a dead process.
var errExited = errors.New("hybridxfer: process exited before it was healthy")

// waitHealthy polls url/health until it answers 200, healthWait passes,
// ctx ends or exited (the process's exit; nil for none) closes.
func waitHealthy(ctx context.Context, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(healthWait)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %v (last error: %v)", url, healthWait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("%s: %w", url, errExited)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// demoCluster is a proxy and its prefill and decode instances.
type demoCluster struct {
	procs             []*proc
	prefills, decodes []string // instance URLs
	proxy             string
	keys              string // the cluster's key files
}

// demoShape is how many instances of each role the demo starts and their
// tp: instance i of a role runs the role's tp when i is even and half of
// it (at least 1) when odd, so several instances mix tp sizes; decode
// instances with an even index use NHD, SD and cross-layer blocks and
// staged reads, odd ones the defaults (HND, DS, per-layer, auto: direct
// reads on one host), so layouts and read modes mix too.
type demoShape struct {
	prefills, decodes int
	pTP, dTP          int
	// discovery, when set (an etcd://... endpoint), is passed to every
	// instance and the proxy instead of URL lists.
	discovery string
	// bidirectional: every instance runs --bidirectional and the demo
	// also sends multi-turn conversations (runConversations).
	bidirectional bool
}

func (s demoShape) tp(role string, i int) int {
	tp := s.pTP
	if role == "decode" {
		tp = s.dTP
	}
	if i%2 == 1 {
		tp = max(1, tp/2)
	}
	return tp
}

func (c *demoCluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
	if c.keys != "" {
		os.RemoveAll(c.keys)
	}
}

// demoKeys writes a fresh cluster key and CURVE key pairs for P and D into
// a new directory and returns the flags each role needs: the demo runs
// with grants signed, the handshake under CURVE and the internal token on.
//
// bidirectional: each side also serves (decode) or fetches (prefill) the
// other direction's handshake, so each gets the other's flags too.
func demoKeys(bidirectional bool) (dir string, prefill, decode, proxy []string, err error) {
	if dir, err = os.MkdirTemp("", "hybridxfer-demo-keys-"); err != nil {
		return "", nil, nil, nil, err
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	files := map[string]string{"cluster.key": grant.RandomKey().Hex() + "\n"}
	for _, who := range []string{"prefill", "decode"} {
		k, err := zmqchan.GenerateCurveKey()
		if err != nil {
			os.RemoveAll(dir)
			return "", nil, nil, nil, err
		}
		files[who+".key"], files[who+".pub"] = k.Secret+"\n", k.Public+"\n"
	}
	for name, data := range files {
		if err := os.WriteFile(path(name), []byte(data), 0o600); err != nil {
			os.RemoveAll(dir)
			return "", nil, nil, nil, err
		}
	}
	cluster := []string{"--cluster-key-file", path("cluster.key")}
	prefill = append([]string{"--handshake-key", path("prefill.key"), "--handshake-allow", path("decode.pub")}, cluster...)
	decode = append([]string{"--handshake-key", path("decode.key"), "--handshake-server-pub", path("prefill.pub")}, cluster...)
	if bidirectional {
		prefill = append(prefill, "--bidirectional", "--handshake-server-pub", path("decode.pub"))
		decode = append(decode, "--bidirectional", "--handshake-allow", path("prefill.pub"))
	}
	return dir, prefill, decode, cluster, nil
}

// clusterAttempts is how often startDemoCluster picks fresh ports when
// one it picked was taken before its process bound it (the ports are
// free when picked, but another program on the machine may take one
// before the child starts).
const clusterAttempts = 3

// startDemoCluster starts prefill, decode and proxy and waits until each
// is healthy; a process that exits first fails it with that process's
// last log lines, or, when its port was taken meanwhile, starts over on
// fresh ports.
func startDemoCluster(ctx context.Context, model string, shape demoShape, seed uint64, extra []string) (*demoCluster, error) {
	for attempt := 1; ; attempt++ {
		c, err := startDemoClusterOnce(ctx, model, shape, seed, extra)
		var taken *portTakenError
		if err == nil || !errors.As(err, &taken) || attempt == clusterAttempts {
			return c, err
		}
		fmt.Fprintf(os.Stderr, "%s lost its port to another program; starting over on fresh ports\n", taken.name)
	}
}

// portTakenError says a child could not bind the port picked for it.
type portTakenError struct{ name string }

func (e *portTakenError) Error() string { return e.name + ": port taken" }

func startDemoClusterOnce(ctx context.Context, model string, shape demoShape, seed uint64, extra []string) (*demoCluster, error) {
	ports := make([]int, shape.prefills+shape.decodes+1)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	proxyPort := ports[len(ports)-1]
	if demoProxyPort != 0 {
		proxyPort = demoProxyPort
	}
	c := &demoCluster{proxy: fmt.Sprintf("http://127.0.0.1:%d", proxyPort)}
	dir, pk, dk, xk, err := demoKeys(shape.bidirectional)
	if err != nil {
		return nil, err
	}
	c.keys = dir
	s := strconv.FormatUint(seed, 10)
	type procSpec struct {
		name, url string
		args      []string
	}
	var specs []procSpec
	name := func(role string, i, n int) string {
		if n == 1 {
			return role
		}
		return fmt.Sprintf("%s%d", role, i)
	}
	for i := range shape.prefills {
		u := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		c.prefills = append(c.prefills, u)
		specs = append(specs, procSpec{name("prefill", i, shape.prefills), u, slices.Concat([]string{"serve", "--role", "prefill", "--model", model,
			"--tp", strconv.Itoa(shape.tp("prefill", i)), "--port", strconv.Itoa(ports[i]), "--seed", s}, shape.discoveryArgs(), extra, pk)})
	}
	for j := range shape.decodes {
		port := ports[shape.prefills+j]
		u := fmt.Sprintf("http://127.0.0.1:%d", port)
		c.decodes = append(c.decodes, u)
		args := []string{"serve", "--role", "decode", "--model", model, "--tp", strconv.Itoa(shape.tp("decode", j)), "--port", strconv.Itoa(port), "--seed", s}
		if j%2 == 0 {
			// Staged explicitly: on one host Auto reads directly (the
			// mapped path prices a read at tens of nanoseconds), and the
			// demo and the tests on it exercise both.
			args = append(args, "--layout", "NHD", "--conv-layout", "SD", "--block-layout", "cross-layer", "--mode", "staged")
		}
		specs = append(specs, procSpec{name("decode", j, shape.decodes), u, slices.Concat(args, shape.discoveryArgs(), extra, dk)})
	}
	proxyArgs := []string{"proxy", "--prefill", strings.Join(c.prefills, ","), "--decode", strings.Join(c.decodes, ",")}
	if shape.discovery != "" {
		proxyArgs = []string{"proxy", "--discovery", shape.discovery, "--model", model}
	}
	specs = append(specs, procSpec{"proxy", c.proxy, slices.Concat(proxyArgs, []string{"--port", strconv.Itoa(proxyPort)}, xk)})
	for _, sp := range specs {
		p, err := startProc(ctx, sp.name, sp.args...)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.procs = append(c.procs, p)
	}
	for i, sp := range specs {
		p := c.procs[i]
		if err := waitHealthy(ctx, sp.url, p.done); err != nil {
			c.stop()
			if !errors.Is(err, errExited) {
				return nil, err
			}
			log := p.tail.String()
			if strings.Contains(log, "address already in use") {
				return nil, &portTakenError{name: p.name}
			}
			return nil, fmt.Errorf("%s %w (%v); its last log lines:\n%s", p.name, errExited, p.err, log)
		}
	}
	if shape.discovery != "" {
		if err := waitUpstreams(ctx, c.proxy, shape.prefills+shape.decodes); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (s demoShape) discoveryArgs() []string {
	if s.discovery == "" {
		return nil
	}
	return []string{"--discovery", s.discovery}
}

// waitUpstreams waits until the proxy's /health lists n instances, all
// healthy (with discovery they appear as they register).
func waitUpstreams(ctx context.Context, proxyURL string, n int) error {
	deadline := time.Now().Add(healthWait)
	var last int
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+"/health", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var h struct {
				Upstreams []struct {
					Healthy bool `json:"healthy"`
				} `json:"upstreams"`
			}
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			last = 0
			for _, u := range h.Upstreams {
				if u.Healthy {
					last++
				}
			}
			if resp.StatusCode == http.StatusOK && last == n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the proxy at %s lists %d healthy instances after %v, want %d", proxyURL, last, healthWait, n)
}

var demoPrompts = []string{
	"What is the capital of France?",
	"Write a haiku about state transfer.",
	"Summarize: prefill computes the prompt, decode generates the answer.",
	"hi",
	"Explain sliding window attention in one sentence.",
	"Count: one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
	"Why do recurrent states have to be moved exactly once?",
	"Mamba, GDN and KDA keep a conv state and a recurrent state per layer.",
}

// chat sends one chat completion through the proxy (streaming or not) with
// a plain HTTP client and returns the answer text.
func chat(ctx context.Context, url, model, content string, maxTokens int, stream bool) (string, error) {
	body, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": content}},
		"max_tokens": maxTokens, "stream": stream})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if !stream {
		var r struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return "", err
		}
		if len(r.Choices) != 1 {
			return "", fmt.Errorf("%d choices", len(r.Choices))
		}
		return r.Choices[0].Message.Content, nil
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Error   *struct{ Message string } `json:"error"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			return "", fmt.Errorf("bad stream chunk %q: %w", line, err)
		}
		if chunk.Error != nil {
			return "", fmt.Errorf("stream error: %s", chunk.Error.Message)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if !done {
		return "", fmt.Errorf("stream ended without [DONE] (%v)", sc.Err())
	}
	return text.String(), nil
}

// monolithicAnswer is what the reference model answers on one instance.
func monolithicAnswer(m *refmodel.Model, content string, maxTokens int) (string, error) {
	prompt := openai.RenderChat([]openai.ChatMessage{{Role: "user", Content: content}})
	out, err := m.Generate(refmodel.NewMapStore(m.Spec()), tokenizer.Tokenize(prompt), 0, maxTokens)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, t := range out {
		b.WriteString(tokenizer.Detokenize(t))
	}
	return b.String(), nil
}

// metricValue sums the samples of a metric in a Prometheus text scrape.
func metricValue(scrape, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.eE+-]+)$`)
	var sum float64
	for _, m := range re.FindAllStringSubmatch(scrape, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

// scrapeAll is the concatenated /metrics of urls (metricValue sums over
// them).
func scrapeAll(ctx context.Context, urls []string) (string, error) {
	var all strings.Builder
	for _, u := range urls {
		s, err := scrape(ctx, u)
		if err != nil {
			return "", err
		}
		all.WriteString(s)
	}
	return all.String(), nil
}

func scrape(ctx context.Context, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// runE2EDemo is the end-to-end demo: proxy + P + D processes, chat
// requests through the proxy, answers checked against the monolithic model.
func runE2EDemo(ctx context.Context, out io.Writer, model string, shape demoShape, seed uint64, maxTokens int, keepRunning bool, sp demoSpec) error {
	spec, err := groups.Preset(model, sp.presetOptions())
	if err != nil {
		return err
	}
	mini, err := refmodel.Miniature(spec)
	if err != nil {
		return err
	}
	ref := refmodel.New(mini, seed)
	if shape.prefills == 1 && shape.decodes == 1 {
		fmt.Fprintf(out, "starting prefill (tp %d), decode (tp %d, NHD, SD, cross-layer blocks, staged reads) and proxy for %s (reference miniature) on 127.0.0.1\n", shape.pTP, shape.dTP, model)
	} else {
		fmt.Fprintf(out, "starting %d prefill instances (tp %d and %d), %d decode instances (tp %d and %d, mixed layouts and read modes) and a proxy for %s (reference miniature) on 127.0.0.1\n",
			shape.prefills, shape.tp("prefill", 0), shape.tp("prefill", 1), shape.decodes, shape.tp("decode", 0), shape.tp("decode", 1), model)
	}
	t0 := time.Now()
	if sp.method != "" {
		if string(spec.Draft) != sp.method {
			return fmt.Errorf("--speculative %s: %s has no %s drafter", sp.method, model, sp.method)
		}
		fmt.Fprintf(out, "speculative decoding on decode: %s drafter, %d tokens per step; answers checked against the run without speculation\n", sp.method, sp.k)
	}
	if shape.discovery == "embedded" {
		etcd, err := discovery.StartEmbedded()
		if err != nil {
			return err
		}
		defer etcd.Close()
		shape.discovery = etcd.Endpoint
		fmt.Fprintf(out, "discovery: an embedded etcd at %s; the proxy routes to the instances registered there\n", etcd.Endpoint)
	}
	c, err := startDemoCluster(ctx, model, shape, seed, sp.serveArgs())
	if err != nil {
		return err
	}
	defer c.stop()
	fmt.Fprintf(out, "up in %.1fs: proxy %s, prefill %s, decode %s\n", time.Since(t0).Seconds(), c.proxy, strings.Join(c.prefills, ","), strings.Join(c.decodes, ","))
	if keepRunning {
		fmt.Fprintf(out, "serving; try:\n  curl %s/v1/chat/completions -d '{\"model\":%q,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"max_tokens\":16}'\n", c.proxy, model)
		sctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		<-sctx.Done()
		return nil
	}
	matched, tokens := 0, 0
	start := time.Now()
	for i, p := range demoPrompts {
		stream := i%2 == 1
		got, err := chat(ctx, c.proxy, model, p, maxTokens, stream)
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		want, err := monolithicAnswer(ref, p, maxTokens)
		if err != nil {
			return err
		}
		ok := got == want
		if ok {
			matched++
		}
		tokens += len(tokenizer.Tokenize(got))
		fmt.Fprintf(out, "  [%d] stream=%-5v %-60.60q -> %q %s\n", i, stream, p, got, map[bool]string{true: "== monolithic", false: "!= monolithic " + strconv.Quote(want)}[ok])
	}
	elapsed := time.Since(start)
	ms, err := scrapeAll(ctx, c.decodes)
	if err != nil {
		return err
	}
	ps, err := scrapeAll(ctx, c.prefills)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nrequests %d, matched %d, completion tokens %d, %.2fs\n", len(demoPrompts), matched, tokens, elapsed.Seconds())
	fmt.Fprintf(out, "bytes moved %.0f in %.0f transfers (%.0f reads), transfer time %.2f ms total\n",
		metricValue(ms, "hybridxfer_transfer_bytes_total"), metricValue(ms, "hybridxfer_transfer_seconds_count"),
		metricValue(ms, "hybridxfer_transfer_reads_sum"), 1000*metricValue(ms, "hybridxfer_transfer_seconds_sum"))
	if sp.method != "" {
		drafted, accepted := metricValue(ms, "hybridxfer_spec_decode_num_draft_tokens_total"), metricValue(ms, "hybridxfer_spec_decode_num_accepted_tokens_total")
		rate := 0.0
		if drafted > 0 {
			rate = accepted / drafted
		}
		fmt.Fprintf(out, "speculative decoding: %.0f draft tokens in %.0f steps, %.0f accepted: acceptance rate %.3f (the reference miniature has random weights: this rate says nothing of a trained drafter)\n",
			drafted, metricValue(ms, "hybridxfer_spec_decode_num_drafts_total"), accepted, rate)
		if drafted == 0 {
			return &exitError{code: 2, err: fmt.Errorf("--speculative %s: the decode instance drafted nothing", sp.method)}
		}
	}
	fmt.Fprintln(out, "metrics excerpt:")
	for _, line := range strings.Split(ms+ps, "\n") {
		for _, name := range []string{"hybridxfer_transfer_bytes_by_kind_total", "hybridxfer_leases_released_total", "hybridxfer_transfer_failures_total", "hybridxfer_requests_total"} {
			if strings.HasPrefix(line, name) {
				fmt.Fprintln(out, "  "+line)
			}
		}
	}
	if matched != len(demoPrompts) {
		return &exitError{code: 2, err: fmt.Errorf("%d of %d answers differ from the monolithic reference", len(demoPrompts)-matched, len(demoPrompts))}
	}
	if shape.bidirectional {
		if err := runConversations(ctx, out, c, ref, model, maxTokens); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "OK: every answer equals the monolithic reference model's")
	return nil
}

// demoTurns is how many turns each demo conversation has.
const demoTurns = 3

// runConversations sends multi-turn conversations through the proxy
// (--bidirectional): each turn's prompt is the last one's, its answer
// token for token and a new message, with the last response's
// kv_transfer_params sent back as previous_kv_transfer_params. Every
// answer is checked against the monolithic model; the prefill
// instances' metrics must show turn 2+ reading from the decode instances.
func runConversations(ctx context.Context, out io.Writer, c *demoCluster, ref *refmodel.Model, model string, maxTokens int) error {
	before, err := scrapeAll(ctx, c.prefills)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmulti-turn conversations (%d turns each; turn 2+ prefill reads the conversation so far from the decode instance that answered it):\n", demoTurns)
	wrong, promptTokens := 0, 0
	for i, first := range demoPrompts[:3] {
		prompt := "user: " + first + "\nassistant: "
		var prev json.RawMessage
		for turn := range demoTurns {
			text, kv, err := complete(ctx, c.proxy, model, prompt, maxTokens, prev)
			if err != nil {
				return fmt.Errorf("conversation %d turn %d: %w", i, turn, err)
			}
			toks := tokenizer.Tokenize(prompt)
			want, err := ref.Generate(refmodel.NewMapStore(ref.Spec()), toks, 0, maxTokens)
			if err != nil {
				return err
			}
			got, ok := tokenizer.Retokenize(text)
			same := ok && fmt.Sprint(got) == fmt.Sprint(want)
			if !same {
				wrong++
			}
			promptTokens += len(toks)
			fmt.Fprintf(out, "  [conversation %d turn %d] prompt %4d tokens -> %q %s\n", i, turn+1, len(toks), text, map[bool]string{true: "== monolithic", false: "!= monolithic"}[same])
			prompt += tokenizer.TokenText(want) + "\nuser: and then?\nassistant: "
			prev = kv
		}
	}
	after, err := scrapeAll(ctx, c.prefills)
	if err != nil {
		return err
	}
	delta := func(name string) float64 { return metricValue(after, name) - metricValue(before, name) }
	reused, bytes := delta("hybridxfer_conversation_reused_tokens_total"), delta("hybridxfer_conversation_read_bytes_total")
	fmt.Fprintf(out, "prompt tokens %d; read back from decode instead of computed: %.0f tokens (%.0f bytes D -> P); declines %.0f; prefix cache hits on P %.0f\n",
		promptTokens, reused, bytes, delta("hybridxfer_conversation_declines_total"), delta("hybridxfer_prefix_cache_hits_total"))
	if wrong > 0 {
		return &exitError{code: 2, err: fmt.Errorf("%d conversation answers differ from the monolithic reference", wrong)}
	}
	if reused == 0 {
		return &exitError{code: 2, err: errors.New("no conversation turn read its prefix from decode")}
	}
	return nil
}

// complete sends one completion through the proxy, with prev (the last
// turn's kv_transfer_params) as previous_kv_transfer_params when not
// nil, and returns the answer and the response's kv_transfer_params.
func complete(ctx context.Context, url, model, prompt string, maxTokens int, prev json.RawMessage) (string, json.RawMessage, error) {
	req := map[string]any{"model": model, "prompt": prompt, "max_tokens": maxTokens}
	if prev != nil {
		req[proxy.PreviousTurnField] = prev
	}
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions", bytes.NewReader(body))
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", nil, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var r struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
		KV json.RawMessage `json:"kv_transfer_params"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", nil, err
	}
	if len(r.Choices) != 1 {
		return "", nil, fmt.Errorf("%d choices", len(r.Choices))
	}
	return r.Choices[0].Text, r.KV, nil
}
