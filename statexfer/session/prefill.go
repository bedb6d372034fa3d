package session

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/internal/ratelog"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// TransportFactory builds rank r's transport with the session's handlers.
type TransportFactory func(rank int, h transport.Handlers) (transport.Transport, error)

// Holds is what the prefill session tells the owner of the held state (the
// allocator's leases). Each call happens at most once per (request, rank)
// for Released, and never for a request the owner did not Register or
// already Forgot. Calls come from transport handlers: they must not block
// on compute or network.
type Holds interface {
	// Released: every consumer of P rank rank notified its reads of req
	// complete.
	Released(req string, rank int)
	// Extend: a heartbeat for req; it returns the hold's expiry now, or
	// false when there is no such hold.
	Extend(req string) (time.Time, bool)
	// Abort: D gave up on req.
	Abort(req string)
}

// PrefillConfig configures the P side of an instance.
type PrefillConfig struct {
	EngineID string
	// BootID is this incarnation's id (default: random, new every start).
	BootID string
	DP     int
	Side   *plan.Side
	// Ranks are the ranks this process hosts (nil: all).
	Ranks []int
	// StagingBytes is each hosted rank's staging pool (0: no staged reads).
	StagingBytes int64
	// Memory is where the ranks' memory lives and the engine that runs
	// their gathers (zero: host memory, the CPU engine).
	Memory     statexfer.MemoryConfig
	Transports TransportFactory
	Holds      Holds
	Log        *slog.Logger
	Now        func() time.Time
}

// Prefill is the P side of the protocol for the ranks of one instance that
// this process hosts: registered memory, a staging pool per rank, the
// grants of the requests it holds, and the handling of every control
// message D sends (staging gathers, read-completion notifications,
// heartbeats, aborts).
type Prefill struct {
	*hosted
	cfg   PrefillConfig
	ranks map[int]*prefillRank

	mu     sync.Mutex
	grants map[string]*granted
	closed bool

	ignored atomic.Int64 // messages for unknown requests or wrong grants
	bad     atomic.Int64 // malformed messages

	warn     *ratelog.Limiter // malformed-message warnings
	refusals chan struct{}    // answers to ungranted messages in flight

	// gatherHook (tests only; set before any message arrives) runs in
	// every staging gather just before its copy.
	gatherHook func(req string, drank int)
	maxPending int            // per rank: staging requests assembled or gathering
	slots      chan struct{}  // one token per gather copying now
	stop       chan struct{}  // closed when Close begins
	gathers    sync.WaitGroup // gathers started and not finished
}

// granted is one registered request: its token, the blocks it may be read
// from (per pool; nil: any), and its claims (decode rank -> load).
type granted struct {
	token  uint64
	blocks map[int]map[int]bool
	claims map[int]uint64
}

type prefillRank struct {
	*endpoint
	p *Prefill

	mu    sync.Mutex
	parts map[stageKey][]plan.Step
	areas map[string]map[stageKey]int64 // req -> (D rank, xfer) -> staging offset
	seen  map[string]map[int]bool       // req -> D ranks that notified
	done  map[string]bool               // req -> released on this rank
	peers map[string]transport.Peer     // reply address -> peer

	gathering int // complete staging requests not yet answered
}

type stageKey struct {
	req   string
	drank int
	xfer  uint64
}

// maxPendingStages bounds the staging requests a rank assembles or
// gathers at once.
const maxPendingStages = 4096

// gatherSlots is how many staging gathers of one prefill session copy at
// once: one per core the Go scheduler uses (at least two, so that one
// decode rank's gather never waits behind another's).
func gatherSlots() int { return max(2, runtime.GOMAXPROCS(0)) }

// NewBootID returns a fresh random incarnation id.
func NewBootID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewGrant returns a fresh random grant token (never 0).
func NewGrant() uint64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		if g := binary.LittleEndian.Uint64(b[:]); g != 0 {
			return g
		}
	}
}

