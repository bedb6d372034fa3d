package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// buildCLI builds the hybridxfer binary once for the end-to-end tests.
func buildCLI(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: builds the CLI and starts processes")
	}
	bin := filepath.Join(t.TempDir(), "hybridxfer")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// referenceModel is the monolithic reference model the cluster's answers
// are compared with: preset model's miniature with the cluster's seed.
func referenceModel(t *testing.T, model string, seed uint64) *refmodel.Model {
	t.Helper()
	spec, err := groups.Preset(model, groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mini, err := refmodel.Miniature(spec)
	if err != nil {
		t.Fatal(err)
	}
	return refmodel.New(mini, seed)
}

// TestEndToEnd starts the demo cluster (proxy, prefill tp 2, decode tp 4 as
// separate processes over ZeroMQ and UCX), talks to the proxy over HTTP,
// streaming and not, and checks every answer against the monolithic
// reference model; then an interrupt stops every process.
func TestEndToEnd(t *testing.T) {
	bin := buildCLI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a hang guard
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo", "--keep-running", "--port", fmt.Sprint(port), "--seed", "5")
	cmd.Env = workerEnv()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Log(sc.Text())
		}
		exited <- cmd.Wait()
	}()
	proxy := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitHealthy(ctx, proxy, nil); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	ref := referenceModel(t, "qwen3.5-27b", 5)
	for i, p := range []string{"hello there", "a", strings.Repeat("long prompt ", 12)} {
		for _, stream := range []bool{false, true} {
			got, err := chat(ctx, proxy, "qwen3.5-27b", p, 7, stream)
			if err != nil {
				t.Fatalf("request %d stream=%v: %v", i, stream, err)
			}
			want, err := monolithicAnswer(ref, p, 7)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("request %d stream=%v: %q, monolithic %q", i, stream, got, want)
			}
		}
	}
	// 64 requests in flight at once through the proxy (the demo's default
	// layout: D in NHD/SD with staged reads): every answer equals the
	// monolithic one.
	const inFlight = 64
	errs := make(chan error, inFlight)
	for i := range inFlight {
		go func() {
			p := fmt.Sprintf("c%d %s", i, strings.Repeat("t", i%5))
			got, err := chat(ctx, proxy, "qwen3.5-27b", p, 3, i%2 == 1)
			if err == nil {
				var want string
				if want, err = monolithicAnswer(ref, p, 3); err == nil && got != want {
					err = fmt.Errorf("%q: %q, monolithic %q", p, got, want)
				}
			}
			errs <- err
		}()
	}
	for range inFlight {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// A wrong model name is the client's error, with a message.
	if _, err := chat(ctx, proxy, "no-such-model", "x", 2, false); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("unknown model: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exited with %v after SIGTERM", err)
		}
	case <-ctx.Done():
		cmd.Process.Kill()
		t.Fatal("demo did not stop after SIGTERM")
	}
}

// TestDemoBatch runs `hybridxfer demo` as a user would, plain and with
// speculative decoding: exit status 0 and every answer matched (the
// speculative one against the run without speculation, with its
// acceptance rate printed).
func TestDemoBatch(t *testing.T) {
	bin := buildCLI(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain", []string{"demo", "--max-tokens", "4"}, "OK: every answer"},
		{"speculative", []string{"demo", "--max-tokens", "8", "--speculative", "mtp", "--num-speculative-tokens", "2"}, "acceptance rate"},
		// Multi-turn: turn 2+ prefill reads the conversation back from
		// decode (the demo fails unless something was read and every answer
		// matched).
		{"bidirectional", []string{"demo", "--max-tokens", "6", "--bidirectional"}, "read back from decode instead of computed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = workerEnv()
			out, err := cmd.Output()
			if err != nil {
				var stderr []byte
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = ee.Stderr // the end of the demo's and its children's logs
				}
				t.Fatalf("%v: %v\n%s\nstderr:\n%s", tc.args, err, out, stderr)
			}
			if !strings.Contains(string(out), "matched 8") || !strings.Contains(string(out), "OK: every answer") || !strings.Contains(string(out), tc.want) {
				t.Fatalf("%v output:\n%s", tc.args, out)
			}
		})
	}
}
