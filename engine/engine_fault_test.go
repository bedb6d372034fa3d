package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// Failed reads on D: policy fail gives the client an error naming the
// cause and no tokens; policy recompute gives the monolithic answer with
// every position computed exactly once; both release everything.
func TestKVLoadFailurePolicies(t *testing.T) {
	for _, policy := range []string{backend.PolicyFail, backend.PolicyRecompute} {
		t.Run(policy, func(t *testing.T) {
			m, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{})
			faults := transport.NewFaultPlan(1).Add(transport.Rule{Kind: transport.OpRead, Calls: []int{0}, Ops: []int{0}, Fault: transport.Fault{Kind: transport.FaultFail}})
			x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, func(p, d *Config) {
				d.FailurePolicy = policy
				d.Transports = inprocTransports(faults)
			})
			prompt := "a prompt whose state will not arrive intact"
			_, dr, err := x.run(context.Background(), "f", prompt, 5)
			if len(faults.Injected()) == 0 {
				t.Fatal("no fault was injected")
			}
			switch policy {
			case backend.PolicyFail:
				if !errors.Is(err, backend.ErrKVLoad) || !strings.Contains(err.Error(), "injected") {
					t.Fatalf("policy fail: %v, want ErrKVLoad naming the injected fault", err)
				}
				if dr != nil {
					t.Fatalf("policy fail returned tokens %v", dr.Tokens)
				}
			case backend.PolicyRecompute:
				if err != nil {
					t.Fatal(err)
				}
				want := reference(t, x.d, prompt, 5)
				if fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
					t.Fatalf("recompute: %v, monolithic %v", dr.Tokens, want)
				}
				// P computed [0,H) once; D recomputed [0,H) after the reported
				// failure (allowed) and then decoded: D alone covers every
				// position exactly once.
				x.pCompute = map[string][][2]int{}
				x.checkExactlyOnce(t, "f", refmodel.Computed(len(tokenizer.Tokenize(prompt)), 5))
			}
			waitIdle(t, x.p) // D aborted: P released at once, not by lease expiry
			if err := x.d.CheckIdle(); err != nil {
				t.Error(err)
			}
		})
	}
}

// A decode instance that never reads: P reclaims the state when the lease
// expires (every hold swept whatever its order), and a late D fails cleanly.
func TestLeaseExpiryReclaims(t *testing.T) {
	m, _ := groups.Preset("gpt-oss-20b", groups.PresetOptions{})
	// The clock is read by the sweeper goroutine too.
	var nowNs atomic.Int64
	nowNs.Store(time.Unix(1000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, nowNs.Load()) }
	advance := func(d time.Duration) { nowNs.Add(int64(d)) }
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 1}, func(p, d *Config) {
		p.Now, p.LeaseTTL = clock, 10*time.Second
	})
	var params []*backend.KVTransferParams
	for i := 0; i < 3; i++ {
		pr, err := x.p.Generate(context.Background(), backend.GenRequest{ID: fmt.Sprint(i), Prompt: strings.Repeat("z", 10+i*7), MaxTokens: 1,
			KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		params = append(params, pr.KV)
		advance(time.Second) // later requests expire later
	}
	if err := x.p.CheckIdle(); err == nil {
		t.Fatal("P idle while holding three requests")
	}
	if ids := x.p.Sweep(); len(ids) != 0 {
		t.Fatalf("swept %v before expiry", ids)
	}
	advance(time.Hour)
	// The background sweeper may release them first; together they release
	// all three, once.
	swept := len(x.p.Sweep())
	deadline := time.Now().Add(10 * time.Second)
	for x.p.CheckIdle() != nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if swept > 3 {
		t.Fatalf("swept %d, want at most 3", swept)
	}
	if err := x.p.CheckIdle(); err != nil {
		t.Fatal(err)
	}
}

// P dies before D reads: D's load fails within the transfer timeout (not a
// long default), and with policy recompute D still answers correctly.
func TestDeadPrefillDetected(t *testing.T) {
	m, _ := groups.Preset("kimi-linear-48b-a3b", groups.PresetOptions{})
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 2}, func(p, d *Config) {
		d.TransferTimeout = 2 * time.Second
		d.FailurePolicy = backend.PolicyRecompute
	})
	prompt := "state that nobody will serve"
	pr, err := x.p.Generate(context.Background(), backend.GenRequest{ID: "dead", Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Warm the handshake, then kill P's transports (its process "dies").
	if _, _, err := x.run(context.Background(), "warm", "warm up", 1); err != nil {
		t.Fatal(err)
	}
	for r := range x.p.side.Ranks {
		x.p.pre.Transport(r).(*transport.Inproc).Kill()
	}
	done := make(chan error, 1)
	var dr *backend.GenResult
	go func() {
		var err error
		dr, err = x.d.Generate(context.Background(), backend.GenRequest{ID: "dead", Prompt: prompt, MaxTokens: 4, KV: pr.KV}, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("recompute after a dead peer: %v", err)
		}
	case <-time.After(time.Minute): // a hang guard, far above the 2 s bound
		t.Fatal("decode hung on a dead prefill instance")
	}
	if want := reference(t, x.d, prompt, 4); fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
		t.Fatalf("recompute: %v, monolithic %v", dr.Tokens, want)
	}
	if err := x.d.CheckIdle(); err != nil {
		t.Error(err)
	}
}

