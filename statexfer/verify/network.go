package verify

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Staging computes, from the job's plans, the size of each D rank's area in
// every P rank's staging buffer (the largest gather any request needs) and
// each D rank's scratch size.
func (j *Job) Staging() (area []int64, scratch []int64, err error) {
	area = make([]int64, j.Cfg.P.TP)
	scratch = make([]int64, j.Cfg.D.TP)
	for d := 0; d < j.Cfg.D.TP; d++ {
		for i := range j.reqs {
			p, err := j.PlanRequest(d, i)
			if err != nil {
				return nil, nil, err
			}
			scratch[d] = max(scratch[d], p.ScratchBytes)
			for _, rp := range p.Remotes {
				area[rp.Rank] = max(area[rp.Rank], rp.StagingBytes)
			}
		}
	}
	return area, scratch, nil
}

// consumerIndex is d's position among the D ranks that notify P rank p.
func (j *Job) consumerIndex(p, d int) int {
	n := 0
	for dd := 0; dd < d; dd++ {
		if slices.Contains(j.Planner.Targets(dd), p) {
			n++
		}
	}
	return n
}

// PRank is one running prefill rank of a transport verification.
type PRank struct {
	Rank     int
	Local    *statexfer.Local
	Source   *statexfer.Source
	released atomic.Int64
	done     chan struct{}
	once     sync.Once
	want     int64
}

// StartP registers rank memory with tr, fills it with the pattern and
// starts counting read-completion notifications. d must be the Dispatch
// whose Handlers tr was built with.
func (j *Job) StartP(rank int, tr transport.Transport, d *statexfer.Dispatch, area int64) (*PRank, error) {
	g := j.PSide.Ranks[rank]
	staging := area * int64(j.Planner.Consumers(rank))
	l, err := statexfer.NewLocal(tr, g, j.NumP, staging)
	if err != nil {
		return nil, err
	}
	j.FillP(rank, l.Mem)
	p := &PRank{Rank: rank, Local: l, done: make(chan struct{}), want: int64(len(j.reqs))}
	p.Source = &statexfer.Source{Rank: rank, Local: l, Tr: tr, Released: func(string) {
		if p.released.Add(1) >= p.want {
			p.once.Do(func() { close(p.done) })
		}
	}}
	d.SetSource(p.Source)
	return p, nil
}

// Released is the number of requests this P rank released.
func (p *PRank) Released() int { return int(p.released.Load()) }

// Wait waits until every request was released (or ctx ends).
func (p *PRank) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("prefill rank %d: %d of %d requests released: %w", p.Rank, p.Released(), p.want, ctx.Err())
	}
}

// DRank is one decode rank set up for a transport run.
type DRank struct {
	Rank  int
	Local *statexfer.Local
	Exec  *statexfer.Executor
}

// SetupD registers decode rank memory with tr, prepares it (garbage and
// prefix hits) and imports the P ranks it needs from their metadata, each
// checked against the geometry D computes for P's configuration. d must be
// the Dispatch whose Handlers tr was built with.
func (j *Job) SetupD(ctx context.Context, rank int, tr transport.Transport, d *statexfer.Dispatch, metas []statexfer.RankMeta, area []int64, scratch int64) (*DRank, error) {
	g := j.DSide.Ranks[rank]
	l, err := statexfer.NewLocal(tr, g, j.NumD, scratch)
	if err != nil {
		return nil, err
	}
	j.PrepareD(rank, l.Mem)
	ex := &statexfer.Executor{DRank: rank, Local: l, Remotes: map[int]*statexfer.Remote{}, Address: tr.Address(),
		Consumers: j.Planner.Consumers,
		StagingArea: func(p int) (int64, int64) {
			return int64(j.consumerIndex(p, rank)) * area[p], area[p]
		}}
	d.SetExecutor(ex)
	for _, pr := range j.Planner.Targets(rank) {
		if pr >= len(metas) {
			l.Close()
			return nil, fmt.Errorf("no metadata for prefill rank %d", pr)
		}
		m := metas[pr]
		pg, err := groups.NewGeometry(j.Cfg.Model, m.Config, m.Rank)
		if err == nil {
			_, err = m.CheckAgainst(pg)
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("prefill rank %d metadata: %w", pr, err)
		}
		r, err := statexfer.Import(ctx, tr, m)
		if err != nil {
			l.Close()
			return nil, err
		}
		ex.Remotes[pr] = r
	}
	return &DRank{Rank: rank, Local: l, Exec: ex}, nil
}