// NewPrefill registers the hosted ranks' memory and starts handling D's
// messages.
func NewPrefill(cfg PrefillConfig) (*Prefill, error) {
	p, err := newPrefill(cfg)
	if err != nil {
		return nil, err
	}
	h, err := openHosted("prefill", cfg.Ranks, cfg.Side, cfg.StagingBytes, cfg.Memory, cfg.Transports, func(ep *endpoint) transport.Handlers {
		return transport.Handlers{Notify: p.attach(ep).handle}
	})
	if err != nil {
		return nil, err
	}
	p.hosted = h
	return p, nil
}

// newPrefill checks cfg and returns a Prefill without ranks (attach adds
// them).
func newPrefill(cfg PrefillConfig) (*Prefill, error) {
	if cfg.Side == nil || cfg.Transports == nil || cfg.Holds == nil {
		return nil, fmt.Errorf("%w: prefill session needs a side, transports and holds", ErrBadRequest)
	}
	if cfg.BootID == "" {
		cfg.BootID = NewBootID()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Prefill{cfg: cfg, ranks: map[int]*prefillRank{}, grants: map[string]*granted{},
		warn: ratelog.New(10*time.Second, 5), refusals: make(chan struct{}, maxRefusalsInFlight),
		maxPending: maxPendingStages, slots: make(chan struct{}, gatherSlots()), stop: make(chan struct{})}, nil
}

// attach makes ep one of p's ranks.
func (p *Prefill) attach(ep *endpoint) *prefillRank {
	pr := &prefillRank{endpoint: ep, p: p, parts: map[stageKey][]plan.Step{}, areas: map[string]map[stageKey]int64{},
		seen: map[string]map[int]bool{}, done: map[string]bool{}, peers: map[string]transport.Peer{}}
	p.ranks[ep.r] = pr
	return pr
}

// BootID is this incarnation's id.
func (p *Prefill) BootID() string { return p.cfg.BootID }

// Metas is the handshake metadata of the hosted ranks, ascending rank.
func (p *Prefill) Metas() []statexfer.RankMeta {
	var out []statexfer.RankMeta
	for r := 0; r < p.cfg.Side.TP(); r++ {
		if pr := p.ranks[r]; pr != nil {
			m := pr.local.Meta(p.cfg.EngineID, p.cfg.DP, pr.tr.Address(), p.cfg.Now())
			m.BootID = p.cfg.BootID
			out = append(out, m)
		}
	}
	return out
}

// Register makes req's held state available to D under token: from now
// on D's messages about req that carry token are acted on. blocks are the
// block ids granted per KV cache group (kv_transfer_params
// remote_block_ids): staging gathers read only those. nil grants every
// block (benchmarks and tools that stage synthetic requests).
func (p *Prefill) Register(req string, token uint64, blocks [][]int) error {
	if token == 0 {
		return fmt.Errorf("%w: request %s: grant token 0", ErrBadRequest, req)
	}
	g := &granted{token: token, claims: map[int]uint64{}}
	if blocks != nil {
		geo := p.cfg.Side.Ranks[0]
		if len(blocks) != len(geo.Groups) {
			return fmt.Errorf("%w: request %s: block ids for %d groups, the model has %d", ErrBadRequest, req, len(blocks), len(geo.Groups))
		}
		g.blocks = map[int]map[int]bool{}
		for gi, ids := range blocks {
			pool := geo.Groups[gi].Pool
			if g.blocks[pool] == nil {
				g.blocks[pool] = map[int]bool{}
			}
			for _, id := range ids {
				if id != 0 { // null: no state there (a decode export's unkept boundaries)
					g.blocks[pool][id] = true
				}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if _, ok := p.grants[req]; ok {
		return fmt.Errorf("%w: request %s registered twice", ErrBadRequest, req)
	}
	p.grants[req] = g
	return nil
}

// Forget ends req's grant (its hold was released, expired or aborted):
// its staging ranges return to the pools and later messages about it are
// ignored. Forgetting an unknown request does nothing.
func (p *Prefill) Forget(req string) {
	p.mu.Lock()
	delete(p.grants, req)
	p.mu.Unlock()
	for _, pr := range p.ranks {
		pr.forget(req)
	}
}

// ForgetUnclaimed ends req's grant, as Forget does, only if no reader has
// claimed it: a claimed hold may be being read one-sided this very
// moment, and freeing its blocks early would let that reader copy reused
// blocks while its lease check still passes. It reports whether it ended
// the grant; from then on no reader can claim req. A claimed grant ends
// when its reader's completions arrive, it aborts, or the lease expires.
func (p *Prefill) ForgetUnclaimed(req string) bool {
	p.mu.Lock()
	g, ok := p.grants[req]
	if !ok || len(g.claims) > 0 {
		p.mu.Unlock()
		return false
	}
	delete(p.grants, req)
	p.mu.Unlock()
	for _, pr := range p.ranks {
		pr.forget(req)
	}
	return true
}

// Granted is the number of requests registered and not forgotten.
func (p *Prefill) Granted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.grants)
}

// Ignored counts messages for unknown requests or with a wrong grant, and
// Malformed those that did not decode.
func (p *Prefill) Ignored() int64   { return p.ignored.Load() }
func (p *Prefill) Malformed() int64 { return p.bad.Load() }

func (p *Prefill) granted(req string, grant uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.grants[req]
	return ok && g.token == grant
}

// claim records that load xfer fills decode ranks: it fails when another
// load claimed one of them.
func (p *Prefill) claim(req string, grant, xfer uint64, ranks []int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.grants[req]
	if !ok || g.token != grant {
		return errNoSuchHold
	}
	if xfer == 0 || len(ranks) == 0 {
		return fmt.Errorf("claim without a load id or decode ranks")
	}
	for _, r := range ranks {
		if x, ok := g.claims[r]; ok && x != xfer {
			return fmt.Errorf("decode rank %d of request %s was claimed by another load", r, req)
		}
	}
	for _, r := range ranks {
		g.claims[r] = xfer
	}
	return nil
}

// mayAct: a message from load xfer for decode rank drank (-1: any) may
// change the request's hold: nothing is claimed (a caller that does not
// claim), or that load claimed the rank (any rank for -1).
func (p *Prefill) mayAct(req string, xfer uint64, drank int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.grants[req]
	if g == nil || len(g.claims) == 0 {
		return true
	}
	if drank >= 0 {
		x, ok := g.claims[drank]
		return !ok || x == xfer
	}
	for _, x := range g.claims {
		if x == xfer {
			return true
		}
	}
	return false
}

// readableAll: every staging step reads only blocks granted to req (one
// look-up of the grant for all steps).
func (p *Prefill) readableAll(req string, geo *groups.Geometry, steps []plan.Step) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.grants[req]
	for i, st := range steps {
		if !g.readable(geo, st) {
			return fmt.Errorf("%w: staging step %d reads %s bytes [%d, %d), outside the blocks granted to request %s",
				statexfer.ErrBounds, i, st.Src, st.SrcOff, st.SrcOff+st.Len, req)
		}
	}
	return nil
}

// readable: staging step st reads only blocks granted (g nil: none).
func (g *granted) readable(geo *groups.Geometry, st plan.Step) bool {
	if g == nil {
		return false
	}
	if g.blocks == nil {
		return true
	}
	ok := g.blocks[st.Src.Pool]
	if ok == nil || st.Src.Pool < 0 || st.Src.Pool >= len(geo.Pools) {
		return false
	}
	stride := int64(geo.Pools[st.Src.Pool].BlockStride())
	for b := st.SrcOff / stride; b <= (st.SrcOff+st.Len-1)/stride; b++ {
		if !ok[int(b)] {
			return false
		}
	}
	return true
}

// Close stops every hosted rank and releases its memory. A staging gather
// copying when Close begins is waited for (its result is dropped and its
// range freed); one not yet copying is dropped. The staging ranges still
// recorded go back to the pools.
func (p *Prefill) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.stop)
	}
	p.mu.Unlock()
	p.gathers.Wait()
	for _, pr := range p.ranks {
		pr.mu.Lock()
		areas := pr.areas
		pr.areas = map[string]map[stageKey]int64{}
		pr.mu.Unlock()
		for _, a := range areas {
			for _, off := range a {
				pr.putStaging(off)
			}
		}
	}
	return p.hosted.release()
}

