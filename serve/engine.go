package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/specdec"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// HandshakeServer publishes a prefill instance's rank metadata (the
// handshake payload) and returns the port it listens on and a closer. The
// cmd layer implements it with ZeroMQ (statexfer/zmqchan); tests may use an
// in-memory one.
type HandshakeServer func(engineID string, compat [32]byte, summary map[string]string, payload []byte) (port int, closer func() error, err error)

// HandshakeClient fetches a prefill instance's rank metadata.
type HandshakeClient func(ctx context.Context, host string, port int, compat [32]byte, summary map[string]string) (payload []byte, err error)

// TransportFactory builds rank r's transport with the given handlers.
type TransportFactory func(rank int, h transport.Handlers) (transport.Transport, error)

// Config configures an Engine.
type Config struct {
	Role     Role
	EngineID string
	// Model is the served model's spec; the engine runs its reference
	// miniature (refmodel.Miniature) with weights from Seed.
	Model    *groups.Model
	Seed     uint64
	Instance groups.InstanceConfig
	// NumBlocks per pool (default 1024).
	NumBlocks int
	// Prefill: where D reaches this instance, how long a finished request's
	// state is held without notifications, the handoff mode, and each
	// rank's staging buffer (default 16 MiB).
	Host         string
	LeaseTTL     time.Duration
	Handoff      Handoff
	StagingBytes int64
	// Decode: how long a load may take before it counts as failed (a dead
	// peer is detected by this bound at the latest), the failure policy and
	// the read shaping.
	TransferTimeout time.Duration
	FailurePolicy   string
	Mode            plan.Mode

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
}

func (c *Config) defaults() error {
	if c.Model == nil {
		return fmt.Errorf("%w: no model", ErrBadRequest)
	}
	switch c.Role {
	case RolePrefill, RoleDecode, RoleBoth:
	default:
		return fmt.Errorf("%w: role %q (want prefill, decode or both)", ErrBadRequest, c.Role)
	}
	if c.NumBlocks == 0 {
		c.NumBlocks = 1024
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.Handoff == "" {
		c.Handoff = DecodeComputesLast
	}
	if c.Handoff != DecodeComputesLast && c.Handoff != PrefillSamplesFirst {
		return fmt.Errorf("%w: handoff %q", ErrBadRequest, c.Handoff)
	}
	if c.StagingBytes == 0 {
		c.StagingBytes = 16 << 20
	}
	if c.TransferTimeout == 0 {
		c.TransferTimeout = 10 * time.Second
	}
	if c.FailurePolicy == "" {
		c.FailurePolicy = PolicyFail
	}
	if c.FailurePolicy != PolicyFail && c.FailurePolicy != PolicyRecompute {
		return fmt.Errorf("%w: kv load failure policy %q (want fail or recompute)", ErrBadRequest, c.FailurePolicy)
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
		return fmt.Errorf("%w: no transport factory", ErrBadRequest)
	}
	if c.Role == RolePrefill && c.Serve == nil {
		return fmt.Errorf("%w: a prefill engine needs a handshake server", ErrBadRequest)
	}
	if c.Role == RoleDecode && c.Fetch == nil {
		return fmt.Errorf("%w: a decode engine needs a handshake client", ErrBadRequest)
	}
	return nil
}

// Engine is one instance: its TP ranks (memory, transport endpoint), the
// allocator, the reference model, and the transfer machinery of its role.
// Requests are computed one at a time (the reference model is tiny); the
// transfer of a decode request runs outside that lock.
type Engine struct {
	cfg     Config
	spec    *groups.Model // the miniature
	model   *refmodel.Model
	side    *plan.Side
	compat  [32]byte
	summary map[string]string

	mu      sync.Mutex // allocator, model, request counter
	alloc   *hma.Allocator
	seq     uint64
	closing bool

	ranks []*rank

	// prefill
	port      int
	closeHS   func() error
	releases  map[string]int // request -> P ranks that saw every notification
	stopSweep chan struct{}
	sweepDone chan struct{}

	// decode
	peersMu sync.Mutex
	peers   map[string]*peer
}

// rank is one TP rank of the instance.
type rank struct {
	r     int
	tr    transport.Transport
	disp  *statexfer.Dispatch
	local *statexfer.Local
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
	e := &Engine{cfg: cfg, spec: mini, model: refmodel.New(mini, cfg.Seed), releases: map[string]int{}, peers: map[string]*peer{}}
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
	hc, err := hma.ConfigFromGeometry(side.Ranks[0], side.NumBlocks, hma.RecurrentNone, true)
	if err != nil {
		return nil, err
	}
	if e.alloc, err = hma.New(hc); err != nil {
		return nil, err
	}
	staging := int64(0)
	if cfg.Role == RolePrefill {
		staging = cfg.StagingBytes
	} else if cfg.Role == RoleDecode {
		staging = cfg.StagingBytes
	}
	for r, g := range side.Ranks {
		d := &statexfer.Dispatch{Ctx: context.Background(), Log: cfg.Log}
		tr, err := cfg.Transports(r, d.Handlers())
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("rank %d transport: %w", r, err)
		}
		l, err := statexfer.NewLocal(tr, g, side.NumBlocks, staging)
		if err != nil {
			tr.Close()
			e.Close()
			return nil, fmt.Errorf("rank %d memory: %w", r, err)
		}
		rk := &rank{r: r, tr: tr, disp: d, local: l}
		e.ranks = append(e.ranks, rk)
		if cfg.Role == RolePrefill {
			d.SetSource(&statexfer.Source{Rank: r, Local: l, Tr: tr,
				Released:  func(id string) { e.rankReleased(id) },
				Heartbeat: func(id string) { e.heartbeat(id) },
				Abort:     func(id string) { e.remoteAbort(id) },
			})
		}
	}
	if cfg.Role == RolePrefill {
		var metas []statexfer.RankMeta
		for _, rk := range e.ranks {
			metas = append(metas, rk.local.Meta(cfg.EngineID, 0, rk.tr.Address(), cfg.Now()))
		}
		payload, err := statexfer.EncodeRankMetas(metas)
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
	e.updatePoolMetrics()
	return e, nil
}

// ModelName implements Backend.
func (e *Engine) ModelName() string { return e.cfg.Model.Name }

// Ready implements Backend.
func (e *Engine) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing {
		return ErrShuttingDown
	}
	return nil
}

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
	for _, rk := range e.ranks {
		rk.local.Close()
		errs = append(errs, rk.tr.Close())
	}
	return errors.Join(errs...)
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

