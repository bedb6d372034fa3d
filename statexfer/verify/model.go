package verify

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/engine"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// ModelCheck configures a model-level end-to-end check: a prefill and a
// decode engine in this process (their own transports and handshake),
// requests of random prompts, answers and final decode states compared with
// the monolithic reference run.
type ModelCheck struct {
	Model        *groups.Model
	P, D         groups.InstanceConfig
	Mode         plan.Mode
	Handoff      backend.Handoff
	PromptTokens int // prompts have 1..PromptTokens tokens
	Requests     int
	MaxTokens    int
	Seed         uint64
	// PCacheMode and DCacheMode are P's and D's recurrent cache modes
	// (engine.Config.MambaCacheMode). When either is not none every second
	// request is a follow-up: the previous request's prompt, its answer
	// and a new message, so that P and D see prefix hits.
	PCacheMode, DCacheMode hma.RecurrentMode
	// Turns > 1 makes each request a conversation of that many turns on
	// bidirectional engines (engine.Config.Bidirectional): turn k's prompt
	// is turn k-1's, its answer token for token and a new message, and the
	// prefill instance reads the conversation so far back from the decode
	// instance's export. Every third conversation rewrites one token of
	// its history before its last turn (the export no longer matches),
	// and every fourth lets the decode instance's hold expire (its clock
	// jumps past the TTL and the sweeper frees the blocks) before its
	// second turn.
	Turns int
	// PTransports and DTransports build the ranks' transports; Serve and
	// Fetch the handshake (engine.MemHandshake when nil).
	PTransports, DTransports engine.TransportFactory
	Serve                    engine.HandshakeServer
	Fetch                    engine.HandshakeClient
	// Progress, when set, is called after each request is checked.
	Progress func()
}

// ModelCheckResult is what a model check found.
type ModelCheckResult struct {
	Model          string `json:"model"`
	Requests       int    `json:"requests"`
	Matched        int    `json:"matched"`
	StatesEqual    int    `json:"states_equal"`
	PositionsTwice int    `json:"positions_computed_twice"`
	PromptTokens   int    `json:"prompt_tokens"`
	OutputTokens   int    `json:"output_tokens"`
	FirstProblem   string `json:"first_problem,omitempty"`
	Idle           bool   `json:"released_everything"`
	// Speculative decoding (zero without a drafter): the drafter and
	// its tokens per step; D's draft tokens proposed and accepted, by
	// position; answers equal to the monolithic run without speculation
	// (greedy speculative decoding is lossless); states_equal above
	// compares with the monolithic speculative run; scratch blocks found
	// in a transfer's block lists (never transferred: must be 0).
	Speculative             string  `json:"speculative,omitempty"`
	NumSpeculativeTokens    int     `json:"num_speculative_tokens"`
	DraftTokens             int     `json:"draft_tokens"`
	AcceptedTokens          int     `json:"accepted_tokens"`
	AcceptedPerPosition     []int   `json:"accepted_per_position"`
	AcceptanceRate          float64 `json:"acceptance_rate"`
	AnswersEqualNonSpec     bool    `json:"answers_equal_non_speculative"`
	ScratchSlotsTransferred int     `json:"scratch_slots_transferred"`
	// Prefix caching: each side's recurrent cache mode and the positions
	// its prefix cache supplied (P: not computed; D: not read from P),
	// out of the positions looked up.
	PCacheMode     string `json:"mamba_cache_mode_prefill"`
	DCacheMode     string `json:"mamba_cache_mode_decode"`
	FollowUps      int    `json:"follow_up_requests"`
	PPrefixHits    int    `json:"prefix_cache_hits_prefill"`
	PPrefixQueries int    `json:"prefix_cache_queries_prefill"`
	DPrefixHits    int    `json:"prefix_cache_hits_decode"`
	DPrefixQueries int    `json:"prefix_cache_queries_decode"`
	// Multi-turn (Turns > 1): conversations and turns each; prompt
	// positions the prefill instance read back from decode instead of
	// computing them, the bytes read, per turn (index 0: first turns, which
	// read nothing) and in all; exports not read, by reason; positions
	// computed again after a decline (a rewritten or expired turn), which
	// positions_computed_twice does not count; answers_equal: every answer
	// equals the monolithic run's.
	Conversations          int            `json:"conversations,omitempty"`
	Turns                  int            `json:"turns,omitempty"`
	AnswersEqual           bool           `json:"answers_equal"`
	TokensReusedFromDecode int            `json:"tokens_reused_from_decode"`
	BytesReadFromDecode    int64          `json:"bytes_read_from_decode"`
	ReusedPerTurn          []int          `json:"tokens_reused_per_turn,omitempty"`
	BytesPerTurn           []int64        `json:"bytes_read_per_turn,omitempty"`
	PromptTokensPerTurn    []int          `json:"prompt_tokens_per_turn,omitempty"`
	Declines               map[string]int `json:"declines,omitempty"`
	RecomputedAfterDecline int            `json:"positions_recomputed_after_decline"`
	Rewritten              int            `json:"rewritten_turns,omitempty"`
	Expired                int            `json:"expired_turns,omitempty"`
}

