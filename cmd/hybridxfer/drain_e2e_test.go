package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
)

// TestDrainUnderLoad runs 2 prefill and 1 decode instances behind the
// proxy as processes and drains them for scale-down while requests are
// in flight:
//
//   - SIGTERM to P0 mid-load: every request still answers 200 with the
//     monolithic answer (P0's in-flight requests finish, new ones are
//     refused 503 draining and retried on P1), and P0 exits 0;
//   - P1 holding a lease nobody reads, SIGTERM: /health turns 503
//     "draining" and P1 keeps running (it waits for the lease); a second
//     SIGTERM stops it at once with exit status 1;
//   - POST /admin/drain to D (internal token required): 403 without it,
//     202 with it, and D, holding nothing, exits 0.
func TestDrainUnderLoad(t *testing.T) {
	bin := buildCLI(t)
	f := &fleet{t: t, bin: bin}
	defer f.stopAll()
	const model, seed = "qwen3.5-27b", 5
	dir, pk, dk, xk, err := demoKeys(false)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ck, err := grant.LoadKey(filepath.Join(dir, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	token := ck.InternalToken()
	common := []string{"--model", model, "--seed", fmt.Sprint(seed), "--lease-ttl", "2m"}
	for i, tp := range []int{2, 1} {
		f.ps = append(f.ps, newInstance(t, fmt.Sprintf("P%d", i), slices.Concat([]string{"serve", "--role", "prefill", "--tp", fmt.Sprint(tp)}, common, pk)...))
	}
	f.ds = append(f.ds, newInstance(t, "D0", slices.Concat([]string{"serve", "--role", "decode", "--tp", "2"}, common, dk)...))
	var pURLs []string
	for _, in := range f.ps {
		f.start(in)
		pURLs = append(pURLs, in.url)
	}
	f.start(f.ds[0])
	f.proxy = newInstance(t, "proxy", slices.Concat([]string{"proxy", "--prefill", strings.Join(pURLs, ","), "--decode", f.ds[0].url,
		"--health-interval", "200ms"}, xk)...)
	f.start(f.proxy)
	ref := referenceModel(t, model, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()

	// Load: 4 clients, 6 requests each; P0 gets SIGTERM once 4 answers are in.
	var mu sync.Mutex
	var answered int
	var failures []string
	signaled := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 6 {
				p := fmt.Sprintf("drain w%d r%d %s", w, i, strings.Repeat("x", i))
				got, err := chat(ctx, f.proxy.url, model, p, 3, i%2 == 0)
				if err == nil {
					var want string
					if want, err = monolithicAnswer(ref, p, 3); err == nil && got != want {
						err = fmt.Errorf("answer %q, monolithic %q", got, want)
					}
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Sprintf("%q: %v", p, err))
				}
				if answered++; answered == 4 {
					close(signaled)
				}
				mu.Unlock()
			}
		})
	}
	<-signaled
	if err := f.ps[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, msg := range failures {
		t.Errorf("during P0's drain: %s", msg)
	}
	if err := waitExit(ctx, f.ps[0]); err != nil {
		t.Fatalf("P0 after SIGTERM and drain: %v, want exit status 0", err)
	}

	// P1 holds a lease nobody will read: a drain waits for it.
	body := fmt.Sprintf(`{"model":%q,"prompt":"held","max_tokens":1,"kv_transfer_params":{"do_remote_decode":true}}`, model)
	preq, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.ps[1].url+"/v1/completions", strings.NewReader(body))
	preq.Header.Set("Content-Type", "application/json")
	preq.Header.Set(openai.HeaderInternal, token)
	resp, err := http.DefaultClient.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("prefill-only request to P1: status %d", resp.StatusCode)
	}
	if err := f.ps[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := waitHealth(ctx, f.ps[1].url, "draining"); status != "draining" {
		t.Fatalf("P1 /health after SIGTERM with a lease held: %q, want draining", status)
	}
	if f.ps[1].cmd.ProcessState != nil {
		t.Fatal("P1 exited while it still held a lease")
	}
	if err := f.ps[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := waitExit(ctx, f.ps[1]); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("P1 after a second SIGTERM: %v, want exit status 1", err)
	}

	// D drains over HTTP, only with the internal token.
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusForbidden}, {token, http.StatusAccepted}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.ds[0].url+"/admin/drain", bytes.NewReader(nil))
		if tc.token != "" {
			req.Header.Set(openai.HeaderInternal, tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("POST /admin/drain with token %q: status %d (%v), want %d", tc.token, resp.StatusCode, out, tc.want)
		}
	}
	if err := waitExit(ctx, f.ds[0]); err != nil {
		t.Fatalf("D after POST /admin/drain: %v, want exit status 0", err)
	}
}

// waitExit waits for in's process to exit (or ctx to end) and returns its
// exit error (nil: status 0).
func waitExit(ctx context.Context, in *instance) error {
	done := make(chan error, 1)
	go func() { done <- in.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s did not exit: %w", in.name, ctx.Err())
	}
}

// waitHealth polls url/health until its "status" is want (or ctx ends,
// or 30 s pass: a hang guard) and returns the last status seen.
func waitHealth(ctx context.Context, url, want string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var out struct {
				Status string `json:"status"`
			}
			json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if last = out.Status; last == want {
				return last
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}