func (p *Prefill) closing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (pr *prefillRank) forget(req string) {
	pr.mu.Lock()
	areas := pr.areas[req]
	delete(pr.areas, req)
	delete(pr.seen, req)
	delete(pr.done, req)
	for k := range pr.parts {
		if k.req == req {
			delete(pr.parts, k)
		}
	}
	pr.mu.Unlock()
	for _, off := range areas {
		pr.putStaging(off)
	}
}

func (pr *prefillRank) putStaging(off int64) {
	if err := pr.pool.Put(off); err != nil {
		pr.p.cfg.Log.Error("staging pool", "rank", pr.r, "err", err)
	}
}

// handle is the rank's transport notification handler.
func (pr *prefillRank) handle(_ transport.PeerID, msg []byte) {
	p := pr.p
	m, err := statexfer.DecodeMessage(msg)
	if err != nil {
		p.bad.Add(1)
		p.warn.Log(p.cfg.Log, slog.LevelWarn, "malformed control message", "rank", pr.r, "err", err, "malformed_total", p.bad.Load())
		return
	}
	if !p.granted(m.ReqID, m.Grant) {
		p.ignored.Add(1)
		// The answer goes out asynchronously and bounded: a message that
		// names no grant must not make this handler connect anywhere.
		switch {
		case m.Type == statexfer.MsgHeartbeat:
			pr.replySoon(m.Reply, &statexfer.Message{Type: statexfer.MsgLease, ReqID: m.ReqID, Xfer: m.Xfer, PRank: pr.r, Err: errNoSuchHold.Error()})
		case m.Type == statexfer.MsgClaim:
			pr.replySoon(m.Reply, &statexfer.Message{Type: statexfer.MsgClaimed, ReqID: m.ReqID, Xfer: m.Xfer, PRank: pr.r, Err: errNoSuchHold.Error()})
		case m.Type == statexfer.MsgStage && m.Part == m.Parts-1:
			pr.replySoon(m.Reply, &statexfer.Message{Type: statexfer.MsgStaged, ReqID: m.ReqID, Xfer: m.Xfer, DRank: m.DRank, PRank: pr.r, Err: errNoSuchHold.Error()})
		}
		return
	}
	switch m.Type {
	case statexfer.MsgClaim:
		ans := &statexfer.Message{Type: statexfer.MsgClaimed, ReqID: m.ReqID, Xfer: m.Xfer, PRank: pr.r}
		if err := p.claim(m.ReqID, m.Grant, m.Xfer, m.Ranks); err != nil {
			ans.Err = err.Error()
		} else if exp, ok := p.cfg.Holds.Extend(m.ReqID); ok {
			ans.Expiry = exp.UnixNano()
		} else {
			ans.Err = errNoSuchHold.Error()
		}
		pr.reply(m.Reply, ans)
	case statexfer.MsgHeartbeat:
		ans := &statexfer.Message{Type: statexfer.MsgLease, ReqID: m.ReqID, Xfer: m.Xfer, PRank: pr.r}
		if exp, ok := p.cfg.Holds.Extend(m.ReqID); ok {
			ans.Expiry = exp.UnixNano()
		} else {
			ans.Err = errNoSuchHold.Error()
		}
		pr.reply(m.Reply, ans)
	case statexfer.MsgAbort:
		if !p.mayAct(m.ReqID, m.Xfer, -1) {
			p.ignored.Add(1)
			return
		}
		p.cfg.Holds.Abort(m.ReqID)
	case statexfer.MsgDone:
		if !p.mayAct(m.ReqID, m.Xfer, m.DRank) {
			p.ignored.Add(1)
			return
		}
		pr.done1(m)
	case statexfer.MsgStage:
		pr.stage(m)
	default:
		p.ignored.Add(1)
	}
}

