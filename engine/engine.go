package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/internal/hostmem"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/specdec"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// HandshakeServer publishes a prefill instance's rank metadata (the
// handshake payload) and returns the port it listens on and a closer. The
// cmd layer implements it with ZeroMQ (statexfer/zmqchan); tests may use an
// in-memory one.
type HandshakeServer func(engineID string, compat [32]byte, summary map[string]string, payload []byte) (port int, closer func() error, err error)

// HandshakeClient fetches a prefill instance's rank metadata and the clock
// offset measured on the way.
type HandshakeClient func(ctx context.Context, host string, port int, compat [32]byte, summary map[string]string) (session.Handshake, error)

// TransportFactory builds rank r's transport with the given handlers.
type TransportFactory func(rank int, h transport.Handlers) (transport.Transport, error)

// Config configures an Engine.
type Config struct {
	Role     backend.Role
	EngineID string
	// Model is the served model's spec; the engine runs its reference
	// miniature (refmodel.Miniature) with weights from Seed.
	Model    *groups.Model
	Seed     uint64
	Instance groups.InstanceConfig
	// NumBlocks per pool (default 1024).
	NumBlocks int
	// MambaCacheMode is how recurrent (Mamba, GDN, KDA, short conv) groups
	// keep their states (vLLM's mamba_cache_mode): none (default: one
	// state per request, updated in place; a hybrid model then has no
	// prefix hits), align (the state moves to a new block at each block
	// boundary, and the boundary states are prefix-cached) or all (a state
	// per block, all kept while the request lives). P and D may differ:
	// only the running state is transferred.
	MambaCacheMode hma.RecurrentMode
	// MaxModelLen bounds prompt + output tokens (default 8192): longer
	// requests are refused with ErrBadRequest.
	MaxModelLen int
	// Prefill: where D reaches this instance, how long a finished request's
	// state is held without notifications (each heartbeat from D extends it
	// by as much), the handoff mode, and each rank's staging pool (per
	// request ranges; default 64 MiB; decode instances: the scratch pool).
	Host         string
	LeaseTTL     time.Duration
	Handoff      backend.Handoff
	StagingBytes int64
	// Memory is where the ranks' caches live and the engine that runs the
	// transfer kernels (zero: host memory, the CPU engine). The reference
	// model computes on host memory: a cache without a host view is
	// refused.
	Memory statexfer.MemoryConfig
	// BootID is this incarnation's id (default: random).
	BootID string
	// Bidirectional turns on D -> P reads for multi-turn conversations
	// (conversation.go): a decode instance holds each finished request's
	// state for ConversationTTL (default 60 s) and answers with its
	// export (kv_transfer_params handoff decode-export); a prefill
	// instance given such an export (remote_prefix) reads the prefix of its
	// prompt that the export holds instead of computing it. Every instance
	// of the pair needs it, and both handshake functions (Serve, Fetch).
	Bidirectional   bool
	ConversationTTL time.Duration
	// Decode: how long a load may take before it counts as failed, the
	// heartbeat interval (default 1 s; a peer silent for 5 intervals is
	// declared failed), the failure policy and the read shaping.
	TransferTimeout time.Duration
	// DPRank is the engine's data-parallel rank (kv_transfer_params
	// remote_dp_rank, bound by the grant); 0 for a single rank.
	DPRank            int
	HeartbeatInterval time.Duration
	FailurePolicy     string
	Mode              plan.Mode

	// ClusterKey signs (prefill) and verifies (decode) the grants in
	// kv_transfer_params; nil: grants are checked for consistency but
	// anyone could mint one (a warning at startup).
	ClusterKey *grant.Key

	Transports TransportFactory
	Serve      HandshakeServer // prefill
	Fetch      HandshakeClient // decode
	Metrics    *Metrics
	Log        *slog.Logger
	// Now is the clock (leases); default time.Now.
	Now func() time.Time
	// OnCompute, when set, is told every range of positions the engine
	// computes for a request (tests: exactly-once checks).
	OnCompute func(reqID string, from, to int)
	// OnFinish, when set, sees a request's store just before its blocks
	// are freed, with the number of positions computed (tests: final
	// state checks).
	OnFinish func(reqID string, st refmodel.Store, computed int)
	// Propose, when set, replaces each token the drafter proposes for
	// position pos of a request (tests: propose the true continuation or
	// a wrong token, so that every accept length occurs; the answer must
	// not change). Never set in production.
	Propose func(reqID string, pos int, draft uint32) uint32
}

