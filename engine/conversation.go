package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
)

// Multi-turn conversations, D -> P (Config.Bidirectional).
//
// A decode instance does not free a finished request: it holds the
// blocks of every computed position (prompt and answer, all but the last
// token) under a lease of ConversationTTL, registers them with its
// prefill-side session like a prefill instance registers a prompt, and
// answers with their export: kv_transfer_params with handoff
// decode-export, its address and incarnation, the block ids, num_tokens,
// the lease expiry, the hash chain of the tokens (grant.TokenChain) and a
// grant that binds them all. The hold ends exactly once: when the reader's
// read-completion notifications arrive (every rank), when it aborts, or
// when the sweeper finds the lease expired.
//
// The client sends the export back with the next turn (the proxy carries
// it to P as kv_transfer_params.remote_prefix; it keeps nothing itself).
// The prefill instance opens the grant, compares the chain with its own
// prompt and reads the longest prefix it may (readable): models with
// sliding-window or chunked groups only the whole exported sequence (the
// window's older blocks are gone), models with recurrent groups the whole
// sequence or, when the decode instance keeps a state per block (mamba
// cache mode all: the export names them, exportBlocks), a block boundary
// where it computed the state, attention-only models any chain-block
// multiple. It
// reads with its decode-side session (the lease is checked against the
// handshake's clock offset before and after the reads, and the claim
// protocol refuses a hold that is gone), then computes the rest. Whatever
// goes wrong before the reads, it declines: computes the whole prompt,
// counts the reason (DeclineReasons) and, when the export was genuine,
// tells D to drop it. A read that fails part way is recovered by
// recomputing from the first position without valid state (policy
// recompute), so every position is computed at most once more than a
// plain run would, and only those after a decline.

// DefaultConversationTTL is Config.ConversationTTL's default.
const DefaultConversationTTL = 60 * time.Second

// DeclineReasons are the reason labels of hybridxfer_conversation_declines_total.
var DeclineReasons = []string{"disabled", "grant", "mismatch", "cached", "expired", "unreachable", "failed"}

// ConversationStats is what multi-turn reads did on this engine so far:
// a prefill instance's positions read from decode exports (Reused), the
// bytes of those reads, the exports it did not read by reason; a decode
// instance's exports.
type ConversationStats struct {
	Reused   int
	Bytes    int64
	Declines map[string]int
	Exports  int
}

// ConversationStats returns a copy of the engine's conversation counts.
func (e *Engine) ConversationStats() ConversationStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.conv
	st.Declines = map[string]int{}
	for k, v := range e.conv.Declines {
		st.Declines[k] = v
	}
	return st
}

func (e *Engine) convDeclined(reason string) {
	e.mu.Lock()
	if e.conv.Declines == nil {
		e.conv.Declines = map[string]int{}
	}
	e.conv.Declines[reason]++
	e.mu.Unlock()
	e.cfg.Metrics.ConversationDeclined(reason)
}

func (e *Engine) convRead(tokens int, bytes int64) {
	e.mu.Lock()
	e.conv.Reused += tokens
	e.conv.Bytes += bytes
	e.mu.Unlock()
	e.cfg.Metrics.ConversationRead(tokens, bytes)
}

// holdTTL is how long this instance holds state for a reader: a prefill
// instance's lease, or a decode instance's conversation TTL. Heartbeats
// extend a hold by as much.
func (e *Engine) holdTTL() time.Duration {
	if e.cfg.Role == backend.RoleDecode {
		return e.cfg.ConversationTTL
	}
	return e.cfg.LeaseTTL
}

// export holds finished request id (prompt tokens, then out) for the next
// turn and returns its export, or nil when it cannot (the request is then
// freed as usual; the answer stands).
func (e *Engine) export(id hma.ReqID, prompt, out []uint32, log *slog.Logger) *backend.KVTransferParams {
	token := session.NewGrant()
	e.mu.Lock()
	n, err := e.alloc.NumComputedTokens(id)
	var blocks [][]int
	if err == nil {
		blocks, err = e.exportBlocks(id, n)
	}
	if err == nil {
		err = e.checkNoScratch(id, blocks)
	}
	expiry := e.cfg.Now().Add(e.cfg.ConversationTTL)
	if err == nil {
		err = e.alloc.Hold(id, hma.Time(expiry.UnixNano()), len(e.mems))
	}
	if err == nil {
		if err = e.pre.Register(string(id), token, blocks); err != nil {
			e.alloc.Abort(id)
		}
	}
	e.mu.Unlock()
	if err != nil {
		e.pre.Forget(string(id))
		e.cfg.Log.Warn("conversation not exported; its state is freed", "request", id, "err", err)
		return nil
	}
	seq := append(append(make([]uint32, 0, len(prompt)+len(out)), prompt...), out...)
	chain := grant.TokenChain(seq[:n])
	kv := &backend.KVTransferParams{RemoteEngineID: e.cfg.EngineID, RemoteRequestID: string(id), RemoteHost: e.cfg.Host,
		RemotePort: e.port, TPSize: len(e.mems), RemoteDPRank: e.cfg.DPRank, NumTokens: n, Handoff: backend.DecodeExport,
		RemoteBootID: e.pre.BootID(), RemoteBlockIDs: blocks, LeaseExpiryUnix: float64(expiry.UnixNano()) / 1e9, TokenChain: chain}
	g := &grant.Grant{Params: grantParams(kv), Token: token, Prompt: grant.ChainDigest(chain)}
	g.Expiry = expiry.UnixNano()
	kv.RemoteGrant = grant.Seal(g, e.cfg.ClusterKey)
	e.mu.Lock()
	e.conv.Exports++
	e.mu.Unlock()
	e.cfg.Metrics.ConversationExported()
	session.LogEvent(log, session.EventHeld, "blocks", countBlocks(blocks), "lease_expiry", expiry, "consumers", len(e.mems), "tokens", n, "for", "next turn")
	return kv
}

