package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/verify"
)

// verify --transport ucx runs every P and D rank as its own process
// (ZeroMQ handshake, UCX reads). P tp > 1 is covered in both directions:
// a P process hosting rank 1 once reported nothing released and every
// such run failed. Each case is byte-exact or the test fails.
func TestVerifyUCXProcesses(t *testing.T) {
	bin := buildCLI(t)
	cases := [][]string{
		{"--model", "qwen3.5-0.8b", "--prefill-tp", "2", "--decode-tp", "1", "--prefill-block-size", "32", "--decode-block-size", "16"},
		{"--model", "falcon-h1-7b", "--prefill-tp", "2", "--decode-tp", "4", "--decode-layout", "NHD", "--prefill-conv-layout", "SD"},
		{"--model", "jamba-1.5-mini", "--prefill-tp", "4", "--decode-tp", "2", "--decode-memory", "separate"},
		{"--model", "lfm2-1.2b", "--prefill-tp", "1", "--decode-tp", "2", "--kv-cache-dtype", "fp8"},
	}
	for _, c := range cases {
		t.Run(c[1]+"-tp"+c[3]+"-"+c[5], func(t *testing.T) {
			args := append([]string{"verify", "--transport", "ucx", "--prompt-tokens", "700", "--requests", "3", "--json"}, c...)
			res, out := runVerifyJSON(t, bin, args)
			if res.Transport != "ucx" || res.ByteMismatches != 0 || res.UntouchedViolations != 0 || res.BytesMoved == 0 || res.PrefillReleased != res.Requests {
				t.Fatalf("%v: %s", args, out)
			}
		})
	}
}

// TestVerifyUCXAutoReadsDirectOnMappedPath: gpt-oss-120b 4 -> 8 reads 2
// KiB pieces. Auto mode staged them under the default cost model (500 ns
// per read), which bench transfer measured 4-6x slower than direct on the
// UCX mapped path; the decode session now prices reads by the path its
// peers report (transport.ReadCoster) and reads directly, byte-exact.
func TestVerifyUCXAutoReadsDirectOnMappedPath(t *testing.T) {
	bin := buildCLI(t)
	args := []string{"verify", "--transport", "ucx", "--model", "gpt-oss-120b", "--prefill-tp", "4", "--decode-tp", "8",
		"--prompt-tokens", "1024", "--requests", "2", "--mode", "auto", "--json"}
	res, out := runVerifyJSON(t, bin, args)
	if res.ByteMismatches != 0 || res.StagedPlans != 0 || res.DirectPlans == 0 || res.Paths["mapped"] == 0 {
		t.Fatalf("auto mode on the mapped path: %s", out)
	}
}

// verify --staging host over UCX with every rank its own process: P's
// caches are not registered (only its staging buffers are), D's session
// learns it from the handshake, so even Auto on the mapped path (which
// reads directly when it can, the test above) stages every plan, and D
// ends byte-exact with every request released on P.
func TestVerifyUCXHostStaging(t *testing.T) {
	bin := buildCLI(t)
	args := []string{"verify", "--transport", "ucx", "--model", "gpt-oss-120b", "--prefill-tp", "4", "--decode-tp", "8",
		"--prompt-tokens", "1024", "--requests", "2", "--mode", "auto", "--staging", "host", "--json"}
	res, out := runVerifyJSON(t, bin, args)
	if res.ByteMismatches != 0 || res.UntouchedViolations != 0 || res.DirectPlans != 0 || res.StagedPlans != 2*8 || res.PrefillReleased != 2 {
		t.Fatalf("host staging: %s", out)
	}
	// A device cache is refused up front with what is missing (here: no
	// CUDA driver; on a GPU host: the in-process backend moves host memory
	// only), never run on host memory instead.
	cmd := exec.Command(bin, "verify", "--model", "qwen3.5-0.8b", "--prefill-tp", "1", "--decode-tp", "1", "--requests", "1",
		"--transport", "inproc", "--memory-kind", "device:0")
	cmd.Env = workerEnv()
	if msg, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(msg), "device:0") {
		t.Fatalf("--memory-kind device:0: %v\n%s", err, msg)
	}
}

// Over UCX tcp (gets emulated by active messages, about 10 us a read) the
// decode session prices reads by that path and Auto stages qwen3.5-27b's
// plans of many reads, which bench transfer measured faster there (the
// short request's plans may still read directly); before, it priced every
// read at plan.DefaultCost's 500 ns and read all 8 plans directly.
func TestVerifyUCXAutoStagesOverTCP(t *testing.T) {
	bin := buildCLI(t)
	t.Setenv("UCX_TLS", "tcp")
	args := []string{"verify", "--transport", "ucx", "--model", "qwen3.5-27b", "--prefill-tp", "2", "--decode-tp", "4",
		"--prompt-tokens", "1024", "--requests", "2", "--mode", "auto", "--json"}
	res, out := runVerifyJSON(t, bin, args)
	if res.ByteMismatches != 0 || res.StagedPlans == 0 || res.DirectPlans+res.StagedPlans != 2*4 || res.Paths["emulated"] == 0 {
		t.Fatalf("auto mode over tcp: %s", out)
	}
}

// runVerifyJSON runs bin with args (a verify --json command, worker
// processes included) under a hang guard, fails the test when it fails,
// decodes its JSON and returns it with the output.
func runVerifyJSON(t *testing.T, bin string, args []string) (*verify.Result, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = workerEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	res := &verify.Result{}
	if err := json.Unmarshal(out, res); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return res, out
}
