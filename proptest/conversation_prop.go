package proptest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgregory.net/rapid"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/engine"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// ConvTurn is one turn of a conversation: its new message, where the
// router sends it, its output length, and what goes wrong before it.
type ConvTurn struct {
	Message   string
	P, D      int
	MaxTokens int
	// Rewrite, when >= 0, changes the history token at that index (mod
	// its length) before the turn, as a client that strips reasoning
	// traces does: the export no longer matches the prompt.
	Rewrite int
	// Foreign sends another conversation's latest export instead of this
	// one's (a confused or hostile client).
	Foreign int // -1: none; else the conversation whose export is sent
	// Expire makes the previous turn's decode instance release its
	// exports (what a draining one does), concurrently with this turn's
	// prefill: every export held there may vanish before, during or after
	// the read.
	Expire bool
}

// ConvCase is one randomized multi-turn run on bidirectional engines:
// several P and D instances (own tp, block sizes, layouts, recurrent
// cache modes: a decode instance in mode all exports its boundary states,
// so a hybrid model's rewritten history is read up to a boundary) and
// conversations run concurrently, each turn's prompt the previous one's,
// its answer token for token and a new message, with the previous answer's
// export sent back (ConvTurn says what goes wrong).
type ConvCase struct {
	Model         *groups.Model
	P, D          []groups.InstanceConfig
	PMode, DMode  []hma.RecurrentMode // each instance's mamba cache mode
	Conversations [][]ConvTurn
}

// GenConvCase draws a ConvCase.
func GenConvCase() *rapid.Generator[ConvCase] {
	return rapid.Custom(func(t *rapid.T) ConvCase {
		c := ConvCase{Model: GenServingModel().Draw(t, "model")}
		tps := []int{1, 2, 4}
		for i, n := 0, rapid.IntRange(1, 2).Draw(t, "num_p"); i < n; i++ {
			c.P = append(c.P, GenInstance(t, fmt.Sprintf("p%d", i), DrawTP(t, c.Model, tps, "p_tp")))
			c.PMode = append(c.PMode, drawCacheMode(t, "p_cache_mode"))
		}
		for i, n := 0, rapid.IntRange(1, 2).Draw(t, "num_d"); i < n; i++ {
			c.D = append(c.D, GenInstance(t, fmt.Sprintf("d%d", i), DrawTP(t, c.Model, tps, "d_tp")))
			c.DMode = append(c.DMode, drawCacheMode(t, "d_cache_mode"))
		}
		nc := rapid.IntRange(1, 4).Draw(t, "conversations")
		for range nc {
			var turns []ConvTurn
			for k, n := 0, rapid.IntRange(1, 3).Draw(t, "turns"); k < n; k++ {
				tu := ConvTurn{Message: rapid.StringMatching(`[a-z ]{1,20}`).Draw(t, "message"),
					P: rapid.IntRange(0, len(c.P)-1).Draw(t, "to_p"), D: rapid.IntRange(0, len(c.D)-1).Draw(t, "to_d"),
					MaxTokens: rapid.IntRange(1, 5).Draw(t, "max_tokens"), Rewrite: -1, Foreign: -1}
				if k > 0 {
					switch rapid.IntRange(0, 7).Draw(t, "trouble") {
					case 0, 1:
						tu.Rewrite = rapid.IntRange(0, 1000).Draw(t, "rewrite_at")
					case 2:
						tu.Foreign = rapid.IntRange(0, nc-1).Draw(t, "foreign")
					case 3:
						tu.Expire = true
					}
				}
				turns = append(turns, tu)
			}
			c.Conversations = append(c.Conversations, turns)
		}
		// Fewer conversations when their pools would not fit (a large
		// preset keeping a state per block).
		for len(c.Conversations) > 1 && !c.fits(t) {
			c.Conversations = c.Conversations[:len(c.Conversations)-1]
			for _, turns := range c.Conversations {
				for k := range turns {
					turns[k].Foreign = min(turns[k].Foreign, len(c.Conversations)-1)
				}
			}
		}
		return c
	})
}

