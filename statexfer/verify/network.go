package verify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Staging computes, from the job's plans, the staging pool each P rank
// needs (every consumer D rank's largest gather at once) and each D rank's
// scratch pool (its largest plan's). In Auto mode the pools are sized for
// staged plans: the sessions' planners price reads by the path their
// transport takes, which the job's planner does not know, and stage only
// what fits the pools.
func (j *Job) Staging() (pool []int64, scratch []int64, err error) {
	area := make([]int64, j.Cfg.P.TP)
	scratch = make([]int64, j.Cfg.D.TP)
	mode := j.Cfg.Mode
	if mode == plan.Auto {
		mode = plan.Staged
	}
	for d := 0; d < j.Cfg.D.TP; d++ {
		for i := range j.reqs {
			p, err := j.Planner.Plan(d, j.reqs[i].planRequest(), mode)
			if err != nil {
				return nil, nil, err
			}
			scratch[d] = max(scratch[d], p.ScratchBytes)
			for _, rp := range p.Remotes {
				area[rp.Rank] = max(area[rp.Rank], rp.StagingBytes)
			}
		}
	}
	pool = make([]int64, len(area))
	for p, a := range area {
		if a > 0 {
			// One range per consumer in flight, each aligned.
			pool[p] = int64(j.Planner.Consumers(p)) * (a + 64)
		}
	}
	return pool, scratch, nil
}

// Grant is request i's grant token (both sides of a verification derive
// it; in serving P draws it at random).
func (j *Job) Grant(i int) uint64 { return (j.Cfg.Seed^0x9e3779b97f4a7c15)*uint64(2*i+1) | 1 }

// hostedPool returns the hosted ranks (nil: all tp of them) and the pool
// size that serves every one of them (the largest of theirs).
func hostedPool(ranks []int, tp int, sizes []int64) ([]int, int64) {
	if ranks == nil {
		for r := range tp {
			ranks = append(ranks, r)
		}
	}
	var n int64
	for _, r := range ranks {
		n = max(n, sizes[r])
	}
	return ranks, n
}

// PrefillEngineID names the prefill side of a verification.
const PrefillEngineID = "prefill"

// Prefill is the running P side of a transport verification (some or all
// of its ranks): a session whose holds are the job's requests.
type Prefill struct {
	Session *session.Prefill
	holds   *verifyHolds
}

// verifyHolds counts, per rank, the requests whose consumers all notified.
type verifyHolds struct {
	mu       sync.Mutex
	released map[int]int
	want     int
	ranks    int // how many ranks are hosted
	hosted   []int
	done     chan struct{}
	closed   bool
}

func (h *verifyHolds) Released(_ string, rank int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released[rank]++
	if h.closed || len(h.released) < h.ranks {
		return
	}
	for _, n := range h.released {
		if n < h.want {
			return
		}
	}
	h.closed = true
	close(h.done)
}

// Extend: every request stays held for the whole verification (its
// pages are never reused, and each process's holds cover only its own
// ranks: a decode process may claim a request after another process's
// reads released this process's part of it).
func (h *verifyHolds) Extend(string) (time.Time, bool) { return time.Now().Add(time.Hour), true }
func (h *verifyHolds) Abort(string)                    {}

// StartP starts the P side of the job for the given ranks (nil: all):
// registered memory filled with the pattern, staging pools, every request
// granted. bootID names the incarnation (all processes of one P share it).
func (j *Job) StartP(ranks []int, bootID string, newTr session.TransportFactory, pool []int64) (*Prefill, error) {
	ranks, staging := hostedPool(ranks, j.Cfg.P.TP, pool)
	h := &verifyHolds{released: map[int]int{}, want: len(j.reqs), ranks: len(ranks), hosted: ranks, done: make(chan struct{})}
	s, err := session.NewPrefill(session.PrefillConfig{EngineID: PrefillEngineID, BootID: bootID, Side: j.PSide, Ranks: ranks,
		StagingBytes: staging, Memory: j.Cfg.Memory, Transports: newTr, Holds: h})
	if err != nil {
		return nil, err
	}
	for _, r := range ranks {
		if err := j.FillP(r, s.Local(r).Mem); err != nil {
			s.Close()
			return nil, err
		}
	}
	for i := range j.reqs {
		if err := s.Register(j.ReqID(i), j.Grant(i), j.reqs[i].pIDs); err != nil {
			s.Close()
			return nil, err
		}
	}
	return &Prefill{Session: s, holds: h}, nil
}

// Released is the smallest number of requests a hosted rank released.
func (p *Prefill) Released() int {
	p.holds.mu.Lock()
	defer p.holds.mu.Unlock()
	n := p.holds.want
	for _, r := range p.holds.hosted {
		n = min(n, p.holds.released[r])
	}
	return n
}

