package proptest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"pgregory.net/rapid"

	"github.com/hybridxfer/hybridxfer/engine"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// ServeInstance is one prefill or decode instance of a ServeCase.
type ServeInstance struct {
	Config groups.InstanceConfig
	Mode   plan.Mode // decode instances: how reads are shaped
	// CacheMode is how the instance keeps recurrent states (serve's
	// --mamba-cache-mode); P and D draw theirs independently.
	CacheMode hma.RecurrentMode
}

// ServeRequest is one request of a ServeCase: its prompt, the P and D
// instances the router sends it to, and its output length.
type ServeRequest struct {
	Prompt    string
	P, D      int
	MaxTokens int
}

// ServeCase is one randomized disaggregated-serving run: a model miniature,
// several P and D instances (each with its own tp, block size, layouts
// and recurrent cache mode; each D with its own read mode), a handoff mode, a failure policy, an
// optional injected transport fault on one D, and a batch of requests
// (some sharing prefixes, so both sides see prefix-cache hits) run
// concurrently in waves: Waves[i] requests start together, in the order
// Order gives, and the next wave starts when InFlight requests are still
// running at most (so requests of different waves overlap too).
type ServeCase struct {
	Model   *groups.Model
	P, D    []ServeInstance
	Handoff backend.Handoff
	Policy  string
	// FaultD, when >= 0, is the decode instance whose rank 0 transport
	// fails read batch FaultRead at op FaultOp.
	FaultD, FaultRead, FaultOp int
	Requests                   []ServeRequest
	// InFlight bounds the requests running at once (1 is the old,
	// sequential property).
	InFlight int
	// ProposeRight, for a model with a drafter, is the percentage of
	// draft positions at which D's drafter is made to propose the true
	// continuation (engine.Config.Propose); 0 leaves the drafter's own
	// guesses. The answers may not depend on it.
	ProposeRight int
}

// GenServeCase draws a ServeCase with up to maxInFlight requests in flight.
func GenServeCase(maxInFlight int) *rapid.Generator[ServeCase] {
	return genServeCase(GenServingModel(), maxInFlight)
}

// GenSpeculativeServeCase draws a ServeCase of a model that decodes
// speculatively (GenSpeculativeModel).
func GenSpeculativeServeCase(maxInFlight int) *rapid.Generator[ServeCase] {
	return genServeCase(GenSpeculativeModel(), maxInFlight)
}

func genServeCase(models *rapid.Generator[*groups.Model], maxInFlight int) *rapid.Generator[ServeCase] {
	return rapid.Custom(func(t *rapid.T) ServeCase {
		c := ServeCase{
			Model:    models.Draw(t, "model"),
			Handoff:  rapid.SampledFrom([]backend.Handoff{backend.DecodeComputesLast, backend.PrefillSamplesFirst}).Draw(t, "handoff"),
			Policy:   rapid.SampledFrom([]string{backend.PolicyFail, backend.PolicyRecompute}).Draw(t, "policy"),
			FaultD:   -1,
			InFlight: rapid.IntRange(1, max(1, maxInFlight)).Draw(t, "in_flight"),
		}
		tps := []int{1, 2, 4}
		for i, n := 0, rapid.IntRange(1, 3).Draw(t, "num_p"); i < n; i++ {
			c.P = append(c.P, ServeInstance{Config: GenInstance(t, fmt.Sprintf("p%d", i), DrawTP(t, c.Model, tps, "p_tp")),
				CacheMode: drawCacheMode(t, "p_cache_mode")})
		}
		for i, n := 0, rapid.IntRange(1, 3).Draw(t, "num_d"); i < n; i++ {
			c.D = append(c.D, ServeInstance{Config: GenInstance(t, fmt.Sprintf("d%d", i), DrawTP(t, c.Model, tps, "d_tp")),
				Mode:      rapid.SampledFrom([]plan.Mode{plan.Direct, plan.Staged, plan.Auto}).Draw(t, "mode"),
				CacheMode: drawCacheMode(t, "d_cache_mode")})
		}
		if rapid.IntRange(0, 2).Draw(t, "fault") == 0 {
			c.FaultD = rapid.IntRange(0, len(c.D)-1).Draw(t, "fault_d")
			c.FaultRead = rapid.IntRange(0, 3).Draw(t, "fault_read")
			c.FaultOp = rapid.IntRange(0, 2).Draw(t, "fault_op")
		}
		base := rapid.StringMatching(`[a-z ]{1,30}`).Draw(t, "base")
		n := rapid.IntRange(1, max(4, 2*c.InFlight)).Draw(t, "requests")
		for i := 0; i < n; i++ {
			p := rapid.StringMatching(`[a-z ]{1,40}`).Draw(t, "prompt")
			if rapid.Bool().Draw(t, "shared_prefix") {
				p = base + p
			}
			c.Requests = append(c.Requests, ServeRequest{Prompt: p,
				P:         rapid.IntRange(0, len(c.P)-1).Draw(t, "to_p"),
				D:         rapid.IntRange(0, len(c.D)-1).Draw(t, "to_d"),
				MaxTokens: rapid.IntRange(1, 6).Draw(t, "max_tokens")})
		}
		if c.Model.Draft != groups.DraftNone {
			c.ProposeRight = rapid.SampledFrom([]int{0, 50, 80, 100}).Draw(t, "propose_right")
		}
		c.InFlight = fitInFlight(t, c)
		return c
	})
}

