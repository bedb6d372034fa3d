package refmodel_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// TestPrefillFailureLeavesStepwiseState: a Prefill whose run fails part
// way (a null block under position 40 of a full-attention group) leaves
// the store exactly as position-by-position Forward calls leave it, byte
// for byte on every rank: the recurrent state the run cache held back is
// written, and it is the state after position 39, not 40.
func TestPrefillFailureLeavesStepwiseState(t *testing.T) {
	mini := presetMini(t, "qwen3.5-27b", groups.PresetOptions{})
	m := refmodel.New(mini, 4)
	const n, bad = 64, 40
	prompt := make([]uint32, n)
	for i := range prompt {
		prompt[i] = uint32(i*13+5) % refmodel.Vocab
	}
	cfg := groups.InstanceConfig{TP: 2}
	run, step := newInstance(t, mini, cfg, n, 0, 8), newInstance(t, mini, cfg, n, 0, 8)
	for _, in := range []*instance{run, step} {
		nulled := false
		for gi, gg := range in.side.Ranks[0].Groups {
			if gg.Kind == groups.FullAttention && !nulled {
				in.tab[gi][bad/gg.BlockSize] = 0 // the store sees the table live
				nulled = true
			}
		}
		if !nulled {
			t.Fatal("no full-attention group to null a block in")
		}
	}
	_, errRun := m.Prefill(run.store, prompt, 0, n)
	if !errors.Is(errRun, refmodel.ErrNullBlock) {
		t.Fatalf("prefill over a null block: %v, want ErrNullBlock", errRun)
	}
	var errStep error
	for pos := 0; pos < n && errStep == nil; pos++ {
		_, errStep = m.Forward(step.store, pos, prompt[pos])
	}
	if !errors.Is(errStep, refmodel.ErrNullBlock) {
		t.Fatalf("forward over a null block: %v, want ErrNullBlock", errStep)
	}
	sameMemory(t, run, step, "rank %d pool %d block %d differs between the failed run and stepwise Forward")
}

// TestPrefillContextStopsAndFlushes: a canceled context stops a run
// before its first position and leaves the store untouched; a run
// continued by a second call (the engine's steps) gives the same bits as
// one call.
func TestPrefillContextStopsAndFlushes(t *testing.T) {
	mini := presetMini(t, "bamba-9b", groups.PresetOptions{})
	m := refmodel.New(mini, 6)
	const n = 50
	prompt := make([]uint32, n)
	for i := range prompt {
		prompt[i] = uint32(i*29+1) % refmodel.Vocab
	}
	cfg := groups.InstanceConfig{TP: 2}
	a, b := newInstance(t, mini, cfg, n, 0, 9), newInstance(t, mini, cfg, n, 0, 9)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.PrefillContext(ctx, a.store, prompt, 0, n); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled prefill: %v", err)
	}
	sameMemory(t, a, b, "a canceled prefill wrote rank %d pool %d block %d")
	nextA, err := m.Prefill(a.store, prompt, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Prefill(b.store, prompt, 0, 23); err != nil {
		t.Fatal(err)
	}
	nextB, err := m.Prefill(b.store, prompt, 23, n)
	if err != nil {
		t.Fatal(err)
	}
	if nextA != nextB {
		t.Fatalf("next token %d in one call, %d in two", nextA, nextB)
	}
	sameMemory(t, a, b, "rank %d pool %d block %d differs between one call and two")
}

// sameMemory fails the test (message format: rank, pool, block) at the
// first block that differs between a's and b's rank memories.
func sameMemory(t *testing.T, a, b *instance, format string) {
	t.Helper()
	for r := range a.mems {
		for p := range a.mems[r].Pools {
			for blk := range a.mems[r].Pools[p] {
				if !bytes.Equal(a.mems[r].Pools[p][blk], b.mems[r].Pools[p][blk]) {
					t.Fatalf(format, r, p, blk)
				}
			}
		}
	}
}
