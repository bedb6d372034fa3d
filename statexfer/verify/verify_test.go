package verify

import (
	"context"
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Every preset, real shapes, a short prompt: P and D differ in tp (both
// directions across the list), layouts and memory layouts.
func TestEveryPresetByteExact(t *testing.T) {
	tpPairs := [][2]int{{2, 4}, {4, 2}, {1, 2}, {2, 1}, {8, 2}, {2, 8}}
	for i, name := range groups.PresetNames() {
		m, err := groups.Preset(name, groups.PresetOptions{MTP: groups.HasMTP(name)})
		if err != nil {
			t.Fatal(err)
		}
		tp := tpPairs[i%len(tpPairs)]
		p := groups.InstanceConfig{TP: tp[0], AttnLayout: groups.NHD, ConvLayout: groups.SD}
		d := groups.InstanceConfig{TP: tp[1], BlockSize: 32, Memory: groups.Separate}
		if i%2 == 1 {
			p, d = d, p
			p.TP, d.TP = tp[0], tp[1]
		}
		mode := []plan.Mode{plan.Direct, plan.Staged, plan.Auto}[i%3]
		t.Run(name, func(t *testing.T) {
			res, err := Run(Config{Model: m, P: p, D: d, PromptTokens: 300, Requests: 2, Seed: uint64(i), Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() {
				t.Fatalf("%d mismatches, %d untouched violations: %s", res.ByteMismatches, res.UntouchedViolations, res.FirstProblem)
			}
			if res.BytesMoved == 0 || res.Reads == 0 {
				t.Fatalf("nothing moved: %+v", res)
			}
		})
	}
}

// A broken executor must be caught: dropping one read leaves owned bytes
// wrong; writing one byte too many touches bytes D does not own.
func TestVerifyCatchesBrokenTransfers(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	cfg := Config{Model: m, P: groups.InstanceConfig{TP: 2}, D: groups.InstanceConfig{TP: 4}, PromptTokens: 200, Requests: 2, Seed: 3, Mode: plan.Direct}
	drop := cfg
	drop.Executor = func(p *plan.Plan, pm []*plan.RankMemory, dm *plan.RankMemory) error {
		p.Remotes[0].Reads = p.Remotes[0].Reads[1:]
		return plan.Execute(kernels.Default(), p, pm, dm)
	}
	res, err := Run(drop)
	if err != nil {
		t.Fatal(err)
	}
	if res.ByteMismatches == 0 {
		t.Errorf("dropped read not detected: %+v", res)
	}
	over := cfg
	over.Executor = func(p *plan.Plan, pm []*plan.RankMemory, dm *plan.RankMemory) error {
		r := &p.Remotes[0].Reads[len(p.Remotes[0].Reads)-1]
		r.Len++
		return plan.Execute(kernels.Default(), p, pm, dm)
	}
	if res, err = Run(over); err != nil {
		t.Fatal(err)
	}
	if res.UntouchedViolations == 0 && res.ByteMismatches == 0 {
		t.Errorf("overlong read not detected: %+v", res)
	}
}

func TestVerifyRefusesImpossible(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{})
	_, err := Run(Config{Model: m, P: groups.InstanceConfig{TP: 3}, D: groups.InstanceConfig{TP: 1}, PromptTokens: 10, Requests: 1})
	if !errors.Is(err, groups.ErrImpossibleTP) {
		t.Errorf("tp 3: %v", err)
	}
	_, err = Run(Config{Model: m, P: groups.InstanceConfig{TP: 4}, D: groups.InstanceConfig{TP: 1}, PromptTokens: 0, Requests: 1})
	if !errors.Is(err, ErrConfig) {
		t.Errorf("0 tokens: %v", err)
	}
}

// The whole protocol over the in-process transport: handshake metadata,
// staging requests, reads, notifications, releases on P.
func TestInprocTransport(t *testing.T) {
	for _, c := range []struct {
		name string
		tp   [2]int
		mode plan.Mode
	}{{"qwen3.5-0.8b", [2]int{2, 4}, plan.Direct}, {"qwen3.5-0.8b", [2]int{4, 2}, plan.Staged}, {"deepseek-v3.2", [2]int{1, 2}, plan.Auto}} {
		m, _ := groups.Preset(c.name, groups.PresetOptions{})
		res, err := RunTransport(context.Background(), Config{Model: m, P: groups.InstanceConfig{TP: c.tp[0]}, D: groups.InstanceConfig{TP: c.tp[1], ConvLayout: groups.SD},
			PromptTokens: 300, Requests: 3, Seed: 5, Mode: c.mode}, "inproc",
			func(side string, rank int, h transport.Handlers) (transport.Transport, error) {
				return transport.NewInproc(h), nil
			})
		if err != nil {
			t.Fatalf("%s %v: %v", c.name, c.tp, err)
		}
		if !res.OK() || res.PrefillReleased != 3 {
			t.Fatalf("%s %v: %+v", c.name, c.tp, res)
		}
	}
}

// Every layer kind and every recurrent family (groups.KindSampleModel),
// byte-exact across tp pairs in both directions and every mode: a kind the
// geometry, the planner or the checker does not handle fails here.
func TestEveryKindByteExact(t *testing.T) {
	m := groups.KindSampleModel()
	for i, tp := range [][2]int{{1, 8}, {8, 1}, {2, 4}, {4, 2}} {
		for _, mode := range []plan.Mode{plan.Direct, plan.Staged} {
			p := groups.InstanceConfig{TP: tp[0], BlockSize: 16, ConvLayout: groups.SD}
			d := groups.InstanceConfig{TP: tp[1], BlockSize: 32, KernelBlockSize: 16, AttnLayout: groups.NHD, Memory: groups.Separate}
			res, err := Run(Config{Model: m, P: p, D: d, PromptTokens: 77, Requests: 2, Seed: uint64(i), Mode: mode})
			if err != nil {
				t.Fatalf("tp %v %s: %v", tp, mode, err)
			}
			if !res.OK() || res.BytesMoved == 0 {
				t.Fatalf("tp %v %s: %d mismatches, %d untouched violations, %d bytes: %s", tp, mode, res.ByteMismatches, res.UntouchedViolations, res.BytesMoved, res.FirstProblem)
			}
		}
	}
}

// A P process hosting only some ranks (one process per rank, as verify
// --transport ucx runs it) reports what its own ranks released: the count
// was taken over ranks 0..n-1, so the process of rank 1 reported 0 and
// every P tp > 1 run over UCX failed.
func TestPrefillReleasedCountsHostedRanks(t *testing.T) {
	m, _ := groups.Preset("llama-3.1-8b", groups.PresetOptions{})
	j, err := NewJob(Config{Model: m, P: groups.InstanceConfig{TP: 2}, D: groups.InstanceConfig{TP: 1}, PromptTokens: 50, Requests: 2, Seed: 1, Mode: plan.Direct})
	if err != nil {
		t.Fatal(err)
	}
	pool, _, err := j.Staging()
	if err != nil {
		t.Fatal(err)
	}
	p, err := j.StartP([]int{1}, "boot", func(rank int, h transport.Handlers) (transport.Transport, error) {
		return transport.NewInproc(h), nil
	}, pool)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Session.Close()
	for i := 0; i < 2; i++ {
		if got := p.Released(); got != i {
			t.Fatalf("after %d releases: Released() = %d", i, got)
		}
		p.holds.Released(j.ReqID(i), 1)
	}
	if got := p.Released(); got != 2 {
		t.Fatalf("Released() = %d, want 2", got)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}