// exportBlocks are the blocks an export of request id's n computed
// tokens names (under mu): TransferBlocks, except that with mamba cache
// mode all a recurrent group names its state blocks in order, entry k the
// state after min((k+1)·block size, n) tokens, so that a reader whose
// prompt leaves the exported tokens after a block boundary can still read
// the state at that boundary. The entries the allocator left null are
// the boundaries this instance holds no state for (those before the
// handoff it loaded: a decode instance receives only P's running state,
// and hma places null placeholders below it).
func (e *Engine) exportBlocks(id hma.ReqID, n int) ([][]int, error) {
	blocks, err := e.alloc.TransferBlocks(id)
	if err != nil || e.cfg.MambaCacheMode != hma.RecurrentAll || n == 0 {
		return blocks, err
	}
	for g, gg := range e.side.Ranks[0].Groups {
		if gg.Kind != groups.Recurrent {
			continue
		}
		t, err := e.alloc.BlockTable(id, g)
		if err != nil {
			return nil, err
		}
		k := (n-1)/gg.BlockSize + 1
		if len(t) < k || t[k-1] != blocks[g][0] {
			continue // not a state per block: the running state only
		}
		blocks[g] = slices.Clone(t[:k])
	}
	return blocks, nil
}

func countBlocks(blocks [][]int) int {
	n := 0
	for _, ids := range blocks {
		n += len(ids)
	}
	return n
}

// prefixRead is the outcome of readPrefix.
type prefixRead struct {
	// tokens: positions [0, tokens) hold valid state (read or recomputed)
	// and the request's first allocation is made; 0 when declined.
	tokens int
	reason string // decline reason, "" when read
}

// readPrefix reads the longest prefix of tokens that export x holds into
// request id, at most h-1 positions (P computes at least one), above
// P's own prefix hit of from tokens. A decline leaves the request as it
// was (nothing allocated); a read that failed part way has been recovered
// by recomputing. An error is one the request cannot go on from.
func (e *Engine) readPrefix(ctx context.Context, id hma.ReqID, tokens []uint32, h, from int, x *backend.KVTransferParams, log *slog.Logger) (prefixRead, error) {
	decline := func(reason string, err error) (prefixRead, error) {
		e.convDeclined(reason)
		log.Info("conversation prefix not read; computing it", "reason", reason, "err", err)
		return prefixRead{reason: reason}, nil
	}
	if !e.cfg.Bidirectional {
		return decline("disabled", errors.New("this instance runs without --bidirectional"))
	}
	g, err := grant.Open(x.RemoteGrant, e.cfg.ClusterKey)
	if err == nil {
		err = g.CheckExport(grantParams(x), x.TokenChain)
	}
	if err != nil {
		return decline("grant", err)
	}
	ref := session.PeerRef{EngineID: g.EngineID, BootID: g.BootID, Host: g.Host, Port: g.Port, TP: g.TP}
	drop := func(reason string, err error) (prefixRead, error) {
		// A genuine export P will not read: D need not keep it (best
		// effort: when D cannot be reached its lease reclaims it).
		_, aerr := e.dec.Connect(ctx, ref)
		if aerr == nil {
			aerr = e.dec.Abort(ref, g.ReqID, g.Token)
		}
		if aerr != nil {
			log.Debug("dropping the export failed; its lease reclaims it", "err", aerr)
		}
		return decline(reason, err)
	}
	n := g.NumTokens
	m, err := grant.ChainMatch(x.TokenChain, n, tokens)
	if err != nil {
		return decline("grant", err)
	}
	pl, err := e.dec.Connect(ctx, ref)
	if err != nil {
		return decline("unreachable", err)
	}
	L, why := readable(pl.P.Ranks[0], g.BlockIDs, m, n, h)
	if L == 0 {
		return drop("mismatch", fmt.Errorf("the prompt's first %d tokens match the export's %d: %s", m, n, why))
	}
	if L <= from {
		return drop("cached", fmt.Errorf("the prefix cache already holds %d of the %d readable tokens", from, L))
	}
	pblocks := exportedFor(pl.P.Ranks[0], g.BlockIDs, L, n)
	ext := L - from
	e.mu.Lock()
	if err = e.alloc.Allocate(id, hma.AllocSpec{Prefix: from, External: ext}); err != nil {
		e.mu.Unlock()
		return decline("failed", err) // nothing allocated
	}
	dblocks, err := e.receiveTables(id, L)
	e.mu.Unlock()
	if err != nil {
		return prefixRead{}, err
	}
	stats, err := e.dec.Load(ctx, session.LoadRequest{Peer: ref, ReqID: g.ReqID, Grant: g.Token, Mode: e.cfg.Mode,
		LeaseExpiry: time.Unix(0, g.Expiry), Log: log,
		Req: &plan.Request{Tokens: L, PBlocks: pblocks, DBlocks: dblocks, DHit: from}})
	if err == nil {
		e.mu.Lock()
		err = e.alloc.LoadDone(id)
		e.mu.Unlock()
	}
	if err != nil {
		reason := "failed"
		switch failureReason(err) {
		case "lease", "claim":
			reason = "expired"
		case "peer", "timeout":
			reason = "unreachable"
		}
		e.convDeclined(reason)
		log.Warn("reading the conversation prefix failed; recomputing it", "reason", reason, "err", err)
		if rerr := e.recover(ctx, id, tokens, L, ext, backend.PolicyRecompute, err); rerr != nil {
			return prefixRead{}, rerr
		}
		return prefixRead{tokens: L, reason: reason}, nil
	}
	e.convRead(ext, stats.Bytes())
	log.Info("conversation prefix read from decode", "tokens", ext, "bytes", stats.Bytes(), "from", g.EngineID)
	return prefixRead{tokens: L}, nil
}

