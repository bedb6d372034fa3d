package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Handshake is what D's side channel brings back from a prefill instance:
// its rank metadata payload and the clock offset measured on the way
// (P's clock minus D's).
type Handshake struct {
	Payload     []byte
	ClockOffset time.Duration
}

// Fetcher fetches a prefill instance's handshake.
type Fetcher func(ctx context.Context, host string, port int) (Handshake, error)

// PeerRef names a prefill instance as kv_transfer_params do.
type PeerRef struct {
	EngineID string
	BootID   string // "" accepts whichever incarnation answers
	Host     string
	Port     int
	TP       int // 0: whatever P publishes
}

func (r PeerRef) key() string { return fmt.Sprintf("%s@%s:%d", r.EngineID, r.Host, r.Port) }

// DecodeConfig configures the D side of an instance.
type DecodeConfig struct {
	EngineID string
	// Model is the served model (P's geometry is computed from it and P's
	// published instance config).
	Model *groups.Model
	Side  *plan.Side
	// Ranks are the ranks this process hosts (nil: all).
	Ranks []int
	// StagingBytes is each hosted rank's scratch pool (staged reads and
	// layout conversions land there).
	StagingBytes int64
	// Memory is where the ranks' memory lives and the engine that runs
	// their post-steps (zero: host memory, the CPU engine).
	Memory     statexfer.MemoryConfig
	Transports TransportFactory
	Fetch      Fetcher
	// HandshakeTimeout bounds one handshake (default 10 s).
	HandshakeTimeout time.Duration
	// TransferTimeout bounds one load (default 30 s).
	TransferTimeout time.Duration
	// HeartbeatInterval between heartbeats of a request being loaded
	// (default 1 s), LeaseMargin (default 500 ms) and SuspectAfter (default
	// 5 heartbeat intervals; negative: never) as in MachineConfig.
	HeartbeatInterval time.Duration
	LeaseMargin       time.Duration
	SuspectAfter      time.Duration
	Log               *slog.Logger
	Now               func() time.Time
}

// Decode is the D side of the protocol for the ranks of one instance that
// this process hosts: registered memory, a scratch pool per rank, the
// table of prefill peers (keyed by engine id and address, each entry one
// incarnation), the per-request state machine and its heartbeats, and the
// routing of P's answers by transfer id.
type Decode struct {
	*hosted
	cfg   DecodeConfig
	ranks map[int]*decodeRank

	mu      sync.Mutex
	peers   map[string]*peer
	machine *Machine
	loads   map[Key]*load
	closed  bool

	xfer    atomic.Uint64
	stop    chan struct{}
	stopped chan struct{}

	notifyFailed atomic.Int64
	dropped      atomic.Int64
}

type decodeRank struct {
	*endpoint
	d *Decode

	mu      sync.Mutex
	waiters map[waitKey]chan *statexfer.Message
}

type waitKey struct {
	xfer  uint64
	prank int
}

// peer is one incarnation of a prefill instance, as D knows it.
type peer struct {
	ref   PeerRef
	ready chan struct{} // closed when the handshake ended
	err   error

	bootID  string
	metas   []statexfer.RankMeta
	planner *plan.Planner
	offset  time.Duration
	remotes map[int]map[int]*statexfer.Remote // D rank -> P rank -> remote
	hb      transport.Peer                    // to P rank 0: heartbeats and aborts

	ctx  context.Context // canceled when the peer is declared failed
	kill context.CancelCauseFunc
}

func (p *peer) name() string {
	if p.bootID != "" {
		return p.ref.key() + "#" + p.bootID
	}
	return p.ref.key()
}

// load is one load attempt in flight.
type load struct {
	cancel context.CancelCauseFunc
	peer   *peer
	req    string
	grant  uint64
}

// NewDecode registers the hosted ranks' memory and starts the heartbeat
// loop.
func NewDecode(cfg DecodeConfig) (*Decode, error) {
	d, err := newDecode(cfg)
	if err != nil {
		return nil, err
	}
	h, err := openHosted("decode", d.cfg.Ranks, d.cfg.Side, d.cfg.StagingBytes, d.cfg.Memory, d.cfg.Transports, func(ep *endpoint) transport.Handlers {
		dr := d.attach(ep)
		return transport.Handlers{Notify: dr.handle, PeerFailed: dr.peerFailed}
	})
	if err != nil {
		return nil, err
	}
	d.start(h)
	return d, nil
}

