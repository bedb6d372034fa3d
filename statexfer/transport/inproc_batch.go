package transport

import (
	"fmt"
	"sync"
)

// inprocChunk bounds how much one uninterrupted copy moves, so Cancel, Close
// and a dying remote take effect inside large ops.
const inprocChunk = 1 << 20

// inprocPeer is one Peer handle on an inproc link. Several handles may share
// a link (and its PeerID).
type inprocPeer struct {
	t      *Inproc
	link   *inprocLink
	closed bool // under t.mu
}

var _ Peer = (*inprocPeer)(nil)

// ID implements Peer.
func (p *inprocPeer) ID() PeerID { return p.link.id }

// usable reports why p cannot be used now, or nil.
func (p *inprocPeer) usable() error {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	return p.usableLocked()
}

func (p *inprocPeer) usableLocked() error {
	switch {
	case p.t.closed:
		return fmt.Errorf("%w: inproc %d", ErrClosed, p.t.id)
	case p.closed:
		return fmt.Errorf("%w: inproc peer %d", ErrClosed, p.link.id)
	case p.link.failed != nil:
		return p.link.failed
	}
	return nil
}

// Import implements Peer. The key must name live memory of this peer's
// transport, with the same address and length.
func (p *inprocPeer) Import(d MemDesc) (RemoteMemory, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	owner, id, err := parseInprocKey(d.Key)
	if err != nil {
		return nil, err
	}
	r := p.link.remote
	if owner != r.id {
		return nil, fmt.Errorf("%w: key of inproc %d used on a peer to inproc %d", ErrBadKey, owner, r.id)
	}
	r.mu.Lock()
	m := r.mems[id]
	r.mu.Unlock()
	if r.dead.Load() {
		return nil, fmt.Errorf("%w: inproc %d closed", ErrDisconnected, r.id)
	}
	if m == nil || m.closed.Load() {
		return nil, fmt.Errorf("%w: no memory %d at inproc %d", ErrBadKey, id, r.id)
	}
	if d.Addr != m.addr || d.Len != uint64(len(m.buf)) || d.Kind != m.kind {
		return nil, fmt.Errorf("%w: desc [%#x, +%d) %s does not match memory %d [%#x, +%d) %s",
			ErrBadKey, d.Addr, d.Len, d.Kind, id, m.addr, len(m.buf), m.kind)
	}
	d.Key = append([]byte(nil), d.Key...)
	return &inprocRemote{link: p.link, mem: m, desc: d}, nil
}

// Read implements Peer.
func (p *inprocPeer) Read(ops []Op) (Batch, error) { return p.post(ops, false) }

// ReadRanges implements Peer.
func (p *inprocPeer) ReadRanges(runs []Ranges) (Batch, error) { return p.post(Flatten(runs), false) }

// Write implements Peer.
func (p *inprocPeer) Write(ops []Op) (Batch, error) { return p.post(ops, true) }

func (p *inprocPeer) post(ops []Op, write bool) (Batch, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	for i, op := range ops {
		if err := CheckOp(i, op); err != nil {
			return nil, err
		}
		if lm, ok := op.Local.(*inprocMem); !ok || lm.owner != p.t {
			return nil, fmt.Errorf("%w: op %d: local memory not from this transport", ErrBadKey, i)
		} else if lm.closed.Load() {
			if err := p.usable(); err != nil {
				return nil, err // a Close released it: report the Close
			}
			return nil, fmt.Errorf("%w: op %d: local memory released", ErrBadKey, i)
		}
		if rm, ok := op.Remote.(*inprocRemote); !ok || rm.link != p.link {
			return nil, fmt.Errorf("%w: op %d: remote memory not imported through this peer", ErrBadKey, i)
		}
	}
	b := &inprocBatch{
		peer:  p,
		write: write,
		ops:   append([]Op(nil), ops...),
		done:  make(chan struct{}),
	}
	if len(ops) == 0 {
		b.state = batchDone
		close(b.done)
		return b, nil
	}
	t := p.t
	t.mu.Lock()
	if err := p.usableLocked(); err != nil {
		t.mu.Unlock()
		return nil, err
	}
	t.inflight[b] = struct{}{}
	t.queue = append(t.queue, b)
	t.workCond.Signal()
	t.mu.Unlock()
	return b, nil
}

// Notify implements Peer. The message is queued at the remote when Notify
// returns, after anything this side did before.
func (p *inprocPeer) Notify(msg []byte) error {
	if err := p.usable(); err != nil {
		return err
	}
	return p.link.remote.deliver(p.t, msg)
}

