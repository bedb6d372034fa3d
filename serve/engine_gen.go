package serve

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
)

// Generate implements Backend.
func (e *Engine) Generate(ctx context.Context, req GenRequest, emit func(string) error) (*GenResult, error) {
	start := e.cfg.Now()
	res, err := e.generate(ctx, req, emit)
	if e.cfg.Metrics != nil {
		p, c := 0, 0
		if res != nil {
			p, c = res.PromptTokens, res.CompletionTokens
		}
		e.cfg.Metrics.Request(p, c, e.cfg.Now().Sub(start), err)
	}
	return res, err
}

func (e *Engine) generate(ctx context.Context, req GenRequest, emit func(string) error) (*GenResult, error) {
	if req.MaxTokens <= 0 {
		return nil, fmt.Errorf("%w: max_tokens must be >= 1", ErrBadRequest)
	}
	tokens := Tokenize(req.Prompt)
	switch {
	case req.KV != nil && req.KV.DoRemoteDecode:
		if e.cfg.Role != RolePrefill {
			return nil, fmt.Errorf("%w: do_remote_decode sent to a %s instance", ErrWrongRole, e.cfg.Role)
		}
		return e.prefill(req, tokens)
	case req.KV != nil && req.KV.RemoteRequestID != "":
		if e.cfg.Role != RoleDecode {
			return nil, fmt.Errorf("%w: remote prefill parameters sent to a %s instance", ErrWrongRole, e.cfg.Role)
		}
		return e.decodeRemote(ctx, req, tokens, emit)
	case e.cfg.Role == RoleBoth:
		return e.monolithic(ctx, req, tokens, emit)
	}
	return nil, fmt.Errorf("%w: a %s instance needs kv_transfer_params (send requests through the proxy)", ErrWrongRole, e.cfg.Role)
}

func (e *Engine) result(tokens, out []uint32) *GenResult {
	var b strings.Builder
	for _, t := range out {
		b.WriteString(Detokenize(t))
	}
	return &GenResult{Text: b.String(), Tokens: out, PromptTokens: len(tokens), CompletionTokens: len(out), FinishReason: "length"}
}

// monolithic serves a request entirely on this instance.
func (e *Engine) monolithic(ctx context.Context, req GenRequest, tokens []uint32, emit func(string) error) (*GenResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing {
		return nil, ErrShuttingDown
	}
	id := e.nextID("m", req.ID)
	if err := e.alloc.AddRequest(id, tokens, 0); err != nil {
		return nil, err
	}
	defer e.finish(id)
	hit, err := e.alloc.LookupPrefix(id)
	if err != nil {
		return nil, err
	}
	first, err := e.compute(id, tokens, hit.Tokens, len(tokens), hma.AllocSpec{Prefix: hit.Tokens, New: len(tokens) - hit.Tokens})
	if err != nil {
		return nil, err
	}
	out, err := e.decode(ctx, id, tokens, first, req.MaxTokens, emit)
	if err != nil {
		return nil, err
	}
	e.finished(id)
	return e.result(tokens, out), nil
}

// finish frees a request that is not held for a transfer.
func (e *Engine) finish(id hma.ReqID) {
	if _, held := e.alloc.Holding(id); !held {
		e.alloc.Abort(id) // frees a running request; no-op when already gone
	}
	e.updatePoolMetrics()
}

