package refmodel_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// splitSample is the first, a middle and the last split point of m.
func splitSample(t *testing.T, m *refmodel.Model) []int {
	t.Helper()
	ks := refmodel.SplitPointsForTest(m)
	if len(ks) == 0 {
		t.Fatalf("%s: no split point", m.Spec().Name)
	}
	return slices.Compact([]int{ks[0], ks[len(ks)/2], ks[len(ks)-1]})
}

// TestSplitPrefillEqualsOneGoroutine: a prefill whose target layers run
// on two goroutines (split at the first, a middle and the last decoder
// layer boundary) leaves the same bytes on every rank and predicts the
// same tokens as one goroutine, for every family (Eagle3 and MTP drafts,
// Falcon-H1's parallel layers, sliding windows, scaled fp8 K and V): a
// prompt prefilled in two calls (the second reads the first's state from
// the store), then decoded by Generate from the cache the split run
// leaves behind.
func TestSplitPrefillEqualsOneGoroutine(t *testing.T) {
	for name := range longGoldenDigests {
		t.Run(name, func(t *testing.T) {
			preset, o := name, groups.PresetOptions{}
			if p, ok := cutFP8(name); ok {
				preset, o.KVCacheDType = p, groups.KVCacheFP8
			}
			mini := presetMini(t, preset, o)
			m := refmodel.New(mini, 5)
			const n, cut, decode = 72, 29, 3
			prompt := make([]uint32, n)
			for i := range prompt {
				prompt[i] = uint32(i*31+7) % refmodel.Vocab
			}
			run := func(k int) (*instance, uint32, []uint32) {
				in := newInstance(t, mini, groups.InstanceConfig{TP: 2}, n+decode, 0, 3)
				next, err := refmodel.PrefillSplitForTest(context.Background(), m, in.store, prompt, 0, cut, k)
				if err != nil {
					t.Fatalf("split %d: %v", k, err)
				}
				toks, err := refmodel.GenerateSplitForTest(m, in.store, prompt, cut, decode, k)
				if err != nil {
					t.Fatalf("split %d: %v", k, err)
				}
				return in, next, toks
			}
			want, wantNext, wantToks := run(0)
			for _, k := range splitSample(t, m) {
				got, next, toks := run(k)
				if next != wantNext || !slices.Equal(toks, wantToks) {
					t.Fatalf("split at %d: tokens %d %v, one goroutine %d %v", k, next, toks, wantNext, wantToks)
				}
				sameMemory(t, got, want, "split at layer boundary: rank %d pool %d block %d differs from one goroutine")
			}
		})
	}
}

// TestSplitPrefillFailureLeavesStepwiseState: a split prefill whose write
// of position 40 fails (a null block under one group) leaves the store as
// position-by-position Forward calls do, for split points that put the
// group's first layer in either half: the second goroutine writes a
// position only after both halves computed it, in layer order (gemma's
// layers 0-3 are written, 4 fails, the rest are not), and flushes the
// recurrent state of position 39 (qwen3.5), though the first goroutine
// may have computed further.
func TestSplitPrefillFailureLeavesStepwiseState(t *testing.T) {
	for _, tc := range []struct {
		preset string
		null   func(gg groups.GroupGeometry) bool
	}{
		{"qwen3.5-27b", func(gg groups.GroupGeometry) bool { return gg.Kind == groups.FullAttention }},
		{"gemma-3-27b", func(gg groups.GroupGeometry) bool { return slices.Contains(gg.Layers, 4) }},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			mini := presetMini(t, tc.preset, groups.PresetOptions{})
			m := refmodel.New(mini, 4)
			const n, bad = 64, 40
			prompt := make([]uint32, n)
			for i := range prompt {
				prompt[i] = uint32(i*13+5) % refmodel.Vocab
			}
			cfg := groups.InstanceConfig{TP: 2}
			nullAt := func(in *instance) {
				for gi, gg := range in.side.Ranks[0].Groups {
					if tc.null(gg) {
						in.tab[gi][bad/gg.BlockSize] = 0
						return
					}
				}
				t.Fatal("no group to null a block in")
			}
			step := newInstance(t, mini, cfg, n, 0, 8)
			nullAt(step)
			var errStep error
			for pos := 0; pos < n && errStep == nil; pos++ {
				_, errStep = m.Forward(step.store, pos, prompt[pos])
			}
			if !errors.Is(errStep, refmodel.ErrNullBlock) {
				t.Fatalf("forward over a null block: %v, want ErrNullBlock", errStep)
			}
			ks := refmodel.SplitPointsForTest(m)
			for _, k := range slices.Compact([]int{ks[0], ks[2], ks[len(ks)/2], ks[len(ks)-3], ks[len(ks)-1]}) {
				run := newInstance(t, mini, cfg, n, 0, 8)
				nullAt(run)
				_, err := refmodel.PrefillSplitForTest(context.Background(), m, run.store, prompt, 0, n, k)
				if !errors.Is(err, refmodel.ErrNullBlock) {
					t.Fatalf("split at %d over a null block: %v, want ErrNullBlock", k, err)
				}
				sameMemory(t, run, step, "split run failed: rank %d pool %d block %d differs from stepwise Forward")
			}
		})
	}
}

