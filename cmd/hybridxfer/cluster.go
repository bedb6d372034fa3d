package main

// Multi-process runs: `verify --transport ucx` and `bench transfer` start
// prefill and decode worker processes (this binary, `hybridxfer worker`)
// that talk over ZeroMQ (handshake) and UCX (data, notifications) on
// 127.0.0.1. The coordinator talks to each worker over its stdin/stdout with
// one command per line.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
)

// jobSpec is a verify.Config that crosses process boundaries.
type jobSpec struct {
	Model        json.RawMessage       `json:"model"` // hybridxfer model JSON
	P            groups.InstanceConfig `json:"p"`
	DCfg         groups.InstanceConfig `json:"d"`
	PromptTokens int                   `json:"prompt_tokens"`
	Requests     int                   `json:"requests"`
	Seed         uint64                `json:"seed"`
	Mode         string                `json:"mode"`
	HitPercent   int                   `json:"hit_percent,omitempty"`
	Exact        bool                  `json:"exact,omitempty"`
	Memory       memoryFlags           `json:"memory,omitempty"`
}

func newJobSpec(cfg verify.Config) (jobSpec, error) {
	mj, err := groups.MarshalModelJSON(cfg.Model)
	if err != nil {
		return jobSpec{}, err
	}
	return jobSpec{Model: mj, P: cfg.P, DCfg: cfg.D, PromptTokens: cfg.PromptTokens, Requests: cfg.Requests, Seed: cfg.Seed, Mode: cfg.Mode.String(),
		HitPercent: cfg.HitPercent, Exact: cfg.Exact, Memory: memoryFlagsOf(cfg.Memory)}, nil
}

func (s jobSpec) config() (verify.Config, error) {
	m, err := groups.ParseModelJSON(s.Model)
	if err != nil {
		return verify.Config{}, err
	}
	md, err := plan.ParseMode(s.Mode)
	if err != nil {
		return verify.Config{}, err
	}
	mc, err := s.Memory.config()
	if err != nil {
		return verify.Config{}, err
	}
	return verify.Config{Model: m, P: s.P, D: s.DCfg, PromptTokens: s.PromptTokens, Requests: s.Requests, Seed: s.Seed, Mode: md,
		HitPercent: s.HitPercent, Exact: s.Exact, Memory: mc}, nil
}

// workerSpec is the first line a worker reads.
type workerSpec struct {
	Side        string   `json:"side"` // prefill or decode
	Ranks       []int    `json:"ranks"`
	BootID      string   `json:"boot_id,omitempty"` // prefill: the incarnation all its processes share
	Job         jobSpec  `json:"job"`
	SideChannel string   `json:"side_channel,omitempty"` // decode: P's handshake address
	BasePort    int      `json:"base_port,omitempty"`    // prefill rank 0's host: where to listen
	UCX         ucxFlags `json:"ucx"`
	Bench       bool     `json:"bench,omitempty"` // measure instead of verify-only (prefill: echo fixed- completions)
	Iterations  int      `json:"iterations,omitempty"`
}

// worker is a running child process.
type worker struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	errc  chan error
}

func startWorker(ctx context.Context, name string, spec workerSpec) (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startProcess(ctx, name, []string{exe, "worker"}, workerEnv(), spec)
}

// startProcess starts argv with env, its stderr prefixed with the name on
// ours, its stdout read line by line, and spec sent as the first line
// (JSON) of its stdin.
func startProcess(ctx context.Context, name string, argv, env []string, spec any) (*worker, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stderr = &prefixWriter{prefix: "[" + name + "] ", w: os.Stderr}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	w := &worker{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16), errc: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
		w.errc <- cmd.Wait()
	}()
	b, _ := json.Marshal(spec)
	if _, err := fmt.Fprintf(stdin, "%s\n", b); err != nil {
		w.stop(5 * time.Second)
		return nil, fmt.Errorf("%s: send spec: %w", name, err)
	}
	return w, nil
}

// workerEnv passes the environment, keeping UCX on loopback and Go
// tracebacks when the user did not choose.
func workerEnv() []string {
	env := os.Environ()
	for _, kv := range [][2]string{{"UCX_NET_DEVICES", "lo"}, {"UCX_HANDLE_ERRORS", "none"}, {"UCX_WARN_UNUSED_ENV_VARS", "n"}} {
		if _, ok := os.LookupEnv(kv[0]); !ok {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// expect waits for a line starting with verb and returns the rest.
func (w *worker) expect(ctx context.Context, verb string) (string, error) {
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				err := <-w.errc
				w.errc <- err
				return "", fmt.Errorf("%s exited before %s: %v", w.name, verb, err)
			}
			if rest, ok := strings.CutPrefix(line, verb+" "); ok {
				return rest, nil
			}
			if rest, ok := strings.CutPrefix(line, "ERROR "); ok {
				return "", fmt.Errorf("%s: %s", w.name, rest)
			}
		case <-ctx.Done():
			return "", fmt.Errorf("%s: waiting for %s: %w", w.name, verb, ctx.Err())
		}
	}
}