// prefill computes the prompt's handoff positions, holds the state under a
// lease and answers with the kv_transfer_params D needs.
func (e *Engine) prefill(req GenRequest, tokens []uint32) (*GenResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing {
		return nil, ErrShuttingDown
	}
	n := len(tokens)
	h := n - 1
	if e.cfg.Handoff == PrefillSamplesFirst {
		h = n
	}
	id := e.nextID("p", req.ID)
	kv := &KVTransferParams{RemoteEngineID: e.cfg.EngineID, RemoteRequestID: string(id), RemoteHost: e.cfg.Host,
		RemotePort: e.port, TPSize: len(e.ranks), NumTokens: h, Handoff: e.cfg.Handoff}
	res := &GenResult{PromptTokens: n, KV: kv, FinishReason: "length"}
	if h == 0 {
		return res, nil // nothing computed, nothing to hold: D computes everything
	}
	if err := e.alloc.AddRequest(id, tokens, 0); err != nil {
		return nil, err
	}
	hit, err := e.alloc.LookupPrefix(id)
	if err != nil {
		e.alloc.Abort(id)
		return nil, err
	}
	from := min(hit.Tokens, h)
	var next uint32
	for {
		// Everything P would compute may be cached: then use a shorter hit
		// (all or nothing, so a refused allocation changed nothing) so there
		// is a step to compute and logits to sample.
		if from == h {
			hc := e.alloc.Config()
			from = (h - 1) / hc.Alignment() * hc.Alignment()
		}
		next, err = e.compute(id, tokens, from, h, hma.AllocSpec{Prefix: from, New: h - from})
		if errors.Is(err, hma.ErrStalePrefix) && from > 0 {
			from = min(from, h) - 1 // the next aligned candidate below
			hc := e.alloc.Config()
			from = from / hc.Alignment() * hc.Alignment()
			continue
		}
		break
	}
	if err != nil {
		e.alloc.Abort(id)
		e.updatePoolMetrics()
		return nil, err
	}
	blocks, err := e.alloc.TransferBlocks(id)
	if err != nil {
		e.alloc.Abort(id)
		return nil, err
	}
	expiry := e.cfg.Now().Add(e.cfg.LeaseTTL)
	if err := e.alloc.Hold(id, hma.Time(expiry.UnixNano()), len(e.ranks)); err != nil {
		e.alloc.Abort(id)
		return nil, err
	}
	e.updatePoolMetrics()
	kv.RemoteBlockIDs = blocks
	kv.LeaseExpiryUnix = float64(expiry.UnixNano()) / 1e9
	if e.cfg.Handoff == PrefillSamplesFirst {
		kv.FirstToken = &next
		res.Tokens = []uint32{next}
		res.Text = Detokenize(next)
		res.CompletionTokens = 1
	}
	return res, nil
}

// rankReleased: P rank saw every notification of a request; the last rank
// releases the hold.
func (e *Engine) rankReleased(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.alloc.Notify(hma.ReqID(id)) && e.cfg.Metrics != nil {
		e.cfg.Metrics.LeasesReleased("notified", 1)
	}
	e.updatePoolMetrics()
}

// heartbeat: D still wants the request; the lease moves forward (never back).
func (e *Engine) heartbeat(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.alloc.Extend(hma.ReqID(id), hma.Time(e.cfg.Now().Add(e.cfg.LeaseTTL).UnixNano()))
}

// remoteAbort: D gave up on the request; P frees it now.
func (e *Engine) remoteAbort(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.alloc.Abort(hma.ReqID(id)) && e.cfg.Metrics != nil {
		e.cfg.Metrics.LeasesReleased("aborted", 1)
	}
	e.updatePoolMetrics()
}

// sweeper releases expired leases, every hold considered on every pass.
func (e *Engine) sweeper() {
	defer close(e.sweepDone)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-e.stopSweep:
			return
		case <-t.C:
			e.Sweep()
		}
	}
}

// Sweep releases every lease that expired by now; it returns their ids.
func (e *Engine) Sweep() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := e.alloc.Sweep(hma.Time(e.cfg.Now().UnixNano()))
	if len(ids) > 0 {
		if e.cfg.Metrics != nil {
			e.cfg.Metrics.LeasesExpired(len(ids))
		}
		e.cfg.Log.Warn("prefill leases expired without notification", "requests", len(ids))
		e.updatePoolMetrics()
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}