// newDecode checks cfg, sets its defaults and returns a Decode without
// ranks (attach adds them; start starts it).
func newDecode(cfg DecodeConfig) (*Decode, error) {
	if cfg.Side == nil || cfg.Model == nil || cfg.Transports == nil || cfg.Fetch == nil {
		return nil, fmt.Errorf("%w: decode session needs a model, a side, transports and a fetcher", ErrBadRequest)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.TransferTimeout <= 0 {
		cfg.TransferTimeout = 30 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.LeaseMargin <= 0 {
		cfg.LeaseMargin = 500 * time.Millisecond
	}
	if cfg.SuspectAfter == 0 {
		cfg.SuspectAfter = 5 * cfg.HeartbeatInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	suspect := Time(cfg.SuspectAfter)
	if cfg.SuspectAfter < 0 {
		suspect = 0
	}
	d := &Decode{cfg: cfg, ranks: map[int]*decodeRank{}, peers: map[string]*peer{}, loads: map[Key]*load{},
		machine: NewMachine(MachineConfig{HeartbeatInterval: Time(cfg.HeartbeatInterval), LeaseMargin: Time(cfg.LeaseMargin), SuspectAfter: suspect}),
		stop:    make(chan struct{}), stopped: make(chan struct{})}
	d.xfer.Store(NewGrant() >> 16) // transfer ids differ across restarts
	return d, nil
}

// attach makes ep one of d's ranks.
func (d *Decode) attach(ep *endpoint) *decodeRank {
	dr := &decodeRank{endpoint: ep, d: d, waiters: map[waitKey]chan *statexfer.Message{}}
	d.ranks[ep.r] = dr
	return dr
}

// start runs d on the opened ranks h.
func (d *Decode) start(h *hosted) {
	d.hosted = h
	go d.ticker()
}

// NotifyFailed counts read-completion notifications and aborts that could
// not be sent (the request's outcome stands; P's lease reclaims).
func (d *Decode) NotifyFailed() int64 { return d.notifyFailed.Load() }

// Dropped counts messages from P that matched no load in flight (late
// answers of a load that already ended) or did not decode.
func (d *Decode) Dropped() int64 { return d.dropped.Load() }

// InFlight is the number of loads in flight.
func (d *Decode) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.loads)
}

// Close stops the heartbeat loop, fails loads in flight and releases every
// rank.
func (d *Decode) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for _, l := range d.loads {
		l.cancel(ErrClosed)
	}
	for _, p := range d.peers {
		p.kill(ErrClosed)
	}
	d.mu.Unlock()
	close(d.stop)
	<-d.stopped
	return d.hosted.release()
}

// LoadRequest is one request's state to move from P.
type LoadRequest struct {
	Peer  PeerRef
	ReqID string // P's request id
	Grant uint64
	// LeaseExpiry is P's hold expiry on P's clock (zero: no lease).
	LeaseExpiry time.Time
	Req         *plan.Request
	Mode        plan.Mode
	// Log receives the load's lifecycle records (handshaked, reads_posted,
	// read_done, failed): a RequestLog with the caller's ids. nil: the
	// session's logger with request_id ReqID.
	Log *slog.Logger
}

// RankStats is one decode rank's part of a load.
type RankStats struct {
	Plan  *plan.Plan
	Stage time.Duration // staging round trips
	Post  time.Duration // posting the reads
	Wait  time.Duration // from the last post to the last completion
	Steps time.Duration // post-processing
}

// LoadStats describes a successful load.
type LoadStats struct {
	Peer      string
	Handshake time.Duration // 0 when the peer was known
	Ranks     map[int]*RankStats
}

// Bytes and Reads total the hosted ranks' plans.
func (s *LoadStats) Bytes() (n int64) {
	for _, r := range s.Ranks {
		n += r.Plan.Bytes()
	}
	return n
}

func (s *LoadStats) Reads() (n int) {
	for _, r := range s.Ranks {
		n += r.Plan.NumReads()
	}
	return n
}

func (d *Decode) now() Time { return Time(d.cfg.Now().UnixNano()) }

