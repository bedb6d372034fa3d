package transport

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// inprocAddrPrefix starts every inproc address.
const inprocAddrPrefix = "inproc:"

// inprocRegistry maps live inproc instances to their transports, so Connect
// finds another Inproc in the same process by its Address. It is the only
// global state of the package.
var inprocRegistry = struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*Inproc
}{m: make(map[uint64]*Inproc)}

// Inproc is the in-process backend. Memory is ordinary Go memory; reads and
// writes are real copies between registered regions, executed by one worker
// goroutine per transport (the initiator's), so completion is asynchronous as
// with a real network. Handlers run on a second goroutine per transport, in
// order. Peers are found through a process-wide registry of addresses.
//
// A transport has one PeerID per remote transport, whichever side connected
// first: every Peer that Connect returns for the same remote has that ID, and
// it is the from of the remote's notifications and the p of PeerFailed when
// the remote goes away. Closing (or killing) a transport makes every
// transport linked to it see PeerFailed, and their batches to it fail with
// ErrDisconnected.
type Inproc struct {
	id   uint64
	addr []byte
	h    Handlers

	// dead is set once, under mu, when the transport starts closing; it is
	// read without the lock by the workers of peers copying from its memory.
	dead atomic.Bool

	wg sync.WaitGroup // worker and event loop

	mu       sync.Mutex
	workCond *sync.Cond // signaled on queue changes and close
	evCond   *sync.Cond // signaled on events changes and close
	closed   bool
	nextMem  uint64
	nextAddr uint64
	nextPeer PeerID
	mems     map[uint64]*inprocMem
	links    map[uint64]*inprocLink // by remote instance id
	inflight map[*inprocBatch]struct{}

	// done counts completed batches and their bytes (PathCounts).
	doneBatches, doneBytes atomic.Uint64
	queue                  []*inprocBatch
	events                 []inprocEvent
}

var _ Transport = (*Inproc)(nil)

// inprocLink is this side's view of one remote transport: the PeerID it has
// here and whether it failed.
type inprocLink struct {
	id     PeerID
	remote *Inproc
	failed error // under the local transport's mu
}

// inprocEvent is one handler call queued for the event loop.
type inprocEvent struct {
	src    uint64 // instance that caused it (for Kill's message loss)
	notify bool
	peer   PeerID
	msg    []byte
	err    error
}

// NewInproc returns a new in-process transport registered under a fresh
// address. Its handlers run on a goroutine of its own, one call at a time.
func NewInproc(h Handlers) Transport {
	return newInproc(h)
}

func newInproc(h Handlers) *Inproc {
	inprocRegistry.mu.Lock()
	inprocRegistry.next++
	id := inprocRegistry.next
	t := &Inproc{
		id:       id,
		addr:     []byte(inprocAddrPrefix + strconv.FormatUint(id, 10)),
		h:        h,
		nextAddr: 1 << 32,
		mems:     make(map[uint64]*inprocMem),
		links:    make(map[uint64]*inprocLink),
		inflight: make(map[*inprocBatch]struct{}),
	}
	t.workCond = sync.NewCond(&t.mu)
	t.evCond = sync.NewCond(&t.mu)
	inprocRegistry.m[id] = t
	inprocRegistry.mu.Unlock()

	t.wg.Add(2)
	go t.work()
	go t.dispatch()
	return t
}

// lookupInproc finds the live transport at addr.
func lookupInproc(addr []byte) (*Inproc, error) {
	s, ok := strings.CutPrefix(string(addr), inprocAddrPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: inproc: not an inproc address %q", ErrDisconnected, addr)
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: inproc: bad address %q", ErrDisconnected, addr)
	}
	inprocRegistry.mu.Lock()
	t := inprocRegistry.m[id]
	inprocRegistry.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("%w: inproc: no transport at %q", ErrDisconnected, addr)
	}
	return t, nil
}

// Name implements Transport.
func (t *Inproc) Name() string { return "inproc" }

// Address implements Transport. It stays valid (and unique) for the life of
// the process, but Connect to it fails once the transport is closed.
func (t *Inproc) Address() []byte { return append([]byte(nil), t.addr...) }

