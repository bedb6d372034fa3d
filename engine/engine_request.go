package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// Generate implements Backend.
func (e *Engine) Generate(ctx context.Context, req backend.GenRequest, emit func(string) error) (*backend.GenResult, error) {
	start := e.cfg.Now()
	log := session.RequestLog(e.cfg.Log, req.ID, "")
	session.LogEvent(log, session.EventReceived, "role", string(e.cfg.Role), "as", requestKind(req), "max_tokens", req.MaxTokens)
	done, err := e.admit()
	var res *backend.GenResult
	if err == nil {
		res, err = e.generate(ctx, req, emit)
		done()
	}
	if err != nil {
		session.LogEvent(log, session.EventFailed, "phase", "serve", "cause", err)
	} else {
		session.LogEvent(log, session.EventFinished, "prompt_tokens", res.PromptTokens, "completion_tokens", res.CompletionTokens,
			"duration", e.cfg.Now().Sub(start))
	}
	if e.cfg.Metrics != nil {
		p, c := 0, 0
		if res != nil {
			p, c = res.PromptTokens, res.CompletionTokens
		}
		e.cfg.Metrics.Request(p, c, e.cfg.Now().Sub(start), err)
	}
	return res, err
}

// requestKind names what an instance does with req: prefill (for a remote
// decode), decode (of a remote prefill) or monolithic.
func requestKind(req backend.GenRequest) string {
	switch {
	case req.KV != nil && req.KV.DoRemoteDecode:
		return "prefill"
	case req.KV != nil && req.KV.RemoteRequestID != "":
		return "decode"
	}
	return "monolithic"
}

// requestLog is the lifecycle logger of the request this instance calls
// id (nextID: the client's id is its third part).
func (e *Engine) requestLog(id string) *slog.Logger {
	client := id
	if parts := strings.SplitN(id, "-", 3); len(parts) == 3 {
		client = parts[2]
	}
	return session.RequestLog(e.cfg.Log, client, id)
}

func (e *Engine) generate(ctx context.Context, req backend.GenRequest, emit func(string) error) (*backend.GenResult, error) {
	if req.MaxTokens <= 0 {
		return nil, fmt.Errorf("%w: max_tokens must be >= 1", backend.ErrBadRequest)
	}
	tokens := tokenizer.Tokenize(req.Prompt)
	if n := len(tokens) + req.MaxTokens; n > e.cfg.MaxModelLen {
		return nil, &backend.ParamError{Param: "max_tokens", Err: fmt.Errorf("%w: %d prompt tokens + max_tokens %d = %d exceeds max_model_len %d", backend.ErrBadRequest, len(tokens), req.MaxTokens, n, e.cfg.MaxModelLen)}
	}
	switch {
	case req.KV != nil && req.KV.DoRemoteDecode:
		if e.cfg.Role != backend.RolePrefill {
			return nil, fmt.Errorf("%w: do_remote_decode sent to a %s instance", backend.ErrWrongRole, e.cfg.Role)
		}
		return e.prefill(ctx, req, tokens)
	case req.KV != nil && req.KV.RemoteRequestID != "":
		if e.cfg.Role != backend.RoleDecode {
			return nil, fmt.Errorf("%w: remote prefill parameters sent to a %s instance", backend.ErrWrongRole, e.cfg.Role)
		}
		return e.decodeRemote(ctx, req, tokens, emit)
	case e.cfg.Role == backend.RoleBoth:
		return e.monolithic(ctx, req, tokens, emit)
	}
	return nil, fmt.Errorf("%w: a %s instance needs kv_transfer_params (send requests through the proxy)", backend.ErrWrongRole, e.cfg.Role)
}

func (e *Engine) result(tokens, out []uint32) *backend.GenResult {
	var b strings.Builder
	for _, t := range out {
		b.WriteString(tokenizer.Detokenize(t))
	}
	return &backend.GenResult{Text: b.String(), Tokens: out, PromptTokens: len(tokens), CompletionTokens: len(out), FinishReason: "length"}
}