// peer is a prefill instance as this decode instance knows it.
type peer struct {
	metas   []statexfer.RankMeta
	planner *plan.Planner
	execs   []*statexfer.Executor // per decode rank
}

// peerFor does (once per prefill instance) the handshake and imports.
func (e *Engine) peerFor(ctx context.Context, kv *KVTransferParams) (*peer, error) {
	key := fmt.Sprintf("%s:%d/%s", kv.RemoteHost, kv.RemotePort, kv.RemoteEngineID)
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	if p := e.peers[key]; p != nil {
		return p, nil
	}
	t0 := time.Now()
	payload, err := e.cfg.Fetch(ctx, kv.RemoteHost, kv.RemotePort, e.compat, e.summary)
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.Handshake(time.Since(t0), err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: handshake with %s: %v", ErrPeer, key, err)
	}
	metas, err := statexfer.DecodeRankMetas(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: handshake with %s: %v", ErrPeer, key, err)
	}
	if len(metas) == 0 || metas[0].TP != len(metas) || (kv.TPSize != 0 && kv.TPSize != len(metas)) {
		return nil, fmt.Errorf("%w: %s published %d ranks, request says tp %d", ErrPeer, key, len(metas), kv.TPSize)
	}
	pside := &plan.Side{}
	for r, m := range metas {
		if m.Rank != r {
			return nil, fmt.Errorf("%w: %s: metadata out of rank order", ErrPeer, key)
		}
		g, err := groups.NewGeometry(e.spec, m.Config, r)
		if err != nil {
			return nil, fmt.Errorf("%w: %s rank %d: %v", ErrPeer, key, r, err)
		}
		nb, err := m.CheckAgainst(g)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrPeer, key, err)
		}
		pside.Ranks = append(pside.Ranks, g)
		pside.NumBlocks = nb
	}
	pl, err := plan.New(pside, e.side)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPeer, key, err)
	}
	p := &peer{metas: metas, planner: pl}
	for _, rk := range e.ranks {
		ex := &statexfer.Executor{DRank: rk.r, Local: rk.local, Remotes: map[int]*statexfer.Remote{}, Address: rk.tr.Address(),
			Consumers: pl.Consumers}
		d := rk.r
		ex.StagingArea = func(pr int) (int64, int64) {
			reg := metas[pr].Region(plan.Staging)
			if reg == nil || pl.Consumers(pr) == 0 {
				return 0, 0
			}
			size := int64(reg.Len) / int64(pl.Consumers(pr))
			idx := 0
			for dd := 0; dd < d; dd++ {
				for _, t := range pl.Targets(dd) {
					if t == pr {
						idx++
					}
				}
			}
			return int64(idx) * size, size
		}
		for _, pr := range pl.Targets(rk.r) {
			rem, err := statexfer.Import(ctx, rk.tr, metas[pr])
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrPeer, key, err)
			}
			ex.Remotes[pr] = rem
		}
		rk.disp.SetExecutor(ex)
		p.execs = append(p.execs, ex)
	}
	e.peers[key] = p
	return p, nil
}