// Load moves one request's state into the hosted ranks' memory: handshake
// (once per peer incarnation), lease check, plans, staging, reads,
// post-processing, and the read-completion notifications. A failure is a
// *LoadError naming the peer, the request, the phase and the decode blocks
// that hold no valid state.
func (d *Decode) Load(ctx context.Context, lr LoadRequest) (*LoadStats, error) {
	if lr.Req == nil {
		return nil, fmt.Errorf("%w: no transfer request", ErrBadRequest)
	}
	k := Key(d.xfer.Add(1))
	st := &LoadStats{Peer: lr.Peer.key(), Ranks: map[int]*RankStats{}}
	log := lr.Log
	if log == nil {
		log = RequestLog(d.cfg.Log, lr.ReqID, "")
	}
	log = log.With("remote_request_id", lr.ReqID, "transfer", uint64(k))
	fail := func(phase string, failed []BlockRef, err error) (*LoadStats, error) {
		d.mu.Lock()
		_ = d.machine.To(k, Failed, err.Error())
		d.mu.Unlock()
		LogEvent(log, EventFailed, "peer", st.Peer, "phase", phase, "failed_blocks", len(failed), "cause", err)
		return nil, &LoadError{Peer: st.Peer, ReqID: lr.ReqID, Phase: phase, Failed: failed, Err: err}
	}
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	defer d.track(k, lr.Peer.key(), Handshaking, &load{cancel: cancel, req: lr.ReqID, grant: lr.Grant})()
	d.mu.Unlock()

	t0 := time.Now()
	p, fresh, err := d.peer(lctx, lr.Peer)
	if err != nil {
		return fail("handshake", nil, err)
	}
	if fresh {
		st.Handshake = time.Since(t0)
	}
	st.Peer = p.name()
	LogEvent(log, EventHandshaked, "peer", st.Peer, "fresh", fresh, "handshake", st.Handshake)
	// Leases and the peer's death end the load too.
	stopPeer := context.AfterFunc(p.ctx, func() { cancel(context.Cause(p.ctx)) })
	defer stopPeer()
	d.mu.Lock()
	d.loads[k].peer = p
	var expiry Time
	if !lr.LeaseExpiry.IsZero() {
		expiry = Time(lr.LeaseExpiry.Add(-p.offset).UnixNano())
	}
	d.machine.Lease(k, expiry, d.now())
	_ = d.machine.To(k, Loading, "")
	err = d.machine.CheckPost(k, d.now())
	d.mu.Unlock()
	if err != nil {
		d.abortOn(k, p, &lr)
		return fail("expired", nil, err) // before anything was read: the params came too late
	}
	// Claim the request with P now; the answer is awaited before any read
	// is posted (planning and staging overlap the round trip).
	claim := d.claim(lctx, k, p, &lr)
	plans := map[int]*plan.Plan{}
	for _, r := range d.order {
		pl, err := p.planner.Plan(r, lr.Req, lr.Mode)
		if err != nil {
			d.abortOn(k, p, &lr)
			return fail("plan", nil, fmt.Errorf("%w: plan for decode rank %d: %w", ErrBadRequest, r, err))
		}
		plans[r] = pl
	}
	reads := 0
	for _, pl := range plans {
		reads += pl.NumReads()
	}
	LogEvent(log, EventReadsPosted, "peer", st.Peer, "ranks", len(plans), "reads", reads)
	tctx, tcancel := context.WithTimeout(lctx, d.cfg.TransferTimeout)
	defer tcancel()
	errs := make(map[int]*rankError, len(d.order))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range d.order {
		rs := &RankStats{Plan: plans[r]}
		st.Ranks[r] = rs
		wg.Go(func() {
			dr := d.ranks[r]
			if re := dr.run(tctx, k, p, &lr, rs, claim); re != nil {
				mu.Lock()
				errs[r] = re
				mu.Unlock()
				return
			}
			// This rank is done with P's pages and staging ranges: tell P
			// now, so its ranges serve other loads while the other ranks
			// finish (a failure elsewhere still aborts the whole request).
			dr.notifyDone(k, p, &lr, plans[r])
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		st, err := d.loadFailed(k, p, &lr, plans, errs, lctx)
		var le *LoadError
		if errors.As(err, &le) {
			LogEvent(log, EventFailed, "peer", le.Peer, "phase", le.Phase, "failed_blocks", len(le.Failed), "cause", le.Err)
		}
		return st, err
	}
	if err := context.Cause(lctx); err != nil { // canceled after the last read: the lease or the peer is gone
		d.abortOn(k, p, &lr)
		return fail("read", nil, err)
	}
	d.mu.Lock()
	_ = d.machine.To(k, Done, "")
	d.mu.Unlock()
	LogEvent(log, EventReadDone, "peer", st.Peer, "bytes", st.Bytes(), "reads", st.Reads())
	return st, nil
}

// claimWait is the outcome of a load's claim: done closes when P answered
// (err nil: claimed) or the load ended first.
type claimWait struct {
	done chan struct{}
	err  error
}

// wait blocks until the claim is decided.
func (c *claimWait) wait(ctx context.Context) error {
	if c == nil {
		return nil // RunPlan: benchmarks and tools do not claim
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for prefill to accept the claim: %w", context.Cause(ctx))
	}
}

// claimRank is the waiter key rank of claim answers (P ranks are >= 0).
const claimRank = -1

// claim asks P (rank 0, which owns the hold) to let load k fill the hosted
// decode ranks with lr's state.
func (d *Decode) claim(ctx context.Context, k Key, p *peer, lr *LoadRequest) *claimWait {
	c := &claimWait{done: make(chan struct{})}
	first := d.ranks[d.order[0]]
	wk := waitKey{uint64(k), claimRank}
	ch := make(chan *statexfer.Message, 1)
	first.mu.Lock()
	first.waiters[wk] = ch
	first.mu.Unlock()
	unwait := func() {
		first.mu.Lock()
		delete(first.waiters, wk)
		first.mu.Unlock()
	}
	if p.hb == nil {
		unwait()
		c.err = fmt.Errorf("%w: no endpoint to prefill rank 0 for the claim", ErrPeer)
		close(c.done)
		return c
	}
	msg := statexfer.AppendMessage(nil, &statexfer.Message{Type: statexfer.MsgClaim, ReqID: lr.ReqID, Grant: lr.Grant, Xfer: uint64(k),
		Reply: first.tr.Address(), Ranks: d.order})
	if err := p.hb.Notify(msg); err != nil {
		unwait()
		c.err = fmt.Errorf("%w: claim to %s: %w", ErrPeer, p.name(), err)
		close(c.done)
		return c
	}
	go func() {
		defer close(c.done)
		defer unwait()
		// A lost claim or answer is sent again every heartbeat interval
		// (P accepts the same load's claim any number of times).
		resend := time.NewTicker(d.cfg.HeartbeatInterval)
		defer resend.Stop()
		var ans *statexfer.Message
		for ans == nil {
			select {
			case ans = <-ch:
			case <-resend.C:
				if err := p.hb.Notify(msg); err != nil {
					c.err = fmt.Errorf("%w: claim to %s: %w", ErrPeer, p.name(), err)
					return
				}
			case <-ctx.Done():
				c.err = fmt.Errorf("waiting for prefill to accept the claim: %w", context.Cause(ctx))
				return
			}
		}
		switch {
		case ans.Err == errNoSuchHold.Error():
			c.err = fmt.Errorf("%w: %s: request %s (released, expired, aborted, or a wrong grant)", ErrNoHold, p.name(), lr.ReqID)
		case ans.Err != "":
			c.err = fmt.Errorf("%w: %s: %s", ErrClaimed, p.name(), ans.Err)
		default:
			d.mu.Lock()
			d.machine.Lease(k, Time(time.Unix(0, ans.Expiry).Add(-p.offset).UnixNano()), d.now())
			d.mu.Unlock()
		}
	}()
	return c
}

// track registers load l from peer under k in state s with the machine
// and the table of loads in flight (d.mu held); the function it returns
// forgets both (it takes d.mu).
func (d *Decode) track(k Key, peer string, s State, l *load) func() {
	_ = d.machine.Accept(k, peer, 0, d.now())
	_ = d.machine.To(k, s, "")
	d.loads[k] = l
	return func() {
		d.mu.Lock()
		delete(d.loads, k)
		d.machine.Forget(k)
		d.mu.Unlock()
	}
}

// loadFailed turns the ranks' errors into one LoadError with the union of
// their failed blocks, and evicts the peer when the transport broke.
func (d *Decode) loadFailed(k Key, p *peer, lr *LoadRequest, plans map[int]*plan.Plan, errs map[int]*rankError, lctx context.Context) (*LoadStats, error) {
	phase := "read"
	var causes []error
	var failed []BlockRef
	all := false
	seen := map[BlockRef]bool{}
	for _, r := range d.order {
		re := errs[r]
		if re == nil {
			continue
		}
		causes = append(causes, fmt.Errorf("decode rank %d: %w", r, re.err))
		if re.phase != "read" {
			phase = re.phase
		}
		if re.reads == nil {
			all = true
			continue
		}
		for _, b := range failedBlocks(d.cfg.Side.Ranks[r], lr.Req, plans[r], re.reads) {
			if !seen[b] {
				seen[b] = true
				failed = append(failed, b)
			}
		}
	}
	if all {
		failed = nil
	}
	err := errors.Join(causes...)
	if c := context.Cause(lctx); c != nil && !errors.Is(err, c) {
		err = fmt.Errorf("%w (%w)", err, c)
	}
	d.abortOn(k, p, lr) // P need not wait for its lease
	switch {
	case errors.Is(err, transport.ErrDisconnected) || errors.Is(err, transport.ErrClosed):
		d.evict(p, fmt.Errorf("%w: %s: %w", ErrPeer, p.name(), err))
	case phase == "claim" && (errors.Is(err, ErrNoHold) || errors.Is(err, ErrClaimed)):
		// P answered: the peer is fine, the params were stale or replayed.
	default:
		d.forgetPeer(p) // the next request handshakes again
	}
	d.mu.Lock()
	_ = d.machine.To(k, Failed, err.Error())
	d.mu.Unlock()
	return nil, &LoadError{Peer: p.name(), ReqID: lr.ReqID, Phase: phase, Failed: failed, Err: fmt.Errorf("%w: %w", ErrRead, err)}
}

// Abort tells P that D gives up on a request (P frees its hold at once).
// It never blocks on a handshake: a peer D does not know (yet) is not told,
// and its lease reclaims. A failed Load has told P already.
func (d *Decode) Abort(ref PeerRef, reqID string, grant uint64) error {
	d.mu.Lock()
	p := d.peers[ref.key()]
	d.mu.Unlock()
	if p == nil || !isDone(p.ready) || p.err != nil || (ref.BootID != "" && ref.BootID != p.bootID) {
		return nil
	}
	return d.sendAbort(p, reqID, grant, 0)
}

func (d *Decode) sendAbort(p *peer, reqID string, grant, xfer uint64) error {
	if p.hb == nil {
		return nil
	}
	return p.hb.Notify(statexfer.AppendMessage(nil, &statexfer.Message{Type: statexfer.MsgAbort, ReqID: reqID, Grant: grant, Xfer: xfer}))
}

// abortOn tells p that the load of lr failed.
func (d *Decode) abortOn(k Key, p *peer, lr *LoadRequest) {
	if err := d.sendAbort(p, lr.ReqID, lr.Grant, uint64(k)); err != nil {
		d.notifyFailed.Add(1)
		d.cfg.Log.Warn("abort to prefill failed; its lease will reclaim", "peer", p.name(), "request", lr.ReqID, "err", err)
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// peer returns the peer entry for ref, doing the handshake once per
// incarnation however many requests ask at once (never under d.mu). A
// request naming another incarnation than the known one evicts it and
// handshakes again; if the fresh answer still names another, the request
// is stale.
func (d *Decode) peer(ctx context.Context, ref PeerRef) (*peer, bool, error) {
	key := ref.key()
	fresh := false
	for attempt := 0; attempt < 2; attempt++ {
		d.mu.Lock()
		p := d.peers[key]
		if p != nil && isDone(p.ready) && (p.err != nil || p.ctx.Err() != nil) {
			delete(d.peers, key)
			p = nil
		}
		if p != nil && isDone(p.ready) && ref.BootID != "" && p.bootID != ref.BootID {
			d.mu.Unlock()
			d.evict(p, fmt.Errorf("%w: %s: a request names incarnation %s", ErrPeer, p.name(), ref.BootID))
			continue
		}
		if p == nil {
			pctx, kill := context.WithCancelCause(context.Background())
			p = &peer{ref: ref, ready: make(chan struct{}), ctx: pctx, kill: kill}
			d.peers[key] = p
			fresh = true
			go d.handshake(p)
		}
		d.mu.Unlock()
		select {
		case <-p.ready:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: waiting for the handshake with %s: %w", ErrPeer, key, context.Cause(ctx))
		}
		if p.err != nil {
			d.forgetPeer(p)
			return nil, false, p.err
		}
		if ref.BootID != "" && p.bootID != ref.BootID {
			if fresh {
				return nil, false, fmt.Errorf("%w: %s is incarnation %s now, the request names %s", ErrStaleIncarnation, key, p.bootID, ref.BootID)
			}
			continue
		}
		if ref.TP != 0 && ref.TP != len(p.metas) {
			return nil, false, fmt.Errorf("%w: %s publishes %d ranks, the request says tp %d", ErrPeer, p.name(), len(p.metas), ref.TP)
		}
		return p, fresh, nil
	}
	return nil, false, fmt.Errorf("%w: %s keeps changing incarnation", ErrPeer, key)
}

// forgetPeer drops p from the table (the next request handshakes again)
// without failing the loads that use it.
func (d *Decode) forgetPeer(p *peer) {
	d.mu.Lock()
	if d.peers[p.ref.key()] == p {
		delete(d.peers, p.ref.key())
	}
	d.mu.Unlock()
}

// evict drops p and fails every load in flight on it.
func (d *Decode) evict(p *peer, cause error) {
	d.forgetPeer(p)
	if p.ctx.Err() == nil {
		d.cfg.Log.Warn("prefill peer evicted", "peer", p.name(), "cause", cause)
	}
	p.kill(cause)
}

// handshake fetches, checks and imports a peer's metadata; it closes
// p.ready.
func (d *Decode) handshake(p *peer) {
	defer close(p.ready)
	ctx, cancel := context.WithTimeout(p.ctx, d.cfg.HandshakeTimeout)
	defer cancel()
	key := p.ref.key()
	fail := func(format string, args ...any) {
		p.err = fmt.Errorf("%w: handshake with %s: %s", ErrPeer, key, fmt.Sprintf(format, args...))
	}
	hs, err := d.cfg.Fetch(ctx, p.ref.Host, p.ref.Port)
	if err != nil {
		p.err = fmt.Errorf("%w: handshake with %s: %w", ErrPeer, key, err)
		return
	}
	metas, err := statexfer.DecodeRankMetas(hs.Payload)
	if err != nil {
		p.err = fmt.Errorf("%w: handshake with %s: %w", ErrPeer, key, err)
		return
	}
	if len(metas) == 0 || metas[0].TP != len(metas) {
		fail("published %d ranks of tp %d", len(metas), func() int {
			if len(metas) > 0 {
				return metas[0].TP
			}
			return 0
		}())
		return
	}
	pside := &plan.Side{}
	for r, m := range metas {
		switch {
		case m.Rank != r:
			fail("metadata out of rank order")
			return
		case m.EngineID != p.ref.EngineID:
			fail("the engine there is %q, the request names %q", m.EngineID, p.ref.EngineID)
			return
		case m.BootID != metas[0].BootID:
			fail("ranks of different incarnations")
			return
		}
		g, err := groups.NewGeometry(d.cfg.Model, m.Config, r)
		if err != nil {
			fail("rank %d: %v", r, err)
			return
		}
		nb, err := m.CheckAgainst(g)
		if err != nil {
			fail("%v", err)
			return
		}
		pside.Ranks = append(pside.Ranks, g)
		pside.NumBlocks = nb
	}
	pl, err := plan.New(pside, d.cfg.Side)
	if err != nil {
		fail("%v", err)
		return
	}
	p.bootID, p.metas, p.planner, p.offset = metas[0].BootID, metas, pl, hs.ClockOffset
	p.remotes = map[int]map[int]*statexfer.Remote{}
	for _, r := range d.order {
		dr := d.ranks[r]
		p.remotes[r] = map[int]*statexfer.Remote{}
		for _, pr := range pl.Targets(r) {
			rem, err := statexfer.Import(ctx, dr.tr, metas[pr])
			if err != nil {
				fail("%v", err)
				return
			}
			p.remotes[r][pr] = rem
		}
	}
	// Auto mode weighs staging against the reads of the path taken.
	var all []*statexfer.Remote
	for _, m := range p.remotes {
		for _, rem := range m {
			all = append(all, rem)
		}
	}
	pl.Cost = statexfer.CostFor(pl.Cost, all)
	pl.NoDirect = noDirect(d.hosted, all)
	pl.PStaging, pl.DScratch = stagingPools(metas), d.cfg.StagingBytes
	// Heartbeats and aborts go to P rank 0 from the first hosted rank.
	first := d.ranks[d.order[0]]
	if rem := p.remotes[first.r][0]; rem != nil {
		p.hb = rem.Peer
	} else if p.hb, err = first.tr.Connect(ctx, metas[0].Address); err != nil {
		fail("connect to prefill rank 0: %v", err)
		return
	}
}

// ticker drives the machine: heartbeats due, expired leases, silent peers.
func (d *Decode) ticker() {
	defer close(d.stopped)
	every := min(d.cfg.HeartbeatInterval/4, 100*time.Millisecond)
	t := time.NewTicker(max(every, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.Tick()
		}
	}
}

// Tick runs one round of the machine at the current time.
func (d *Decode) Tick() {
	type hb struct {
		k     Key
		p     *peer
		req   string
		grant uint64
	}
	d.mu.Lock()
	rd := d.machine.Ready(d.now())
	var beats []hb
	var cancels []func()
	for _, k := range rd.Heartbeats {
		if l := d.loads[k]; l != nil && l.peer != nil {
			beats = append(beats, hb{k, l.peer, l.req, l.grant})
		}
	}
	for _, k := range rd.Expired {
		if l := d.loads[k]; l != nil {
			cancels = append(cancels, func() { l.cancel(fmt.Errorf("%w: before its reads completed", ErrLeaseExpired)) })
		}
	}
	for _, k := range rd.Suspect {
		if l := d.loads[k]; l != nil {
			p := l.peer
			cancels = append(cancels, func() {
				cause := fmt.Errorf("%w: %s answered no heartbeat for %v", ErrPeer, p.name(), d.cfg.SuspectAfter)
				l.cancel(cause)
				if p != nil {
					d.evict(p, cause)
				}
			})
		}
	}
	d.machine.Advance(rd)
	d.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	first := d.ranks[d.order[0]]
	for _, b := range beats {
		if b.p.hb == nil {
			continue
		}
		msg := statexfer.AppendMessage(nil, &statexfer.Message{Type: statexfer.MsgHeartbeat, ReqID: b.req, Grant: b.grant, Xfer: uint64(b.k), Reply: first.tr.Address()})
		if err := b.p.hb.Notify(msg); err != nil {
			d.evict(b.p, fmt.Errorf("%w: heartbeat to %s: %w", ErrPeer, b.p.name(), err))
		}
	}
}

// Connect does the handshake with ref (once per incarnation) and returns
// the peer's planner (benchmarks and tools plan ahead with it).
func (d *Decode) Connect(ctx context.Context, ref PeerRef) (*plan.Planner, error) {
	p, _, err := d.peer(ctx, ref)
	if err != nil {
		return nil, err
	}
	return p.planner, nil
}

// Remote is P rank prank as hosted D rank drank imported it (after a
// handshake; nil when that D rank does not read from it). Benchmarks post
// raw baseline reads on it.
func (d *Decode) Remote(ctx context.Context, ref PeerRef, drank, prank int) (*statexfer.Remote, error) {
	p, _, err := d.peer(ctx, ref)
	if err != nil {
		return nil, err
	}
	return p.remotes[drank][prank], nil
}

// RunPlan runs a ready-made plan of hosted rank rank for request reqID of
// a known peer: Load's per-rank path (scratch, staging, checks, reads,
// post-processing, notifications) without planning. Benchmarks plan once
// and run many times with it.
func (d *Decode) RunPlan(ctx context.Context, ref PeerRef, rank int, reqID string, grant uint64, pl *plan.Plan) (*RankStats, error) {
	dr := d.ranks[rank]
	if dr == nil {
		return nil, fmt.Errorf("%w: decode rank %d is not hosted here", ErrBadRequest, rank)
	}
	p, _, err := d.peer(ctx, ref)
	if err != nil {
		return nil, err
	}
	k := Key(d.xfer.Add(1))
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.mu.Lock()
	defer d.track(k, p.name(), Loading, &load{cancel: cancel, peer: p, req: reqID, grant: grant})()
	d.mu.Unlock()
	lr := &LoadRequest{Peer: ref, ReqID: reqID, Grant: grant}
	rs := &RankStats{Plan: pl}
	if re := dr.run(lctx, k, p, lr, rs, nil); re != nil {
		return nil, &LoadError{Peer: p.name(), ReqID: reqID, Phase: re.phase, Err: re.err}
	}
	dr.notifyDone(k, p, lr, pl)
	return rs, nil
}
