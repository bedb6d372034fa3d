package transport

import (
	"context"
	"fmt"
	"sync"
)

// Faulty wraps a Transport and injects the faults its FaultPlan decides.
// Memory and remote memory are the inner transport's own; peers and batches
// are wrapped. A plan with no rules makes it a pass-through that still
// reports each failed peer once.
type Faulty struct {
	inner Transport
	plan  *FaultPlan

	ctx    context.Context // canceled by Close; parent of batch contexts
	cancel context.CancelFunc
	wg     sync.WaitGroup // batch goroutines and injected PeerFailed calls

	mu      sync.Mutex
	closed  bool
	failed  map[PeerID]error
	batches map[*faultBatch]struct{}
}

var _ Transport = (*Faulty)(nil)

// WithFaults wraps inner so that plan decides which of its calls fail, are
// delayed, dropped or disconnect the peer. Build inner with plan.Handlers(h)
// so that PeerFailed reaches h for injected disconnects too. A nil plan is a
// pass-through. A plan drives one wrapper: binding it twice panics.
func WithFaults(inner Transport, plan *FaultPlan) Transport {
	if plan == nil {
		plan = NewFaultPlan(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Faulty{
		inner:   inner,
		plan:    plan,
		ctx:     ctx,
		cancel:  cancel,
		failed:  make(map[PeerID]error),
		batches: make(map[*faultBatch]struct{}),
	}
	plan.bind(w)
	return w
}

// PathCounts implements PathCounter for an inner transport that counts.
func (w *Faulty) PathCounts() []PathCount {
	if pc, ok := w.inner.(PathCounter); ok {
		return pc.PathCounts()
	}
	return nil
}

// Inner returns the wrapped transport.
func (w *Faulty) Inner() Transport { return w.inner }

// Plan returns the wrapper's plan.
func (w *Faulty) Plan() *FaultPlan { return w.plan }

// Name implements Transport: the inner name with a "+faults" suffix.
func (w *Faulty) Name() string { return w.inner.Name() + "+faults" }

// Alloc implements Transport. Memory is not wrapped.
func (w *Faulty) Alloc(size int, kind MemKind) (Memory, error) { return w.inner.Alloc(size, kind) }

// Supports implements Transport.
func (w *Faulty) Supports(kind MemKind) error { return w.inner.Supports(kind) }

// Address implements Transport.
func (w *Faulty) Address() []byte { return w.inner.Address() }

// Connect implements Transport. OpConnect faults apply: fail returns
// ErrInjected, delay waits first, disconnect returns a peer that has already
// failed (PeerFailed fires for it).
func (w *Faulty) Connect(ctx context.Context, addr []byte) (Peer, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	call := w.plan.nextCall(OpConnect)
	f := w.plan.Decide(OpConnect, call, 0)
	switch f.Kind {
	case FaultFail:
		w.plan.record(Injection{Kind: OpConnect, Call: call, Fault: f})
		return nil, fmt.Errorf("%w: connect call %d", ErrInjected, call)
	case FaultDelay:
		w.plan.record(Injection{Kind: OpConnect, Call: call, Fault: f})
		if err := w.sleep(ctx, f); err != nil {
			return nil, err
		}
	}
	ip, err := w.inner.Connect(ctx, addr)
	if f.Kind == FaultDisconnect {
		in := Injection{Kind: OpConnect, Call: call, Fault: f}
		if ip != nil {
			in.Peer = ip.ID()
		}
		w.plan.record(in)
	}
	if err != nil {
		return nil, err
	}
	p := &faultPeer{w: w, inner: ip}
	if f.Kind == FaultDisconnect {
		w.failPeer(ip.ID(), fmt.Errorf("%w: %w: connect call %d", ErrDisconnected, ErrInjected, call))
	}
	return p, nil
}

// sleep waits f.Delay with the plan's sleep function, giving up when ctx
// ends or the wrapper closes.
func (w *Faulty) sleep(ctx context.Context, f Fault) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(w.ctx, cancel)
	defer stop()
	w.plan.sleeper()(ctx, f.Delay)
	if w.ctx.Err() != nil {
		return fmt.Errorf("%w: faulty", ErrClosed)
	}
	return ctx.Err()
}

// usable reports whether the wrapper is open.
func (w *Faulty) usable() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("%w: faulty", ErrClosed)
	}
	return nil
}

// failPeer treats peer id as failed: its batches fail with err, later calls
// on it return err, and PeerFailed(id, err) is delivered (asynchronously,
// once per peer).
func (w *Faulty) failPeer(id PeerID, err error) {
	w.mu.Lock()
	if w.closed || w.failed[id] != nil {
		w.mu.Unlock()
		return
	}
	w.failed[id] = err
	abort := w.batchesLocked(func(b *faultBatch) bool { return b.peer.inner.ID() == id })
	h := w.plan.handlers()
	if h.PeerFailed != nil {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			h.PeerFailed(id, err)
		}()
	}
	w.mu.Unlock()
	for _, b := range abort {
		b.abort(err)
	}
}

