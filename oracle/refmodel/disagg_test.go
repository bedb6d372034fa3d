package refmodel_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/proptest"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"pgregory.net/rapid"
)

// disaggCase is a monolithic run and a P/D run of the same request.
type disaggCase struct {
	mini   *groups.Model
	model  *refmodel.Model
	prompt []uint32
	h, n   int
	p, d   groups.InstanceConfig
	seed   uint64
}

func drawDisagg(t *rapid.T) disaggCase {
	c := disaggCase{mini: drawMini(t)}
	c.model = refmodel.New(c.mini, rapid.Uint64().Draw(t, "seed"))
	c.prompt = drawPrompt(t, rapid.IntRange(2, 24).Draw(t, "prompt_len"))
	c.h = rapid.IntRange(1, len(c.prompt)-1).Draw(t, "h")
	c.n = rapid.IntRange(1, 4).Draw(t, "generate")
	c.p = proptest.GenInstance(t, "p", proptest.DrawTP(t, c.mini, smallTPs, "p_tp"))
	c.d = proptest.GenInstance(t, "d", proptest.DrawTP(t, c.mini, smallTPs, "d_tp"))
	c.seed = rapid.Uint64().Draw(t, "layout_seed")
	return c
}

func (c disaggCase) String() string {
	return fmt.Sprintf("%s H=%d of %d, +%d; P %+v; D %+v", c.mini.Name, c.h, len(c.prompt), c.n, c.p, c.d)
}

// monolithic is the reference: one store, the whole request.
func (c disaggCase) monolithic(t tb) ([]uint32, *refmodel.Snapshot) {
	s := refmodel.NewMapStore(c.mini)
	out, err := c.model.Generate(s, c.prompt, 0, c.n)
	if err != nil {
		t.Fatalf("%v: monolithic: %v", c, err)
	}
	snap, err := c.model.Snapshot(s, refmodel.Computed(len(c.prompt), c.n))
	if err != nil {
		t.Fatalf("%v: monolithic snapshot: %v", c, err)
	}
	return out, snap
}

// prefill computes [0, H) on P.
func (c disaggCase) prefill(t tb) *instance {
	p := newInstance(t, c.mini, c.p, c.h, 0, c.seed)
	if _, err := c.model.Prefill(p.store, c.prompt, 0, c.h); err != nil {
		t.Fatalf("%v: prefill: %v", c, err)
	}
	return p
}

// decode continues on D (whose memory received the state) and compares
// with the monolithic run.
func (c disaggCase) decode(t tb, d *instance) {
	want, wantSnap := c.monolithic(t)
	got, err := c.model.Generate(d.store, c.prompt, c.h, c.n)
	if err != nil {
		t.Fatalf("%v: decode: %v", c, err)
	}
	if !equalTokens(got, want) {
		t.Fatalf("%v: disaggregated %v, monolithic %v", c, got, want)
	}
	snap, err := c.model.Snapshot(d.store, refmodel.Computed(len(c.prompt), c.n))
	if err != nil {
		t.Fatalf("%v: decode snapshot: %v", c, err)
	}
	if err := snap.Diff(wantSnap); err != nil {
		t.Fatalf("%v: final state: %v", c, err)
	}
}

// TestDisaggregatedByCopy: P (tp a) computes [0, H), a naive
// coordinate-by-coordinate copy moves the live state into D (tp b, its own
// block size and layouts, blocks before the live window null), D
// continues: tokens and final state equal the monolithic run's.
func TestDisaggregatedByCopy(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawDisagg(t)
		p := c.prefill(t)
		d := newInstance(t, c.mini, c.d, refmodel.Computed(len(c.prompt), c.n), c.h, c.seed^1)
		if err := refmodel.CopyState(c.mini, d.store, p.store, c.h); err != nil {
			t.Fatalf("%v: copy: %v", c, err)
		}
		c.decode(t, d)
	})
}

