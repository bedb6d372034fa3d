package ucx

/*
#include "hx.h"
*/
import "C"

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Path is how the bytes of a batch moved.
//
//go:generate go tool stringer -type=Path -linecomment
type Path int

const (
	// PathNone: the batch had no ops.
	PathNone Path = iota // none
	// PathMapped: the peer's memory is mapped into this process
	// (ucp_rkey_ptr) and the batch was a plain copy on a goroutine of its
	// own, without UCX requests.
	PathMapped // mapped
	// PathOneSided: UCX gets/puts on shared-memory lanes to UCX-allocated
	// memory; the target does not take part.
	PathOneSided // one-sided
	// PathEmulated: UCX emulates the gets/puts with active messages that
	// the target's progress goroutine serves (ordinary memory, tcp, or
	// ErrModePeer on UCX 1.13).
	PathEmulated // emulated
	numPaths
)

// Batch is a posted batch of reads or writes. It implements transport.Batch.
type Batch struct {
	p     *Peer
	t     *Transport
	write bool
	n     int
	bytes uint64
	path  Path
	done  chan struct{}
	res   transport.Result

	cancel atomic.Bool

	// Owned by the progress goroutine (UCX paths; post sets c before the
	// batch is submitted). Other goroutines must not read them: Cancel
	// decides from path.
	c        *C.hx_batch_t
	abortErr error
	aborted  []bool // ops incomplete when the batch was aborted
}

var _ transport.Batch = (*Batch)(nil)

// Done implements transport.Batch.
func (b *Batch) Done() <-chan struct{} { return b.done }

// Result implements transport.Batch; final once Done is closed.
func (b *Batch) Result() transport.Result {
	select {
	case <-b.done:
		return b.res
	default:
		return transport.Result{Err: fmt.Errorf("ucx: result of a batch in flight")}
	}
}

// Path reports how the batch's bytes moved.
func (b *Batch) Path() Path { return b.path }

// Bytes is the sum of the ops' lengths.
func (b *Batch) Bytes() uint64 { return b.bytes }

// Cancel implements transport.Batch. Ops not posted yet are not posted; ops
// UCX has in flight cannot be withdrawn (UCX 1.13 cancels only receives), so
// Done closes once they complete, and every op that had not completed when
// the cancel took effect fails with transport.ErrCanceled.
func (b *Batch) Cancel() {
	if b.cancel.Swap(true) {
		return
	}
	if b.path == PathMapped || b.path == PathNone {
		// The copier checks the flag; an empty batch settled at once.
		// (b.path is set before the batch is published and never
		// changes; b.c belongs to the progress goroutine.)
		return
	}
	_ = b.t.submit(func() {
		if _, ok := b.t.active[b]; ok {
			b.t.abort(b, fmt.Errorf("ucx: %w", transport.ErrCanceled))
		}
	})
}

// settle publishes the result; called once.
func (b *Batch) settle(r transport.Result) {
	b.res = r
	if r.Err == nil {
		b.t.stats.batches[b.path].Add(1)
		b.t.stats.bytes[b.path].Add(b.bytes)
	}
	close(b.done)
}

func (b *Batch) kind() string {
	if b.write {
		return "write"
	}
	return "read"
}

// copyMapped serves a batch whose remote ranges are all mapped into this
// process: a copy per op (the streaming copy for large ones), on the
// caller's behalf. Once the peer's mappings are gone or the batch is
// canceled, the ops not yet copied fail.
func (b *Batch) copyMapped(runs []run) {
	p := b.p
	var (
		failed []int
		first  error
	)
	p.mapMu.RLock()
	gone := p.mapGone
	i := 0
	for _, r := range runs {
		local := r.local.Bytes()
		for _, g := range r.ranges {
			var err error
			switch {
			case gone:
				err = p.usable()
			case b.cancel.Load():
				err = fmt.Errorf("ucx: %w", transport.ErrCanceled)
			}
			if err != nil {
				if first == nil {
					first = err
				}
				failed = append(failed, i)
				i++
				continue
			}
			l := local[g.LocalOff : g.LocalOff+g.Len]
			rem := unsafe.Slice((*byte)(unsafe.Add(r.remote.mapped, g.RemoteOff)), g.Len)
			if b.write {
				kernels.MemmoveBulk(rem, l)
			} else {
				kernels.MemmoveBulk(l, rem)
			}
			i++
		}
	}
	p.mapMu.RUnlock()
	var res transport.Result
	if first != nil {
		res = transport.Result{Failed: failed, Err: fmt.Errorf("ucx: %s: %d of %d ops failed: %w", b.kind(), len(failed), b.n, first)}
	}
	b.settle(res)
}

// ---- UCX-posted batches (progress goroutine) ------------------------------

// start fills in the rkeys of b's ops (remotes[i] for op i) and posts the
// first window.
func (t *Transport) start(b *Batch, runs []run) {
	p := b.p
	if p.closed {
		err := p.usable()
		all := make([]int, b.n)
		for i := range all {
			all[i] = i
		}
		C.hx_batch_free(b.c)
		b.c = nil
		b.settle(transport.Result{Failed: all, Err: fmt.Errorf("ucx: %s: %w", b.kind(), err)})
		return
	}
	rkeys := unsafe.Slice(b.c.rkey, b.n)
	i := 0
	for _, r := range runs {
		for range r.ranges {
			rkeys[i] = r.remote.rkey
			i++
		}
	}
	b.c.ep = p.ep
	t.active[b] = struct{}{}
	p.batches[b] = struct{}{}
	if b.cancel.Load() {
		t.abort(b, fmt.Errorf("ucx: %w", transport.ErrCanceled))
		return
	}
	t.postMore(b)
}