func (c *Config) defaults() error {
	if c.Model == nil {
		return fmt.Errorf("%w: no model", backend.ErrBadRequest)
	}
	switch c.Role {
	case backend.RolePrefill, backend.RoleDecode, backend.RoleBoth:
	default:
		return fmt.Errorf("%w: role %q (want prefill, decode or both)", backend.ErrBadRequest, c.Role)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"NumBlocks", int64(c.NumBlocks)}, {"MaxModelLen", int64(c.MaxModelLen)}, {"StagingBytes", c.StagingBytes},
		{"LeaseTTL", int64(c.LeaseTTL)}, {"TransferTimeout", int64(c.TransferTimeout)}, {"HeartbeatInterval", int64(c.HeartbeatInterval)}} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s %d is negative", backend.ErrBadRequest, f.name, f.v)
		}
	}
	if c.NumBlocks == 0 {
		c.NumBlocks = 1024
	}
	switch c.MambaCacheMode {
	case hma.RecurrentNone, hma.RecurrentAlign, hma.RecurrentAll:
	default:
		return fmt.Errorf("%w: mamba cache mode %v", backend.ErrBadRequest, c.MambaCacheMode)
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.ConversationTTL < 0 {
		return fmt.Errorf("%w: ConversationTTL %v is negative", backend.ErrBadRequest, c.ConversationTTL)
	}
	if c.ConversationTTL == 0 {
		c.ConversationTTL = DefaultConversationTTL
	}
	if c.Handoff == "" {
		c.Handoff = backend.DecodeComputesLast
	}
	if c.Handoff != backend.DecodeComputesLast && c.Handoff != backend.PrefillSamplesFirst {
		return fmt.Errorf("%w: handoff %q", backend.ErrBadRequest, c.Handoff)
	}
	if c.StagingBytes == 0 {
		c.StagingBytes = defaultStagingBytes
	}
	if !c.Memory.Kind.IsHost() {
		return fmt.Errorf("%w: memory kind %s: the reference model computes on host memory", backend.ErrBadRequest, c.Memory.Kind)
	}
	if c.MaxModelLen == 0 {
		c.MaxModelLen = 8192
	}
	if c.TransferTimeout == 0 {
		c.TransferTimeout = 10 * time.Second
	}
	if c.FailurePolicy == "" {
		c.FailurePolicy = backend.PolicyFail
	}
	if c.FailurePolicy != backend.PolicyFail && c.FailurePolicy != backend.PolicyRecompute {
		return fmt.Errorf("%w: kv load failure policy %q (want fail or recompute)", backend.ErrBadRequest, c.FailurePolicy)
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.EngineID == "" {
		c.EngineID = string(c.Role)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Transports == nil {
		return fmt.Errorf("%w: no transport factory", backend.ErrBadRequest)
	}
	if c.Bidirectional && c.Role == backend.RoleBoth {
		return fmt.Errorf("%w: bidirectional transfer is for prefill and decode instances", backend.ErrBadRequest)
	}
	if (c.Role == backend.RolePrefill || c.Bidirectional) && c.Serve == nil {
		return fmt.Errorf("%w: a %s engine needs a handshake server", backend.ErrBadRequest, c.Role)
	}
	if (c.Role == backend.RoleDecode || c.Bidirectional) && c.Fetch == nil {
		return fmt.Errorf("%w: a %s engine needs a handshake client", backend.ErrBadRequest, c.Role)
	}
	return nil
}

// Engine is one instance: its TP ranks' memory, the allocator, the
// reference model, and the protocol session of its role (statexfer/session
// owns everything that moves state between instances). Two locks: mu
// guards the allocator and request bookkeeping and is only ever held for
// short, non-blocking sections (the lease sweeper, notifications,
// heartbeats and /health take it); computeMu serializes the reference
// model's compute, which runs without mu and stops when its request's
// context ends.
type Engine struct {
	cfg     Config
	spec    *groups.Model // the miniature
	model   *refmodel.Model
	side    *plan.Side
	compat  [32]byte
	summary map[string]string

	mu      sync.Mutex // allocator, request counter, closing, draining
	alloc   *hma.Allocator
	seq     uint64
	closing bool
	// draining: BeginDrain was called (drainCh closed); inflight counts
	// Generate calls admitted and not yet returned.
	draining bool
	drainCh  chan struct{}
	inflight int
	// specTotals sums every decode step's speculation (under mu).
	specTotals  refmodel.SpecStats
	scratchSent int // scratch blocks found in a transfer's block lists
	prefix      PrefixStats
	conv        ConversationStats

	computeMu sync.Mutex
	mems      []*plan.RankMemory // per rank: what the model computes on

	// prefill
	pre       *session.Prefill
	port      int
	closeHS   func() error
	stopSweep chan struct{}
	sweepDone chan struct{}

	// decode
	dec *session.Decode

	trMu       sync.Mutex
	transports []rankTransport // every rank's transport, for TransportPaths
}

type rankTransport struct {
	rank int
	tr   transport.Transport
}

// recordTransports wraps f so that the engine keeps every transport it
// makes (TransportPaths reads their counters at scrape time).
func (e *Engine) recordTransports(f TransportFactory) session.TransportFactory {
	return func(rank int, h transport.Handlers) (transport.Transport, error) {
		tr, err := f(rank, h)
		if err == nil {
			e.trMu.Lock()
			e.transports = append(e.transports, rankTransport{rank, tr})
			e.trMu.Unlock()
		}
		return tr, err
	}
}

// RankPathCount is one rank's transport counters for one path.
type RankPathCount struct {
	Rank int
	transport.PathCount
}

// TransportPaths reads the batches and bytes every rank's transport
// completed, by path (transports that do not count are left out).
func (e *Engine) TransportPaths() []RankPathCount {
	e.trMu.Lock()
	trs := slices.Clone(e.transports)
	e.trMu.Unlock()
	var out []RankPathCount
	for _, rt := range trs {
		if pc, ok := rt.tr.(transport.PathCounter); ok {
			for _, c := range pc.PathCounts() {
				out = append(out, RankPathCount{Rank: rt.rank, PathCount: c})
			}
		}
	}
	return out
}

// New starts an engine: registers every rank's memory, and for a prefill
// instance publishes the handshake and starts the lease sweeper.
func New(cfg Config) (*Engine, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	mini, err := refmodel.Miniature(cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("reference model of %s: %w", cfg.Model.Name, err)
	}
	e := &Engine{cfg: cfg, spec: mini, model: refmodel.New(mini, cfg.Seed), drainCh: make(chan struct{})}
	if err := e.model.Err(); err != nil {
		return nil, err
	}
	e.compat = groups.CompatHash(mini, statexfer.ProtocolVersion)
	e.summary = groups.CompatFields(mini, statexfer.ProtocolVersion)
	side, err := plan.NewSide(mini, cfg.Instance, func(int, *groups.Geometry) int { return cfg.NumBlocks })
	if err != nil {
		return nil, err
	}
	e.side = side
	if err := checkMemory(side, cfg.NumBlocks, cfg.StagingBytes); err != nil {
		return nil, err
	}
	hc, err := hma.ConfigFromGeometry(side.Ranks[0], side.NumBlocks, cfg.MambaCacheMode, true)
	if err != nil {
		return nil, err
	}
	if e.alloc, err = hma.New(hc); err != nil {
		return nil, err
	}
	if cfg.Role == backend.RoleBoth {
		for _, g := range side.Ranks {
			e.mems = append(e.mems, plan.NewRankMemory(g, side.NumBlocks))
		}
		return e, nil
	}
	pc := session.PrefillConfig{EngineID: cfg.EngineID, BootID: cfg.BootID, Side: side,
		StagingBytes: cfg.StagingBytes, Memory: cfg.Memory, Transports: e.recordTransports(cfg.Transports), Holds: engineHolds{e}, Log: cfg.Log, Now: cfg.Now}
	dc := session.DecodeConfig{EngineID: cfg.EngineID, Model: mini, Side: side, StagingBytes: cfg.StagingBytes, Memory: cfg.Memory,
		Transports: e.recordTransports(cfg.Transports), TransferTimeout: cfg.TransferTimeout, HeartbeatInterval: cfg.HeartbeatInterval,
		Fetch: func(ctx context.Context, host string, port int) (session.Handshake, error) {
			return cfg.Fetch(ctx, host, port, e.compat, e.summary)
		}, Log: cfg.Log, Now: cfg.Now}
	switch {
	case cfg.Bidirectional:
		e.pre, e.dec, err = session.NewBidirectional(pc, dc)
	case cfg.Role == backend.RolePrefill:
		e.pre, err = session.NewPrefill(pc)
	default:
		e.dec, err = session.NewDecode(dc)
	}
	if err != nil {
		return nil, err
	}
	for r := range side.Ranks {
		if e.pre != nil {
			e.mems = append(e.mems, e.pre.Local(r).Mem)
		} else {
			e.mems = append(e.mems, e.dec.Local(r).Mem)
		}
	}
	if e.pre != nil {
		payload, err := statexfer.EncodeRankMetas(e.pre.Metas())
		if err != nil {
			e.Close()
			return nil, err
		}
		if e.port, e.closeHS, err = cfg.Serve(cfg.EngineID, e.compat, e.summary, payload); err != nil {
			e.Close()
			return nil, fmt.Errorf("handshake server: %w", err)
		}
		e.stopSweep, e.sweepDone = make(chan struct{}), make(chan struct{})
		go e.sweeper()
	}
	return e, nil
}

// ModelName implements Backend.
func (e *Engine) ModelName() string { return e.cfg.Model.Name }

// Ready implements Backend.
func (e *Engine) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.admitErr()
}

// admitErr is why the engine takes no new request, or nil (under mu).
func (e *Engine) admitErr() error {
	switch {
	case e.closing:
		return backend.ErrShuttingDown
	case e.draining:
		return backend.ErrDraining
	}
	return nil
}

// admit counts a new request in flight, or refuses it while the engine
// drains or closes; done must be called when it returns.
func (e *Engine) admit() (done func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.admitErr(); err != nil {
		return nil, err
	}
	e.inflight++
	return func() {
		e.mu.Lock()
		e.inflight--
		e.mu.Unlock()
	}, nil
}

// BeginDrain implements backend.Drainer: from now on Ready and Generate
// answer ErrDraining; requests in flight, held leases, loads and
// notifications go on. Idempotent.
func (e *Engine) BeginDrain() {
	e.mu.Lock()
	first := !e.draining
	if first {
		e.draining = true
		close(e.drainCh)
		e.cfg.Log.Info("draining: no new requests; waiting for those in flight and every held lease")
	}
	e.mu.Unlock()
	if first && e.cfg.Role == backend.RoleDecode && e.pre != nil {
		e.ReleaseExports()
	}
}

// ReleaseExports ends every conversation export this decode instance
// holds (--bidirectional) that no reader has claimed, and returns how many
// it ended: a draining instance is going away, and the next turn's
// prefill computes the prefix instead (declining with "expired"). An
// export a reader has claimed may be being read one-sided at this moment:
// it ends when that read's completions arrive or its lease expires, never
// earlier (session.Prefill.ForgetUnclaimed).
func (e *Engine) ReleaseExports() int {
	e.mu.Lock()
	var ids []hma.ReqID
	for _, id := range e.alloc.Requests() {
		if _, held := e.alloc.Holding(id); held {
			ids = append(ids, id)
		}
	}
	e.mu.Unlock()
	n := 0
	for _, id := range ids {
		if !e.pre.ForgetUnclaimed(string(id)) {
			continue
		}
		// No reader can claim it now; release the blocks (unless the
		// sweeper got there first).
		e.mu.Lock()
		if _, held := e.alloc.Holding(id); held && e.alloc.Abort(id) {
			n++
		}
		e.mu.Unlock()
	}
	if n > 0 {
		e.cfg.Log.Info("conversation exports released", "requests", n)
	}
	return n
}

// Draining implements backend.Drainer.
func (e *Engine) Draining() <-chan struct{} { return e.drainCh }

// drainLeft describes what a drain still waits for, "" when nothing (under
// mu).
func (e *Engine) drainLeft() string {
	var left []string
	if e.inflight > 0 {
		left = append(left, fmt.Sprintf("%d requests in flight", e.inflight))
	}
	if n := len(e.alloc.Requests()); n > 0 {
		left = append(left, fmt.Sprintf("%d requests holding blocks", n))
	}
	if e.pre != nil {
		if n := e.pre.Granted(); n > 0 {
			left = append(left, fmt.Sprintf("%d leases held for decode", n))
		}
	}
	if e.dec != nil {
		if n := e.dec.InFlight(); n > 0 {
			left = append(left, fmt.Sprintf("%d loads in flight", n))
		}
	}
	return strings.Join(left, ", ")
}

// WaitDrained implements backend.Drainer: it returns nil once nothing is
// in flight or held (a prefill's leases end when decode reads them, the
// proxy aborts them, or they expire), or ctx's error with what is left.
func (e *Engine) WaitDrained(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		e.mu.Lock()
		left := e.drainLeft()
		e.mu.Unlock()
		if left == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("serve: %s not drained (%s): %w", e.cfg.EngineID, left, ctx.Err())
		case <-t.C:
		}
	}
}