// decodeRemote loads the state P holds for the request and decodes.
func (e *Engine) decodeRemote(ctx context.Context, req GenRequest, tokens []uint32, emit func(string) error) (*GenResult, error) {
	kv := req.KV
	n, h := len(tokens), kv.NumTokens
	switch {
	case kv.Handoff == PrefillSamplesFirst && (h != n || kv.FirstToken == nil):
		return nil, fmt.Errorf("%w: prefill-samples-first needs num_tokens == %d prompt tokens and first_token", ErrBadRequest, n)
	case kv.Handoff != PrefillSamplesFirst && h != n-1:
		return nil, fmt.Errorf("%w: num_tokens %d does not match the prompt's %d tokens (want %d)", ErrBadRequest, h, n, n-1)
	}
	policy := e.cfg.FailurePolicy
	if kv.KVLoadFailurePolicy != "" {
		policy = kv.KVLoadFailurePolicy
	}
	if policy != PolicyFail && policy != PolicyRecompute {
		return nil, fmt.Errorf("%w: kv_load_failure_policy %q", ErrBadRequest, policy)
	}
	var p *peer
	if h > 0 {
		var err error
		if p, err = e.peerFor(ctx, kv); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil, ErrShuttingDown
	}
	id := e.nextID("d", req.ID)
	if err := e.alloc.AddRequest(id, tokens, 0); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	defer func() {
		e.mu.Lock()
		e.finish(id)
		e.mu.Unlock()
	}()
	hit, err := e.alloc.LookupPrefix(id)
	if err != nil {
		e.mu.Unlock()
		return nil, err
	}
	from := min(hit.Tokens, h)
	ext := h - from
	if ext > 0 {
		// D's first allocation: exactly what P sends, no lookahead.
		if err := e.alloc.Allocate(id, hma.AllocSpec{Prefix: from, External: ext}); err != nil {
			e.mu.Unlock()
			if p != nil {
				p.abort(kv.RemoteRequestID)
			}
			return nil, fmt.Errorf("%w: %v", ErrOverloaded, err)
		}
	}
	dblocks := make([][]int, len(e.side.Ranks[0].Groups))
	for g := range dblocks {
		t, err := e.alloc.BlockTable(id, g)
		if err != nil {
			e.mu.Unlock()
			return nil, err
		}
		if e.side.Ranks[0].Groups[g].Kind == groups.Recurrent {
			t = []int{lastNonNull(t)}
		}
		dblocks[g] = t
	}
	e.mu.Unlock()

	if p != nil {
		loadErr := e.load(ctx, p, kv, &plan.Request{Tokens: h, PBlocks: kv.RemoteBlockIDs, DBlocks: dblocks, DHit: from})
		e.mu.Lock()
		if loadErr == nil && ext > 0 {
			loadErr = e.alloc.LoadDone(id)
		}
		if loadErr != nil {
			if e.cfg.Metrics != nil {
				e.cfg.Metrics.TransferFailed(failureReason(loadErr))
			}
			p.abort(kv.RemoteRequestID) // P need not wait for the lease
			if err := e.recover(id, tokens, h, ext, policy, loadErr); err != nil {
				e.mu.Unlock()
				return nil, err
			}
		}
	} else {
		e.mu.Lock()
	}
	defer e.mu.Unlock()
	var first uint32
	if h < n {
		first, err = e.compute(id, tokens, h, n, hma.AllocSpec{Prefix: pendingPrefix(ext, from), New: n - h})
		if err != nil {
			return nil, err
		}
	} else {
		first = *kv.FirstToken
	}
	out, err := e.decode(ctx, id, tokens, first, req.MaxTokens, emit)
	if err != nil {
		return nil, err
	}
	e.finished(id)
	return e.result(tokens, out), nil
}

// pendingPrefix is the prefix hit still to place: when nothing was loaded
// the first allocation is the next compute's.
func pendingPrefix(ext, from int) int {
	if ext > 0 {
		return 0
	}
	return from
}

