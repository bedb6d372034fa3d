package refmodel

import (
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
	draftU  []float32 // Vocab x Hidden: the draft head
	layers  []layerWeights
	targets []int // layer indexes in order
	drafts  []int
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
	m.draftU = w.in(Vocab, Hidden)
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
	return m
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
	// draft layers): the MTP-style guess of the token after Next.
	DraftLogits []float32
	Draft       uint32
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
	if m.err != nil {
		return Output{}, m.err
	}
	if t < 0 {
		return Output{}, fmt.Errorf("%w: position %d", ErrRange, t)
	}
	if token >= Vocab {
		return Output{}, fmt.Errorf("%w: %d (vocabulary %d)", ErrToken, token, Vocab)
	}
	st := &step{m: m, s: s, t: t}
	x := append([]float32(nil), m.embed[int(token)*Hidden:(int(token)+1)*Hidden]...)
	if err := st.stack(m.targets, x); err != nil {
		return Output{}, err
	}
	hf := rmsNorm(x)
	var out Output
	out.Logits = matVec(m.unembed, Vocab, hf)
	out.Next = argmax(out.Logits)
	if len(m.drafts) > 0 {
		// MTP: the draft layers see the final hidden state and the
		// embedding of the token just predicted.
		z := append([]float32(nil), hf...)
		addInto(z, m.embed[int(out.Next)*Hidden:(int(out.Next)+1)*Hidden])
		if err := st.stack(m.drafts, z); err != nil {
			return Output{}, err
		}
		out.DraftLogits = matVec(m.draftU, Vocab, rmsNorm(z))
		out.Draft = argmax(out.DraftLogits)
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
// position to-1.
func (m *Model) Prefill(s Store, tokens []uint32, from, to int) (uint32, error) {
	if from < 0 || to <= from || to > len(tokens) {
		return 0, fmt.Errorf("%w: prefill [%d, %d) of %d tokens", ErrRange, from, to, len(tokens))
	}
	var next uint32
	for t := from; t < to; t++ {
		_, n, err := m.Step(s, t, tokens[t])
		if err != nil {
			return 0, fmt.Errorf("position %d: %w", t, err)
		}
		next = n
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
	next, err := m.Prefill(s, prompt, from, len(prompt))
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
		_, next, err = m.Step(s, t, out[len(out)-1])
		if err != nil {
			return nil, fmt.Errorf("position %d: %w", t, err)
		}
		out = append(out, next)
	}
	return out, nil
}

// Computed is the number of positions whose state a store holds after
// Generate of n tokens on a prompt of promptLen tokens.
func Computed(promptLen, n int) int { return promptLen + max(n, 1) - 1 }