// CompatHash is the engine's compatibility hash (hex): a prefill and a
// decode engine transfer state only when theirs are equal.
func (e *Engine) CompatHash() string { return hex.EncodeToString(e.compat[:]) }

// HandshakePort is where a prefill engine serves its metadata.
func (e *Engine) HandshakePort() int { return e.port }

// Spec is the miniature the engine runs.
func (e *Engine) Spec() *groups.Model { return e.spec }

// Model is the reference model the engine runs.
func (e *Engine) Model() *refmodel.Model { return e.model }

// Close stops the engine; requests in flight fail.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil
	}
	e.closing = true
	e.mu.Unlock()
	if e.stopSweep != nil {
		close(e.stopSweep)
		<-e.sweepDone
	}
	var errs []error
	if e.closeHS != nil {
		errs = append(errs, e.closeHS())
	}
	if e.pre != nil {
		errs = append(errs, e.pre.Close())
	}
	if e.dec != nil {
		errs = append(errs, e.dec.Close())
	}
	return errors.Join(errs...)
}

// checkMemory refuses, before anything is allocated, an instance whose
// registered memory (every rank's pools and staging buffer) does not fit
// this machine's available memory and shared memory.
func checkMemory(side *plan.Side, numBlocks int, staging int64) error {
	need, page := registeredBytes(side, numBlocks, staging)
	what := fmt.Sprintf("--num-blocks %d x %d bytes per block id on %d ranks, plus --staging-bytes %d per rank",
		numBlocks, page/int64(len(side.Ranks)), len(side.Ranks), staging)
	return hostmem.Check(need, what)
}