// store is the reference model's view of request id on this instance.
func (e *Engine) store(id hma.ReqID) (*refmodel.RankStore, error) {
	mems := make([]*plan.RankMemory, len(e.ranks))
	for i, rk := range e.ranks {
		mems[i] = rk.local.Mem
	}
	tabs := make([][]int, len(e.side.Ranks[0].Groups))
	for g := range tabs {
		t, err := e.alloc.BlockTable(id, g)
		if err != nil {
			return nil, err
		}
		if e.side.Ranks[0].Groups[g].Kind == groups.Recurrent {
			t = []int{lastNonNull(t)}
		}
		tabs[g] = t
	}
	return refmodel.NewRankStore(e.side.Ranks, mems, refmodel.SliceTable(tabs))
}

func lastNonNull(t []int) int {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] != 0 {
			return t[i]
		}
	}
	return 0
}

// compute runs positions [from, to) of tokens and commits them; it returns
// the token predicted after position to-1.
func (e *Engine) compute(id hma.ReqID, tokens []uint32, from, to int, alloc hma.AllocSpec) (uint32, error) {
	if err := e.alloc.Allocate(id, alloc); err != nil {
		var ns *hma.NoSpaceError
		if errors.As(err, &ns) {
			return 0, fmt.Errorf("%w: %v", ErrOverloaded, err)
		}
		return 0, err
	}
	st, err := e.store(id)
	if err != nil {
		return 0, err
	}
	next, err := e.model.Prefill(st, tokens, from, to)
	if err != nil {
		return 0, err
	}
	if e.cfg.OnCompute != nil {
		e.cfg.OnCompute(string(id), from, to)
	}
	if err := e.alloc.Commit(id, to-from); err != nil {
		return 0, err
	}
	return next, nil
}

// finished reports a finished request's state to OnFinish (e.mu held).
func (e *Engine) finished(id hma.ReqID) {
	if e.cfg.OnFinish == nil {
		return
	}
	n, err := e.alloc.NumComputedTokens(id)
	if err != nil {
		return
	}
	if st, err := e.store(id); err == nil {
		e.cfg.OnFinish(string(id), st, n)
	}
}

// decode emits first (an output token already sampled) and generates until
// max output tokens, one position per step. tokens are the known tokens
// (prompt) before first.
func (e *Engine) decode(ctx context.Context, id hma.ReqID, tokens []uint32, first uint32, max int, emit func(string) error) ([]uint32, error) {
	var out []uint32
	look := specdec.Lookahead(e.spec, false)
	next := first
	for {
		out = append(out, next)
		if emit != nil {
			if err := emit(Detokenize(next)); err != nil {
				return out, err
			}
		}
		if len(out) >= max {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		tokens = append(tokens, next)
		if err := e.alloc.AppendTokens(id, next); err != nil {
			return out, err
		}
		pos := len(tokens) - 1
		var err error
		if next, err = e.compute(id, tokens, pos, pos+1, hma.AllocSpec{New: 1, Lookahead: look}); err != nil {
			return out, err
		}
	}
}

func (e *Engine) updatePoolMetrics() {
	if e.cfg.Metrics == nil {
		return
	}
	st := e.alloc.Stats()
	for gi, g := range st.Groups {
		total := e.side.NumBlocks[e.side.Ranks[0].Groups[gi].Pool] - 1
		e.cfg.Metrics.PoolUsage(gi, e.side.Ranks[0].Groups[gi].Kind.String(), g.Used, total)
	}
}
