package statexfer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// stepsPerMessage bounds a MsgStage part (a step encodes to at most ~60
// bytes, so a part stays well under a 64 KiB notification).
const stepsPerMessage = 900

// ReadError reports the reads of a request that failed, per P rank: which
// read descriptors (indexes into RemotePlan.Reads) and why.
type ReadError struct {
	ReqID  string
	Failed map[int][]int // P rank -> failed read indexes
	Err    error
}

func (e *ReadError) Error() string {
	n := 0
	for _, f := range e.Failed {
		n += len(f)
	}
	return fmt.Sprintf("%v: request %s: %d reads failed: %v", ErrTransfer, e.ReqID, n, e.Err)
}

func (e *ReadError) Unwrap() []error { return []error{ErrTransfer, e.Err} }

// Executor runs plans on one D rank over a transport.
type Executor struct {
	DRank   int
	Local   *Local
	Remotes map[int]*Remote // by P rank
	// Address is this rank's transport address (P replies to staging
	// requests there).
	Address []byte
	// Consumers is the static notification plan: how many D ranks notify P
	// rank p (plan.Planner.Consumers).
	Consumers func(p int) int
	// StagingArea returns the offset and size of this D rank's area in P
	// rank p's staging buffer.
	StagingArea func(p int) (off, size int64)

	mu      sync.Mutex
	waiters map[string]chan error
}

func stageKey(p int, req string) string { return fmt.Sprintf("%d/%s", p, req) }

// Handle processes a control message addressed to D (MsgStaged).
func (e *Executor) Handle(m *Message) {
	if m.Type != MsgStaged {
		return
	}
	fromRank := m.PRank
	e.mu.Lock()
	ch := e.waiters[stageKey(fromRank, m.ReqID)]
	e.mu.Unlock()
	if ch == nil {
		return
	}
	var err error
	if m.Err != "" {
		err = fmt.Errorf("%w: prefill rank %d could not stage request %s: %s", ErrTransfer, fromRank, m.ReqID, m.Err)
	}
	select {
	case ch <- err:
	default:
	}
}

// RunStats times the phases of one Run.
type RunStats struct {
	Stage time.Duration // staging round trips (staged mode)
	Post  time.Duration // posting the reads
	Wait  time.Duration // from the last post to the last completion
	Steps time.Duration // D's post-processing
}

// Run executes p for request reqID: staging (if any), every read, the post
// steps, then the read-completion notifications. Every read is checked
// against the remote's bounds before anything is posted.
func (e *Executor) Run(ctx context.Context, reqID string, p *plan.Plan) (RunStats, error) {
	var st RunStats
	err := e.run(ctx, reqID, p, &st)
	return st, err
}