// registeredBytes is the memory an instance registers (every rank's pools
// of numBlocks block ids and its staging buffer), and the bytes one block
// id takes on all ranks together.
func registeredBytes(side *plan.Side, numBlocks int, staging int64) (need, page int64) {
	for _, g := range side.Ranks {
		for _, pg := range g.Pools {
			need += int64(pg.Slots) * int64(numBlocks) * int64(pg.PageStride)
			page += int64(pg.Slots) * int64(pg.PageStride)
		}
		need += staging
	}
	return need, page
}

// InstanceBytes is the host memory an instance of model (its miniature,
// as the engine runs it) with numBlocks block ids registers: every rank's
// pools and a staging buffer of staging bytes (0: the default) per rank.
func InstanceBytes(mini *groups.Model, in groups.InstanceConfig, numBlocks int, staging int64) (int64, error) {
	side, err := plan.NewSide(mini, in, func(int, *groups.Geometry) int { return numBlocks })
	if err != nil {
		return 0, err
	}
	if staging == 0 {
		staging = defaultStagingBytes
	}
	need, _ := registeredBytes(side, numBlocks, staging)
	return need, nil
}

// checkNoScratch refuses a transfer whose per-group block lists (what P
// publishes, what D reads into) hold one of request id's speculative
// scratch blocks: they are never transferred. Such a refusal is counted
// (ScratchTransferred) and would be a bug of the allocator bridge. Called
// with e.mu held.
func (e *Engine) checkNoScratch(id hma.ReqID, tables [][]int) error {
	n := 0
	for g, t := range tables {
		sc, err := e.alloc.ScratchBlocks(id, g)
		if err != nil {
			return err
		}
		for _, b := range t {
			if b != 0 && slices.Contains(sc, b) {
				n++
			}
		}
	}
	if n == 0 {
		return nil
	}
	e.scratchSent += n
	return fmt.Errorf("serve: request %s: %d speculative scratch blocks in its transfer", id, n)
}