// postMore keeps up to Config.Window ops of b in flight.
func (t *Transport) postMore(b *Batch) {
	c := b.c
	n := uint32(c.n)
	posted := uint32(c.posted)
	if b.abortErr == nil && posted < n {
		inflight := uint64(c.expected) - uint64(c.completed)
		w := uint64(t.cfg.Window)
		if inflight <= w/2 {
			to := uint64(posted) + w - inflight
			if to > uint64(n) {
				to = uint64(n)
			}
			C.hx_batch_post(c, C.uint32_t(to))
			posted = uint32(c.posted)
		}
	}
	if b.write && c.flush_posted == 0 && posted > 0 && (posted == n || b.abortErr != nil) {
		C.hx_batch_flush(c)
	}
}

// pollBatches posts more ops and finalizes complete batches. Reports
// whether any batch is in flight.
func (t *Transport) pollBatches() bool {
	if len(t.active) == 0 {
		return false
	}
	for b := range t.active {
		c := b.c
		if c.completed < c.expected {
			if b.abortErr == nil && uint32(c.posted) < uint32(c.n) {
				t.postMore(b)
			}
			continue
		}
		if b.abortErr == nil && uint32(c.posted) < uint32(c.n) {
			t.postMore(b)
			continue
		}
		if b.write && c.flush_posted == 0 && c.posted > 0 {
			t.postMore(b)
			continue
		}
		t.finalize(b)
	}
	return len(t.active) > 0
}

// abort stops posting b's ops and records which ops had not completed:
// they fail with err whatever UCX reports for them later.
func (t *Transport) abort(b *Batch, err error) {
	if b.abortErr != nil || b.c == nil {
		return
	}
	b.abortErr = err
	status := unsafe.Slice((*int32)(unsafe.Pointer(b.c.status)), b.n+1)
	b.aborted = make([]bool, b.n)
	for i := range b.aborted {
		b.aborted[i] = status[i] == statusInProgress
	}
	if b.write {
		t.postMore(b) // flush what was posted, so Done means nothing in flight
	}
}

// finalize computes b's result and releases its C state. Called when every
// posted request completed, or at shutdown after the worker is destroyed.
func (t *Transport) finalize(b *Batch) {
	c := b.c
	t.settleUCX(b)
	C.hx_batch_free(c)
}

// settleUCX computes b's result from its C state, detaches it from the
// transport and settles it. The caller frees or orphans the C state.
func (t *Transport) settleUCX(b *Batch) {
	p := b.p
	c := b.c
	status := unsafe.Slice((*int32)(unsafe.Pointer(c.status)), b.n+1)
	posted := int(c.posted)
	var flushErr error
	if b.write && c.flush_posted != 0 && status[b.n] != statusOK && status[b.n] != statusInProgress {
		flushErr = t.opErr(p, int(status[b.n]))
	}
	var (
		failed []int
		first  error
	)
	for i := 0; i < b.n; i++ {
		var err error
		switch {
		case b.aborted != nil && b.aborted[i], i >= posted:
			err = b.abortErr
			if err == nil {
				err = fmt.Errorf("ucx: %w", transport.ErrClosed)
			}
		case status[i] == statusInProgress:
			err = fmt.Errorf("ucx: %w", transport.ErrClosed) // worker destroyed or orphaned
		case status[i] != statusOK:
			err = t.opErr(p, int(status[i]))
		case flushErr != nil:
			err = flushErr
		}
		if err != nil {
			if first == nil {
				first = err
			}
			failed = append(failed, i)
		}
	}
	delete(t.active, b)
	delete(p.batches, b)
	b.c = nil
	var r transport.Result
	if first != nil {
		r = transport.Result{Failed: failed, Err: fmt.Errorf("ucx: %s: %d of %d ops failed: %w", b.kind(), len(failed), b.n, first)}
	}
	b.settle(r)
}

// orphanAll settles every batch of p now, with the errors recorded when it
// was aborted, leaving its C state to UCX (t.orphans) until its requests
// complete or the worker is destroyed. Used when UCX will not complete the
// requests in bounded time: a forced close without peer error handling
// (UCX tracks requests for purging only in peer mode), or a flushing close
// past CloseTimeout. If the peer is in fact alive, a late get may still
// land in local memory after the batch settled.
func (t *Transport) orphanAll(p *Peer) {
	for b := range p.batches {
		if b.abortErr == nil {
			t.abort(b, fmt.Errorf("ucx: %w", transport.ErrClosed))
		}
		c := b.c
		t.settleUCX(b)
		if uint64(c.completed) < uint64(c.expected) {
			t.orphans[c] = struct{}{}
		} else {
			C.hx_batch_free(c)
		}
	}
}

// pollOrphans frees orphaned C state whose requests all completed.
func (t *Transport) pollOrphans() {
	for c := range t.orphans {
		if uint64(c.completed) >= uint64(c.expected) {
			C.hx_batch_free(c)
			delete(t.orphans, c)
		}
	}
}

// opErr maps a failed request status to an error.
func (t *Transport) opErr(p *Peer, code int) error {
	se := statusErr("rma", code)
	if p.failErr != nil {
		return fmt.Errorf("%w (%w)", p.failErr, se)
	}
	if p.closed && isConnectionStatus(code) {
		return fmt.Errorf("ucx: %w (%w)", transport.ErrClosed, se)
	}
	return se
}