// TestDisaggregatedByPlanner: as TestDisaggregatedByCopy, with the state
// moved by statexfer/plan (every D rank's plan executed in process).
func TestDisaggregatedByPlanner(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawDisagg(t)
		c.byPlanner(t, rapid.SampledFrom([]plan.Mode{plan.Direct, plan.Staged, plan.Auto}).Draw(t, "mode"))
	})
}

// byPlanner prefills on P, moves the state with the planner in mode and
// decodes on D, comparing with the monolithic run.
func (c disaggCase) byPlanner(t tb, mode plan.Mode) {
	p := c.prefill(t)
	d := newInstance(t, c.mini, c.d, refmodel.Computed(len(c.prompt), c.n), c.h, c.seed^1)
	planner, err := plan.New(p.side, d.side)
	if err != nil {
		t.Fatalf("%v: planner: %v", c, err)
	}
	req := &plan.Request{Tokens: c.h, PBlocks: p.sent(c.mini, c.h), DBlocks: d.tab}
	for r := range d.side.Ranks {
		pl, err := planner.Plan(r, req, mode)
		if err != nil {
			t.Fatalf("%v: plan for D rank %d: %v", c, r, err)
		}
		if err := plan.Execute(kernels.Default(), pl, p.mems, d.mems[r]); err != nil {
			t.Fatalf("%v: execute for D rank %d: %v", c, r, err)
		}
	}
	c.decode(t, d)
}

// Every layer kind and every recurrent family (groups.KindSampleModel):
// a kind the reference model, the allocator bridge or the planner does
// not handle fails here.
func TestEveryKindDisaggregated(t *testing.T) {
	mini, err := refmodel.Miniature(groups.KindSampleModel())
	if err != nil {
		t.Fatal(err)
	}
	prompt := make([]uint32, 13)
	for i := range prompt {
		prompt[i] = uint32(i*7+3) % refmodel.Vocab
	}
	for i, tp := range [][2]int{{1, 2}, {2, 4}, {4, 1}, {8, 2}, {2, 8}} {
		c := disaggCase{mini: mini, model: refmodel.New(mini, 11), prompt: prompt, h: 9, n: 3, seed: uint64(i),
			p: groups.InstanceConfig{TP: tp[0], BlockSize: 2, ConvLayout: groups.SD},
			d: groups.InstanceConfig{TP: tp[1], BlockSize: 4, KernelBlockSize: 2, AttnLayout: groups.NHD, Memory: groups.Separate}}
		for _, mode := range []plan.Mode{plan.Direct, plan.Staged} {
			t.Run(fmt.Sprintf("tp%d-%d-%s", tp[0], tp[1], mode), func(t *testing.T) { c.byPlanner(t, mode) })
		}
	}
}

// TestMissingTransferDetected: a D that received nothing fails with
// ErrMissingState as soon as a layer needs state from before H (full
// attention, MLA, indexer and recurrent layers always do).
func TestMissingTransferDetected(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawDisagg(t)
		needs := false
		for _, k := range []groups.Kind{groups.FullAttention, groups.MLA, groups.Indexer, groups.Recurrent} {
			needs = needs || hasKind(c.mini, k)
		}
		if !needs {
			t.Skip("no layer that always needs state from before H")
		}
		d := newInstance(t, c.mini, c.d, refmodel.Computed(len(c.prompt), c.n), c.h, c.seed)
		for g := range d.tab { // no block holding a position before H, no state slot
			for k := range d.tab[g] {
				if d.side.Ranks[0].Groups[g].Kind == groups.Recurrent || k*d.side.Ranks[0].Groups[g].BlockSize < c.h {
					d.tab[g][k] = 0
				}
			}
		}
		if _, err := c.model.Generate(d.store, c.prompt, c.h, c.n); !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%v: D without P's state: %v", c, err)
		}
		if _, err := c.model.Generate(refmodel.NewMapStore(c.mini), c.prompt, c.h, c.n); !errors.Is(err, refmodel.ErrMissingState) {
			t.Fatalf("%v: empty map store: %v", c, err)
		}
	})
}