func (e *Executor) run(ctx context.Context, reqID string, p *plan.Plan, st *RunStats) error {
	for i := range p.Remotes {
		rp := &p.Remotes[i]
		r := e.Remotes[rp.Rank]
		if r == nil {
			return fmt.Errorf("%w: no handshake with prefill rank %d", ErrTransfer, rp.Rank)
		}
		if len(rp.Gather) > 0 {
			continue // reads target P's staging area, checked once it is known
		}
		if err := CheckPlan(rp, &r.Meta, e.Local.Len); err != nil {
			return err
		}
	}
	// Staging: P gathers into this D rank's area of its staging buffer.
	t0 := time.Now()
	var offsets map[int]int64 // staged plans only
	for i := range p.Remotes {
		rp := &p.Remotes[i]
		if len(rp.Gather) == 0 {
			continue
		}
		if offsets == nil {
			offsets = map[int]int64{}
		}
		off, size := e.StagingArea(rp.Rank)
		if rp.StagingBytes > size {
			return fmt.Errorf("%w: request %s needs %d staging bytes on prefill rank %d, its area holds %d", ErrTransfer, reqID, rp.StagingBytes, rp.Rank, size)
		}
		offsets[rp.Rank] = off
		if err := e.stage(ctx, reqID, rp, off); err != nil {
			return err
		}
	}
	t1 := time.Now()
	st.Stage = t1.Sub(t0)
	// Reads, one batch per P rank, all in flight together.
	type posted struct {
		rank  int
		batch transport.Batch
	}
	var batches []posted
	var postErr error
	for i := range p.Remotes {
		rp := &p.Remotes[i]
		r := e.Remotes[rp.Rank]
		ops := make([]transport.Op, 0, len(rp.Reads))
		shift := offsets[rp.Rank]
		var (
			lastL, lastR plan.Region
			lm           transport.Memory
			rm           transport.RemoteMemory
		)
		for i, rd := range rp.Reads {
			// Reads come grouped by region pair: look regions up on change only.
			if i == 0 || rd.Local != lastL {
				var ok bool
				if lm, ok = e.Local.Regions[rd.Local]; !ok {
					postErr = fmt.Errorf("%w: no local region %s", ErrBounds, rd.Local)
					break
				}
				lastL = rd.Local
			}
			if i == 0 || rd.Remote != lastR {
				var ok bool
				if rm, ok = r.regs[rd.Remote]; !ok {
					postErr = fmt.Errorf("%w: prefill rank %d has no region %s", ErrBounds, rp.Rank, rd.Remote)
					break
				}
				lastR = rd.Remote
			}
			ops = append(ops, transport.Op{Local: lm, LocalOff: uint64(rd.LocalOff), Remote: rm, RemoteOff: uint64(rd.RemoteOff + shift), Len: uint64(rd.Len)})
		}
		if postErr != nil {
			break
		}
		b, err := r.Peer.Read(ops)
		if err != nil {
			postErr = fmt.Errorf("post reads to prefill rank %d: %w", rp.Rank, err)
			break
		}
		batches = append(batches, posted{rp.Rank, b})
	}
	t2 := time.Now()
	st.Post = t2.Sub(t1)
	var failed *ReadError
	if postErr != nil {
		failed = &ReadError{ReqID: reqID, Failed: map[int][]int{}, Err: postErr}
	}
	for _, b := range batches {
		res := transport.Wait(ctx, b.batch)
		if res.Err != nil {
			if failed == nil {
				failed = &ReadError{ReqID: reqID, Failed: map[int][]int{}}
			}
			failed.Failed[b.rank] = res.Failed
			if failed.Err == nil {
				failed.Err = fmt.Errorf("prefill rank %d: %w", b.rank, res.Err)
			}
		}
	}
	if failed != nil {
		return failed
	}
	t3 := time.Now()
	st.Wait = t3.Sub(t2)
	if err := plan.RunSteps(e.Local.Mem, p.Post); err != nil {
		return fmt.Errorf("post-processing request %s: %w", reqID, err)
	}
	st.Steps = time.Since(t3)
	return e.notifyDone(reqID, p.Notify)
}

// notifyDone tells every P rank of the notification plan that the request's
// reads are complete.
func (e *Executor) notifyDone(reqID string, targets []int) error {
	var errs []error
	for _, pr := range targets {
		r := e.Remotes[pr]
		if r == nil {
			errs = append(errs, fmt.Errorf("%w: no handshake with prefill rank %d to notify", ErrTransfer, pr))
			continue
		}
		msg := AppendMessage(nil, &Message{Type: MsgDone, ReqID: reqID, DRank: e.DRank, Consumers: e.Consumers(pr)})
		if err := r.Peer.Notify(msg); err != nil {
			errs = append(errs, fmt.Errorf("notify prefill rank %d: %w", pr, err))
		}
	}
	return errors.Join(errs...)
}

// stage asks P rank rp.Rank to gather, and waits for its answer.
func (e *Executor) stage(ctx context.Context, reqID string, rp *plan.RemotePlan, off int64) error {
	ch := make(chan error, 1)
	key := stageKey(rp.Rank, reqID)
	e.mu.Lock()
	if e.waiters == nil {
		e.waiters = map[string]chan error{}
	}
	e.waiters[key] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.waiters, key)
		e.mu.Unlock()
	}()
	peer := e.Remotes[rp.Rank].Peer
	parts := max(1, (len(rp.Gather)+stepsPerMessage-1)/stepsPerMessage)
	for i := 0; i < parts; i++ {
		steps := rp.Gather[i*stepsPerMessage : min(len(rp.Gather), (i+1)*stepsPerMessage)]
		m := &Message{Type: MsgStage, ReqID: reqID, DRank: e.DRank, Part: i, Parts: parts, Offset: off, Steps: steps}
		if i == 0 {
			m.Reply = e.Address
		}
		if err := peer.Notify(AppendMessage(nil, m)); err != nil {
			return fmt.Errorf("staging request to prefill rank %d: %w", rp.Rank, err)
		}
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for prefill rank %d to stage request %s: %w", ErrTransfer, rp.Rank, reqID, ctx.Err())
	}
}