// innerPeerFailed handles PeerFailed from the inner transport: the peer is
// marked failed and the user hears of it unless an injected disconnect
// already reported it.
func (w *Faulty) innerPeerFailed(id PeerID, err error) {
	w.mu.Lock()
	if w.failed[id] != nil {
		w.mu.Unlock()
		return
	}
	w.failed[id] = err
	abort := w.batchesLocked(func(b *faultBatch) bool { return b.peer.inner.ID() == id })
	w.mu.Unlock()
	for _, b := range abort {
		b.abort(err)
	}
	if h := w.plan.handlers(); h.PeerFailed != nil {
		h.PeerFailed(id, err)
	}
}

// batchesLocked returns the in-flight batches for which keep is true.
func (w *Faulty) batchesLocked(keep func(*faultBatch) bool) []*faultBatch {
	var bs []*faultBatch
	for b := range w.batches {
		if keep(b) {
			bs = append(bs, b)
		}
	}
	return bs
}

// Close implements Transport: in-flight batches fail with ErrClosed, delays
// end, the inner transport is closed, and Close waits for the wrapper's
// goroutines (so it must not be called from a handler).
func (w *Faulty) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.wg.Wait()
		return nil
	}
	w.closed = true
	abort := w.batchesLocked(func(*faultBatch) bool { return true })
	w.mu.Unlock()
	closedErr := fmt.Errorf("%w: faulty", ErrClosed)
	for _, b := range abort {
		b.abort(closedErr)
	}
	w.cancel()
	err := w.inner.Close()
	w.wg.Wait()
	return err
}

// faultPeer wraps a Peer of the inner transport.
type faultPeer struct {
	w      *Faulty
	inner  Peer
	closed bool // under w.mu
}

var _ Peer = (*faultPeer)(nil)

// ID implements Peer: the inner peer's ID.
func (p *faultPeer) ID() PeerID { return p.inner.ID() }

func (p *faultPeer) usable() error {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	return p.usableLocked()
}

func (p *faultPeer) usableLocked() error {
	switch {
	case p.w.closed:
		return fmt.Errorf("%w: faulty", ErrClosed)
	case p.closed:
		return fmt.Errorf("%w: faulty peer %d", ErrClosed, p.inner.ID())
	}
	return p.w.failed[p.inner.ID()]
}

// Import implements Peer.
func (p *faultPeer) Import(d MemDesc) (RemoteMemory, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	return p.inner.Import(d)
}

// Read implements Peer with OpRead faults.
func (p *faultPeer) Read(ops []Op) (Batch, error) { return p.post(ops, OpRead) }

// ReadRanges implements Peer with OpRead faults (op indexes count across
// the runs).
func (p *faultPeer) ReadRanges(runs []Ranges) (Batch, error) { return p.post(Flatten(runs), OpRead) }

// Write implements Peer with OpWrite faults.
func (p *faultPeer) Write(ops []Op) (Batch, error) { return p.post(ops, OpWrite) }

// Notify implements Peer with OpNotify faults: fail returns ErrInjected,
// drop returns nil and sends nothing, delay waits before sending (so the
// order of one sender's notifications is kept), disconnect fails the peer.
func (p *faultPeer) Notify(msg []byte) error {
	if err := p.usable(); err != nil {
		return err
	}
	w := p.w
	call := w.plan.nextCall(OpNotify)
	f := w.plan.hit(OpNotify, call, 0, p.ID())
	switch f.Kind {
	case FaultFail:
		return fmt.Errorf("%w: notify call %d", ErrInjected, call)
	case FaultDrop:
		return nil
	case FaultDisconnect:
		err := fmt.Errorf("%w: %w: notify call %d", ErrDisconnected, ErrInjected, call)
		w.failPeer(p.ID(), err)
		return err
	case FaultDelay:
		if err := w.sleep(context.Background(), f); err != nil {
			return err
		}
		if err := p.usable(); err != nil {
			return err
		}
	}
	return p.inner.Notify(msg)
}

// Close implements Peer.
func (p *faultPeer) Close() error {
	w := p.w
	w.mu.Lock()
	if p.closed {
		w.mu.Unlock()
		return nil
	}
	p.closed = true
	abort := w.batchesLocked(func(b *faultBatch) bool { return b.peer == p })
	w.mu.Unlock()
	closedErr := fmt.Errorf("%w: faulty peer %d", ErrClosed, p.ID())
	for _, b := range abort {
		b.abort(closedErr)
	}
	return p.inner.Close()
}
