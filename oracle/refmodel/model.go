package refmodel

import (
	"context"
	"errors"
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Model is the reference model of one miniature spec: seeded weights, no
// mutable state (all state lives in a Store), safe for concurrent use by
// calls on different stores.
type Model struct {
	spec    *groups.Model
	seed    uint64
	err     error // why spec cannot run; returned by every method
	embed   []float32
	unembed []float32 // Vocab x Hidden
	layers  []layerWeights
	targets []int // layer indexes in order
	drafts  []int
	// aux are the cut points in targets after which an Eagle3 drafter
	// reads the target's hidden state (empty for MTP drafts).
	aux []int
}

// New returns the reference model of mini (a Miniature) with weights drawn
// from seed. A spec the model cannot run (not fp32, fp8_ds_mla, invalid)
// is not a panic: every method then returns an error wrapping
// ErrNotMiniature (Err reports it at once).
func New(mini *groups.Model, seed uint64) *Model {
	m := &Model{spec: mini, seed: seed}
	if m.err = checkMiniature(mini); m.err != nil {
		return m
	}
	w := newWeights(seed)
	m.embed = w.uniform(Vocab*Hidden, 1)
	m.unembed = w.in(Vocab, Hidden)
	// The drafter shares the target's LM head (as DeepSeek-V3's MTP
	// module does); this draw is kept so that the layers' weights, drawn
	// after it, stay what they were.
	_ = w.in(Vocab, Hidden)
	m.layers = make([]layerWeights, len(mini.Layers))
	for i := range mini.Layers {
		l := &mini.Layers[i]
		m.layers[i] = newLayerWeights(w, mini, l)
		if l.Draft {
			m.drafts = append(m.drafts, i)
		} else {
			m.targets = append(m.targets, i)
		}
	}
	if mini.Draft == groups.DraftEagle3 {
		m.aux = eagle3Cuts(mini, m.targets)
	}
	return m
}

// eagle3Cuts are the points in targets after which Eagle3 reads hidden
// states: after target layers 2, L/2 and L-3 as vLLM's default
// aux-hidden-state layers (clamped to [1, L], moved past parallel layers
// so that no decoder layer is split, deduplicated).
func eagle3Cuts(spec *groups.Model, targets []int) []int {
	L := len(targets)
	var cuts []int
	for _, c := range []int{2, L / 2, L - 3} {
		c = min(max(c, 1), L)
		for c < L && spec.Layers[targets[c]].Parallel {
			c++
		}
		if len(cuts) == 0 || cuts[len(cuts)-1] < c {
			cuts = append(cuts, c)
		}
	}
	return cuts
}

// Err reports why the model cannot run, or nil.
func (m *Model) Err() error { return m.err }

// Spec is the miniature spec the model runs.
func (m *Model) Spec() *groups.Model { return m.spec }

// Seed is the weights' seed.
func (m *Model) Seed() uint64 { return m.seed }

// Output is what one position computes.
type Output struct {
	// Logits over the vocabulary after the target layers; Next is their
	// greedy argmax (lowest id on ties): the token after this position.
	Logits []float32
	Next   uint32
	// DraftLogits and Draft come from the draft layers (nil and 0 without
	// draft layers): the drafter's guess of the token after Next.
	// DraftHidden is the drafter's hidden state, which Draft continues
	// from to guess the tokens after that.
	DraftLogits []float32
	Draft       uint32
	DraftHidden []float32
}

// Forward computes position t with input token: it reads the state of
// earlier positions from s and writes t's state. At t = 0 recurrent layers
// start from the zero state and read nothing (a new request); at t > 0
// they read their state, so the store must hold the state of exactly
// positions [0, t). Every read happens before
// any write, so an error from a read (ErrMissingState, ...) leaves s
// untouched. Writes go per-token state first, recurrent state last: a write
// that fails (ErrNullBlock) leaves no recurrent state changed, and
// recomputing t rewrites the same per-token values.
func (m *Model) Forward(s Store, t int, token uint32) (Output, error) {
	return m.forward(s, t, token, newRunCache(s))
}

// forward is Forward with the run's cache of per-token vectors
// (runcache.go): consecutive positions of one call share it.
func (m *Model) forward(s Store, t int, token uint32, cache *runCache) (Output, error) {
	if m.err != nil {
		return Output{}, m.err
	}
	if t < 0 {
		return Output{}, fmt.Errorf("%w: position %d", ErrRange, t)
	}
	if token >= Vocab {
		return Output{}, fmt.Errorf("%w: %d (vocabulary %d)", ErrToken, token, Vocab)
	}
	st := &step{m: m, s: s, t: t, cache: cache, perToken: cache.perToken[:0], fixed: cache.fixed[:0]}
	x := m.embedding(token)
	aux, err := st.targets(0, len(m.targets), x, nil)
	if err != nil {
		return Output{}, err
	}
	out, err := st.finish(x, aux)
	if err != nil {
		return Output{}, err
	}
	if err := st.commit(); err != nil {
		return Output{}, err
	}
	return out, nil
}

// embedding returns a fresh copy of token's embedding.
func (m *Model) embedding(token uint32) []float32 {
	return append([]float32(nil), m.embed[int(token)*Hidden:(int(token)+1)*Hidden]...)
}

// targets runs the target layers targets[lo:hi] (lo and hi at decoder
// layer boundaries) on x in place. Eagle3 reads the sum of the normalized
// hidden states at its cut points (MTP reads the final one): aux is that
// sum so far, and targets adds the cuts in (lo, hi] and returns it.
func (st *step) targets(lo, hi int, x, aux []float32) ([]float32, error) {
	m := st.m
	done := lo
	for _, c := range m.aux {
		if c <= lo || c > hi {
			continue
		}
		if err := st.stack(m.targets[done:c], x); err != nil {
			return nil, err
		}
		done = c
		if aux == nil {
			aux = rmsNorm(x)
		} else {
			addInto(aux, rmsNorm(x))
		}
	}
	if err := st.stack(m.targets[done:hi], x); err != nil {
		return nil, err
	}
	return aux, nil
}

// finish turns the hidden state x after the last target layer (and aux,
// the Eagle3 sum) into the position's logits, greedy token and drafts.
func (st *step) finish(x, aux []float32) (Output, error) {
	m := st.m
	hf := rmsNorm(x)
	var out Output
	out.Logits = matVec(m.unembed, Vocab, hf)
	out.Next = argmax(out.Logits)
	if len(m.drafts) > 0 {
		if aux == nil {
			aux = hf
		} else {
			aux = rmsNorm(aux)
		}
		if err := st.draft(&out, aux, out.Next); err != nil {
			return Output{}, err
		}
	}
	return out, nil
}

// draft runs the draft layers on the hidden state in and the embedding of
// token (the one just predicted), setting out's Draft fields.
func (st *step) draft(out *Output, in []float32, token uint32) error {
	m := st.m
	z := append([]float32(nil), in...)
	addInto(z, m.embed[int(token)*Hidden:(int(token)+1)*Hidden])
	if err := st.stack(m.drafts, z); err != nil {
		return err
	}
	out.DraftLogits = matVec(m.unembed, Vocab, rmsNorm(z))
	out.Draft = argmax(out.DraftLogits)
	out.DraftHidden = z
	return nil
}

// Draft continues a proposal: it runs the draft layers alone at position t
// on prev, the DraftHidden of the proposal for position t (normalized, as
// MTP and Eagle3 feed a drafter its own hidden state), and the embedding
// of token, the token proposed for position t; it writes the draft layers'
// KV at t and returns the guess for position t+1 (Draft, DraftHidden set;
// Logits nil). The target layers are not run: position t's draft KV is
// rewritten when Forward computes t.
func (m *Model) Draft(s Store, t int, prev []float32, token uint32) (Output, error) {
	if m.err != nil {
		return Output{}, m.err
	}
	if len(m.drafts) == 0 {
		return Output{}, fmt.Errorf("%w: %s has no draft layers", ErrRange, m.spec.Name)
	}
	if t < 0 || len(prev) != Hidden {
		return Output{}, fmt.Errorf("%w: draft at position %d from a %d-value hidden state", ErrRange, t, len(prev))
	}
	if token >= Vocab {
		return Output{}, fmt.Errorf("%w: %d (vocabulary %d)", ErrToken, token, Vocab)
	}
	st := &step{m: m, s: s, t: t, cache: newRunCache(s)}
	var out Output
	if err := st.draft(&out, rmsNorm(prev), token); err != nil {
		return Output{}, err
	}
	if err := st.commit(); err != nil {
		return Output{}, err
	}
	return out, nil
}

// Step computes position t (see Forward) and returns its logits and the
// greedy next token.
func (m *Model) Step(s Store, t int, token uint32) (logits []float32, next uint32, err error) {
	out, err := m.Forward(s, t, token)
	return out.Logits, out.Next, err
}

// Prefill computes positions [from, to) with inputs tokens[from:to]; the
// state of [0, from) must be in s. It returns the token predicted after
// position to-1. Each earlier position's per-token state is read from s
// once per call (runcache.go), so the call must own s's blocks for its
// duration.
func (m *Model) Prefill(s Store, tokens []uint32, from, to int) (uint32, error) {
	return m.PrefillContext(context.Background(), s, tokens, from, to)
}

// prefillCheckEvery is how many positions PrefillContext computes between
// two looks at its context.
const prefillCheckEvery = 32

// PrefillContext is Prefill that stops with ctx's error, checked every
// prefillCheckEvery positions. Stopped or failed, s holds the state of
// the positions computed before that, as position-by-position Forward
// calls would have left it; the caller ends the request.
func (m *Model) PrefillContext(ctx context.Context, s Store, tokens []uint32, from, to int) (uint32, error) {
	if from < 0 || to <= from || to > len(tokens) {
		return 0, fmt.Errorf("%w: prefill [%d, %d) of %d tokens", ErrRange, from, to, len(tokens))
	}
	return m.prefillCall(ctx, s, tokens, from, to, autoSplit)
}

// prefillCall is PrefillContext splitting the layers at split (prefill).
func (m *Model) prefillCall(ctx context.Context, s Store, tokens []uint32, from, to, split int) (uint32, error) {
	cache := newRunCache(s)
	next, err := m.prefill(ctx, s, tokens, from, to, cache, split)
	return next, errors.Join(err, cache.flush(s))
}

// autoSplit lets prefill choose where to split its layers (splitAt).
const autoSplit = -1

// prefill computes [from, to) sharing cache; the caller flushes it. It
// splits the target layers at split (autoSplit: splitAt; 0: not at all)
// across two goroutines (pipeline.go) when cache is still empty and
// carries recurrent state: the first goroutine must not read from the
// store the state of a position the second has not written yet.
func (m *Model) prefill(ctx context.Context, s Store, tokens []uint32, from, to int, cache *runCache, split int) (uint32, error) {
	if split == autoSplit {
		split = m.splitAt(tokens, from, to)
	}
	if split > 0 && cache.empty() && cache.recOK && m.err == nil {
		return m.prefillSplit(ctx, s, tokens, from, to, split, cache)
	}
	var next uint32
	for t := from; t < to; t++ {
		if (t-from)%prefillCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		out, err := m.forward(s, t, tokens[t], cache)
		if err != nil {
			return 0, fmt.Errorf("position %d: %w", t, err)
		}
		next = out.Next
	}
	return next, nil
}

// Generate continues a request whose state for positions [0, from) is in
// s: it computes the prompt's positions [from, len(prompt)) and then
// greedily decodes n tokens, feeding each back (except the last). It
// returns the n tokens; s then holds the state of len(prompt)+n-1
// positions (Computed). from must be below len(prompt): the last prompt
// position is what samples the first token.
func (m *Model) Generate(s Store, prompt []uint32, from, n int) ([]uint32, error) {
	if from < 0 || from >= len(prompt) || n < 0 {
		return nil, fmt.Errorf("%w: generate %d tokens from position %d of a %d-token prompt", ErrRange, n, from, len(prompt))
	}
	return m.generateCall(s, prompt, from, n, autoSplit)
}

// generateCall is Generate splitting the prompt's layers at split (prefill).
func (m *Model) generateCall(s Store, prompt []uint32, from, n, split int) ([]uint32, error) {
	cache := newRunCache(s)
	out, err := m.generate(s, prompt, from, n, cache, split)
	if err = errors.Join(err, cache.flush(s)); err != nil {
		return nil, err
	}
	return out, nil
}

func (m *Model) generate(s Store, prompt []uint32, from, n int, cache *runCache, split int) ([]uint32, error) {
	next, err := m.prefill(context.Background(), s, prompt, from, len(prompt), cache, split)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]uint32, 0, n)
	out = append(out, next)
	for len(out) < n {
		t := len(prompt) + len(out) - 1
		o, err := m.forward(s, t, out[len(out)-1], cache)
		if err != nil {
			return nil, fmt.Errorf("position %d: %w", t, err)
		}
		out = append(out, o.Next)
	}
	return out, nil
}

// Computed is the number of positions whose state a store holds after
// Generate of n tokens on a prompt of promptLen tokens.
func Computed(promptLen, n int) int { return promptLen + max(n, 1) - 1 }