// RunD runs decode rank rank over tr: SetupD, every request's plan
// executed with real reads and notifications, then the memory check.
func (j *Job) RunD(ctx context.Context, rank int, tr transport.Transport, d *statexfer.Dispatch, metas []statexfer.RankMeta, area []int64, scratch int64) (*Result, error) {
	dr, err := j.SetupD(ctx, rank, tr, d, metas, area, scratch)
	if err != nil {
		return nil, err
	}
	defer dr.Local.Close()
	res := &Result{}
	for i := range j.reqs {
		p, err := j.PlanRequest(rank, i)
		if err != nil {
			return nil, fmt.Errorf("plan for decode rank %d: %w", rank, err)
		}
		res.Account(p)
		if _, err := dr.Exec.Run(ctx, j.ReqID(i), p); err != nil {
			return nil, fmt.Errorf("decode rank %d: %w", rank, err)
		}
	}
	j.CheckD(rank, dr.Local.Mem, res)
	return res, nil
}

// RunDRanks runs the given decode ranks concurrently (RunD), each on the
// transport open returns for it (built with that Dispatch's handlers), and
// merges their results. The first error wins.
func (j *Job) RunDRanks(ctx context.Context, ranks []int, open func(r int) (transport.Transport, *statexfer.Dispatch, error),
	metas []statexfer.RankMeta, area, scratch []int64) (*Result, error) {
	res := &Result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for _, r := range ranks {
		tr, d, err := open(r)
		if err != nil {
			return nil, fmt.Errorf("decode rank %d: %w", r, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dr, err := j.RunD(ctx, r, tr, d, metas, area, scratch[r])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			res.Merge(dr)
		}()
	}
	wg.Wait()
	return res, firstErr
}

// TransportFactory builds a transport for a rank of a side ("prefill" or
// "decode") with the given handlers.
type TransportFactory func(side string, rank int, h transport.Handlers) (transport.Transport, error)

// RunTransport performs a verification with every rank in this process,
// each with its own transport from newTr: P ranks publish metadata (through
// the handshake wire format), D ranks import it, execute their plans with
// real reads and notifications, and every P rank must see every request
// released.
func RunTransport(ctx context.Context, cfg Config, name string, newTr TransportFactory) (*Result, error) {
	j, err := NewJob(cfg)
	if err != nil {
		return nil, err
	}
	area, scratch, err := j.Staging()
	if err != nil {
		return nil, err
	}
	var closers []transport.Transport
	defer func() {
		for _, t := range closers {
			t.Close()
		}
	}()
	pRanks := make([]*PRank, j.Cfg.P.TP)
	metas := make([]statexfer.RankMeta, j.Cfg.P.TP)
	for r := range pRanks {
		d := &statexfer.Dispatch{Ctx: ctx}
		tr, err := newTr("prefill", r, d.Handlers())
		if err != nil {
			return nil, err
		}
		closers = append(closers, tr)
		if pRanks[r], err = j.StartP(r, tr, d, area[r]); err != nil {
			return nil, err
		}
		metas[r] = pRanks[r].Local.Meta("prefill", 0, tr.Address(), time.Now())
	}
	// Through the wire format, as a remote D would get it.
	wire, err := statexfer.EncodeRankMetas(metas)
	if err != nil {
		return nil, err
	}
	if metas, err = statexfer.DecodeRankMetas(wire); err != nil {
		return nil, err
	}
	res := j.NewResult()
	res.Transport = name
	ranks := make([]int, j.Cfg.D.TP)
	for r := range ranks {
		ranks[r] = r
	}
	dres, err := j.RunDRanks(ctx, ranks, func(r int) (transport.Transport, *statexfer.Dispatch, error) {
		d := &statexfer.Dispatch{Ctx: ctx}
		tr, err := newTr("decode", r, d.Handlers())
		if err == nil {
			closers = append(closers, tr)
		}
		return tr, d, err
	}, metas, area, scratch)
	if err != nil {
		return nil, err
	}
	res.Merge(dres)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	released := len(j.reqs)
	for _, p := range pRanks {
		if err := p.Wait(wctx); err != nil {
			return nil, err
		}
		released = min(released, p.Released())
	}
	res.PrefillReleased = released
	res.Finish()
	return res, nil
}