// monolithic serves a request entirely on this instance.
func (e *Engine) monolithic(ctx context.Context, req backend.GenRequest, tokens []uint32, emit func(string) error) (*backend.GenResult, error) {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil, backend.ErrShuttingDown
	}
	id := e.nextID("m", req.ID)
	if err := e.alloc.AddRequest(id, tokens, 0); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	hit, err := e.alloc.LookupPrefix(id)
	if err == nil {
		e.prefixLookup(len(tokens), hit.Tokens)
	}
	e.mu.Unlock()
	defer e.finish(id)
	if err != nil {
		return nil, err
	}
	first, err := e.compute(ctx, id, tokens, hit.Tokens, len(tokens), hit.Tokens)
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
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, held := e.alloc.Holding(id); !held {
		e.alloc.Abort(id) // frees a running request; no-op when already gone
	}
}

// prefill computes the prompt's handoff positions, holds the state under a
// lease, grants it to D and answers with the kv_transfer_params D needs.
// The compute stops when ctx ends (the client gave up): nothing is held.
func (e *Engine) prefill(ctx context.Context, req backend.GenRequest, tokens []uint32) (*backend.GenResult, error) {
	n := len(tokens)
	h := n - 1
	if e.cfg.Handoff == backend.PrefillSamplesFirst {
		h = n
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil, backend.ErrShuttingDown
	}
	id := e.nextID("p", req.ID)
	kv := &backend.KVTransferParams{RemoteEngineID: e.cfg.EngineID, RemoteRequestID: string(id), RemoteHost: e.cfg.Host,
		RemotePort: e.port, TPSize: len(e.mems), RemoteDPRank: e.cfg.DPRank, NumTokens: h, Handoff: e.cfg.Handoff, RemoteBootID: e.pre.BootID()}
	res := &backend.GenResult{PromptTokens: n, KV: kv, FinishReason: "length"}
	if h == 0 {
		e.mu.Unlock()
		return res, nil // nothing computed, nothing to hold: D computes everything
	}
	if err := e.alloc.AddRequest(id, tokens, 0); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	hit, err := e.alloc.LookupPrefix(id)
	hc := e.alloc.Config()
	e.mu.Unlock()
	fail := func(err error) (*backend.GenResult, error) {
		e.mu.Lock()
		e.alloc.Abort(id)
		e.mu.Unlock()
		return nil, err
	}
	if err != nil {
		return fail(err)
	}
	from := min(hit.Tokens, h)
	log := e.requestLog(string(id))
	// prefix: the first allocation's prefix hit, until it is made.
	prefix, fromDecode := from, 0
	if x := req.KV.RemotePrefix; x != nil {
		pr, err := e.readPrefix(ctx, id, tokens, h, from, x, log)
		if err != nil {
			return fail(err)
		}
		if pr.tokens > 0 {
			if pr.reason == "" {
				fromDecode = pr.tokens - from // else recomputed after a failed read
			}
			from, prefix = pr.tokens, 0
		}
	}
	var next uint32
	for {
		// Everything P would compute may be cached: then use a shorter hit
		// (all or nothing, so a refused allocation changed nothing) so there
		// is a step to compute and logits to sample.
		if from == h {
			from = (h - 1) / hc.Alignment() * hc.Alignment()
			prefix = from
		}
		next, err = e.compute(ctx, id, tokens, from, h, prefix)
		if errors.Is(err, hma.ErrStalePrefix) && prefix > 0 {
			from = (min(from, h) - 1) / hc.Alignment() * hc.Alignment() // the next aligned candidate below
			prefix = from
			continue
		}
		break
	}
	if err != nil {
		return fail(err)
	}
	session.LogEvent(log, session.EventPrefilled, "tokens", h, "prefix_hit", min(from, hit.Tokens), "from_decode", fromDecode)
	token := session.NewGrant()
	e.mu.Lock()
	e.prefixLookup(h, min(from, hit.Tokens))
	blocks, err := e.alloc.TransferBlocks(id)
	expiry := e.cfg.Now().Add(e.cfg.LeaseTTL)
	if err == nil {
		err = e.checkNoScratch(id, blocks)
	}
	if err == nil {
		err = e.alloc.Hold(id, hma.Time(expiry.UnixNano()), len(e.mems))
	}
	if err == nil {
		err = e.pre.Register(string(id), token, blocks)
	}
	e.mu.Unlock()
	if err != nil {
		e.pre.Forget(string(id))
		return fail(err)
	}
	kv.RemoteBlockIDs = blocks
	kv.LeaseExpiryUnix = float64(expiry.UnixNano()) / 1e9
	session.LogEvent(log, session.EventHeld, "blocks", countBlocks(blocks), "lease_expiry", expiry, "consumers", len(e.mems))
	if e.cfg.Handoff == backend.PrefillSamplesFirst {
		kv.FirstToken = &next
		res.Tokens = []uint32{next}
		res.Text = tokenizer.Detokenize(next)
		res.CompletionTokens = 1
	}
	g := &grant.Grant{Params: grantParams(kv), Token: token, Prompt: grant.PromptHash(tokens)}
	g.Expiry = expiry.UnixNano() // exact: lease_expiry's float seconds lose nanoseconds
	kv.RemoteGrant = grant.Seal(g, e.cfg.ClusterKey)
	return res, nil
}