// ScratchTransferred counts the scratch blocks checkNoScratch found in a
// transfer's block lists (and refused).
func (e *Engine) ScratchTransferred() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.scratchSent
}

// PrefixStats counts an engine's prefix-cache lookups in positions.
type PrefixStats struct {
	Queried, Hit int
}

// PrefixStats is what the prefix cache saved on this engine so far.
func (e *Engine) PrefixStats() PrefixStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.prefix
}

// prefixLookup records a lookup of queried positions of which hit were
// cached. Called with e.mu held.
func (e *Engine) prefixLookup(queried, hit int) {
	e.prefix.Queried += queried
	e.prefix.Hit += hit
	e.cfg.Metrics.PrefixCache(queried, hit)
}

// SpecStats is what speculative decoding did on this engine so far: decode
// steps, draft tokens proposed and accepted, accepted by draft position.
func (e *Engine) SpecStats() refmodel.SpecStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.specTotals
	st.AcceptedAt = append([]int(nil), st.AcceptedAt...)
	return st
}

// RegisteredBytes is the host memory the engine registered: every rank's
// pools and staging buffer.
func (e *Engine) RegisteredBytes() int64 {
	need, _ := registeredBytes(e.side, e.cfg.NumBlocks, e.cfg.StagingBytes)
	return need
}

