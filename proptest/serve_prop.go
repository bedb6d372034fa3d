package proptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/serve"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"pgregory.net/rapid"
)

// ServeCase is one randomized disaggregated-serving run: a model miniature,
// a P and a D, a handoff mode, a read mode, a failure policy, an optional
// injected transport fault on D, and a batch of prompts (some sharing
// prefixes, so both sides see prefix-cache hits).
type ServeCase struct {
	Model   *groups.Model
	P, D    groups.InstanceConfig
	Handoff serve.Handoff
	Mode    plan.Mode
	Policy  string
	// FaultRead, when >= 0, fails that read batch (counted over D's
	// transports) at op FaultOp.
	FaultRead, FaultOp int
	Prompts            []string
	MaxTokens          int
}

// GenServeCase draws a ServeCase.
func GenServeCase() *rapid.Generator[ServeCase] {
	return rapid.Custom(func(t *rapid.T) ServeCase {
		c := ServeCase{
			Model:     GenTransferModel().Draw(t, "model"),
			P:         GenInstance(t, "p", rapid.SampledFrom([]int{1, 2, 4}).Draw(t, "p_tp")),
			D:         GenInstance(t, "d", rapid.SampledFrom([]int{1, 2, 4}).Draw(t, "d_tp")),
			Handoff:   rapid.SampledFrom([]serve.Handoff{serve.DecodeComputesLast, serve.PrefillSamplesFirst}).Draw(t, "handoff"),
			Mode:      rapid.SampledFrom([]plan.Mode{plan.Direct, plan.Staged, plan.Auto}).Draw(t, "mode"),
			Policy:    rapid.SampledFrom([]string{serve.PolicyFail, serve.PolicyRecompute}).Draw(t, "policy"),
			FaultRead: -1,
			MaxTokens: rapid.IntRange(1, 6).Draw(t, "max_tokens"),
		}
		if rapid.IntRange(0, 2).Draw(t, "fault") == 0 {
			c.FaultRead = rapid.IntRange(0, 3).Draw(t, "fault_read")
			c.FaultOp = rapid.IntRange(0, 2).Draw(t, "fault_op")
		}
		base := rapid.StringMatching(`[a-z ]{1,30}`).Draw(t, "base")
		for i, n := 0, rapid.IntRange(1, 4).Draw(t, "prompts"); i < n; i++ {
			p := rapid.StringMatching(`[a-z ]{1,40}`).Draw(t, "prompt")
			if rapid.Bool().Draw(t, "shared_prefix") {
				p = base + p
			}
			c.Prompts = append(c.Prompts, p)
		}
		return c
	})
}