// cancelAt is a RankStore that cancels a context when position at is
// first written (embedding *RankStore, it still carries recurrent state
// in the run's cache).
type cancelAt struct {
	*refmodel.RankStore
	at     int
	cancel context.CancelFunc
}

func (c *cancelAt) Write(co oracle.Coord, v []float32) error {
	if co.Pos == c.at && co.Part != oracle.PartConv && co.Part != oracle.PartState {
		c.cancel()
	}
	return c.RankStore.Write(co, v)
}

// cancelThrough is cancelAt as a plain Store: the run's cache does not
// carry its recurrent state, each position writes it through, and the
// next position reads it back from the store.
type cancelThrough struct{ refmodel.Store }

// TestSplitPrefillStopsLikeOneGoroutine: a context canceled while
// position 45 is written stops a prefill split across two goroutines at
// the next look (position 64), with the store holding exactly what one
// goroutine leaves: the positions the first goroutine computed past 63
// are never written, and the recurrent state flushed is position 63's.
// On a store whose recurrent state the cache does not carry, the prefill
// does not split (the first goroutine would read state the second has
// not written yet).
func TestSplitPrefillStopsLikeOneGoroutine(t *testing.T) {
	mini := presetMini(t, "bamba-9b", groups.PresetOptions{})
	m := refmodel.New(mini, 6)
	const n = 100
	prompt := make([]uint32, n)
	for i := range prompt {
		prompt[i] = uint32(i*29+1) % refmodel.Vocab
	}
	for _, through := range []bool{false, true} {
		run := func(k int) *instance {
			in := newInstance(t, mini, groups.InstanceConfig{TP: 2}, n, 0, 9)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var s refmodel.Store = &cancelAt{RankStore: in.store, at: 45, cancel: cancel}
			if through {
				s = cancelThrough{s}
			}
			_, err := refmodel.PrefillSplitForTest(ctx, m, s, prompt, 0, n, k)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("split %d: %v, want context.Canceled", k, err)
			}
			return in
		}
		want := run(0)
		full := newInstance(t, mini, groups.InstanceConfig{TP: 2}, n, 0, 9)
		if _, err := m.Prefill(full.store, prompt, 0, n); err != nil {
			t.Fatal(err)
		}
		if memoryEqual(want, full) {
			t.Fatal("the canceled run wrote everything: the test cannot see a stop")
		}
		for _, k := range splitSample(t, m) {
			sameMemory(t, run(k), want, "canceled split run: rank %d pool %d block %d differs from one goroutine")
		}
	}
}

func cutFP8(name string) (string, bool) { return strings.CutSuffix(name, " fp8") }

// memoryEqual reports whether a's and b's rank memories are the same bytes.
func memoryEqual(a, b *instance) bool {
	for r := range a.mems {
		for p := range a.mems[r].Pools {
			for blk := range a.mems[r].Pools[p] {
				if !bytes.Equal(a.mems[r].Pools[p][blk], b.mems[r].Pools[p][blk]) {
					return false
				}
			}
		}
	}
	return true
}
