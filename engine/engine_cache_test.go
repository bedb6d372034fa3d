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
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// TestMambaCacheModes serves hybrid models in each recurrent cache mode,
// disaggregated (P and D in their own modes, also mixed: the modes need
// not agree) and on one instance (--role both, D's mode): a prompt, the
// same prompt again, and a second turn (the first turn's prompt and
// answer and more), with and without speculative decoding. Every answer
// equals the monolithic run without speculation, every final state the
// monolithic state, every position from the first one computed on is
// computed exactly once; in align and all modes P hits the repeated
// prompt, the single instance hits the second turn's prefix and continues
// from its own cached recurrent state (in mode all one that an accepted
// run of a speculative step crossed), and in mode all D hits the second
// turn's prefix it decoded; in mode none nothing hits.
func TestMambaCacheModes(t *testing.T) {
	qwen, err := groups.Preset("qwen3.5-9b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	nemotron, err := groups.Preset("nemotron-3-nano-30b-a3b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	modes := []struct{ p, d hma.RecurrentMode }{
		{hma.RecurrentNone, hma.RecurrentNone}, {hma.RecurrentAlign, hma.RecurrentAlign}, {hma.RecurrentAll, hma.RecurrentAll},
		{hma.RecurrentAlign, hma.RecurrentAll}, {hma.RecurrentAll, hma.RecurrentNone},
	}
	const n = 12
	// 26 tokens: several 4-token recurrent blocks (separate layouts), and
	// with n and propose's pattern the steps of turn 1 at positions 26
	// (the first, no drafts), 27 (one accepted) and 29 (three accepted:
	// the run 30-32 crosses the boundary at 32, where turn 2 hits).
	const turn1 = "the capital of France is a"
	pc := groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, Memory: groups.Separate}
	dc := groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4, Memory: groups.Separate, AttnLayout: groups.NHD, ConvLayout: groups.SD}
	for _, m := range []*groups.Model{qwen, nemotron} {
		for _, md := range modes {
			t.Run(fmt.Sprintf("%s/%v-%v", m.Name, md.p, md.d), func(t *testing.T) {
				if raceEnabled && (m != nemotron || md.p != hma.RecurrentAlign) {
					t.Skip("compute-heavy: under -race one case (make test runs all without it)")
				}
				c := newCacheCheck()
				var x *pd
				x = newPD(t, m, pc, dc, func(p, d *Config) {
					p.MambaCacheMode, d.MambaCacheMode = md.p, md.d
					d.Propose, d.OnFinish = c.propose, c.onFinish(func() *Engine { return x.d })
				})
				var mono *Engine
				mono, err := New(Config{Role: backend.RoleBoth, EngineID: "M", Model: m, Seed: 7, Instance: dc, NumBlocks: 256,
					MambaCacheMode: md.d, Transports: inprocTransports(nil), Propose: c.propose,
					OnFinish: c.onFinish(func() *Engine { return mono }), OnCompute: c.onCompute})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { mono.Close() })

				want1 := reference(t, x.d, turn1, n)
				turn2 := turn1 + tokenizer.TokenText(want1) + " and of Spain"
				if got := tokenizer.Tokenize(turn2)[len(turn1) : len(turn1)+len(want1)]; fmt.Sprint(got) != fmt.Sprint(want1) {
					t.Fatalf("turn 2 holds %v, not the answer %v", got, want1)
				}
				for i, prompt := range []string{turn1, turn1, turn2} {
					id := fmt.Sprintf("c%d", i)
					want := reference(t, x.d, prompt, n)
					c.setTruth(id, append(tokenizer.Tokenize(prompt), want...))
					total := refmodel.Computed(len(tokenizer.Tokenize(prompt)), n)

					pBefore, dBefore, mBefore := x.p.PrefixStats(), x.d.PrefixStats(), mono.PrefixStats()
					_, dr, err := x.run(context.Background(), id, prompt, n)
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					c.check(t, x.d, "disaggregated", id, dr.Tokens, want, total)
					x.checkOnceAbove(t, id, total)
					mid := "m" + id
					mr, err := mono.Generate(context.Background(), backend.GenRequest{ID: mid, Prompt: prompt, MaxTokens: n}, nil)
					if err != nil {
						t.Fatalf("request %d on one instance: %v", i, err)
					}
					c.check(t, mono, "one instance", mid, mr.Tokens, want, total)
					c.checkOnceAbove(t, mid, total)

					pHit, dHit, mHit := x.p.PrefixStats().Hit-pBefore.Hit, x.d.PrefixStats().Hit-dBefore.Hit, mono.PrefixStats().Hit-mBefore.Hit
					switch {
					case i == 1 && md.p != hma.RecurrentNone && pHit == 0:
						t.Errorf("P (%v) did not hit the repeated prompt", md.p)
					case i == 2 && md.d != hma.RecurrentNone && mHit == 0:
						t.Errorf("one instance (%v) did not hit the second turn's prefix", md.d)
					case i == 2 && md.d == hma.RecurrentAll && dHit == 0:
						// (In align D keeps only states its steps ended on;
						// its boundaries here lie inside accepted runs.)
						t.Errorf("D (%v) did not hit the second turn's prefix it decoded", md.d)
					case md.p == hma.RecurrentNone && pHit != 0, md.d == hma.RecurrentNone && (dHit != 0 || mHit != 0):
						t.Errorf("request %d: hits P %d, D %d, one instance %d in mode none", i, pHit, dHit, mHit)
					}
				}
				if st := x.d.SpecStats(); m.Draft != groups.DraftNone && st.Accepted == 0 {
					t.Errorf("no draft accepted (%+v)", st)
				}
				for _, e := range []*Engine{x.p, x.d, mono} {
					if err := e.WaitIdle(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}

// cacheCheck holds what TestMambaCacheModes's engines report.
type cacheCheck struct {
	mu       sync.Mutex
	truth    map[string][]uint32 // request suffix id -> prompt and answer
	finals   map[string]*refmodel.Snapshot
	computed map[string][][2]int // the single instance's computes
}

func newCacheCheck() *cacheCheck {
	return &cacheCheck{truth: map[string][]uint32{}, finals: map[string]*refmodel.Snapshot{}, computed: map[string][][2]int{}}
}

func (c *cacheCheck) setTruth(id string, seq []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.truth[id], c.truth["m"+id] = seq, seq
}

// propose makes most drafts the true continuation, so that accepted runs
// cross block boundaries: at one position in eight the drafter's own
// guess stands (see turn1 for where this puts the runs).
func (c *cacheCheck) propose(id string, pos int, draft uint32) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.truth[id[strings.LastIndex(id, "-")+1:]]
	if pos%8 != 5 && pos < len(seq) {
		return seq[pos]
	}
	return draft
}

func (c *cacheCheck) onFinish(e func() *Engine) func(string, refmodel.Store, int) {
	return func(id string, st refmodel.Store, computed int) {
		snap, err := e().Model().Snapshot(st, computed)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err == nil {
			c.finals[id] = snap
		}
	}
}

func (c *cacheCheck) onCompute(id string, from, to int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.computed[id] = append(c.computed[id], [2]int{from, to})
}

// check compares a request's answer and final state with the monolithic
// run without speculation.
func (c *cacheCheck) check(t *testing.T, e *Engine, how, id string, got, want []uint32, total int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s %s: answer %v, monolithic without speculation %v", how, id, got, want)
	}
	ms := refmodel.NewMapStore(e.Spec())
	c.mu.Lock()
	seq := c.truth[id]
	var snap *refmodel.Snapshot
	deadline := time.Now().Add(5 * time.Second)
	for snap == nil && time.Now().Before(deadline) {
		for fid, s := range c.finals {
			if strings.HasSuffix(fid, "-"+id) {
				snap = s
			}
		}
		if snap == nil {
			c.mu.Unlock()
			time.Sleep(time.Millisecond)
			c.mu.Lock()
		}
	}
	c.mu.Unlock()
	if snap == nil {
		t.Fatalf("%s %s: no final state", how, id)
	}
	prompt := seq[:len(seq)-len(want)]
	if _, err := e.Model().Generate(ms, prompt, 0, len(want)); err != nil {
		t.Fatal(err)
	}
	wantSnap, err := e.Model().Snapshot(ms, total)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Diff(wantSnap); err != nil {
		t.Fatalf("%s %s: final state differs from monolithic: %v", how, id, err)
	}
}

func (c *cacheCheck) checkOnceAbove(t *testing.T, id string, total int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	onceAbove(t, id, total, c.computed)
}

// checkOnceAbove: with prefix hits a request's positions below the first
// one computed anywhere are never computed; every later one exactly once.
func (x *pd) checkOnceAbove(t *testing.T, id string, total int) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	onceAbove(t, id, total, x.pCompute, x.dCompute)
}

func onceAbove(t *testing.T, id string, total int, computes ...map[string][][2]int) {
	t.Helper()
	count := make([]int, total)
	first := total
	for _, m := range computes {
		for rid, rs := range m {
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
	}
	for p, n := range count {
		if (p >= first) != (n == 1) || n > 1 {
			t.Fatalf("request %s: position %d computed %d times, first computed %d", id, p, n, first)
		}
	}
}