// recover applies the failure policy after a failed load (e.mu held): the
// blocks that were being loaded (positions [h-ext, h) of per-token groups,
// the state slot of recurrent groups) are reported failed.
func (e *Engine) recover(id hma.ReqID, tokens []uint32, h, ext int, policy string, cause error) error {
	var refs []hma.BlockRef
	from := h - ext
	for g, gg := range e.side.Ranks[0].Groups {
		t, _ := e.alloc.BlockTable(id, g)
		if gg.Kind == groups.Recurrent {
			if b := lastNonNull(t); b != 0 {
				refs = append(refs, hma.BlockRef{Group: g, Block: b})
			}
			continue
		}
		for k := from / gg.BlockSize; k < len(t) && k*gg.BlockSize < h; k++ {
			if t[k] != 0 {
				refs = append(refs, hma.BlockRef{Group: g, Block: t[k]})
			}
		}
	}
	if ext == 0 {
		return fmt.Errorf("%w: %v", ErrKVLoad, cause)
	}
	pol := hma.PolicyFail
	if policy == PolicyRecompute {
		pol = hma.PolicyRecompute
	}
	lf, err := e.alloc.LoadFailed(id, refs, pol)
	if err != nil {
		return fmt.Errorf("%w: %v (and the allocator refused the failure: %v)", ErrKVLoad, cause, err)
	}
	if policy == PolicyFail {
		return fmt.Errorf("%w: %v", ErrKVLoad, cause)
	}
	// Recompute [restart, h) locally from a consistent state: every
	// position once, none twice.
	r := lf.Restart
	e.cfg.Log.Warn("kv load failed; recomputing", "request", id, "from", r, "to", h, "cause", cause)
	if r < h {
		spec := hma.AllocSpec{New: h - r}
		if _, err := e.compute(id, tokens, r, h, spec); err != nil {
			return fmt.Errorf("%w: %v; recompute failed: %v", ErrKVLoad, cause, err)
		}
	}
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.Recomputed(h - r)
	}
	return nil
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, statexfer.ErrBounds):
		return "bounds"
	}
	return "transport"
}

// load plans and runs the reads of every decode rank, bounded by the
// transfer timeout, after extending P's lease.
func (e *Engine) load(ctx context.Context, p *peer, kv *KVTransferParams, req *plan.Request) error {
	// (pool, block) -> kind of the group that owns it, for the metrics.
	kinds := map[[2]int]string{}
	for g, ids := range req.DBlocks {
		gg := e.side.Ranks[0].Groups[g]
		for _, id := range ids {
			if id != 0 {
				kinds[[2]int{gg.Pool, id}] = gg.Kind.String()
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.TransferTimeout)
	defer cancel()
	for _, ex := range p.execs {
		if err := ex.Broadcast(statexfer.MsgHeartbeat, kv.RemoteRequestID); err != nil && e.cfg.Metrics != nil {
			e.cfg.Metrics.NotificationFailed()
		}
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(p.execs))
	stats := make([]statexfer.RunStats, len(p.execs))
	plans := make([]*plan.Plan, len(p.execs))
	for d, ex := range p.execs {
		pl, err := p.planner.Plan(d, req, e.cfg.Mode)
		if err != nil {
			return fmt.Errorf("%w: plan for decode rank %d: %v", ErrKVLoad, d, err)
		}
		plans[d] = pl
		wg.Add(1)
		go func() {
			defer wg.Done()
			stats[d], errs[d] = ex.Run(ctx, kv.RemoteRequestID, pl)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if m := e.cfg.Metrics; m != nil {
		var bytes int64
		var reads int
		var post time.Duration
		for d, pl := range plans {
			bytes += pl.Bytes()
			reads += pl.NumReads()
			post = max(post, stats[d].Post)
			// Bytes by the kind of the group owning the block they land in.
			landed := func(reg plan.Region, off, n int64) {
				if reg.Pool < 0 {
					return
				}
				stride := int64(e.side.Ranks[0].Pools[reg.Pool].PageStride)
				if k, ok := kinds[[2]int{reg.Pool, int(off / stride)}]; ok {
					m.BytesByKind(k, n)
				}
			}
			for _, rp := range pl.Remotes {
				for _, r := range rp.Reads {
					landed(r.Local, r.LocalOff, r.Len)
				}
			}
			for _, st := range pl.Post {
				landed(st.Dst, st.DstOff, st.Bytes())
			}
		}
		m.Transfer(time.Since(t0), post, bytes, reads)
	}
	return nil
}

func (p *peer) abort(reqID string) {
	for _, ex := range p.execs {
		_ = ex.Broadcast(statexfer.MsgAbort, reqID)
	}
}