// grantParams are the kv_transfer_params fields a grant binds.
func grantParams(kv *backend.KVTransferParams) grant.Params {
	return grant.Params{EngineID: kv.RemoteEngineID, BootID: kv.RemoteBootID, Host: kv.RemoteHost, Port: kv.RemotePort, TP: kv.TPSize, DP: kv.RemoteDPRank,
		ReqID: kv.RemoteRequestID, NumTokens: kv.NumTokens, Handoff: string(kv.Handoff), FirstToken: kv.FirstToken,
		BlockIDs: kv.RemoteBlockIDs, Expiry: int64(kv.LeaseExpiryUnix * 1e9)}
}

// checkGrant opens and checks the grant of D's kv_transfer_params against
// the params themselves and the prompt D was asked to decode: the first
// difference is an ErrGrant naming the field; nothing was touched yet.
func (e *Engine) checkGrant(kv *backend.KVTransferParams, tokens []uint32) (*grant.Grant, error) {
	if kv.RemoteGrant == "" {
		return nil, &backend.ParamError{Param: "kv_transfer_params.remote_grant", Err: fmt.Errorf("%w: no remote_grant", backend.ErrGrant)}
	}
	g, err := grant.Open(kv.RemoteGrant, e.cfg.ClusterKey)
	if err != nil {
		return nil, &backend.ParamError{Param: "kv_transfer_params.remote_grant", Err: fmt.Errorf("%w: %w", backend.ErrGrant, err)}
	}
	if err := g.Check(grantParams(kv), tokens); err != nil {
		param := "kv_transfer_params"
		var fe *grant.FieldError
		if errors.As(err, &fe) {
			if fe.Field == "prompt" {
				param = "prompt"
			} else {
				param += "." + fe.Field
			}
		}
		return nil, &backend.ParamError{Param: param, Err: fmt.Errorf("%w: %w", backend.ErrGrant, err)}
	}
	return g, nil
}

// engineHolds bridges the prefill session to the allocator's leases.
type engineHolds struct{ e *Engine }

// Released: one P rank saw every consumer's notification; the last rank
// releases the hold.
func (h engineHolds) Released(id string, _ int) {
	e := h.e
	e.mu.Lock()
	released := e.alloc.Notify(hma.ReqID(id))
	e.mu.Unlock()
	if released {
		e.pre.Forget(id)
		session.LogEvent(e.requestLog(id), session.EventReleased)
	}
}

// Extend: a heartbeat; the lease moves forward (never back).
func (h engineHolds) Extend(id string) (time.Time, bool) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.alloc.Extend(hma.ReqID(id), hma.Time(e.cfg.Now().Add(e.holdTTL()).UnixNano())) {
		return time.Time{}, false
	}
	info, _ := e.alloc.Holding(hma.ReqID(id))
	return time.Unix(0, int64(info.Expiry)), true
}