// receiveTables are request id's block tables for a load of the first n
// positions: per-token groups their tables, recurrent groups the block
// that receives the state after n tokens (under mu).
func (e *Engine) receiveTables(id hma.ReqID, n int) ([][]int, error) {
	out := make([][]int, len(e.side.Ranks[0].Groups))
	for g, gg := range e.side.Ranks[0].Groups {
		if gg.Kind == groups.Recurrent {
			b, err := e.alloc.StateBlock(id, g, n)
			if err != nil {
				return nil, err
			}
			out[g] = []int{b}
			continue
		}
		t, err := e.alloc.BlockTable(id, g)
		if err != nil {
			return nil, err
		}
		out[g] = t
	}
	return out, e.checkNoScratch(id, out)
}

// readable is how many leading positions a prefill instance reads from an
// export of n tokens, given by its block ids per group on D's geometry
// geo, when its prompt shares m of them (a chain-block multiple, or n)
// and it must compute at least the last of its h positions: the most,
// at most m and below h, at which every group of D can give the state:
// per-token groups at any length (sliding-window and chunked groups only
// at n, their older blocks are gone), recurrent groups at n or, when the
// export names a state per block (D's mamba cache mode all), at one of
// their block boundaries. 0 (with the reason) when there is none.
func readable(geo *groups.Geometry, ids [][]int, m, n, h int) (int, string) {
	if m == n && n < h {
		return n, ""
	}
	// The largest chain-block multiple at most m and below h at which
	// every recurrent group has a valid state (an entry of its block
	// boundary, non-zero).
	ok := func(L int) bool {
		for gi, gg := range geo.Groups {
			if gg.Kind != groups.Recurrent {
				continue
			}
			k := L/gg.BlockSize - 1
			if L%gg.BlockSize != 0 || k >= len(ids[gi])-1 || ids[gi][k] == 0 {
				return false
			}
		}
		return true
	}
	hybrid := false
	for gi, gg := range geo.Groups {
		switch {
		case gg.Kind.Windowed():
			return 0, "a sliding-window or chunked group holds only the export's last window"
		case gg.Kind == groups.Recurrent:
			hybrid = true
			if len(ids[gi]) < 2 {
				return 0, "a recurrent group holds only the state after all of it (decode's mamba cache mode is not all)"
			}
		}
	}
	L := min(m, h-1) / grant.ChainBlock * grant.ChainBlock
	for hybrid && L > 0 && !ok(L) {
		L -= grant.ChainBlock
	}
	if L <= 0 {
		return 0, "no shared chain block ends where every recurrent group kept a state"
	}
	return L, ""
}

// exportedFor are the export's block ids (per group, on D's geometry geo)
// that a read of its first L of n positions plans with: per-token groups
// the blocks covering [0, L), recurrent groups the one block with the
// state after L tokens.
func exportedFor(geo *groups.Geometry, ids [][]int, L, n int) [][]int {
	out := make([][]int, len(ids))
	for gi, gg := range geo.Groups {
		bs := gg.BlockSize
		switch {
		case gg.Kind == groups.Recurrent && L == n:
			out[gi] = []int{ids[gi][len(ids[gi])-1]}
		case gg.Kind == groups.Recurrent:
			out[gi] = []int{ids[gi][L/bs-1]} // readable checked it
		case L == n:
			out[gi] = ids[gi]
		default:
			out[gi] = ids[gi][:min(len(ids[gi]), (L+bs-1)/bs)]
		}
	}
	return out
}