// Source is P's side of the protocol for one rank: it runs staging gathers
// and counts read-completion notifications.
type Source struct {
	Rank  int
	Local *Local
	Tr    transport.Transport
	// Released is called once per request when its expected number of
	// consumer notifications arrived.
	Released func(reqID string)
	// Heartbeat and Abort, when set, receive MsgHeartbeat and MsgAbort.
	Heartbeat func(reqID string)
	Abort     func(reqID string)

	mu     sync.Mutex
	counts map[string]int
	parts  map[string][]plan.Step
	reply  map[string][]byte
	peers  map[string]transport.Peer
}

// Handle processes a control message addressed to P.
func (s *Source) Handle(ctx context.Context, m *Message) {
	switch m.Type {
	case MsgHeartbeat:
		if s.Heartbeat != nil {
			s.Heartbeat(m.ReqID)
		}
	case MsgAbort:
		s.mu.Lock()
		delete(s.counts, m.ReqID)
		s.mu.Unlock()
		if s.Abort != nil {
			s.Abort(m.ReqID)
		}
	case MsgDone:
		s.mu.Lock()
		if s.counts == nil {
			s.counts = map[string]int{}
		}
		s.counts[m.ReqID]++
		done := s.counts[m.ReqID] == m.Consumers
		if done {
			delete(s.counts, m.ReqID)
		}
		s.mu.Unlock()
		if done && s.Released != nil {
			s.Released(m.ReqID)
		}
	case MsgStage:
		key := fmt.Sprintf("%d/%s", m.DRank, m.ReqID)
		s.mu.Lock()
		if s.parts == nil {
			s.parts, s.reply = map[string][]plan.Step{}, map[string][]byte{}
		}
		s.parts[key] = append(s.parts[key], m.Steps...)
		if m.Part == 0 {
			s.reply[key] = m.Reply
		}
		complete := m.Part == m.Parts-1
		steps, addr := s.parts[key], s.reply[key]
		if complete {
			delete(s.parts, key)
			delete(s.reply, key)
		}
		s.mu.Unlock()
		if !complete {
			return
		}
		ans := &Message{Type: MsgStaged, ReqID: m.ReqID, DRank: m.DRank, PRank: s.Rank}
		if err := s.gather(steps, m.Offset); err != nil {
			ans.Err = err.Error()
		}
		if p, err := s.peer(ctx, addr); err == nil {
			_ = p.Notify(AppendMessage(nil, ans)) // a lost answer times out on D
		}
	}
}

// gather runs staging steps with their destinations shifted into the
// requesting D rank's area, after checking they stay inside P's memory.
func (s *Source) gather(steps []plan.Step, off int64) error {
	shifted := make([]plan.Step, len(steps))
	for i, st := range steps {
		if st.Kind != plan.StepCopy || st.Dst != plan.Staging || st.Src == plan.Staging {
			return fmt.Errorf("%w: staging step %d is not a copy from cache into staging", ErrMessage, i)
		}
		if st.SrcOff < 0 || st.Len <= 0 || st.SrcOff+st.Len > s.Local.Len(st.Src) || off+st.DstOff+st.Len > s.Local.Len(plan.Staging) || st.DstOff < 0 {
			return fmt.Errorf("%w: staging step %d outside memory", ErrBounds, i)
		}
		st.DstOff += off
		shifted[i] = st
	}
	return plan.RunSteps(s.Local.Mem, shifted)
}

func (s *Source) peer(ctx context.Context, addr []byte) (transport.Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers == nil {
		s.peers = map[string]transport.Peer{}
	}
	if p, ok := s.peers[string(addr)]; ok {
		return p, nil
	}
	p, err := s.Tr.Connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	s.peers[string(addr)] = p
	return p, nil
}

// Broadcast sends a control message about reqID (MsgHeartbeat, MsgAbort) to
// every P rank this executor knows, returning the errors joined.
func (e *Executor) Broadcast(t MsgType, reqID string) error {
	var errs []error
	msg := AppendMessage(nil, &Message{Type: t, ReqID: reqID, DRank: e.DRank})
	for pr, r := range e.Remotes {
		if err := r.Peer.Notify(msg); err != nil {
			errs = append(errs, fmt.Errorf("prefill rank %d: %w", pr, err))
		}
	}
	return errors.Join(errs...)
}