// OK reports whether everything matched and was released.
func (r *ModelCheckResult) OK() bool {
	return r.Matched == r.Requests && r.StatesEqual == r.Requests && r.PositionsTwice == 0 && r.Idle &&
		r.AnswersEqualNonSpec && r.ScratchSlotsTransferred == 0
}

// RunModelCheck runs c.
func RunModelCheck(ctx context.Context, c ModelCheck) (*ModelCheckResult, error) {
	if c.Requests <= 0 || c.PromptTokens <= 0 || c.MaxTokens <= 0 {
		return nil, fmt.Errorf("%w: requests, prompt tokens and max tokens must be > 0", backend.ErrBadRequest)
	}
	if c.Serve == nil || c.Fetch == nil {
		hs := &engine.MemHandshake{}
		c.Serve, c.Fetch = hs.Serve, hs.Fetch
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := NewRecorder()
	turns := max(c.Turns, 1)
	bidir := turns > 1
	var d *engine.Engine
	p, err := engine.New(engine.Config{Role: backend.RolePrefill, EngineID: "check-prefill", Model: c.Model, Seed: c.Seed, Instance: c.P, MambaCacheMode: c.PCacheMode,
		Handoff: c.Handoff, Transports: c.PTransports, Serve: c.Serve, Fetch: c.Fetch, Bidirectional: bidir, OnCompute: rec.OnCompute, Log: quiet})
	if err != nil {
		return nil, fmt.Errorf("prefill: %w", err)
	}
	defer p.Close()
	d, err = engine.New(engine.Config{Role: backend.RoleDecode, EngineID: "check-decode", Model: c.Model, Seed: c.Seed, Instance: c.D, Mode: c.Mode, MambaCacheMode: c.DCacheMode,
		Transports: c.DTransports, Serve: c.Serve, Fetch: c.Fetch, Bidirectional: bidir, OnCompute: rec.OnCompute, Log: quiet,
		OnFinish: rec.OnFinish(func() *refmodel.Model { return d.Model() })})
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	defer d.Close()
	res := &ModelCheckResult{Model: c.Model.Name, Requests: c.Requests * turns, PCacheMode: c.PCacheMode.String(), DCacheMode: c.DCacheMode.String()}
	if bidir {
		res.Conversations, res.Turns = c.Requests, turns
		res.ReusedPerTurn, res.BytesPerTurn, res.PromptTokensPerTurn = make([]int, turns), make([]int64, turns), make([]int, turns)
	}
	followUps := c.PCacheMode != hma.RecurrentNone || c.DCacheMode != hma.RecurrentNone
	problem := func(f string, a ...any) {
		if res.FirstProblem == "" {
			res.FirstProblem = fmt.Sprintf(f, a...)
		}
	}
	// whole: the model reads back only whole exports (recurrent or
	// windowed groups), so a rewritten history is a decline.
	whole := WholeExportsOnly(d.Spec())
	rng := rand.New(rand.NewPCG(c.Seed, 0xc4ec))
	const alphabet = "abcdefghijklmnopqrstuvwxyz ,."
	message := func(b *strings.Builder) {
		for n := b.Len() + 1 + rng.IntN(c.PromptTokens); b.Len() < n; {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
	}
	var prev string // the previous request's prompt and answer
	for i := 0; i < c.Requests; i++ {
		var export *backend.KVTransferParams // the last turn's, for the next
		var history []uint32                 // the tokens export holds
		for turn := range turns {
			var b strings.Builder
			rewritten, expired := false, false
			switch {
			case turn > 0:
				b.WriteString(prev)
				if i%3 == 2 && turn == turns-1 {
					// Rewrite one token of the history (as a client that
					// strips reasoning traces does).
					h := []byte(b.String())
					at := rng.IntN(len(h))
					h[at] = tokenizer.TokenText([]uint32{(tokenizer.Tokenize(string(h[at : at+1]))[0] + 1) % refmodel.Vocab})[0]
					b.Reset()
					b.Write(h)
					rewritten = true
					res.Rewritten++
				}
				if i%4 == 3 && turn == 1 {
					d.SweepAt(time.Now().Add(2 * engine.DefaultConversationTTL))
					expired = true
					res.Expired++
				}
			case followUps && i%2 == 1:
				b.WriteString(prev)
				res.FollowUps++
			}
			message(&b)
			prompt := b.String()
			id := fmt.Sprintf("q%d", i)
			if turn > 0 {
				id = fmt.Sprintf("q%dt%d", i, turn)
			}
			before := p.ConversationStats()
			pr, err := p.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true, RemotePrefix: export}}, nil)
			if err != nil {
				return nil, fmt.Errorf("request %d turn %d on prefill: %w", i, turn, err)
			}
			dr, err := d.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: c.MaxTokens, KV: pr.KV}, nil)
			if err != nil {
				return nil, fmt.Errorf("request %d turn %d on decode: %w", i, turn, err)
			}
			after := p.ConversationStats()
			toks := tokenizer.Tokenize(prompt)
			prev = prompt + tokenizer.TokenText(dr.Tokens)
			if bidir {
				prev += "\n"
			}
			res.PromptTokens += len(toks)
			res.OutputTokens += len(dr.Tokens)
			ms := refmodel.NewMapStore(d.Spec())
			want, err := d.Model().Generate(ms, toks, 0, c.MaxTokens)
			if err != nil {
				return nil, err
			}
			if c.Progress != nil {
				c.Progress()
			}
			if fmt.Sprint(want) == fmt.Sprint(dr.Tokens) {
				res.Matched++
			} else {
				problem("request %d turn %d: disaggregated %v, monolithic %v", i, turn, dr.Tokens, want)
			}
			total := refmodel.Computed(len(toks), c.MaxTokens)
			plainSnap, err := d.Model().Snapshot(ms, total)
			if err != nil {
				return nil, err
			}
			// The monolithic speculative run: its answer must be the plain
			// one too, and its state is what D's final state must equal.
			sms := refmodel.NewMapStore(d.Spec())
			spec, err := d.Model().GenerateSpeculative(sms, toks, 0, c.MaxTokens, d.Model().NewDecoder())
			if err != nil {
				return nil, err
			}
			wantSnap, err := d.Model().Snapshot(sms, total)
			if err != nil {
				return nil, err
			}
			if fmt.Sprint(spec) != fmt.Sprint(want) || wantSnap.Diff(plainSnap) != nil {
				problem("request %d: the monolithic speculative run differs from the plain one (%v vs %v)", i, spec, want)
				res.Matched--
			}
			o := rec.Request(id, total)
			got, count, first := o.Final, o.Count, o.First
			if got != nil && got.Diff(wantSnap) == nil {
				res.StatesEqual++
			} else {
				problem("request %d turn %d: final decode state differs from the monolithic run", i, turn)
			}
			for x := first; x < total; x++ {
				if count[x] != 1 {
					res.PositionsTwice++
					problem("request %d turn %d: position %d computed %d times", i, turn, x, count[x])
				}
			}
			if bidir {
				declined := 0
				for r, n := range after.Declines {
					declined += n - before.Declines[r]
				}
				reused, bytes := after.Reused-before.Reused, after.Bytes-before.Bytes
				res.ReusedPerTurn[turn] += reused
				res.BytesPerTurn[turn] += bytes
				res.PromptTokensPerTurn[turn] += len(toks)
				if turn > 0 {
					// What this turn may not compute again: the export's
					// tokens the prompt still starts with (whole chain
					// blocks of them when it diverges; none on models that
					// read only whole exports).
					bound := ExportCovers(history, toks, whole)
					for x := 0; x < len(history) && x < total; x++ {
						switch {
						case count[x] == 0:
						case declined > 0:
							res.RecomputedAfterDecline++
						case x < bound:
							res.PositionsTwice++
							problem("request %d turn %d: position %d computed again though the decode instance's export holds it", i, turn, x)
						}
					}
					if declined > 0 && !rewritten && !expired {
						problem("request %d turn %d: the export was declined (%v) though the history is unchanged and the hold alive", i, turn, after.Declines)
					}
					if expired && declined == 0 {
						problem("request %d turn %d: an expired export was read", i, turn)
					}
				}
			}
			export = dr.KV
			history = append(toks, dr.Tokens...)[:refmodel.Computed(len(toks), len(dr.Tokens))]
		}
	}
	if bidir {
		st := p.ConversationStats()
		res.TokensReusedFromDecode, res.BytesReadFromDecode, res.Declines = st.Reused, st.Bytes, st.Declines
	}
	res.AnswersEqualNonSpec = res.Matched == res.Requests
	res.AnswersEqual = res.Matched == res.Requests
	if d.Spec().Draft != groups.DraftNone {
		res.Speculative, res.NumSpeculativeTokens = string(d.Spec().Draft), d.Spec().NumSpeculativeTokens
	}
	ss := d.SpecStats()
	res.DraftTokens, res.AcceptedTokens, res.AcceptedPerPosition = ss.Drafted, ss.Accepted, ss.AcceptedAt
	if ss.Drafted > 0 {
		res.AcceptanceRate = float64(ss.Accepted) / float64(ss.Drafted)
	}
	pp, dp := p.PrefixStats(), d.PrefixStats()
	res.PPrefixHits, res.PPrefixQueries, res.DPrefixHits, res.DPrefixQueries = pp.Hit, pp.Queried, dp.Hit, dp.Queried
	res.ScratchSlotsTransferred = p.ScratchTransferred() + d.ScratchTransferred()
	if res.ScratchSlotsTransferred > 0 {
		problem("%d speculative scratch blocks in transfers", res.ScratchSlotsTransferred)
	}
	if bidir {
		// The last turn of each conversation stays held for a next turn
		// that never comes, until its TTL: end those holds now (at most one
		// per conversation; more would be a leak).
		// (Reads release their exports when D has handled their
		// completions, just after the turn: give those a moment.)
		held := func() int { return len(d.DebugLeases().Leases) }
		for deadline := time.Now().Add(5 * time.Second); held() > c.Requests && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := len(d.SweepAt(time.Now().Add(2 * engine.DefaultConversationTTL))); n > c.Requests {
			problem("%d exports held after %d conversations", n, c.Requests)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	errP, errD := p.WaitIdle(wctx), d.WaitIdle(wctx)
	res.Idle = errP == nil && errD == nil
	if !res.Idle {
		problem("not idle after the run: prefill: %v; decode: %v", errP, errD)
	}
	return res, nil
}