func drawCacheMode(t *rapid.T, label string) hma.RecurrentMode {
	return rapid.SampledFrom([]hma.RecurrentMode{hma.RecurrentNone, hma.RecurrentAlign, hma.RecurrentAll}).Draw(t, label)
}

// fitInFlight is the most requests of c, at most c.InFlight, that may run
// at once with every engine's pools, sized by servingBlocks, within
// maxEngineBytes: a preset miniature with large pages at tp 4 cannot hold
// sixty requests in a GiB, and a case it could not run would test nothing.
func fitInFlight(t *rapid.T, c ServeCase) int {
	mini, err := refmodel.Miniature(c.Model)
	if err != nil {
		t.Fatalf("%v", err)
	}
	fits := func(k int) bool {
		for _, side := range []struct {
			in []ServeInstance
			of func(ServeRequest) int
		}{{c.P, func(rq ServeRequest) int { return rq.P }}, {c.D, func(rq ServeRequest) int { return rq.D }}} {
			for i, inst := range side.in {
				var routed []ServeRequest
				for _, rq := range c.Requests {
					if side.of(rq) == i {
						routed = append(routed, rq)
					}
				}
				n, err := servingBlocks(mini, inst.Config, routed, k)
				if err != nil {
					t.Fatalf("%v", err)
				}
				b, err := engine.InstanceBytes(mini, inst.Config, n, 0)
				if err != nil {
					t.Fatalf("%v", err)
				}
				if b > maxEngineBytes {
					return false
				}
			}
		}
		return true
	}
	k := c.InFlight
	for k > 1 && !fits(k) {
		k--
	}
	return k
}

// servingBlocks sizes the pools of instance in, which serves the
// requests routed to it: room for the InFlight largest of them at once (P
// holds a request's blocks until D has read them, D until it finishes),
// each taking, in every group, a block per BlockSize tokens of prompt and
// output, plus one partial block, one for lookahead and the recurrent
// scratch blocks; and a margin (a pool's block 0 is reserved,
// prefix-cached blocks are evicted only when the pool runs short).
func servingBlocks(mini *groups.Model, in groups.InstanceConfig, routed []ServeRequest, inFlight int) (int, error) {
	side, err := plan.NewSide(mini, in, func(int, *groups.Geometry) int { return 1 })
	if err != nil {
		return 0, err
	}
	var needs []int
	for _, rq := range routed {
		tokens := len(tokenizer.Tokenize(rq.Prompt)) + rq.MaxTokens
		needs = append(needs, len(side.Ranks[0].Groups)*((tokens+in.BlockSize-1)/in.BlockSize+2+mini.NumSpeculativeTokens))
	}
	slices.Sort(needs)
	slices.Reverse(needs)
	total := 16
	for _, n := range needs[:min(inFlight, len(needs))] {
		total += n
	}
	return min(4096, total), nil
}

