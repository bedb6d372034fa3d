package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// postChunk is about how many reads one posted batch holds: a plan's
// reads are posted in chunks so that copying starts before the last
// ones are posted (and a mapped batch above 256 KiB copies on its own
// goroutine).
const postChunk = 4096

// stepsPerMessage bounds a MsgStage part (a step encodes to at most ~60
// bytes, so a part stays well under a 64 KiB notification).
const stepsPerMessage = 900

// rankError is one decode rank's failure: the phase, and per P rank the
// indexes of the reads that failed (nil: every block is suspect).
type rankError struct {
	phase string
	reads map[int][]int
	err   error
}

// run executes one decode rank's plan for load k: scratch range, staging
// round trips, the bounds check of every read, the lease check, the reads,
// and the post-processing.
func (dr *decodeRank) run(ctx context.Context, k Key, p *peer, lr *LoadRequest, rs *RankStats, claim *claimWait) *rankError {
	pl := rs.Plan
	remotes := p.remotes[dr.r]
	// This load's own range of D's scratch buffer.
	var scratch int64
	if pl.ScratchBytes > 0 {
		if dr.pool == nil {
			return &rankError{phase: "stage", err: fmt.Errorf("%w: decode rank %d has no scratch buffer, the plan needs %d bytes", ErrStaging, dr.r, pl.ScratchBytes)}
		}
		off, err := dr.pool.Get(ctx, pl.ScratchBytes)
		if err != nil {
			return &rankError{phase: "stage", err: err}
		}
		defer func() {
			if err := dr.pool.Put(off); err != nil {
				dr.d.cfg.Log.Error("scratch pool", "rank", dr.r, "err", err)
			}
		}()
		scratch = off
	}
	t0 := time.Now()
	// Staging: each P rank gathers into a range of its pool and says where.
	shift := map[int]int64{}
	for i := range pl.Remotes {
		rp := &pl.Remotes[i]
		if len(rp.Gather) == 0 {
			continue
		}
		off, err := dr.stage(ctx, k, remotes[rp.Rank], lr, rp)
		if err != nil {
			return &rankError{phase: "stage", err: err}
		}
		shift[rp.Rank] = off
	}
	t1 := time.Now()
	rs.Stage = t1.Sub(t0)
	// Every read shifted into this load's ranges and checked against both
	// sides' bounds, in one pass, before anything is posted.
	runs := make([][]transport.Ranges, len(pl.Remotes))
	for i := range pl.Remotes {
		rp := &pl.Remotes[i]
		r := remotes[rp.Rank]
		if r == nil {
			return &rankError{phase: "plan", err: fmt.Errorf("%w: no handshake with prefill rank %d", ErrPeer, rp.Rank)}
		}
		rr, err := statexfer.ReadRuns(rp, r, dr.local, shift[rp.Rank], scratch)
		if err != nil {
			return &rankError{phase: "plan", err: err}
		}
		runs[i] = rr
	}
	// Nothing is read before P accepted the claim: consumed or replayed
	// params read nothing.
	if err := claim.wait(ctx); err != nil {
		return &rankError{phase: "claim", err: err}
	}
	dr.d.mu.Lock()
	err := dr.d.machine.CheckPost(k, dr.d.now())
	dr.d.mu.Unlock()
	if err != nil {
		return &rankError{phase: "lease", err: err}
	}
	type posted struct {
		rank  int
		first int // index of the batch's first read in the rank's reads
		batch transport.Batch
	}
	var batches []posted
	failed := map[int][]int{}
	var errs []error
	for i := range pl.Remotes {
		rp := &pl.Remotes[i]
		// Posted in chunks of about postChunk reads, so the first chunk
		// is copying while later ones are posted.
		first, n, from := 0, 0, 0
		for k, run := range runs[i] {
			n += len(run.Ranges)
			if n < postChunk && k < len(runs[i])-1 {
				continue
			}
			b, err := remotes[rp.Rank].Peer.ReadRanges(runs[i][from : k+1])
			if err != nil {
				all := make([]int, 0, len(rp.Reads)-first)
				for j := first; j < len(rp.Reads); j++ {
					all = append(all, j)
				}
				failed[rp.Rank] = all
				errs = append(errs, fmt.Errorf("post reads to prefill rank %d: %w", rp.Rank, err))
				break
			}
			batches = append(batches, posted{rp.Rank, first, b})
			first, n, from = first+n, 0, k+1
		}
	}
	t2 := time.Now()
	rs.Post = t2.Sub(t1)
	for _, b := range batches {
		res := transport.Wait(ctx, b.batch)
		if res.Err != nil {
			for _, j := range res.Failed {
				failed[b.rank] = append(failed[b.rank], b.first+j)
			}
			errs = append(errs, fmt.Errorf("prefill rank %d: %d reads: %w", b.rank, len(res.Failed), res.Err))
		}
	}
	if len(errs) > 0 {
		return &rankError{phase: "read", reads: failed, err: errors.Join(errs...)}
	}
	// Reads that completed after the lease ran out may hold reused blocks.
	dr.d.mu.Lock()
	err = dr.d.machine.CheckPost(k, dr.d.now())
	dr.d.mu.Unlock()
	if err != nil {
		return &rankError{phase: "lease", err: err}
	}
	t3 := time.Now()
	rs.Wait = t3.Sub(t2)
	post := pl.Post
	if scratch != 0 {
		post = make([]plan.Step, len(pl.Post))
		for i, s := range pl.Post {
			if s.Src == plan.Staging {
				s.SrcOff += scratch
			}
			if s.Dst == plan.Staging {
				s.DstOff += scratch
			}
			post[i] = s
		}
	}
	if err := plan.RunSteps(dr.local.Engine, dr.local.Mem, post); err != nil {
		return &rankError{phase: "post", err: fmt.Errorf("post-processing: %w", err)}
	}
	rs.Steps = time.Since(t3)
	return nil
}