func (w *worker) send(verb, payload string) error {
	_, err := fmt.Fprintf(w.stdin, "%s %s\n", verb, payload)
	return err
}

// stop closes the worker's stdin (its signal to shut down) and waits.
func (w *worker) stop(timeout time.Duration) error {
	w.stdin.Close()
	go func() { // drain: the reader closes lines when the worker exits
		for range w.lines {
		}
	}()
	select {
	case err := <-w.errc:
		w.errc <- err
		return err
	case <-time.After(timeout):
		w.cmd.Process.Kill()
		return fmt.Errorf("%s did not exit within %s; killed", w.name, timeout)
	}
}

type prefixWriter struct {
	mu     sync.Mutex
	prefix string
	w      io.Writer
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

func b64(b []byte) string            { return base64.StdEncoding.EncodeToString(b) }
func unb64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(strings.TrimSpace(s)) }
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clusterLayout says which ranks each worker process hosts.
type clusterLayout struct {
	prefill [][]int
	decode  [][]int
}

// perRank puts every rank in its own process; perSide puts each side in one.
func perRank(p, d int) clusterLayout {
	var l clusterLayout
	for r := 0; r < p; r++ {
		l.prefill = append(l.prefill, []int{r})
	}
	for r := 0; r < d; r++ {
		l.decode = append(l.decode, []int{r})
	}
	return l
}

func perSide(p, d int) clusterLayout {
	all := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	return clusterLayout{prefill: [][]int{all(p)}, decode: [][]int{all(d)}}
}

// runCluster starts the workers, wires the handshake, and returns every
// decode worker's RESULT payload and every prefill worker's DONE payload.
func runCluster(ctx context.Context, cfg verify.Config, layout clusterLayout, ux ucxFlags, bench bool, iterations int) (results, dones []string, err error) {
	js, err := newJobSpec(cfg)
	if err != nil {
		return nil, nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	var all []*worker
	defer func() {
		for _, w := range all {
			if serr := w.stop(20 * time.Second); serr != nil && err == nil {
				var ee *exec.ExitError
				if !errors.As(serr, &ee) {
					err = serr
				}
			}
		}
	}()
	var pws []*worker
	bootID := session.NewBootID() // one incarnation across P's processes
	for i, ranks := range layout.prefill {
		w, err := startWorker(ctx, fmt.Sprintf("prefill %v", ranks), workerSpec{Side: "prefill", Ranks: ranks, BootID: bootID, Job: js, BasePort: port, UCX: ux, Bench: bench})
		if err != nil {
			return nil, nil, err
		}
		all = append(all, w)
		pws = append(pws, w)
		_ = i
	}
	// Every P worker publishes its ranks; the host of rank 0 serves them all.
	var metas []string
	for _, w := range pws {
		m, err := w.expect(ctx, "META")
		if err != nil {
			return nil, nil, err
		}
		metas = append(metas, m)
	}
	if err := pws[0].send("METAS", strings.Join(metas, ",")); err != nil {
		return nil, nil, err
	}
	addr, err := pws[0].expect(ctx, "LISTEN")
	if err != nil {
		return nil, nil, err
	}
	var dws []*worker
	for _, ranks := range layout.decode {
		w, err := startWorker(ctx, fmt.Sprintf("decode %v", ranks), workerSpec{Side: "decode", Ranks: ranks, Job: js, SideChannel: addr, UCX: ux, Bench: bench, Iterations: iterations})
		if err != nil {
			return nil, nil, err
		}
		all = append(all, w)
		dws = append(dws, w)
	}
	for _, w := range dws {
		r, err := w.expect(ctx, "RESULT")
		if err != nil {
			return nil, nil, err
		}
		results = append(results, r)
	}
	// Every decode process has answered: the prefill processes release
	// what they saw notified, within a bound (a decode rank that failed
	// never notifies, and waiting for it would hang).
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, w := range pws {
		d, err := w.expect(dctx, "DONE")
		if err != nil {
			return nil, nil, fmt.Errorf("prefill %s did not see every read-completion within 30 s of the decode results %v: %w", w.name, results, err)
		}
		dones = append(dones, d)
	}
	return results, dones, nil
}