// Abort: D (or the proxy) gave up on the request; P frees it now.
func (h engineHolds) Abort(id string) {
	e := h.e
	e.mu.Lock()
	_, held := e.alloc.Holding(hma.ReqID(id))
	if held {
		e.alloc.Abort(hma.ReqID(id)) // counted by the allocator (leases released, aborted)
	}
	e.mu.Unlock()
	e.pre.Forget(id)
	if held {
		session.LogEvent(e.requestLog(id), session.EventAborted)
	}
}

// AbortHold implements HoldAborter: the proxy releases a held request
// whose decode leg failed. The grant must open (and verify, with a
// cluster key) and name the request.
func (e *Engine) AbortHold(id, remoteGrant string) error {
	if e.pre == nil {
		return fmt.Errorf("%w: abort sent to a %s instance", backend.ErrWrongRole, e.cfg.Role)
	}
	if remoteGrant == "" {
		return &backend.ParamError{Param: "remote_grant", Err: fmt.Errorf("%w: no remote_grant", backend.ErrGrant)}
	}
	g, err := grant.Open(remoteGrant, e.cfg.ClusterKey)
	if err != nil {
		return &backend.ParamError{Param: "remote_grant", Err: fmt.Errorf("%w: %w", backend.ErrGrant, err)}
	}
	if g.ReqID != id || g.EngineID != e.cfg.EngineID {
		return &backend.ParamError{Param: "remote_request_id", Err: fmt.Errorf("%w: the grant is for request %s of %s", backend.ErrGrant, g.ReqID, g.EngineID)}
	}
	e.pre.Abort(id, g.Token)
	return nil
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
func (e *Engine) Sweep() []string { return e.SweepAt(e.cfg.Now()) }

// SweepAt releases every lease that expires by t (t in the future:
// leases are cut short, as when the instance's clock jumps; verify uses it
// to let holds expire) and returns their ids.
func (e *Engine) SweepAt(t time.Time) []string {
	e.mu.Lock()
	ids := e.alloc.Sweep(hma.Time(t.UnixNano()))
	if len(ids) > 0 {
		e.cfg.Log.Warn("leases expired without read completions", "requests", len(ids))
	}
	e.mu.Unlock()
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
		e.pre.Forget(out[i])
		session.LogEvent(e.requestLog(out[i]), session.EventExpired)
	}
	return out
}