// stage asks P rank rp.Rank to gather, and waits for the offset of its
// staging range; a full pool on P is retried with backoff until ctx ends.
func (dr *decodeRank) stage(ctx context.Context, k Key, r *statexfer.Remote, lr *LoadRequest, rp *plan.RemotePlan) (int64, error) {
	if r == nil {
		return 0, fmt.Errorf("%w: no handshake with prefill rank %d", ErrPeer, rp.Rank)
	}
	wk := waitKey{uint64(k), rp.Rank}
	backoff := time.Millisecond
	for {
		ch := make(chan *statexfer.Message, 1)
		dr.mu.Lock()
		dr.waiters[wk] = ch
		dr.mu.Unlock()
		err := dr.sendStage(k, r, lr, rp)
		var ans *statexfer.Message
		if err == nil {
			select {
			case ans = <-ch:
			case <-ctx.Done():
				err = fmt.Errorf("waiting for prefill rank %d to stage: %w", rp.Rank, context.Cause(ctx))
			}
		}
		dr.mu.Lock()
		delete(dr.waiters, wk)
		dr.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if ans.Err == "" {
			return ans.Offset, nil
		}
		if !ans.Retry {
			if ans.Err == errNoSuchHold.Error() {
				return 0, fmt.Errorf("%w: prefill rank %d: %s", ErrNoHold, rp.Rank, ans.Err)
			}
			return 0, fmt.Errorf("%w: prefill rank %d could not stage: %s", ErrStaging, rp.Rank, ans.Err)
		}
		select { // P's pool is full: backpressure
		case <-time.After(backoff):
			backoff = min(2*backoff, 50*time.Millisecond)
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: prefill rank %d: %s; gave up: %w", ErrStagingFull, rp.Rank, ans.Err, context.Cause(ctx))
		}
	}
}

func (dr *decodeRank) sendStage(k Key, r *statexfer.Remote, lr *LoadRequest, rp *plan.RemotePlan) error {
	parts := max(1, (len(rp.Gather)+stepsPerMessage-1)/stepsPerMessage)
	for i := 0; i < parts; i++ {
		steps := rp.Gather[i*stepsPerMessage : min(len(rp.Gather), (i+1)*stepsPerMessage)]
		m := &statexfer.Message{Type: statexfer.MsgStage, ReqID: lr.ReqID, Grant: lr.Grant, Xfer: uint64(k), DRank: dr.r,
			Part: i, Parts: parts, Steps: steps, Reply: dr.tr.Address()}
		if err := r.Peer.Notify(statexfer.AppendMessage(nil, m)); err != nil {
			return fmt.Errorf("staging request to prefill rank %d: %w", rp.Rank, err)
		}
	}
	return nil
}

// notifyDone tells every P rank of the notification plan that this rank's
// reads completed. A failed notification does not fail the request (its
// reads are complete; P's lease reclaims): it is counted and logged.
func (dr *decodeRank) notifyDone(k Key, p *peer, lr *LoadRequest, pl *plan.Plan) {
	for _, pr := range pl.Notify {
		r := p.remotes[dr.r][pr]
		var err error
		if r == nil {
			err = fmt.Errorf("no endpoint to prefill rank %d", pr)
		} else {
			err = r.Peer.Notify(statexfer.AppendMessage(nil, &statexfer.Message{Type: statexfer.MsgDone, ReqID: lr.ReqID, Grant: lr.Grant,
				Xfer: uint64(k), DRank: dr.r, Consumers: p.planner.Consumers(pr)}))
		}
		if err != nil {
			dr.d.notifyFailed.Add(1)
			dr.d.cfg.Log.Warn("read-completion notification failed; the prefill lease will reclaim", "peer", p.name(), "request", lr.ReqID, "prefill_rank", pr, "err", err)
		}
	}
}