// pools sizes every engine's pools for c: room for each conversation's
// export and its next turn at once, and for the exports of turns whose
// next turn read another conversation's, at the longest prompt a turn
// reaches.
func (c ConvCase) pools(mini *groups.Model, in groups.InstanceConfig) (int, error) {
	var all []ServeRequest
	held := 2 * len(c.Conversations)
	for _, turns := range c.Conversations {
		n := 0
		for _, tu := range turns {
			n += len("user: ") + len(tu.Message) + len("\nassistant: ") + 2*tu.MaxTokens + 1
			all = append(all, ServeRequest{Prompt: strings.Repeat("x", n), MaxTokens: tu.MaxTokens})
			if tu.Foreign >= 0 {
				held++
			}
		}
	}
	return servingBlocks(mini, in, all, held)
}

// fits reports whether every engine of c stays within maxEngineBytes.
func (c ConvCase) fits(t *rapid.T) bool {
	mini, err := refmodel.Miniature(c.Model)
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, in := range append(slices.Clone(c.P), c.D...) {
		n, err := c.pools(mini, in)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if b, err := engine.InstanceBytes(mini, in, n, 0); err != nil || b > maxEngineBytes {
			return false
		}
	}
	return true
}

// convState is one conversation's progress as the checker sees it.
type convState struct {
	mu      sync.Mutex
	export  *backend.KVTransferParams
	history []uint32 // the tokens export holds
	d       int      // the decode instance that holds it
	epoch   int64    // that instance's release count before it made the export (odd: one was running)
	prompt  string   // the next turn's prompt so far
	// disturbed counts other conversations' turns that sent this one's
	// export (Foreign): they may consume it first.
	disturbed atomic.Int64
	seen      int64 // disturbed when export was made
}

// prefilled is what a prefill instance prefilled so far: its prefix
// cache can hold any prefix of these.
type prefilled struct {
	mu      sync.Mutex
	prompts [][]uint32
}

// add records a prompt about to be prefilled and returns its index.
func (p *prefilled) add(toks []uint32) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prompts = append(p.prompts, toks)
	return len(p.prompts) - 1
}

// longest is the longest prefix of toks another prompt than the one at
// index self shares.
func (p *prefilled) longest(toks []uint32, self int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := 0
	for i, q := range p.prompts {
		if i == self {
			continue
		}
		n := 0
		for n < len(q) && n < len(toks) && q[n] == toks[n] {
			n++
		}
		best = max(best, n)
	}
	return best
}

// endOfTime is past every lease (SweepAt ends them all).
var endOfTime = time.Unix(0, math.MaxInt64)

func inprocFactory(_ int, h transport.Handlers) (transport.Transport, error) {
	return transport.NewInproc(h), nil
}

