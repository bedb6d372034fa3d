package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// faultyTransports builds in-process transports, optionally wrapped with a
// fault plan (decode side).
func inprocTransports(plan *transport.FaultPlan) TransportFactory {
	return func(_ int, h transport.Handlers) (transport.Transport, error) {
		if plan != nil {
			return transport.WithFaults(transport.NewInproc(plan.Handlers(h)), plan), nil
		}
		return transport.NewInproc(h), nil
	}
}

type pd struct {
	p, d               *Engine
	pCompute, dCompute map[string][][2]int
	mu                 sync.Mutex
}

func newPD(t *testing.T, m *groups.Model, pc, dc groups.InstanceConfig, mod func(p, d *Config)) *pd {
	t.Helper()
	hs := &MemHandshake{}
	x := &pd{pCompute: map[string][][2]int{}, dCompute: map[string][][2]int{}}
	rec := func(dst map[string][][2]int) func(string, int, int) {
		return func(id string, from, to int) {
			x.mu.Lock()
			dst[id] = append(dst[id], [2]int{from, to})
			x.mu.Unlock()
		}
	}
	pcfg := Config{Role: backend.RolePrefill, EngineID: "P", Model: m, Seed: 7, Instance: pc, NumBlocks: 256, LeaseTTL: time.Hour,
		Transports: inprocTransports(nil), Serve: hs.Serve, OnCompute: rec(x.pCompute)}
	dcfg := Config{Role: backend.RoleDecode, EngineID: "D", Model: m, Seed: 7, Instance: dc, NumBlocks: 256,
		Transports: inprocTransports(nil), Fetch: hs.Fetch, OnCompute: rec(x.dCompute)}
	if mod != nil {
		mod(&pcfg, &dcfg)
	}
	var err error
	if x.p, err = New(pcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.p.Close() })
	if x.d, err = New(dcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.d.Close() })
	return x
}

// reference runs the prompt monolithically on the reference model.
func reference(t *testing.T, e *Engine, prompt string, n int) []uint32 {
	t.Helper()
	st := refmodel.NewMapStore(e.Spec())
	toks := tokenizer.Tokenize(prompt)
	out, err := e.Model().Generate(st, toks, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (x *pd) run(ctx context.Context, id, prompt string, n int) (*backend.GenResult, *backend.GenResult, error) {
	pr, err := x.p.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("prefill: %w", err)
	}
	dr, err := x.d.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: n, KV: pr.KV}, nil)
	if err != nil {
		return pr, nil, fmt.Errorf("decode: %w", err)
	}
	return pr, dr, nil
}

func TestDisaggregatedEqualsMonolithic(t *testing.T) {
	cases := []struct {
		model   string
		p, d    groups.InstanceConfig
		handoff backend.Handoff
		mode    plan.Mode
	}{
		{"qwen3.5-27b", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 4, AttnLayout: groups.NHD, ConvLayout: groups.SD}, backend.DecodeComputesLast, plan.Direct},
		{"kimi-linear-48b-a3b", groups.InstanceConfig{TP: 4}, groups.InstanceConfig{TP: 1, Memory: groups.Separate, BlockSize: 32}, backend.PrefillSamplesFirst, plan.Staged},
		{"gemma-3-4b", groups.InstanceConfig{TP: 1, BlockSize: 8, KernelBlockSize: 8}, groups.InstanceConfig{TP: 2, BlockSize: 32}, backend.DecodeComputesLast, plan.Auto},
		{"nemotron-3-nano-30b-a3b", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, backend.PrefillSamplesFirst, plan.Direct},
		{"deepseek-v3.2", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 4}, backend.DecodeComputesLast, plan.Direct},
	}
	for _, c := range cases {
		t.Run(c.model, func(t *testing.T) {
			m, err := groups.Preset(c.model, groups.PresetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			x := newPD(t, m, c.p, c.d, func(p, d *Config) { p.Handoff = c.handoff; d.Mode = c.mode })
			for i, prompt := range []string{"the capital of France is", "x", "a longer prompt that spans several blocks of the sliding window and more, and more, and more tokens"} {
				id := fmt.Sprintf("c%d", i)
				_, dr, err := x.run(context.Background(), id, prompt, 6)
				if err != nil {
					t.Fatalf("prompt %d: %v", i, err)
				}
				want := reference(t, x.d, prompt, 6)
				if fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
					t.Fatalf("prompt %d: disaggregated %v, monolithic %v", i, dr.Tokens, want)
				}
				x.checkExactlyOnce(t, id, refmodel.Computed(len(tokenizer.Tokenize(prompt)), 6))
			}
			// Everything released on both sides.
			waitIdle(t, x.p)
			if err := x.d.CheckIdle(); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkExactlyOnce: across P and D, every position of request id in
// [0, total) was computed exactly once.
func (x *pd) checkExactlyOnce(t *testing.T, id string, total int) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	count := make([]int, total)
	for _, m := range []map[string][][2]int{x.pCompute, x.dCompute} {
		for rid, rs := range m {
			if !strings.HasSuffix(rid, "-"+id) {
				continue
			}
			for _, r := range rs {
				for p := r[0]; p < r[1]; p++ {
					if p >= total {
						t.Fatalf("%s: position %d computed beyond %d", rid, p, total)
					}
					count[p]++
				}
			}
		}
	}
	for p, c := range count {
		if c != 1 {
			t.Fatalf("request %s: position %d computed %d times (P %v, D %v)", id, p, c, x.pCompute, x.dCompute)
		}
	}
}

func waitIdle(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}