// done1 counts one D rank's read-completion notification.
func (pr *prefillRank) done1(m *statexfer.Message) {
	pr.mu.Lock()
	var free []int64
	for k, off := range pr.areas[m.ReqID] {
		if k.drank == m.DRank {
			free = append(free, off)
			delete(pr.areas[m.ReqID], k)
		}
	}
	release := false
	if !pr.done[m.ReqID] {
		s := pr.seen[m.ReqID]
		if s == nil {
			s = map[int]bool{}
			pr.seen[m.ReqID] = s
		}
		s[m.DRank] = true // a repeated notification counts once
		if len(s) >= m.Consumers {
			release = true
			pr.done[m.ReqID] = true
			delete(pr.seen, m.ReqID)
		}
	}
	pr.mu.Unlock()
	for _, off := range free {
		pr.putStaging(off)
	}
	if release {
		pr.p.cfg.Holds.Released(m.ReqID, pr.r)
	}
}

// stage assembles a staging request's parts on the handler goroutine (in
// the order they arrive) and, when complete, hands the gather to a
// goroutine of its own: gathers of different (request, decode rank, load)
// run at once, so one decode rank's staging does not wait for another's.
// At most cap(p.slots) of them copy at once (the copy is memory-bound and
// already splits large gathers across cores: more would only contend);
// the others wait in arrival order, holding no staging range. Requests
// being assembled and gathers not yet answered together count against the
// rank's limit of staging requests in flight.
func (pr *prefillRank) stage(m *statexfer.Message) {
	p := pr.p
	key := stageKey{m.ReqID, m.DRank, m.Xfer}
	pr.mu.Lock()
	if _, ok := pr.parts[key]; !ok && len(pr.parts)+pr.gathering >= p.maxPending {
		pr.mu.Unlock()
		pr.reply(m.Reply, &statexfer.Message{Type: statexfer.MsgStaged, ReqID: m.ReqID, Xfer: m.Xfer, DRank: m.DRank, PRank: pr.r,
			Err: "too many staging requests in flight", Retry: true})
		return
	}
	steps := append(pr.parts[key], m.Steps...)
	complete := m.Part >= m.Parts-1
	if complete {
		delete(pr.parts, key)
		pr.gathering++
	} else {
		pr.parts[key] = steps
	}
	pr.mu.Unlock()
	if !complete {
		return
	}
	if !p.startGather() { // closing: dropped (D sees the transport go)
		pr.endGather()
		return
	}
	go pr.runGather(key, m.Grant, steps, m.Reply)
}