// CheckConversations runs c and fails t unless: every turn answers, and
// answers and ends in D's memory with exactly the monolithic run's
// tokens and state (so no expired, reused or foreign block was ever read
// into a prompt it does not belong to); every position of a turn is
// computed at most once across P and D, and none that the turn's export
// holds is computed again unless something went wrong before the turn
// (a rewrite, a foreign export, a release of its decode instance's exports since the
// export); and afterwards, once the last exports expire, every block on
// every instance is free and every lease gone.
func CheckConversations(t *rapid.T, c ConvCase) {
	hs := &engine.MemHandshake{}
	rec := verify.NewRecorder()
	mini, err := refmodel.Miniature(c.Model)
	if err != nil {
		t.Fatalf("%v", err)
	}
	newEngine := func(role backend.Role, i int, in groups.InstanceConfig, mode hma.RecurrentMode) *engine.Engine {
		n, err := c.pools(mini, in)
		if err != nil {
			t.Fatalf("%v", err)
		}
		var e *engine.Engine
		cfg := engine.Config{Role: role, EngineID: fmt.Sprintf("%s%d", strings.ToUpper(string(role[:1])), i), Model: c.Model, Seed: 3, Instance: in,
			NumBlocks: n, MambaCacheMode: mode, LeaseTTL: time.Hour, Bidirectional: true, Transports: inprocFactory, Serve: hs.Serve, Fetch: hs.Fetch,
			TransferTimeout: 20 * time.Second, OnCompute: rec.OnCompute, Log: quiet}
		if role == backend.RoleDecode {
			cfg.OnFinish = rec.OnFinish(func() *refmodel.Model { return e.Model() })
		}
		e, err = engine.New(cfg)
		if err != nil {
			t.Fatalf("%s engine %d: %v", role, i, err)
		}
		checkEngineBytes(t, e)
		return e
	}
	ps := make([]*engine.Engine, len(c.P))
	for i, in := range c.P {
		ps[i] = newEngine(backend.RolePrefill, i, in, c.PMode[i])
		defer ps[i].Close()
	}
	pre := make([]prefilled, len(c.P))
	ds := make([]*engine.Engine, len(c.D))
	sweeps := make([]atomic.Int64, len(c.D))
	for i, in := range c.D {
		ds[i] = newEngine(backend.RoleDecode, i, in, c.DMode[i])
		defer ds[i].Close()
	}
	spec, model := ds[0].Spec(), ds[0].Model()
	// whole: the model reads back only whole exports; chunked: a chunked
	// local attention layer needs no state at a chunk boundary, so P's
	// prefix cache can hit a whole prompt it never saw (and P then backs
	// off to an aligned prefix, below what D holds).
	whole, chunked := verify.WholeExportsOnly(spec), false
	for _, l := range spec.Layers {
		chunked = chunked || l.Attention != nil && l.Attention.Chunk > 0
	}
	convs := make([]*convState, len(c.Conversations))
	for i := range convs {
		convs[i] = &convState{d: -1}
	}
	ctx := context.Background()
	errs := make(chan error, len(c.Conversations))
	var wg sync.WaitGroup
	for ci, turns := range c.Conversations {
		wg.Go(func() {
			cs := convs[ci]
			for k, tu := range turns {
				if err := runTurn(ctx, ci, k, tu, cs, convs, ps, pre, ds, sweeps, spec, model, whole, chunked, rec); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v", err)
	}
	// The last exports wait for turns that never come: end them.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The last exports wait for turns that never come, as do those whose
	// next turn sent another conversation's: end them all (as if every
	// clock had run past every TTL), then nothing may be held anywhere.
	for _, d := range ds {
		d.SweepAt(endOfTime)
	}
	for i, p := range ps {
		if err := p.WaitIdle(wctx); err != nil {
			t.Fatalf("prefill %d not idle after the run: %v", i, err)
		}
	}
	for i, d := range ds {
		if err := d.WaitIdle(wctx); err != nil {
			t.Fatalf("decode %d not idle after the run: %v", i, err)
		}
	}
}

// runTurn runs turn k of conversation ci and checks it.
func runTurn(ctx context.Context, ci, k int, tu ConvTurn, cs *convState, convs []*convState, ps []*engine.Engine, pre []prefilled, ds []*engine.Engine,
	sweeps []atomic.Int64, spec *groups.Model, model *refmodel.Model, whole, chunked bool, rec *verify.Recorder) error {
	prompt := cs.prompt
	if tu.Rewrite >= 0 && len(prompt) > 0 {
		b := []byte(prompt)
		at := tu.Rewrite % len(b)
		b[at] = tokenizer.TokenText([]uint32{(tokenizer.Tokenize(string(b[at : at+1]))[0] + 1) % refmodel.Vocab})[0]
		prompt = string(b)
	}
	prompt += "user: " + tu.Message + "\nassistant: "
	export, history, prevD, epoch := cs.export, cs.history, cs.d, cs.epoch
	disturbed := cs.disturbed.Load() != cs.seen
	if tu.Foreign >= 0 {
		f := convs[tu.Foreign]
		f.mu.Lock()
		export, history, prevD, epoch = f.export, f.history, f.d, f.epoch
		f.disturbed.Add(1) // under f.mu: the owner sees it unless it made a new export since
		f.mu.Unlock()
	}
	if export == nil {
		history = nil
	}
	var sweep sync.WaitGroup
	if tu.Expire && prevD >= 0 {
		sweep.Go(func() {
			// Odd while sweeping: a turn that sees an odd count, or a
			// different count later, may have lost its export to it.
			sweeps[prevD].Add(1)
			ds[prevD].ReleaseExports()
			sweeps[prevD].Add(1)
		})
	}
	id := fmt.Sprintf("c%dt%d", ci, k)
	toks := tokenizer.Tokenize(prompt)
	self := pre[tu.P].add(toks) // from now on P's cache may hold its prefixes
	pr, err := ps[tu.P].Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true, RemotePrefix: export}}, nil)
	sweep.Wait()
	cached := pre[tu.P].longest(toks, self) // what P's own prefix cache may have held of it
	if err != nil {
		return fmt.Errorf("conversation %d turn %d: prefill on P%d: %w", ci, k, tu.P, err)
	}
	// The sweeps of the instance that will hold this turn's export, before
	// it makes the export (see convState.epoch).
	dEpoch := sweeps[tu.D].Load()
	dr, err := ds[tu.D].Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: tu.MaxTokens, KV: pr.KV}, nil)
	if err != nil {
		return fmt.Errorf("conversation %d turn %d: decode on D%d: %w", ci, k, tu.D, err)
	}
	ms := refmodel.NewMapStore(spec)
	want, err := model.Generate(ms, toks, 0, tu.MaxTokens)
	if err != nil {
		return err
	}
	if fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
		return fmt.Errorf("conversation %d turn %d (P%d -> D%d, export of D%d): answer %v, monolithic %v", ci, k, tu.P, tu.D, prevD, dr.Tokens, want)
	}
	total := refmodel.Computed(len(toks), tu.MaxTokens)
	wantSnap, err := model.Snapshot(ms, total)
	if err != nil {
		return err
	}
	o := rec.Request(id, total)
	got, count, first := o.Final, o.Count, o.First
	if got == nil {
		return fmt.Errorf("conversation %d turn %d: no final decode state", ci, k)
	}
	if err := got.Diff(wantSnap); err != nil {
		return fmt.Errorf("conversation %d turn %d (P%d -> D%d, export of D%d): D's state differs from the monolithic run's: %v", ci, k, tu.P, tu.D, prevD, err)
	}
	for x := range count {
		if x < first && count[x] != 0 || x >= first && count[x] != 1 {
			return fmt.Errorf("conversation %d turn %d: position %d computed %d times (first computed %d)", ci, k, x, count[x], first)
		}
	}
	// Unless something went wrong before the turn, what the export holds
	// of this prompt was read, not computed.
	troubled := tu.Rewrite >= 0 || tu.Foreign >= 0 || tu.Expire || disturbed || cs.disturbed.Load() != cs.seen ||
		(prevD >= 0 && (epoch%2 == 1 || sweeps[prevD].Load() != epoch))
	if !troubled && export != nil {
		bound := verify.ExportCovers(history, toks, whole)
		// (P's own cache, when it holds as much, goes first: P then reads
		// nothing and, to have a step to compute, may back off to an
		// aligned prefix below the export's end.)
		if first < bound && cached < bound && !chunked {
			return fmt.Errorf("conversation %d turn %d: computed from position %d, though D%d's export holds the first %d (P%d's declines so far: %v)", ci, k, first, prevD, bound, tu.P, ps[tu.P].ConversationStats().Declines)
		}
	}
	cs.mu.Lock()
	cs.export, cs.d, cs.epoch, cs.seen = dr.KV, tu.D, dEpoch, cs.disturbed.Load()
	cs.history = append(toks, dr.Tokens...)[:refmodel.Computed(len(toks), len(dr.Tokens))]
	cs.prompt = prompt + tokenizer.TokenText(dr.Tokens) + "\n"
	cs.mu.Unlock()
	return nil
}