// maxEngineBytes bounds the memory one engine of a ServeCase registers:
// the property runs up to six engines at once on CI machines of a few
// GiB, so their pools are sized to the case's requests, not to a constant.
const maxEngineBytes = 1 << 30

func checkEngineBytes(t *rapid.T, e *engine.Engine) {
	if b := e.RegisteredBytes(); b > maxEngineBytes {
		t.Fatalf("an engine of %s registers %d MiB, more than the %d MiB a serving case may take", e.ModelName(), b>>20, maxEngineBytes>>20)
	}
}

// servedResult is one request's outcome.
type servedResult struct {
	tokens []uint32
	err    error
}

// CheckServing runs c with its prefill and decode engines in process (the
// in-process transport, an in-memory handshake), InFlight requests at a
// time, and fails t unless: every request ends; every answer and every
// final decode state equals the monolithic reference run; an error is only
// ever a reported load failure (ErrKVLoad, never more of them than faults
// injected, never under policy recompute); every (request, position) was
// computed at most once on each side and exactly once across P and D
// unless a fault made D recompute it; and afterwards every block on every
// instance is free and every lease gone.
func CheckServing(t *rapid.T, c ServeCase) {
	hs := &engine.MemHandshake{}
	rec := verify.NewRecorder()
	var faults *transport.FaultPlan
	if c.FaultD >= 0 {
		faults = transport.NewFaultPlan(1).Add(transport.Rule{Kind: transport.OpRead, Calls: []int{c.FaultRead}, Ops: []int{c.FaultOp},
			Fault: transport.Fault{Kind: transport.FaultFail}})
	}
	// Faults go on one decode instance's rank 0 transport (a plan drives
	// one wrapper).
	factory := func(f *transport.FaultPlan) engine.TransportFactory {
		return func(r int, h transport.Handlers) (transport.Transport, error) {
			if f != nil && r == 0 {
				return transport.WithFaults(transport.NewInproc(f.Handlers(h)), f), nil
			}
			return transport.NewInproc(h), nil
		}
	}
	mini, err := refmodel.Miniature(c.Model)
	if err != nil {
		t.Fatalf("%v", err)
	}
	routed := func(to func(ServeRequest) bool) []ServeRequest {
		var out []ServeRequest
		for _, rq := range c.Requests {
			if to(rq) {
				out = append(out, rq)
			}
		}
		return out
	}
	ps := make([]*engine.Engine, len(c.P))
	for i, pi := range c.P {
		numBlocks, err := servingBlocks(mini, pi.Config, routed(func(rq ServeRequest) bool { return rq.P == i }), c.InFlight)
		if err != nil {
			t.Fatalf("prefill engine %d: %v", i, err)
		}
		p, err := engine.New(engine.Config{Role: backend.RolePrefill, EngineID: fmt.Sprintf("P%d", i), Model: c.Model, Seed: 3, Instance: pi.Config,
			NumBlocks: numBlocks, MambaCacheMode: pi.CacheMode, LeaseTTL: time.Hour, Handoff: c.Handoff, Transports: factory(nil), Serve: hs.Serve, OnCompute: rec.OnCompute, Log: quiet})
		if err != nil {
			t.Fatalf("prefill engine %d: %v", i, err)
		}
		defer p.Close()
		checkEngineBytes(t, p)
		ps[i] = p
	}
	propose := proposer(t, c, mini)
	ds := make([]*engine.Engine, len(c.D))
	for i, di := range c.D {
		var f *transport.FaultPlan
		if i == c.FaultD {
			f = faults
		}
		numBlocks, err := servingBlocks(mini, di.Config, routed(func(rq ServeRequest) bool { return rq.D == i }), c.InFlight)
		if err != nil {
			t.Fatalf("decode engine %d: %v", i, err)
		}
		var d *engine.Engine
		d, err = engine.New(engine.Config{Role: backend.RoleDecode, EngineID: fmt.Sprintf("D%d", i), Model: c.Model, Seed: 3, Instance: di.Config,
			NumBlocks: numBlocks, MambaCacheMode: di.CacheMode, Mode: di.Mode, FailurePolicy: c.Policy, TransferTimeout: 20 * time.Second, Transports: factory(f), Fetch: hs.Fetch,
			OnCompute: rec.OnCompute, Log: quiet, Propose: propose,
			OnFinish: rec.OnFinish(func() *refmodel.Model { return d.Model() })})
		if err != nil {
			t.Fatalf("decode engine %d: %v", i, err)
		}
		defer d.Close()
		checkEngineBytes(t, d)
		ds[i] = d
	}
	ctx := context.Background()
	results := make([]servedResult, len(c.Requests))
	sem := make(chan struct{}, c.InFlight)
	var wg sync.WaitGroup
	for i, rq := range c.Requests {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := fmt.Sprintf("r%d", i)
			pr, err := ps[rq.P].Generate(ctx, backend.GenRequest{ID: id, Prompt: rq.Prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
			if err != nil {
				results[i].err = fmt.Errorf("prefill on P%d: %w", rq.P, err)
				return
			}
			dr, err := ds[rq.D].Generate(ctx, backend.GenRequest{ID: id, Prompt: rq.Prompt, MaxTokens: rq.MaxTokens, KV: pr.KV}, nil)
			if err != nil {
				results[i].err = fmt.Errorf("decode on D%d: %w", rq.D, err)
				return
			}
			results[i].tokens = dr.Tokens
		}()
	}
	wg.Wait()
	if c.ProposeRight == 100 {
		// Every proposal was the true continuation: every draft accepted.
		for i, d := range ds {
			if st := d.SpecStats(); st.Accepted != st.Drafted {
				t.Fatalf("D%d: %d of %d true-continuation drafts accepted", i, st.Accepted, st.Drafted)
			}
		}
	}
	injected := 0
	if faults != nil {
		injected = len(faults.Injected())
	}
	failed := 0
	spec, model := ds[0].Spec(), ds[0].Model()
	for i, rq := range c.Requests {
		id := fmt.Sprintf("r%d", i)
		toks := tokenizer.Tokenize(rq.Prompt)
		res := results[i]
		if res.err != nil {
			failed++
			switch {
			case injected == 0:
				t.Fatalf("request %d (P%d -> D%d) failed without any fault: %v", i, rq.P, rq.D, res.err)
			case c.Policy == backend.PolicyRecompute:
				t.Fatalf("request %d (P%d -> D%d) failed under policy recompute: %v", i, rq.P, rq.D, res.err)
			case !errors.Is(res.err, backend.ErrKVLoad) || rq.D != c.FaultD:
				t.Fatalf("request %d (P%d -> D%d): %v, want a load failure on the faulty D%d", i, rq.P, rq.D, res.err, c.FaultD)
			}
			continue
		}
		// The monolithic run of the same prompt.
		ms := refmodel.NewMapStore(spec)
		want, err := model.Generate(ms, toks, 0, rq.MaxTokens)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(res.tokens) != fmt.Sprint(want) {
			t.Fatalf("request %d (P%d -> D%d, %d in flight): disaggregated %v, monolithic %v", i, rq.P, rq.D, c.InFlight, res.tokens, want)
		}
		total := refmodel.Computed(len(toks), rq.MaxTokens)
		wantSnap, err := model.Snapshot(ms, total)
		if err != nil {
			t.Fatal(err)
		}
		o := rec.Request(id, total)
		got := o.Final
		if got == nil {
			t.Fatalf("request %d: no final decode state", i)
		}
		if err := got.Diff(wantSnap); err != nil {
			t.Fatalf("request %d (P%d -> D%d): final state differs from monolithic: %v (computed: %s; faults injected: %v; layers %s)", i, rq.P, rq.D, err, computedRanges(o), faults.Injected(), layerKinds(c.Model))
		}
		recomputeAllowed := injected > 0 && c.Policy == backend.PolicyRecompute && rq.D == c.FaultD
		checkOnce(t, o, id, total, recomputeAllowed)
	}
	if failed > injected {
		t.Fatalf("%d requests failed, %d faults injected", failed, injected)
	}
	// Everything released everywhere (P's releases arrive asynchronously;
	// the timeout only turns a hang into a failure).
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, p := range ps {
		if err := p.WaitIdle(wctx); err != nil {
			t.Fatalf("prefill %d not idle after the run (%d faults): %v", i, injected, err)
		}
	}
	for i, d := range ds {
		if err := d.WaitIdle(wctx); err != nil {
			t.Fatalf("decode %d not idle after the run (%d faults): %v", i, injected, err)
		}
	}
}

// proposer is the Propose hook of c's decode engines: at ProposeRight
// percent of the positions (a hash of the request and position, so that a
// recomputed step proposes the same) the true continuation from the
// monolithic run, elsewhere the drafter's own token. nil when
// ProposeRight is 0.
func proposer(t *rapid.T, c ServeCase, mini *groups.Model) func(string, int, uint32) uint32 {
	if c.ProposeRight == 0 {
		return nil
	}
	m := refmodel.New(mini, 3)
	seqs := make([][]uint32, len(c.Requests))
	for i, rq := range c.Requests {
		toks := tokenizer.Tokenize(rq.Prompt)
		want, err := m.Generate(refmodel.NewMapStore(mini), toks, 0, rq.MaxTokens)
		if err != nil {
			t.Fatalf("monolithic run of request %d: %v", i, err)
		}
		seqs[i] = append(toks, want...)
	}
	return func(reqID string, pos int, draft uint32) uint32 {
		var i int
		if _, err := fmt.Sscanf(reqID[strings.LastIndex(reqID, "-r")+2:], "%d", &i); err != nil || i < 0 || i >= len(seqs) || pos >= len(seqs[i]) {
			return draft
		}
		h := fnv.New32a()
		fmt.Fprintf(h, "%s/%d", reqID, pos)
		if int(h.Sum32()%100) < c.ProposeRight {
			return seqs[i][pos]
		}
		return draft
	}
}

func layerKinds(m *groups.Model) string {
	var b strings.Builder
	for _, l := range m.Layers {
		fmt.Fprintf(&b, "%s:%s", l.Name, l.Kind)
		if l.Attention != nil {
			fmt.Fprintf(&b, "/w%d/c%d", l.Attention.Window, l.Attention.Chunk)
		}
		b.WriteString(" ")
	}
	return b.String()
}

// computedRanges lists what each side computed of a request.
func computedRanges(o verify.Outcome) string {
	var parts []string
	for rid, rs := range o.Ranges {
		parts = append(parts, fmt.Sprintf("%s %v", rid, rs))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// checkOnce: positions before the first one computed for the request came
// from a prefix-cache hit (computed by an earlier request); every later
// position was computed once on each side that computed it, and once across
// P and D, except that D may have recomputed positions P computed when a
// load failed (recomputeAllowed).
func checkOnce(t *rapid.T, o verify.Outcome, id string, total int, recomputeAllowed bool) {
	perSide := map[string][]int{}
	for rid, rs := range o.Ranges {
		side := rid[:1]
		if perSide[side] == nil {
			perSide[side] = make([]int, total)
		}
		for _, r := range rs {
			for p := r[0]; p < r[1]; p++ {
				if p >= total {
					t.Fatalf("%s: position %d computed beyond %d", rid, p, total)
				}
				perSide[side][p]++
				if perSide[side][p] > 1 {
					t.Fatalf("request %s: position %d computed twice on side %s", id, p, side)
				}
			}
		}
	}
	for p, n := range o.Count {
		switch {
		case p < o.First && n != 0, p >= o.First && n == 0:
			t.Fatalf("request %s: position %d computed %d times across P and D (cache hit below %d)", id, p, n, o.First)
		case n > 1 && !recomputeAllowed:
			t.Fatalf("request %s: position %d computed %d times across P and D without a reported failure", id, p, n)
		}
	}
}
