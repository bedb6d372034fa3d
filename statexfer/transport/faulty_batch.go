package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// faultBatch is a batch posted through a faultPeer: the ops that were not
// failed by injection run as one inner batch; the batch settles when that
// batch has settled and the longest injected delay has passed.
type faultBatch struct {
	peer   *faultPeer
	n      int
	inner  Batch // nil when every op was injected to fail
	index  []int // inner op index -> op index
	causes []error
	delay  time.Duration
	slow   []int // delayed op indexes
	done   chan struct{}

	ctx    context.Context // ends on abort or wrapper close
	cancel context.CancelFunc

	mu      sync.Mutex
	stop    error // why the batch was aborted (first reason)
	res     Result
	settled bool
}

var _ Batch = (*faultBatch)(nil)

// post validates ops, applies the plan's decisions and posts the rest.
func (p *faultPeer) post(ops []Op, kind OpKind) (Batch, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	for i, op := range ops {
		if err := CheckOp(i, op); err != nil {
			return nil, err
		}
	}
	w := p.w
	call := w.plan.nextCall(kind)
	b := &faultBatch{
		peer:   p,
		n:      len(ops),
		causes: make([]error, len(ops)),
		done:   make(chan struct{}),
	}
	b.ctx, b.cancel = context.WithCancel(w.ctx)
	var disconnect bool
	var sub []Op
	for i, op := range ops {
		f := w.plan.hit(kind, call, i, p.ID())
		switch f.Kind {
		case FaultFail:
			b.causes[i] = fmt.Errorf("%w: %v call %d op %d", ErrInjected, kind, call, i)
			continue
		case FaultDisconnect:
			disconnect = true
		case FaultDelay:
			b.delay = max(b.delay, f.Delay)
			b.slow = append(b.slow, i)
		}
		sub = append(sub, op)
		b.index = append(b.index, i)
	}
	if disconnect {
		err := fmt.Errorf("%w: %w: %v call %d", ErrDisconnected, ErrInjected, kind, call)
		failed := make([]int, len(ops))
		for i := range failed {
			failed[i] = i
		}
		b.res = Result{Err: err, Failed: failed}
		b.settled = true
		b.cancel()
		close(b.done)
		w.failPeer(p.ID(), err)
		return b, nil
	}
	if len(sub) > 0 {
		var err error
		if kind == OpRead {
			b.inner, err = p.inner.Read(sub)
		} else {
			b.inner, err = p.inner.Write(sub)
		}
		if err != nil {
			b.cancel()
			return nil, err
		}
	}

	w.mu.Lock()
	if err := p.usableLocked(); err != nil {
		w.mu.Unlock()
		b.cancel()
		if b.inner != nil {
			b.inner.Cancel()
		}
		return nil, err
	}
	w.batches[b] = struct{}{}
	w.wg.Add(1)
	w.mu.Unlock()
	go b.run()
	return b, nil
}

// Done implements Batch.
func (b *faultBatch) Done() <-chan struct{} { return b.done }

// Result implements Batch.
func (b *faultBatch) Result() Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Result{Err: b.res.Err, Failed: slices.Clone(b.res.Failed)}
}

// Cancel implements Batch: the inner batch is canceled and a pending delay
// ends; delayed ops then fail with ErrCanceled.
func (b *faultBatch) Cancel() {
	b.abort(fmt.Errorf("%w: batch of %d ops", ErrCanceled, b.n))
}

// abort stops the batch with err (the first reason wins).
func (b *faultBatch) abort(err error) {
	b.mu.Lock()
	if b.settled {
		b.mu.Unlock()
		return
	}
	if b.stop == nil {
		b.stop = err
	}
	b.mu.Unlock()
	b.cancel()
	if b.inner != nil {
		b.inner.Cancel()
	}
}

// run waits for the inner batch and the delay, then settles.
func (b *faultBatch) run() {
	w := b.peer.w
	defer w.wg.Done()
	defer b.cancel()
	if b.inner != nil {
		<-b.inner.Done()
	}
	interrupted := false
	if b.delay > 0 {
		if b.ctx.Err() == nil {
			w.plan.sleeper()(b.ctx, b.delay)
		}
		interrupted = b.ctx.Err() != nil
	}

	b.mu.Lock()
	stop := b.stop
	if stop == nil && b.ctx.Err() != nil {
		stop = fmt.Errorf("%w: faulty", ErrClosed) // the wrapper closed
	}
	causes := b.causes
	if b.inner != nil {
		r := b.inner.Result()
		cause := r.Err
		if stop != nil && errors.Is(cause, ErrCanceled) {
			cause = stop // we canceled it: report why
		}
		for _, j := range r.Failed {
			causes[b.index[j]] = cause
		}
	}
	if interrupted {
		for _, i := range b.slow {
			if causes[i] == nil {
				causes[i] = stop
			}
		}
	}
	var res Result
	for i, c := range causes {
		if c != nil {
			res.Failed = append(res.Failed, i)
			if res.Err == nil {
				res.Err = c
			}
		}
	}
	b.res = res
	b.settled = true
	b.mu.Unlock()

	w.mu.Lock()
	delete(w.batches, b)
	w.mu.Unlock()
	close(b.done)
}
