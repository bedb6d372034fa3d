package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
)

// A worker rebuilds exactly the job the coordinator planned: bench runs
// ask for exact lengths and no prefix hits, and a spec that dropped those
// made a "32768-token" row move 25,363 tokens.
func TestJobSpecCarriesTheConfig(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := verify.Config{Model: m, P: groups.InstanceConfig{TP: 2}, D: groups.InstanceConfig{TP: 4, BlockSize: 32},
		PromptTokens: 1234, Requests: 3, Seed: 9, Mode: plan.Staged, Exact: true, HitPercent: -1}
	js, err := newJobSpec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(js)
	if err != nil {
		t.Fatal(err)
	}
	var back jobSpec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := back.config()
	if err != nil {
		t.Fatal(err)
	}
	if got.Exact != cfg.Exact || got.HitPercent != cfg.HitPercent || got.PromptTokens != cfg.PromptTokens || got.Requests != cfg.Requests ||
		got.Seed != cfg.Seed || got.Mode != cfg.Mode || got.P != cfg.P || got.D != cfg.D || got.Model.Name != m.Name {
		t.Fatalf("round trip changed the job:\n got %+v\nwant %+v", got, cfg)
	}
	// And the rebuilt job moves what was asked.
	j, err := verify.NewJob(got)
	if err != nil {
		t.Fatal(err)
	}
	for q := 0; q < j.Requests(); q++ { // state of every position but the last (D's first step)
		if r := j.Request(q); j.PromptLen(q) != cfg.PromptTokens || r.Tokens != cfg.PromptTokens-1 || r.DHit != 0 {
			t.Fatalf("request %d: prompt %d, %d positions, %d hit; want %d, %d, 0", q, j.PromptLen(q), r.Tokens, r.DHit, cfg.PromptTokens, cfg.PromptTokens-1)
		}
	}
}

// bench transfer reports the length it moved, every baseline of the same
// run, the one-sided row on UCX's own gets, and a fixed overhead that P
// answered.
func TestBenchTransferReportsEveryBaseline(t *testing.T) {
	bin := buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	args := []string{"bench", "transfer", "--model", "qwen3.5-0.8b", "--prompt-tokens", "600", "--prefill-tp", "1", "--decode-tp", "2",
		"--iterations", "1", "--json"}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = workerEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	var r xferResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Tokens != 600 || r.Positions != 599 {
		t.Errorf("prompt_tokens %d, positions_moved %d, want the 600 asked for (599 positions)", r.Tokens, r.Positions)
	}
	if r.ByteMismatches != 0 || r.Untouched != 0 || r.Bytes <= 0 || r.Reads <= 0 {
		t.Errorf("transfer: %d mismatches, %d untouched, %d bytes, %d reads", r.ByteMismatches, r.Untouched, r.Bytes, r.Reads)
	}
	for name, v := range map[string]float64{"gbps": r.GBps, "ucx_one_sided_gbps": r.OneSidedGBps, "raw_ucx_gbps": r.RawGBps,
		"memcpy_gbps": r.MemcpyGBps, "limit_gbps": r.LimitGBps, "fixed_overhead_us": r.FixedOverheadUs,
		"raw_fixed_overhead_us": r.RawFixedOverheadUs, "gbps_vs_limit": r.VsLimit, "fixed_vs_raw": r.FixedVsRaw} {
		if !(v > 0) {
			t.Errorf("%s = %v, want a measurement", name, v)
		}
	}
	if r.OneSidedPath == "" || strings.Contains(r.OneSidedPath, "mapped") {
		t.Errorf("the one-sided row ran on %q, want UCX's gets", r.OneSidedPath)
	}
	if r.MemcpySource != "prefill-mapped" {
		t.Errorf("memcpy read from %q, want P's mapped pages (the transfer's source)", r.MemcpySource)
	}
}