// Supports implements Transport: host memory (host-pinned is served as
// host memory: nothing outside the process reaches it), no device memory.
func (t *Inproc) Supports(kind MemKind) error {
	if err := kind.Valid(); err != nil {
		return err
	}
	if !kind.IsHost() {
		return &KindError{Backend: "inproc", Kind: kind, Why: "the in-process backend moves Go memory only (device caches go through host staging)"}
	}
	return nil
}

// Alloc implements Transport.
func (t *Inproc) Alloc(size int, kind MemKind) (Memory, error) {
	if size <= 0 {
		return nil, fmt.Errorf("transport: inproc: invalid alloc size %d", size)
	}
	if err := t.Supports(kind); err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("%w: inproc: alloc", ErrClosed)
	}
	t.nextMem++
	m := &inprocMem{owner: t, id: t.nextMem, addr: t.nextAddr, buf: buf, kind: kind}
	// Synthetic, non-overlapping addresses with a guard page between ranges.
	t.nextAddr += (uint64(size)+4095)&^4095 + 4096
	t.mems[m.id] = m
	return m, nil
}

func (t *Inproc) forgetMem(id uint64) {
	t.mu.Lock()
	delete(t.mems, id)
	t.mu.Unlock()
}

// Connect implements Transport. Connecting to a transport already linked to
// this one (in either direction) returns a new Peer with the existing ID.
func (t *Inproc) Connect(ctx context.Context, addr []byte) (Peer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%w: inproc: connect", ErrClosed)
	}
	r, err := lookupInproc(addr)
	if err != nil {
		return nil, err
	}
	if r != t {
		if err := r.accept(t); err != nil {
			return nil, err
		}
	}

	t.mu.Lock()
	if t.closed {
		// Our Close did not see the link r made: tell r we are gone.
		t.mu.Unlock()
		if r != t {
			r.remoteGone(t, fmt.Errorf("%w: inproc %d closed", ErrDisconnected, t.id), false)
		}
		return nil, fmt.Errorf("%w: inproc: connect", ErrClosed)
	}
	l := t.linkLocked(r)
	if l.failed == nil && r != t && r.dead.Load() {
		// r began closing and may have looked for this link before it
		// existed: fail it here (remoteGone is a no-op on a failed link).
		err := fmt.Errorf("%w: inproc %d closed", ErrDisconnected, r.id)
		abort := t.failLinkLocked(l, err, false)
		t.mu.Unlock()
		abortAll(abort, err)
		t.queuePeerFailed(l, err)
		return nil, err
	}
	if l.failed != nil {
		err := l.failed
		t.mu.Unlock()
		return nil, err
	}
	p := &inprocPeer{t: t, link: l}
	t.mu.Unlock()
	return p, nil
}

// accept records the link from a connecting transport c.
func (t *Inproc) accept(c *Inproc) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("%w: inproc %d closed", ErrDisconnected, t.id)
	}
	t.linkLocked(c)
	return nil
}

// linkLocked returns the link to r, creating it. t.mu is held.
func (t *Inproc) linkLocked(r *Inproc) *inprocLink {
	l := t.links[r.id]
	if l == nil {
		t.nextPeer++
		l = &inprocLink{id: t.nextPeer, remote: r}
		t.links[r.id] = l
	}
	return l
}

// remoteGone fails the link to r: batches to it fail with err (which wraps
// ErrDisconnected), PeerFailed is queued, and with lost set, notifications
// from r not yet delivered are dropped (r died with them in flight).
func (t *Inproc) remoteGone(r *Inproc, err error, lost bool) {
	t.mu.Lock()
	l := t.links[r.id]
	if t.closed || l == nil || l.failed != nil {
		t.mu.Unlock()
		return
	}
	abort := t.failLinkLocked(l, err, lost)
	t.mu.Unlock()
	abortAll(abort, err)
	t.queuePeerFailed(l, err)
}