// Wait waits until every hosted rank released every request (or ctx ends).
func (p *Prefill) Wait(ctx context.Context) error {
	select {
	case <-p.holds.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("prefill: %d of %d requests released on every rank: %w", p.Released(), p.holds.want, ctx.Err())
	}
}

// StaticFetcher answers every handshake with the given metadata (a
// verification whose P ranks are in the same process).
func StaticFetcher(metas []statexfer.RankMeta) (session.Fetcher, error) {
	wire, err := statexfer.EncodeRankMetas(metas)
	if err != nil {
		return nil, err
	}
	return func(context.Context, string, int) (session.Handshake, error) {
		return session.Handshake{Payload: wire}, nil
	}, nil
}

// Decode is the running D side of a transport verification.
type Decode struct {
	Session *session.Decode
	Ranks   []int
	Peer    session.PeerRef
	// Handshake is how long the connection to P took (metadata, imports).
	Handshake time.Duration
}

// StartD starts the D side for the given ranks (nil: all): registered
// memory prepared with garbage and prefix hits, and the handshake with P
// through fetch.
func (j *Job) StartD(ctx context.Context, ranks []int, newTr session.TransportFactory, fetch session.Fetcher, scratch []int64) (*Decode, error) {
	ranks, pool := hostedPool(ranks, j.Cfg.D.TP, scratch)
	s, err := session.NewDecode(session.DecodeConfig{EngineID: "decode", Model: j.Cfg.Model, Side: j.DSide, Ranks: ranks, StagingBytes: pool,
		Memory: j.Cfg.Memory, Transports: newTr, Fetch: fetch})
	if err != nil {
		return nil, err
	}
	for _, r := range ranks {
		if err := j.PrepareD(r, s.Local(r).Mem); err != nil {
			s.Close()
			return nil, err
		}
	}
	d := &Decode{Session: s, Ranks: ranks, Peer: session.PeerRef{EngineID: PrefillEngineID, Host: "verify"}}
	t0 := time.Now()
	if _, err := s.Connect(ctx, d.Peer); err != nil {
		s.Close()
		return nil, err
	}
	d.Handshake = time.Since(t0)
	return d, nil
}

// Run loads every request of the job (through session.Decode.Load, as
// serving does) and checks D's memory.
func (d *Decode) Run(ctx context.Context, j *Job) (*Result, error) {
	res := &Result{}
	for i, r := range j.reqs {
		st, err := d.Session.Load(ctx, session.LoadRequest{Peer: d.Peer, ReqID: j.ReqID(i), Grant: j.Grant(i), Mode: j.Cfg.Mode, Req: r.planRequest()})
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		for _, rk := range d.Ranks {
			res.Account(st.Ranks[rk].Plan)
		}
		if j.Cfg.Progress != nil {
			j.Cfg.Progress()
		}
	}
	for _, rk := range d.Ranks {
		if err := j.CheckD(rk, d.Session.Local(rk).Mem, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// TransportFactory builds a transport for a rank of a side ("prefill" or
// "decode") with the given handlers.
type TransportFactory func(side string, rank int, h transport.Handlers) (transport.Transport, error)

// RunTransport performs a verification with every rank in this process,
// each with its own transport from newTr: the P session publishes
// metadata (through the handshake wire format), the D session imports it
// and loads every request with real reads and notifications, and every P
// rank must see every request released.
func RunTransport(ctx context.Context, cfg Config, name string, newTr TransportFactory) (*Result, error) {
	j, err := NewJob(cfg)
	if err != nil {
		return nil, err
	}
	pool, scratch, err := j.Staging()
	if err != nil {
		return nil, err
	}
	pre, err := j.StartP(nil, "", func(r int, h transport.Handlers) (transport.Transport, error) { return newTr("prefill", r, h) }, pool)
	if err != nil {
		return nil, err
	}
	defer pre.Session.Close()
	fetch, err := StaticFetcher(pre.Session.Metas())
	if err != nil {
		return nil, err
	}
	dec, err := j.StartD(ctx, nil, func(r int, h transport.Handlers) (transport.Transport, error) { return newTr("decode", r, h) }, fetch, scratch)
	if err != nil {
		return nil, err
	}
	defer dec.Session.Close()
	res := j.NewResult()
	res.Transport = name
	dres, err := dec.Run(ctx, j)
	if err != nil {
		return nil, err
	}
	res.Merge(dres)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pre.Wait(wctx); err != nil {
		return nil, err
	}
	res.PrefillReleased = pre.Released()
	res.Finish()
	return res, nil
}