// CheckIdle verifies that the engine holds no request and no lease and that
// the allocator's invariants hold (tests, and after a demo run).
func (e *Engine) CheckIdle() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.alloc.CheckInvariants(); err != nil {
		return err
	}
	if ids := e.alloc.Requests(); len(ids) > 0 {
		return fmt.Errorf("serve: %s still holds %d requests (%v)", e.cfg.EngineID, len(ids), ids)
	}
	st := e.alloc.Stats()
	for i, p := range st.Pools {
		if p.Used != 0 {
			return fmt.Errorf("serve: %s pool %d has %d blocks in use", e.cfg.EngineID, i, p.Used)
		}
	}
	if e.pre != nil {
		if n := e.pre.Granted(); n > 0 {
			return fmt.Errorf("serve: %s still grants %d requests", e.cfg.EngineID, n)
		}
		if n := e.pre.StagingInUse(); n > 0 {
			return fmt.Errorf("serve: %s has %d staging bytes in use", e.cfg.EngineID, n)
		}
	}
	if e.dec != nil {
		if n := e.dec.InFlight(); n > 0 {
			return fmt.Errorf("serve: %s has %d loads in flight", e.cfg.EngineID, n)
		}
		if n := e.dec.StagingInUse(); n > 0 {
			return fmt.Errorf("serve: %s has %d scratch bytes in use", e.cfg.EngineID, n)
		}
	}
	return nil
}

// WaitIdle waits until CheckIdle passes (a prefill instance releases its
// requests as notifications arrive, asynchronously) or ctx ends, returning
// CheckIdle's last error then.
func (e *Engine) WaitIdle(ctx context.Context) error {
	for {
		err := e.CheckIdle()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (e *Engine) nextID(prefix, client string) hma.ReqID {
	e.seq++
	return hma.ReqID(fmt.Sprintf("%s-%d-%s", prefix, e.seq, client))
}

// store is the reference model's view of request id on this instance:
// each recurrent group's state slot is the block that holds (or receives)
// the state after n tokens (hma's StateBlock), its scratch slots the
// request's scratch blocks.
func (e *Engine) store(id hma.ReqID, n int) (*refmodel.RankStore, error) {
	tabs := make([][]int, len(e.side.Ranks[0].Groups))
	scratch := make([][]int, len(tabs))
	for g := range tabs {
		var err error
		if e.side.Ranks[0].Groups[g].Kind == groups.Recurrent {
			var b int
			b, err = e.alloc.StateBlock(id, g, n)
			tabs[g] = []int{b}
			if err == nil {
				scratch[g], err = e.alloc.ScratchBlocks(id, g)
			}
		} else {
			tabs[g], err = e.alloc.BlockTable(id, g)
		}
		if err != nil {
			return nil, err
		}
	}
	st, err := refmodel.NewRankStore(e.side.Ranks, e.mems, refmodel.SliceTable(tabs))
	if err != nil {
		return nil, err
	}
	return st.WithScratch(refmodel.SliceTable(scratch)), nil
}

// stateSource is, when a step that ends after to tokens must start from a
// recurrent state held in other blocks (modes align and all: the step
// begins a new state block), a store that reads the state after from
// tokens; nil when the state is updated in place.
func (e *Engine) stateSource(id hma.ReqID, from, to int) (*refmodel.RankStore, error) {
	if from == 0 || e.cfg.MambaCacheMode == hma.RecurrentNone {
		return nil, nil
	}
	moved := false
	for g, gg := range e.side.Ranks[0].Groups {
		if gg.Kind != groups.Recurrent {
			continue
		}
		src, err := e.alloc.StateBlock(id, g, from)
		if err != nil {
			return nil, err
		}
		dst, err := e.alloc.StateBlock(id, g, to)
		if err != nil {
			return nil, err
		}
		if src == 0 || dst == 0 {
			return nil, fmt.Errorf("serve: request %s: recurrent group %d holds no block for the state after %d or %d tokens", id, g, from, to)
		}
		moved = moved || src != dst
	}
	if !moved {
		return nil, nil
	}
	return e.store(id, from)
}

// stepEnd is where a compute step that starts at position from ends, at
// most to: where recurrent states are kept at block boundaries (modes
// align and all), at the next boundary of a recurrent group, so that the
// state of every boundary is materialized and cached (vLLM clips chunked
// prefill to block boundaries the same way).
func (e *Engine) stepEnd(from, to int) int {
	if e.cfg.MambaCacheMode == hma.RecurrentNone {
		return to
	}
	for _, gg := range e.side.Ranks[0].Groups {
		if gg.Kind == groups.Recurrent {
			to = min(to, (from/gg.BlockSize+1)*gg.BlockSize)
		}
	}
	return to
}

func lastNonNull(t []int) int {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] != 0 {
			return t[i]
		}
	}
	return 0
}