// CheckServing runs c with a prefill and a decode engine in process (the
// in-process transport, an in-memory handshake) and fails t unless: every
// answer and every final decode state equals the monolithic reference run;
// without a fault every (request, position) was computed exactly once
// across P and D; a request whose load failed ends with an error under
// policy fail and with the right answer under recompute; and afterwards
// every block on both sides is free and every lease gone.
func CheckServing(t *rapid.T, c ServeCase) {
	hs := &serve.MemHandshake{}
	var mu sync.Mutex
	computed := map[string][][2]int{}
	finals := map[string]*refmodel.Snapshot{}
	var dEngine *serve.Engine
	onCompute := func(id string, from, to int) {
		mu.Lock()
		computed[id] = append(computed[id], [2]int{from, to})
		mu.Unlock()
	}
	var faults *transport.FaultPlan
	if c.FaultRead >= 0 {
		faults = transport.NewFaultPlan(1).Add(transport.Rule{Kind: transport.OpRead, Calls: []int{c.FaultRead}, Ops: []int{c.FaultOp},
			Fault: transport.Fault{Kind: transport.FaultFail}})
	}
	// Faults go on decode rank 0's transport (a plan drives one wrapper).
	factory := func(f *transport.FaultPlan) serve.TransportFactory {
		return func(r int, h transport.Handlers) (transport.Transport, error) {
			if f != nil && r == 0 {
				return transport.WithFaults(transport.NewInproc(f.Handlers(h)), f), nil
			}
			return transport.NewInproc(h), nil
		}
	}
	p, err := serve.New(serve.Config{Role: serve.RolePrefill, EngineID: "P", Model: c.Model, Seed: 3, Instance: c.P, NumBlocks: 512,
		LeaseTTL: time.Hour, Handoff: c.Handoff, Transports: factory(nil), Serve: hs.Serve, OnCompute: onCompute, Log: quiet})
	if err != nil {
		t.Fatalf("prefill engine: %v", err)
	}
	defer p.Close()
	dEngine, err = serve.New(serve.Config{Role: serve.RoleDecode, EngineID: "D", Model: c.Model, Seed: 3, Instance: c.D, NumBlocks: 512,
		Mode: c.Mode, FailurePolicy: c.Policy, TransferTimeout: 10 * time.Second, Transports: factory(faults), Fetch: hs.Fetch,
		OnCompute: onCompute, Log: quiet,
		OnFinish: func(id string, st refmodel.Store, n int) {
			snap, err := dEngine.Model().Snapshot(st, n)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				finals[id] = snap
			}
		}})
	if err != nil {
		t.Fatalf("decode engine: %v", err)
	}
	defer dEngine.Close()
	ctx := context.Background()
	faulted := false
	for i, prompt := range c.Prompts {
		id := fmt.Sprintf("r%d", i)
		before := 0
		if faults != nil {
			before = len(faults.Injected())
		}
		pr, err := p.Generate(ctx, serve.GenRequest{ID: id, Prompt: prompt, MaxTokens: 1, KV: &serve.KVTransferParams{DoRemoteDecode: true}}, nil)
		if err != nil {
			t.Fatalf("prefill %d: %v", i, err)
		}
		dr, err := dEngine.Generate(ctx, serve.GenRequest{ID: id, Prompt: prompt, MaxTokens: c.MaxTokens, KV: pr.KV}, nil)
		hit := faults != nil && len(faults.Injected()) > before
		faulted = faulted || hit
		if hit && c.Policy == serve.PolicyFail {
			if !errors.Is(err, serve.ErrKVLoad) {
				t.Fatalf("request %d: failed load under policy fail gave %v, want ErrKVLoad", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("decode %d: %v", i, err)
		}
		// The monolithic run of the same prompt.
		ms := refmodel.NewMapStore(dEngine.Spec())
		toks := serve.Tokenize(prompt)
		want, err := dEngine.Model().Generate(ms, toks, 0, c.MaxTokens)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
			t.Fatalf("request %d (fault %v): disaggregated %v, monolithic %v", i, hit, dr.Tokens, want)
		}
		total := refmodel.Computed(len(toks), c.MaxTokens)
		wantSnap, err := dEngine.Model().Snapshot(ms, total)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		var got *refmodel.Snapshot
		for fid, s := range finals {
			if strings.HasSuffix(fid, "-"+id) {
				got = s
			}
		}
		mu.Unlock()
		if got == nil {
			t.Fatalf("request %d: no final decode state", i)
		}
		if err := got.Diff(wantSnap); err != nil {
			t.Fatalf("request %d: final state differs from monolithic: %v", i, err)
		}
		if !hit {
			checkOnce(t, computed, &mu, id, total)
		}
	}
	// Everything released on both sides (P's releases arrive
	// asynchronously; the timeout only turns a hang into a failure).
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.WaitIdle(wctx); err != nil {
		t.Fatalf("prefill not idle after the run (fault %v): %v", faulted, err)
	}
	if err := dEngine.WaitIdle(wctx); err != nil {
		t.Fatalf("decode not idle after the run (fault %v): %v", faulted, err)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// checkOnce: positions before the first one computed for the request came
// from a prefix-cache hit (computed by an earlier request); every later
// position was computed exactly once across P and D.
func checkOnce(t *rapid.T, computed map[string][][2]int, mu *sync.Mutex, id string, total int) {
	mu.Lock()
	defer mu.Unlock()
	count := make([]int, total)
	first := total
	for rid, rs := range computed {
		if !strings.HasSuffix(rid, "-"+id) {
			continue
		}
		for _, r := range rs {
			first = min(first, r[0])
			for p := r[0]; p < r[1]; p++ {
				if p >= total {
					t.Fatalf("%s: position %d computed beyond %d", rid, p, total)
				}
				count[p]++
			}
		}
	}
	for p, n := range count {
		if (p < first && n != 0) || (p >= first && n != 1) {
			t.Fatalf("request %s: position %d computed %d times across P and D (cache hit below %d)", id, p, n, first)
		}
	}
}