// A client that goes away mid-decode releases everything on D.
func TestAbortReleases(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2}, nil)
	pr, err := x.p.Generate(context.Background(), backend.GenRequest{ID: "a", Prompt: "abort me", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = x.d.Generate(ctx, backend.GenRequest{ID: "a", Prompt: "abort me", MaxTokens: 50, KV: pr.KV}, func(string) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled decode: %v", err)
	}
	if err := x.d.CheckIdle(); err != nil {
		t.Error(err)
	}
	waitIdle(t, x.p)
}

// Wrong inputs are refused with the right sentinel.
func TestEngineRefusals(t *testing.T) {
	m, _ := groups.Preset("llama-3.1-8b", groups.PresetOptions{})
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 1}, nil)
	ctx := context.Background()
	if _, err := x.d.Generate(ctx, backend.GenRequest{Prompt: "x", MaxTokens: 1}, nil); !errors.Is(err, backend.ErrWrongRole) {
		t.Errorf("plain request to decode: %v", err)
	}
	if _, err := x.d.Generate(ctx, backend.GenRequest{Prompt: "x", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil); !errors.Is(err, backend.ErrWrongRole) {
		t.Errorf("do_remote_decode to decode: %v", err)
	}
	if _, err := x.p.Generate(ctx, backend.GenRequest{Prompt: "x", MaxTokens: 0, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil); !errors.Is(err, backend.ErrBadRequest) {
		t.Errorf("max_tokens 0: %v", err)
	}
	// Prompt + max_tokens above max_model_len (default 8192): refused
	// before anything is computed or held.
	long := strings.Repeat("x", 8190)
	if _, err := x.p.Generate(ctx, backend.GenRequest{Prompt: long, MaxTokens: 3, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil); !errors.Is(err, backend.ErrBadRequest) || !strings.Contains(err.Error(), "max_model_len") {
		t.Errorf("prompt over max_model_len: %v", err)
	}
	if err := x.p.CheckIdle(); err != nil {
		t.Errorf("after a refused long prompt: %v", err)
	}
	pr, _ := x.p.Generate(ctx, backend.GenRequest{Prompt: "abcdef", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	// Params that differ from what P granted are refused before anything
	// is loaded (hostile_test.go has the whole list).
	bad := *pr.KV
	bad.NumTokens = 2
	if _, err := x.d.Generate(ctx, backend.GenRequest{Prompt: "abcdef", MaxTokens: 1, KV: &bad}, nil); !errors.Is(err, backend.ErrGrant) {
		t.Errorf("num_tokens mismatch: %v", err)
	}
	foreign := *pr.KV
	foreign.RemoteBlockIDs = [][]int{{1 << 20}}
	if _, err := x.d.Generate(ctx, backend.GenRequest{Prompt: "abcdef", MaxTokens: 1, KV: &foreign}, nil); !errors.Is(err, backend.ErrGrant) {
		t.Errorf("foreign block ids: %v", err)
	}
	// A grant P issued whose blocks are out of D's range of P's pools: a
	// 400 naming remote_block_ids, not a load failure.
	g, err := grant.Open(pr.KV.RemoteGrant, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.BlockIDs = [][]int{{1 << 20}}
	outside := *pr.KV
	outside.RemoteBlockIDs, outside.RemoteGrant = g.BlockIDs, grant.Seal(g, nil)
	_, err = x.d.Generate(ctx, backend.GenRequest{Prompt: "abcdef", MaxTokens: 1, KV: &outside}, nil)
	var pe *backend.ParamError
	if !errors.Is(err, backend.ErrBadRequest) || !errors.As(err, &pe) || pe.Param != "kv_transfer_params.remote_block_ids" {
		t.Errorf("block ids out of range: %v", err)
	}
}