// startGather counts a gather that Close must wait for; false once Close
// has begun.
func (p *Prefill) startGather() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.gathers.Add(1)
	return true
}

func (pr *prefillRank) endGather() {
	pr.mu.Lock()
	pr.gathering--
	pr.mu.Unlock()
}

// runGather waits for a copy slot, gathers and answers D through the
// reply path. A gather that Close overtakes is dropped: one still waiting
// for a slot never copies, one copying finishes (Close waits for it: the
// memory it reads stays registered until then) and frees its range; neither
// answers.
func (pr *prefillRank) runGather(key stageKey, grant uint64, steps []plan.Step, reply []byte) {
	p := pr.p
	defer p.gathers.Done()
	defer pr.endGather()
	select {
	case p.slots <- struct{}{}:
	case <-p.stop:
		return
	}
	select {
	case <-p.stop:
		<-p.slots
		return
	default:
	}
	off, err := pr.gather(key, grant, steps)
	<-p.slots
	if errors.Is(err, errGatherDropped) {
		return
	}
	ans := &statexfer.Message{Type: statexfer.MsgStaged, ReqID: key.req, Xfer: key.xfer, DRank: key.drank, PRank: pr.r}
	if err != nil {
		ans.Err, ans.Retry = err.Error(), isFull(err)
	} else {
		ans.Offset = off
	}
	pr.reply(reply, ans)
}

// errGatherDropped: Close began while the gather ran (no answer).
var errGatherDropped = errors.New("prefill closing: gather dropped")