// decodeRemote loads the state P holds for the request and decodes.
func (e *Engine) decodeRemote(ctx context.Context, req backend.GenRequest, tokens []uint32, emit func(string) error) (*backend.GenResult, error) {
	kv := req.KV
	n, h := len(tokens), kv.NumTokens
	// The grant first: params P did not issue for this prompt are refused
	// before anything else is looked at.
	var lr *session.LoadRequest
	if h > 0 {
		if kv.RemoteBootID == "" {
			// Without it a restarted P at the same address could be read
			// as if it were the one that computed the state.
			return nil, &backend.ParamError{Param: "kv_transfer_params.remote_boot_id", Err: fmt.Errorf("%w: kv_transfer_params has no remote_boot_id", backend.ErrBadRequest)}
		}
		g, err := e.checkGrant(kv, tokens)
		if err != nil {
			return nil, err
		}
		// From here on the grant's own copy is used.
		lr = &session.LoadRequest{Peer: session.PeerRef{EngineID: g.EngineID, BootID: g.BootID, Host: g.Host, Port: g.Port, TP: g.TP},
			ReqID: g.ReqID, Grant: g.Token, Mode: e.cfg.Mode, LeaseExpiry: time.Unix(0, g.Expiry)}
		kv.RemoteBlockIDs = g.BlockIDs
	}
	switch {
	case kv.Handoff == backend.PrefillSamplesFirst && (h != n || kv.FirstToken == nil):
		return nil, fmt.Errorf("%w: prefill-samples-first needs num_tokens == %d prompt tokens and first_token", backend.ErrBadRequest, n)
	case kv.Handoff != backend.PrefillSamplesFirst && h != n-1:
		return nil, fmt.Errorf("%w: num_tokens %d does not match the prompt's %d tokens (want %d)", backend.ErrBadRequest, h, n, n-1)
	}
	policy := e.cfg.FailurePolicy
	if kv.KVLoadFailurePolicy != "" {
		policy = kv.KVLoadFailurePolicy
	}
	if policy != backend.PolicyFail && policy != backend.PolicyRecompute {
		return nil, fmt.Errorf("%w: kv_load_failure_policy %q", backend.ErrBadRequest, policy)
	}
	abortP := func() {
		if lr != nil {
			if err := e.dec.Abort(lr.Peer, lr.ReqID, lr.Grant); err != nil && e.cfg.Metrics != nil {
				e.cfg.Metrics.NotificationFailed()
			}
		}
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		abortP()
		return nil, backend.ErrShuttingDown
	}
	id := e.nextID("d", req.ID)
	if err := e.alloc.AddRequest(id, tokens, 0); err != nil {
		e.mu.Unlock()
		abortP()
		return nil, err
	}
	defer e.finish(id)
	hit, err := e.alloc.LookupPrefix(id)
	if err != nil {
		e.mu.Unlock()
		abortP()
		return nil, err
	}
	from := min(hit.Tokens, h)
	ext := h - from
	e.prefixLookup(h, from)
	if ext > 0 {
		// D's first allocation: exactly what P sends, no lookahead.
		if err := e.alloc.Allocate(id, hma.AllocSpec{Prefix: from, External: ext}); err != nil {
			e.mu.Unlock()
			abortP()
			return nil, fmt.Errorf("%w: %v", backend.ErrOverloaded, err)
		}
	}
	dblocks, err := e.receiveTables(id, h) // recurrent: the blocks that receive P's running state
	if err != nil {
		e.mu.Unlock()
		abortP()
		return nil, err
	}
	e.mu.Unlock()

	if lr != nil {
		lr.Req = &plan.Request{Tokens: h, PBlocks: kv.RemoteBlockIDs, DBlocks: dblocks, DHit: from}
		lr.Log = session.RequestLog(e.cfg.Log, req.ID, string(id))
		stats, loadErr := e.dec.Load(ctx, *lr)
		if loadErr == nil {
			e.loadMetrics(stats, dblocks)
			if ext > 0 {
				e.mu.Lock()
				loadErr = e.alloc.LoadDone(id)
				e.mu.Unlock()
			}
		}
		if loadErr != nil {
			if e.cfg.Metrics != nil {
				e.cfg.Metrics.TransferFailed(failureReason(loadErr))
			}
			abortP() // P need not wait for the lease
			if ext == 0 {
				// Nothing was to be loaded: only P's release notification
				// was lost, and the abort (or the lease) covers it.
				e.cfg.Log.Warn("release notification to prefill failed", "request", id, "err", loadErr)
			} else if err := e.recover(ctx, id, tokens, h, ext, policy, loadErr); err != nil {
				return nil, err
			}
		}
	}
	var first uint32
	if h < n {
		first, err = e.compute(ctx, id, tokens, h, n, pendingPrefix(ext, from))
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
	res := e.result(tokens, out)
	if e.cfg.Bidirectional {
		res.KV = e.export(id, tokens, out, e.requestLog(string(id)))
	}
	return res, nil
}

// pendingPrefix is the prefix hit still to place: when nothing was loaded
// the first allocation is the next compute's.
func pendingPrefix(ext, from int) int {
	if ext > 0 {
		return 0
	}
	return from
}

// recover applies the failure policy after a failed load of ext > 0
// positions: the blocks the session reports failed (every block that was
// being loaded when it cannot say) are reported to the allocator, which
// says where a consistent state restarts; under recompute D computes from
// there, every position once.
func (e *Engine) recover(ctx context.Context, id hma.ReqID, tokens []uint32, h, ext int, policy string, cause error) error {
	var refs []hma.BlockRef
	var le *session.LoadError
	if errors.As(cause, &le) && le.Failed != nil {
		for _, b := range le.Failed {
			refs = append(refs, hma.BlockRef{Group: b.Group, Block: b.Block})
		}
	}
	e.mu.Lock()
	if refs == nil {
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
	}
	pol := hma.PolicyFail
	if policy == backend.PolicyRecompute {
		pol = hma.PolicyRecompute
	}
	lf, err := e.alloc.LoadFailed(id, refs, pol)
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w (and the allocator refused the failure: %v)", backend.ErrKVLoad, cause, err)
	}
	if policy == backend.PolicyFail {
		if le != nil && (le.Phase == "claim" && (errors.Is(cause, session.ErrClaimed) || errors.Is(cause, session.ErrNoHold)) ||
			le.Phase == "expired" && errors.Is(cause, session.ErrLeaseExpired)) {
			return &backend.ParamError{Param: "kv_transfer_params", Err: fmt.Errorf("%w: %w", backend.ErrConsumed, cause)}
		}
		if le != nil && le.Phase == "plan" && (errors.Is(cause, session.ErrBadRequest) || errors.Is(cause, statexfer.ErrBounds) || errors.Is(cause, plan.ErrBadRequest)) {
			return &backend.ParamError{Param: "kv_transfer_params.remote_block_ids", Err: fmt.Errorf("%w: %w", backend.ErrBadRequest, cause)}
		}
		if errors.Is(cause, session.ErrPeer) || errors.Is(cause, session.ErrStaleIncarnation) {
			return fmt.Errorf("%w (%w): %w", backend.ErrKVLoad, backend.ErrPeer, cause)
		}
		return fmt.Errorf("%w: %w", backend.ErrKVLoad, cause)
	}
	// Recompute [restart, h) locally from a consistent state: every
	// position once, none twice.
	r := lf.Restart
	e.cfg.Log.Warn("kv load failed; recomputing", "request", id, "from", r, "to", h, "failed_blocks", len(refs), "cause", cause)
	if r < h {
		if _, err := e.compute(ctx, id, tokens, r, h, 0); err != nil {
			return fmt.Errorf("%w: %w; recompute failed: %v", backend.ErrKVLoad, cause, err)
		}
	}
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.Recomputed(h - r)
	}
	return nil
}