// Close implements Peer. Batches posted through this handle fail with
// ErrClosed; other handles to the same remote are not affected.
func (p *inprocPeer) Close() error {
	t := p.t
	t.mu.Lock()
	if p.closed {
		t.mu.Unlock()
		return nil
	}
	p.closed = true
	var abort []*inprocBatch
	for b := range t.inflight {
		if b.peer == p {
			abort = append(abort, b)
		}
	}
	t.mu.Unlock()
	abortAll(abort, fmt.Errorf("%w: inproc peer %d", ErrClosed, p.link.id))
	return nil
}

type batchState uint8

const (
	batchQueued batchState = iota
	batchRunning
	batchDone
)

// inprocBatch is a batch posted on an inproc peer. Its ops run on the
// initiator's worker, in order.
type inprocBatch struct {
	peer  *inprocPeer
	write bool
	ops   []Op
	done  chan struct{}

	mu    sync.Mutex
	state batchState
	stop  error // why the batch must stop (cancel, close, disconnect)
	res   Result
}

var _ Batch = (*inprocBatch)(nil)

// Done implements Batch.
func (b *inprocBatch) Done() <-chan struct{} { return b.done }

// Result implements Batch.
func (b *inprocBatch) Result() Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Result{Err: b.res.Err, Failed: append([]int(nil), b.res.Failed...)}
}

// Cancel implements Batch. A batch still queued settles at once; a running
// one stops at the next chunk boundary.
func (b *inprocBatch) Cancel() {
	b.abort(fmt.Errorf("%w: batch of %d ops", ErrCanceled, len(b.ops)))
}

// abort makes every op not yet complete fail with err.
func (b *inprocBatch) abort(err error) {
	b.mu.Lock()
	if b.state == batchDone {
		b.mu.Unlock()
		return
	}
	if b.stop == nil {
		b.stop = err
	}
	if b.state == batchRunning {
		b.mu.Unlock()
		return
	}
	failed := make([]int, len(b.ops))
	for i := range failed {
		failed[i] = i
	}
	b.res = Result{Err: b.stop, Failed: failed}
	b.state = batchDone
	b.mu.Unlock()
	b.settle()
}

// stopped returns the reason the batch must stop, or nil.
func (b *inprocBatch) stopped() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stop
}

// settle forgets a finished batch and closes Done.
func (b *inprocBatch) settle() {
	t := b.peer.t
	t.mu.Lock()
	delete(t.inflight, b)
	t.mu.Unlock()
	close(b.done)
}

// work is the worker loop: it runs queued batches one at a time.
func (t *Inproc) work() {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		for len(t.queue) == 0 && !t.closed {
			t.workCond.Wait()
		}
		if len(t.queue) == 0 {
			t.mu.Unlock()
			return
		}
		b := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		t.mu.Unlock()
		b.run()
	}
}

// run executes the batch's ops in order. After a stop, every remaining op
// fails with its reason.
func (b *inprocBatch) run() {
	b.mu.Lock()
	if b.state != batchQueued {
		b.mu.Unlock()
		return
	}
	b.state = batchRunning
	b.mu.Unlock()

	var res Result
	var moved uint64
	for i := range b.ops {
		err := b.stopped()
		if err == nil {
			err = b.copyOp(&b.ops[i])
		}
		if err != nil {
			if res.Err == nil {
				res.Err = err
			}
			res.Failed = append(res.Failed, i)
			continue
		}
		moved += b.ops[i].Len
	}
	b.peer.t.doneBatches.Add(1)
	b.peer.t.doneBytes.Add(moved)
	b.mu.Lock()
	b.res = res
	b.state = batchDone
	b.mu.Unlock()
	b.settle()
}

// copyOp moves one op's bytes in chunks, checking for a stop between them.
func (b *inprocBatch) copyOp(op *Op) error {
	lm := op.Local.(*inprocMem)
	rm := op.Remote.(*inprocRemote).mem
	if lm.closed.Load() {
		return fmt.Errorf("%w: local memory released", ErrClosed)
	}
	// The owner's shutdown sets dead before releasing its memory: load in
	// the other order so a dying remote reads as a disconnect, never as a
	// bad key.
	if released := rm.closed.Load(); rm.owner.dead.Load() {
		return fmt.Errorf("%w: inproc %d closed", ErrDisconnected, rm.owner.id)
	} else if released {
		return fmt.Errorf("%w: remote memory released", ErrBadKey)
	}
	dst := lm.buf[op.LocalOff : op.LocalOff+op.Len]
	src := rm.buf[op.RemoteOff : op.RemoteOff+op.Len]
	if b.write {
		dst, src = src, dst
	}
	for {
		n := copy(dst, src[:min(len(src), inprocChunk)])
		dst, src = dst[n:], src[n:]
		if len(src) == 0 {
			return nil
		}
		if err := b.stopped(); err != nil {
			return err
		}
	}
}