// defaultStagingBytes is each rank's staging buffer when Config leaves
// StagingBytes 0.
const defaultStagingBytes = 64 << 20

// compute allocates for positions [from, to) of tokens, runs them and
// commits them, in steps that end at recurrent block boundaries where the
// recurrent mode keeps states there (stepEnd); the first allocation
// places a prefix hit of prefix tokens. It returns the token predicted
// after position to-1. It takes e.mu itself (callers must not hold it)
// and computes without it, so the sweeper, notifications and /health go
// on meanwhile; it stops early when ctx ends (the steps done stay
// committed; the caller ends the request).
func (e *Engine) compute(ctx context.Context, id hma.ReqID, tokens []uint32, from, to, prefix int) (uint32, error) {
	if from >= to {
		return 0, fmt.Errorf("serve: request %s: compute of positions [%d, %d)", id, from, to)
	}
	var next uint32
	for a := from; a < to; {
		b := e.stepEnd(a, to)
		var err error
		if next, err = e.computeStep(ctx, id, tokens, a, b, hma.AllocSpec{Prefix: prefix, New: b - a}); err != nil {
			return 0, err
		}
		a, prefix = b, 0
	}
	return next, nil
}

// computeStep is one step of compute: one allocation, the state moved to
// the step's state block when it begins a new one, the positions [from,
// to), one commit.
func (e *Engine) computeStep(ctx context.Context, id hma.ReqID, tokens []uint32, from, to int, alloc hma.AllocSpec) (uint32, error) {
	e.mu.Lock()
	if err := e.alloc.Allocate(id, alloc); err != nil {
		e.mu.Unlock()
		var ns *hma.NoSpaceError
		if errors.As(err, &ns) {
			return 0, fmt.Errorf("%w: %v", backend.ErrOverloaded, err)
		}
		return 0, err
	}
	st, err := e.store(id, to)
	var src *refmodel.RankStore
	if err == nil {
		src, err = e.stateSource(id, from, to)
	}
	e.mu.Unlock()
	if err != nil {
		return 0, err
	}
	var next uint32
	e.computeMu.Lock()
	if src != nil {
		err = refmodel.CopyRecurrent(e.spec, src, st)
	}
	if err == nil {
		// One call for the step, so the model reads each earlier
		// position's state once (it looks at ctx every 32 positions).
		next, err = e.model.PrefillContext(ctx, st, tokens, from, to)
	}
	e.computeMu.Unlock()
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.OnCompute != nil {
		e.cfg.OnCompute(string(id), from, to)
	}
	if err := e.alloc.Commit(id, to-from); err != nil {
		return 0, err
	}
	return next, nil
}

// finished reports a finished request's state to OnFinish.
func (e *Engine) finished(id hma.ReqID) {
	if e.cfg.OnFinish == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n, err := e.alloc.NumComputedTokens(id)
	if err != nil {
		return
	}
	if st, err := e.store(id, n); err == nil {
		e.cfg.OnFinish(string(id), st, n)
	}
}