// FailureReasons are the values failureReason returns: the reason label
// of hybridxfer_transfer_failures_total.
var FailureReasons = []string{"timeout", "canceled", "bounds", "lease", "claim", "peer", "transport"}

// failureReason is a failed load's reason label, one of FailureReasons.
func failureReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, statexfer.ErrBounds):
		return "bounds"
	case errors.Is(err, session.ErrLeaseExpired):
		return "lease"
	case errors.Is(err, session.ErrClaimed), errors.Is(err, session.ErrNoHold):
		return "claim"
	case errors.Is(err, session.ErrStaleIncarnation), errors.Is(err, session.ErrPeer):
		return "peer"
	}
	return "transport"
}

// loadMetrics records a successful load: bytes by the kind of the group
// owning the block they land in, reads, timings.
func (e *Engine) loadMetrics(st *session.LoadStats, dblocks [][]int) {
	m := e.cfg.Metrics
	if m == nil {
		return
	}
	if st.Handshake > 0 {
		m.Handshake(st.Handshake, nil)
	}
	kinds := map[[2]int]string{} // (pool, block) -> kind
	for g, ids := range dblocks {
		gg := e.side.Ranks[0].Groups[g]
		for _, id := range ids {
			if id != 0 {
				kinds[[2]int{gg.Pool, id}] = gg.Kind.String()
			}
		}
	}
	landed := func(reg plan.Region, off, n int64) {
		if reg.Pool < 0 {
			return
		}
		stride := int64(e.side.Ranks[0].Pools[reg.Pool].BlockStride())
		if k, ok := kinds[[2]int{reg.Pool, int(off / stride)}]; ok {
			m.BytesByKind(k, n)
		}
	}
	var post, total time.Duration
	for _, rs := range st.Ranks {
		post = max(post, rs.Post)
		total = max(total, rs.Stage+rs.Post+rs.Wait+rs.Steps)
		for _, rp := range rs.Plan.Remotes {
			for _, r := range rp.Reads {
				landed(r.Local, r.LocalOff, r.Len)
			}
		}
		for _, s := range rs.Plan.Post {
			landed(s.Dst, s.DstOff, s.Bytes())
		}
	}
	m.Transfer(total, post, st.Bytes(), st.Reads())
}
