package refmodel

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/specdec"
)

// SpecStats counts a request's speculative decoding.
type SpecStats struct {
	// Steps is the decode steps taken (each computes one or more
	// positions), Drafted the tokens proposed, Accepted those verified.
	Steps, Drafted, Accepted int
	// AcceptedAt[i] counts the steps whose (i+1)-th draft was accepted
	// (vLLM's per-position acceptance).
	AcceptedAt []int
}

// Add adds o's counts to s.
func (s *SpecStats) Add(o SpecStats) {
	s.Steps += o.Steps
	s.Drafted += o.Drafted
	s.Accepted += o.Accepted
	for len(s.AcceptedAt) < len(o.AcceptedAt) {
		s.AcceptedAt = append(s.AcceptedAt, 0)
	}
	for i, n := range o.AcceptedAt {
		s.AcceptedAt[i] += n
	}
}

// Decoder decodes one request greedily, speculatively when the model has
// draft layers: each step proposes up to NumSpeculativeTokens tokens with
// the drafter (the first from the previous step's Forward, the rest by
// chaining Draft), computes the step's input and every draft in one verify
// pass (Forward per position; recurrent state per position into the
// scratch slots, specdec.StateSlots), accepts the drafts that equal the
// target's greedy tokens (specdec.Accept), emits them and the bonus token,
// and keeps the accepted position's recurrent state (specdec.KeepSlot).
// Greedy speculative decoding is lossless: the tokens and the state of
// every computed position equal Generate's. A Decoder's first Step never
// drafts (specdec.Drafts): it has no proposal yet. Not safe for concurrent
// use.
type Decoder struct {
	m    *Model
	prop *Output // the last computed position's output, the next proposal's seed
	// Stats counts what Step did.
	Stats SpecStats
	// Propose, when set, replaces each drafted token (tests: propose the
	// true continuation, or a wrong one, to reach every accept length);
	// pos is the position the token is proposed for.
	Propose func(pos int, draft uint32) uint32
	// LeaveInScratch, when set, makes Step leave the recurrent states where
	// the verify pass wrote them: the state slot holds the state after the
	// step's input position t, scratch slot j the state after t+j, and the
	// caller places the ones to keep (specdec.Placements, CopyRecurrent). The
	// engines set it in the recurrent modes that keep a state per block.
	LeaveInScratch bool
}

// NewDecoder returns a decoder for one request.
func (m *Model) NewDecoder() *Decoder { return &Decoder{m: m} }

// Step computes position t with input token (the last emitted token; s
// holds the state of positions [0, t)) and the step's drafts, and returns
// the 1 to max tokens it emits; s then holds the state of positions
// [0, t+len(tokens)). Per-token state of rejected positions is left
// beyond them, to be rewritten when they are computed; the drafter's KV
// is written at t .. t+drafts-2 by chaining and rewritten by the verify
// pass, so the store needs blocks through position t+drafts.
func (d *Decoder) Step(s SlotStore, t int, token uint32, max int) ([]uint32, error) {
	m := d.m
	if max < 1 {
		return nil, fmt.Errorf("%w: a step emitting at most %d tokens", ErrRange, max)
	}
	k := specdec.Drafts(m.spec, d.prop == nil, max)
	d.Stats.Steps++
	if k == 0 {
		out, err := m.Forward(s, t, token)
		if err != nil {
			return nil, err
		}
		d.prop = &out
		return []uint32{out.Next}, nil
	}
	drafts := make([]uint32, 0, k)
	propose := func(pos int, tok uint32) {
		if d.Propose != nil {
			tok = d.Propose(pos, tok) % Vocab
		}
		drafts = append(drafts, tok)
	}
	propose(t+1, d.prop.Draft)
	h := d.prop.DraftHidden
	for i := 1; i < k; i++ {
		o, err := m.Draft(s, t+i-1, h, drafts[i-1])
		if err != nil {
			return nil, fmt.Errorf("draft %d at position %d: %w", i+1, t+i-1, err)
		}
		propose(t+i+1, o.Draft)
		h = o.DraftHidden
	}
	outs := make([]Output, k+1)
	targets := make([]uint32, k+1)
	in := token
	for j := 0; j <= k; j++ {
		if j > 0 {
			in = drafts[j-1]
		}
		o, err := m.Forward(s.Slots(specdec.StateSlots(j)), t+j, in)
		if err != nil {
			return nil, fmt.Errorf("verify position %d: %w", t+j, err)
		}
		outs[j], targets[j] = o, o.Next
	}
	a := specdec.Accept(drafts, targets)
	if keep := specdec.KeepSlot(a); keep != 0 && !d.LeaveInScratch {
		if err := keepSlot(m.spec, s, keep); err != nil {
			return nil, err
		}
	}
	d.prop = &outs[a]
	d.Stats.Drafted += k
	d.Stats.Accepted += a
	for len(d.Stats.AcceptedAt) < k {
		d.Stats.AcceptedAt = append(d.Stats.AcceptedAt, 0)
	}
	for i := 0; i < a; i++ {
		d.Stats.AcceptedAt[i]++
	}
	return append(drafts[:a:a], targets[a]), nil
}

// keepSlot makes scratch slot k's recurrent state the request's state.
func keepSlot(spec *groups.Model, s SlotStore, k int) error {
	if err := CopyRecurrent(spec, s.Slots(k, k), s.Slots(0, 0)); err != nil {
		return fmt.Errorf("keep scratch slot %d: %w", k, err)
	}
	return nil
}

// CopyRecurrent copies the recurrent state (conv rows and SSM / linear
// attention states of every recurrent layer) that from holds into to: the
// move of a state from one block to another (two stores of one request
// whose tables name different state blocks) or from a scratch slot.
func CopyRecurrent(spec *groups.Model, from, to Store) error {
	var err error
	for li := range spec.Layers {
		if spec.Layers[li].Kind != groups.Recurrent {
			continue
		}
		visitLayerState(spec, li, func(c oracle.Coord, size int) {
			if err != nil {
				return
			}
			v := make([]float32, size)
			if err = from.Read(c, v); err == nil {
				err = to.Write(c, v)
			}
		})
	}
	return err
}

// GenerateSpeculative is Generate with a Decoder: the prompt's positions
// [from, len(prompt)-1) by Prefill, then decoder steps from the last
// prompt position until n tokens. It returns the same tokens as Generate
// and leaves s holding the same state (Computed positions), plus the
// decoder's counts.
func (m *Model) GenerateSpeculative(s SlotStore, prompt []uint32, from, n int, dec *Decoder) ([]uint32, error) {
	if from < 0 || from >= len(prompt) || n < 0 {
		return nil, fmt.Errorf("%w: generate %d tokens from position %d of a %d-token prompt", ErrRange, n, from, len(prompt))
	}
	if from < len(prompt)-1 {
		if _, err := m.Prefill(s, prompt, from, len(prompt)-1); err != nil {
			return nil, err
		}
	}
	if n == 0 {
		// Generate computes the last prompt position even for no output.
		_, err := m.Forward(s, len(prompt)-1, prompt[len(prompt)-1])
		return nil, err
	}
	var out []uint32
	t, in := len(prompt)-1, prompt[len(prompt)-1]
	for len(out) < n {
		toks, err := dec.Step(s, t, in, n-len(out))
		if err != nil {
			return nil, fmt.Errorf("position %d: %w", t, err)
		}
		out = append(out, toks...)
		t += len(toks)
		in = toks[len(toks)-1]
	}
	return out, nil
}