// handle routes P's answers (MsgStaged, MsgLease) by transfer id.
func (dr *decodeRank) handle(_ transport.PeerID, msg []byte) {
	m, err := statexfer.DecodeMessage(msg)
	if err != nil {
		dr.d.dropped.Add(1)
		return
	}
	switch m.Type {
	case statexfer.MsgStaged, statexfer.MsgClaimed:
		wk := waitKey{m.Xfer, m.PRank}
		if m.Type == statexfer.MsgClaimed {
			wk.prank = claimRank
		}
		dr.mu.Lock()
		ch := dr.waiters[wk]
		dr.mu.Unlock()
		if ch == nil {
			dr.d.dropped.Add(1)
			return
		}
		select {
		case ch <- m:
		default:
		}
	case statexfer.MsgLease:
		d := dr.d
		d.mu.Lock()
		l := d.loads[Key(m.Xfer)]
		if l == nil || l.peer == nil || l.req != m.ReqID {
			d.mu.Unlock()
			d.dropped.Add(1)
			return
		}
		if m.Err != "" {
			d.machine.NoHold(Key(m.Xfer))
			d.mu.Unlock()
			l.cancel(fmt.Errorf("%w: %s: request %s: %s", ErrNoHold, l.peer.name(), m.ReqID, m.Err))
			return
		}
		d.machine.Lease(Key(m.Xfer), Time(time.Unix(0, m.Expiry).Add(-l.peer.offset).UnixNano()), d.now())
		d.mu.Unlock()
	default:
		dr.d.dropped.Add(1)
	}
}

// peerFailed: the transport says an endpoint broke; every peer entry with
// an endpoint of that id on this rank is evicted.
func (dr *decodeRank) peerFailed(id transport.PeerID, err error) {
	d := dr.d
	d.mu.Lock()
	var hit []*peer
	for _, p := range d.peers {
		if !isDone(p.ready) || p.err != nil {
			continue
		}
		for _, r := range p.remotes[dr.r] {
			if r.Peer.ID() == id {
				hit = append(hit, p)
				break
			}
		}
	}
	d.mu.Unlock()
	for _, p := range hit {
		d.evict(p, fmt.Errorf("%w: %s: %w", ErrPeer, p.name(), err))
	}
}

// failedBlocks maps failed reads of a plan to the decode blocks they were
// filling: a read into a cache region names the pages it covers; a read
// into scratch names the pages the post steps fill from that range.
func failedBlocks(g *groups.Geometry, req *plan.Request, pl *plan.Plan, reads map[int][]int) []BlockRef {
	owner := map[[2]int]int{} // (pool, block) -> group
	for gi, ids := range req.DBlocks {
		for _, id := range ids {
			if id != 0 {
				owner[[2]int{g.Groups[gi].Pool, id}] = gi
			}
		}
	}
	var out []BlockRef
	seen := map[BlockRef]bool{}
	mark := func(reg plan.Region, off, n int64) {
		if reg.Pool < 0 || reg.Pool >= len(g.Pools) || n <= 0 {
			return
		}
		stride := int64(g.Pools[reg.Pool].BlockStride())
		for b := off / stride; b <= (off+n-1)/stride; b++ {
			if gi, ok := owner[[2]int{reg.Pool, int(b)}]; ok {
				ref := BlockRef{Group: gi, Block: int(b)}
				if !seen[ref] {
					seen[ref] = true
					out = append(out, ref)
				}
			}
		}
	}
	// Failed reads into scratch taint ranges of it; post steps carry the
	// taint on (through further scratch ranges) to the cache pages.
	var bad []span
	for i := range pl.Remotes {
		rp := &pl.Remotes[i]
		for _, j := range reads[rp.Rank] {
			if j < 0 || j >= len(rp.Reads) {
				continue
			}
			rd := rp.Reads[j]
			if rd.Local == plan.Staging {
				bad = append(bad, span{rd.LocalOff, rd.Len})
			} else {
				mark(rd.Local, rd.LocalOff, rd.Len)
			}
		}
	}
	for _, s := range pl.Post {
		if s.Src != plan.Staging || !overlaps(bad, s.SrcOff, srcBytes(s)) {
			continue
		}
		if s.Dst == plan.Staging {
			bad = append(bad, span{s.DstOff, s.Bytes()})
		} else {
			mark(s.Dst, s.DstOff, s.Bytes())
		}
	}
	return out
}

func overlaps(spans []span, off, n int64) bool {
	for _, sp := range spans {
		if off < sp.off+sp.n && sp.off < off+n {
			return true
		}
	}
	return false
}

func srcBytes(s plan.Step) int64 {
	if s.Kind == plan.StepTranspose {
		return int64(s.Rows) * int64(s.Cols) * int64(s.ItemBytes)
	}
	return s.Len
}