// failLinkLocked marks l failed with err and returns the batches to abort
// (outside the lock, before queuePeerFailed, so that every batch to the peer
// has been told to fail by the time PeerFailed runs). With lost set,
// notifications from the remote not yet delivered are dropped. t.mu is held.
func (t *Inproc) failLinkLocked(l *inprocLink, err error, lost bool) []*inprocBatch {
	l.failed = err
	var abort []*inprocBatch
	for b := range t.inflight {
		if b.peer.link == l {
			abort = append(abort, b)
		}
	}
	if lost {
		kept := t.events[:0]
		for _, ev := range t.events {
			if ev.src != l.remote.id {
				kept = append(kept, ev)
			}
		}
		clear(t.events[len(kept):])
		t.events = kept
	}
	return abort
}

// queuePeerFailed queues PeerFailed for l.
func (t *Inproc) queuePeerFailed(l *inprocLink, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.events = append(t.events, inprocEvent{src: l.remote.id, peer: l.id, err: err})
	t.evCond.Signal()
}

// abortAll aborts every batch in bs with err.
func abortAll(bs []*inprocBatch, err error) {
	for _, b := range bs {
		b.abort(err)
	}
}

// deliver queues a notification from c for the event loop.
func (t *Inproc) deliver(c *Inproc, msg []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.links[c.id]
	if t.closed || l == nil {
		return fmt.Errorf("%w: inproc %d closed", ErrDisconnected, t.id)
	}
	t.events = append(t.events, inprocEvent{
		src:    c.id,
		notify: true,
		peer:   l.id,
		msg:    append([]byte(nil), msg...),
	})
	t.evCond.Signal()
	return nil
}

// dispatch is the event loop: it calls the handlers, one event at a time, in
// the order the events were queued.
func (t *Inproc) dispatch() {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		for len(t.events) == 0 && !t.closed {
			t.evCond.Wait()
		}
		if t.closed {
			t.events = nil
			t.mu.Unlock()
			return
		}
		ev := t.events[0]
		t.events[0] = inprocEvent{}
		t.events = t.events[1:]
		t.mu.Unlock()

		switch {
		case ev.notify && t.h.Notify != nil:
			t.h.Notify(ev.peer, ev.msg)
		case !ev.notify && t.h.PeerFailed != nil:
			t.h.PeerFailed(ev.peer, ev.err)
		}
	}
}

// Close implements Transport. In-flight batches fail with ErrClosed, memory
// is released, and every linked transport sees PeerFailed. Notifications
// already sent to peers are still delivered. Close waits for the worker and
// the event loop to stop, so no handler runs after it returns; it must not be
// called from a handler. Closing twice is a no-op.
func (t *Inproc) Close() error {
	t.shutdown(false)
	return nil
}

// Kill closes the transport abruptly, as if its process died: like Close,
// except that notifications it sent which were not yet delivered are lost.
// Tests use it to simulate a crashed peer.
func (t *Inproc) Kill() {
	t.shutdown(true)
}

func (t *Inproc) shutdown(kill bool) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return
	}
	t.closed = true
	t.dead.Store(true)
	var remotes []*Inproc
	for _, l := range t.links {
		if l.remote != t {
			remotes = append(remotes, l.remote)
		}
	}
	batches := make([]*inprocBatch, 0, len(t.inflight))
	for b := range t.inflight {
		batches = append(batches, b)
	}
	for _, m := range t.mems {
		m.closed.Store(true)
	}
	clear(t.mems)
	t.workCond.Broadcast()
	t.evCond.Broadcast()
	t.mu.Unlock()

	inprocRegistry.mu.Lock()
	delete(inprocRegistry.m, t.id)
	inprocRegistry.mu.Unlock()

	abortAll(batches, fmt.Errorf("%w: inproc %d", ErrClosed, t.id))
	how := "closed"
	if kill {
		how = "killed"
	}
	goneErr := fmt.Errorf("%w: inproc %d %s", ErrDisconnected, t.id, how)
	for _, r := range remotes {
		r.remoteGone(t, goneErr, kill)
	}
	t.wg.Wait()
}

// PathCounts implements PathCounter: every batch takes the one path
// "inproc".
func (t *Inproc) PathCounts() []PathCount {
	return []PathCount{{Path: "inproc", Batches: t.doneBatches.Load(), Bytes: t.doneBytes.Load()}}
}