// gather checks the steps, takes a staging range for them, runs them and
// records the range under the request, unless the request's grant ended
// (forgotten, released or aborted) or Close began meanwhile: then the range
// goes back to the pool here, exactly once.
func (pr *prefillRank) gather(key stageKey, grant uint64, steps []plan.Step) (int64, error) {
	if pr.pool == nil {
		return 0, fmt.Errorf("%w: prefill rank %d has no staging buffer", ErrStaging, pr.r)
	}
	var size int64
	for i, st := range steps {
		if st.Kind != plan.StepCopy || st.Dst != plan.Staging || st.Src == plan.Staging {
			return 0, fmt.Errorf("%w: staging step %d is not a copy from cache into staging", statexfer.ErrMessage, i)
		}
		if st.SrcOff < 0 || st.Len <= 0 || st.DstOff < 0 || st.SrcOff+st.Len > pr.local.Len(st.Src) || st.DstOff+st.Len > pr.pool.Size() {
			return 0, fmt.Errorf("%w: staging step %d outside memory", statexfer.ErrBounds, i)
		}
		size = max(size, st.DstOff+st.Len)
	}
	if err := pr.p.readableAll(key.req, pr.local.Geo, steps); err != nil {
		return 0, err
	}
	off, err := pr.pool.TryGet(size)
	if err != nil {
		return 0, err
	}
	shifted := make([]plan.Step, len(steps))
	for i, st := range steps {
		st.DstOff += off
		shifted[i] = st
	}
	if h := pr.p.gatherHook; h != nil {
		h(key.req, key.drank)
	}
	if err := plan.RunSteps(pr.local.Engine, pr.local.Mem, shifted); err != nil {
		pr.putStaging(off)
		return 0, err
	}
	// The grant is checked under pr.mu (lock order: pr.mu, then p.mu):
	// a Forget whose grant removal comes first is seen here, and one that
	// comes later takes pr.mu after the range is recorded and frees it.
	pr.mu.Lock()
	keep, closed := pr.p.keepGather(key.req, grant)
	var old int64 = -1
	if keep {
		if pr.areas[key.req] == nil {
			pr.areas[key.req] = map[stageKey]int64{}
		}
		if o, dup := pr.areas[key.req][key]; dup {
			old = o
		}
		pr.areas[key.req][key] = off
	}
	pr.mu.Unlock()
	if old >= 0 {
		pr.putStaging(old)
	}
	switch {
	case closed:
		pr.putStaging(off)
		return 0, errGatherDropped
	case !keep: // forgotten while gathering
		pr.putStaging(off)
		return 0, fmt.Errorf("request %s was released while staging", key.req)
	}
	return off, nil
}

// keepGather: a finished gather of req under grant may be recorded (the
// grant still stands and Close has not begun); closed reports Close.
func (p *Prefill) keepGather(req string, grant uint64) (keep, closed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, true
	}
	g, ok := p.grants[req]
	return ok && g.token == grant, false
}

// maxRefusalsInFlight bounds the refusals being answered at once.
const maxRefusalsInFlight = 8

// replySoon answers a message that named no grant from a goroutine, at
// most maxRefusalsInFlight at once (more are dropped: D times out).
func (pr *prefillRank) replySoon(addr []byte, m *statexfer.Message) {
	select {
	case pr.p.refusals <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-pr.p.refusals }()
		pr.reply(addr, m)
	}()
}

// reply sends an answer to D's address (a lost answer times out on D).
func (pr *prefillRank) reply(addr []byte, m *statexfer.Message) {
	if len(addr) == 0 {
		return
	}
	pr.mu.Lock()
	peer := pr.peers[string(addr)]
	pr.mu.Unlock()
	if peer == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := pr.tr.Connect(ctx, addr)
		cancel()
		if err != nil {
			pr.p.cfg.Log.Warn("cannot answer decode", "rank", pr.r, "err", err)
			return
		}
		pr.mu.Lock()
		if old := pr.peers[string(addr)]; old != nil {
			p = old
		} else {
			pr.peers[string(addr)] = p
		}
		peer = p
		pr.mu.Unlock()
	}
	if err := peer.Notify(statexfer.AppendMessage(nil, m)); err != nil {
		pr.mu.Lock()
		if pr.peers[string(addr)] == peer {
			delete(pr.peers, string(addr)) // reconnect next time
		}
		pr.mu.Unlock()
		pr.p.cfg.Log.Warn("answer to decode failed", "rank", pr.r, "err", err)
	}
}

// Abort releases req's hold at once (the proxy gave up on it) when grant
// matches and no reader has claimed it; it reports whether it did. A
// claimed hold may be being read one-sided this very moment: it ends when
// its reader's completions or abort arrive, or its lease expires
// (ForgetUnclaimed).
func (p *Prefill) Abort(req string, grant uint64) bool {
	if !p.granted(req, grant) {
		p.ignored.Add(1)
		return false
	}
	if !p.ForgetUnclaimed(req) {
		return false
	}
	p.cfg.Holds.Abort(req)
	return true
}