// decode emits first (an output token already sampled) and generates until
// max output tokens. tokens are the known tokens (prompt) before first. A
// model with a drafter decodes speculatively (refmodel.Decoder): a step
// emits its accepted drafts and the bonus token; the first step drafts
// nothing (specdec.Drafts).
func (e *Engine) decode(ctx context.Context, id hma.ReqID, tokens []uint32, first uint32, max int, emit func(string) error) ([]uint32, error) {
	var out []uint32
	dec := e.model.NewDecoder()
	dec.LeaveInScratch = true // decodeStep places the states (specdec.Placements)
	if e.cfg.Propose != nil {
		dec.Propose = func(pos int, draft uint32) uint32 { return e.cfg.Propose(string(id), pos, draft) }
	}
	step := []uint32{first}
	for {
		for _, t := range step {
			out = append(out, t)
			if emit != nil {
				if err := emit(tokenizer.Detokenize(t)); err != nil {
					return out, err
				}
			}
		}
		if len(out) >= max {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		next := out[len(out)-1]
		tokens = append(tokens, next)
		e.mu.Lock()
		err := e.alloc.AppendTokens(id, next)
		e.mu.Unlock()
		if err != nil {
			return out, err
		}
		if step, err = e.decodeStep(ctx, id, tokens, dec, max-len(out)); err != nil {
			return out, err
		}
		tokens = append(tokens, step[:len(step)-1]...)
	}
}

// decodeStep computes the position of the last known token and the step's
// drafts (dec.Step) and returns the tokens it emits (at most remaining):
// the accepted drafts, which become known tokens whose positions are
// committed, and the bonus token. Lookahead blocks hold the draft
// positions; scratch blocks their recurrent state, which is then placed
// where the recurrent mode keeps it (specdec.Placements).
func (e *Engine) decodeStep(ctx context.Context, id hma.ReqID, tokens []uint32, dec *refmodel.Decoder, remaining int) ([]uint32, error) {
	pos := len(tokens) - 1
	e.mu.Lock()
	if err := e.alloc.Allocate(id, hma.AllocSpec{New: 1, Lookahead: specdec.Lookahead(e.spec, false)}); err != nil {
		e.mu.Unlock()
		var ns *hma.NoSpaceError
		if errors.As(err, &ns) {
			return nil, fmt.Errorf("%w: %v", backend.ErrOverloaded, err)
		}
		return nil, err
	}
	st, err := e.store(id, pos+1)
	var src *refmodel.RankStore
	if err == nil {
		src, err = e.stateSource(id, pos, pos+1)
	}
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	before := dec.Stats
	var step []uint32
	e.computeMu.Lock()
	if src != nil {
		err = refmodel.CopyRecurrent(e.spec, src, st)
	}
	if err == nil {
		step, err = dec.Step(st, pos, tokens[pos], remaining)
	}
	e.computeMu.Unlock()
	if err != nil {
		return nil, err
	}
	accepted := step[:len(step)-1]
	if err := e.commitStep(id, pos, len(step), accepted, st); err != nil {
		return nil, err
	}
	drafted, acc := dec.Stats.Drafted-before.Drafted, dec.Stats.Accepted-before.Accepted
	e.cfg.Metrics.SpecDecode(drafted, acc)
	delta := refmodel.SpecStats{Steps: 1, Drafted: drafted, Accepted: acc, AcceptedAt: make([]int, drafted)}
	for i := 0; i < acc; i++ {
		delta.AcceptedAt[i] = 1
	}
	e.mu.Lock()
	e.specTotals.Add(delta)
	e.mu.Unlock()
	return step, nil
}

// commitStep commits a decode step at position pos that emitted n tokens:
// the position itself, then the accepted drafts' positions (computed by
// the verify pass into the lookahead blocks) as known tokens, once their
// recurrent states are copied from the scratch slots of st to the blocks
// that keep them (specdec.Placements).
func (e *Engine) commitStep(id hma.ReqID, pos, n int, accepted []uint32, st *refmodel.RankStore) error {
	e.mu.Lock()
	if e.cfg.OnCompute != nil {
		e.cfg.OnCompute(string(id), pos, pos+n)
	}
	err := e.alloc.Commit(id, 1)
	if err != nil || len(accepted) == 0 {
		e.mu.Unlock()
		return err
	}
	if err = e.alloc.AppendTokens(id, accepted...); err == nil {
		err = e.alloc.Allocate(id, hma.AllocSpec{New: len(accepted)})
	}
	var places []specdec.Placement
	var targets []*refmodel.RankStore
	if err == nil {
		places, err = e.placements(pos, len(accepted))
	}
	for _, p := range places {
		if err != nil {
			break
		}
		var to *refmodel.RankStore
		to, err = e.store(id, p.Tokens)
		targets = append(targets, to)
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	e.computeMu.Lock()
	for i, p := range places {
		if err = refmodel.CopyRecurrent(e.spec, st.Slots(p.Slot, p.Slot), targets[i]); err != nil {
			err = fmt.Errorf("serve: request %s: keep the state after %d tokens: %w", id, p.Tokens, err)
			break
		}
	}
	e.computeMu.Unlock()
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.alloc.Commit(id, len(accepted))
}

// placements is where a step at pos with accepted drafts keeps its
// recurrent states (specdec.Placements with the recurrent groups' block
// size and this instance's recurrent mode); none without recurrent groups.
func (e *Engine) placements(pos, accepted int) ([]specdec.Placement, error) {
	bs := 0
	for g, gg := range e.side.Ranks[0].Groups {
		if gg.Kind != groups.Recurrent {
			continue
		}
		if bs != 0 && gg.BlockSize != bs {
			return nil, fmt.Errorf("serve: recurrent group %d has block size %d, another %d", g, gg.BlockSize, bs)
		}
		bs = gg.BlockSize
	}
	if bs == 0 {
		return nil, nil
	}
	return specdec.Placements(pos, accepted, bs, e.cfg.MambaCacheMode == hma.RecurrentAll), nil
}
