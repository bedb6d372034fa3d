package ucx

/*
#cgo pkg-config: ucx
#include <stdlib.h>
#include "hx.h"
*/
import "C"

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Objects C callbacks refer to are found through these registries by key:
// C holds integers, never Go pointers.
var (
	regNext    atomic.Uint64
	transports sync.Map // uint64 -> *Transport
	peersByKey sync.Map // uint64 -> *Peer
)

const (
	addrMagic = "HXU1"
	keyMagic  = "HXK1"
	// waitCap bounds one blocking wait of IdleWait so that UCX timers
	// (keepalive, wireup retries) still run on a quiet worker.
	waitCap = 50 * time.Millisecond
	// progressBurst is how many ucp_worker_progress calls one cgo call makes
	// at most.
	progressBurst = 32
)

// Transport is a UCX transport.Transport: one UCX context and one worker,
// owned by one progress goroutine. See the package documentation.
type Transport struct {
	cfg  Config
	h    transport.Handlers
	key  uint64 // registry key; C callbacks carry it
	tid  uint64 // random id carried in Address, keys and notifications
	addr []byte

	// Command queue (any goroutine -> progress goroutine).
	mu       sync.Mutex
	queue    []func()
	closed   bool  // no more commands are accepted
	wakeFd   C.int // eventfd; written and closed only under mu
	qlen     atomic.Int64
	sleeping atomic.Int32
	loopDone chan struct{}

	ids struct {
		sync.Mutex
		next  PeerID
		byTid map[uint64]PeerID
	}

	ev dispatcher

	// wmu is the worker lock: the worker is serialized (UCX's
	// UCS_THREAD_MODE_SERIALIZED), and every UCX call, and every field
	// below marked as owned by the progress goroutine, is made or touched
	// with wmu held. The progress goroutine holds it for one round of its
	// loop at a time; Peer.Notify takes it with TryLock to send at once.
	wmu sync.Mutex

	// noMap turns the mapped path off (Config.DisableMapped, SetMapped).
	noMap atomic.Bool

	// memTypes is the context's memory types (a bit per
	// ucs_memory_type_t), set once at start.
	memTypes uint64

	stats struct {
		batches [numPaths]atomic.Uint64
		bytes   [numPaths]atomic.Uint64
	}

	// Owned by the progress goroutine (wmu held).
	ctx      C.ucp_context_h
	wc       *C.hx_wctx_t
	worker   C.ucp_worker_h
	peers    map[*Peer]struct{}
	mems     map[*Memory]struct{}
	active   map[*Batch]struct{}
	orphans  map[*C.hx_batch_t]struct{} // settled batches with requests UCX still holds
	closing  []*epClose
	failed   []*Peer // endpoint errors seen during progress, handled after it
	stopping bool
	shm      bool   // holds the process's shared-memory directory
	testHook func() // run by the loop after every command drain (tests)
}

// epClose tracks one endpoint close request.
type epClose struct {
	p        *Peer
	force    bool
	req      unsafe.Pointer // nil once complete
	deadline time.Time
	done     chan struct{} // closed when complete or past deadline
	signaled bool
}

var _ transport.Transport = (*Transport)(nil)

// New creates a Transport: it starts the progress goroutine, which creates
// the UCX context (UCX_* environment variables plus cfg.UCX) and worker,
// registers the active-message handlers, and exports the worker address.
func New(cfg Config, h transport.Handlers) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, fmt.Errorf("ucx: transport id: %w", err)
	}
	t := &Transport{
		cfg:      cfg,
		h:        h,
		key:      regNext.Add(1),
		tid:      binary.LittleEndian.Uint64(idb[:]),
		loopDone: make(chan struct{}),
		peers:    make(map[*Peer]struct{}),
		mems:     make(map[*Memory]struct{}),
		active:   make(map[*Batch]struct{}),
		orphans:  make(map[*C.hx_batch_t]struct{}),
	}
	t.ids.byTid = make(map[uint64]PeerID)
	t.noMap.Store(cfg.DisableMapped)
	t.ev.init()
	transports.Store(t.key, t)
	initErr := make(chan error, 1)
	go t.run(initErr)
	if err := <-initErr; err != nil {
		transports.Delete(t.key)
		t.ev.close()
		return nil, err
	}
	return t, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return t.cfg.Name }

// Config returns the configuration with defaults applied.
func (t *Transport) Config() Config { return t.cfg }

// Address implements transport.Transport: "HXU1", the transport id, and the
// UCX worker address.
func (t *Transport) Address() []byte { return append([]byte(nil), t.addr...) }

func parseAddress(b []byte) (tid uint64, worker []byte, err error) {
	if len(b) <= len(addrMagic)+8 || string(b[:len(addrMagic)]) != addrMagic {
		return 0, nil, fmt.Errorf("%w (%d bytes)", ErrBadAddress, len(b))
	}
	return binary.LittleEndian.Uint64(b[len(addrMagic):]), b[len(addrMagic)+8:], nil
}

// SetMapped turns the mapped path on or off for batches posted from now on
// (Config.DisableMapped sets the initial value). Benchmarks time UCX's
// own gets on the same memory with it; batches in flight keep their path.
func (t *Transport) SetMapped(on bool) { t.noMap.Store(!on) }

// Stats counts completed batches and their bytes by the path that served
// them.
type Stats struct {
	Batches map[Path]uint64
	Bytes   map[Path]uint64
}

// Stats returns counters of completed batches by path.
func (t *Transport) Stats() Stats {
	s := Stats{Batches: make(map[Path]uint64), Bytes: make(map[Path]uint64)}
	for p := Path(1); p < numPaths; p++ {
		s.Batches[p] = t.stats.batches[p].Load()
		s.Bytes[p] = t.stats.bytes[p].Load()
	}
	return s
}

// PathCounts implements transport.PathCounter: Stats by path name.
func (t *Transport) PathCounts() []transport.PathCount {
	out := make([]transport.PathCount, 0, numPaths-1)
	for p := Path(1); p < numPaths; p++ {
		out = append(out, transport.PathCount{Path: p.String(), Batches: t.stats.batches[p].Load(), Bytes: t.stats.bytes[p].Load()})
	}
	return out
}

// ---- command queue --------------------------------------------------------

// submit queues f for the progress goroutine.
func (t *Transport) submit(f func()) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("ucx: %w", transport.ErrClosed)
	}
	t.queue = append(t.queue, f)
	t.qlen.Add(1)
	if t.sleeping.Load() != 0 {
		t.wakeLocked()
	}
	return nil
}

func (t *Transport) wakeLocked() {
	if t.wakeFd < 0 {
		return
	}
	one := [8]byte{1}
	_, _ = syscall.Write(int(t.wakeFd), one[:])
}

// call runs f on the progress goroutine and waits for its result or ctx.
// When ctx ends first, f still runs; abandon (if not nil) then runs on the
// progress goroutine after f to undo its effect.
func (t *Transport) call(ctx context.Context, f func() error, abandon func()) error {
	var (
		done      = make(chan error, 1)
		abandoned atomic.Bool
	)
	err := t.submit(func() {
		err := f()
		if abandoned.Load() && err == nil && abandon != nil {
			abandon()
		}
		done <- err
	})
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		abandoned.Store(true)
		// f may have finished just before; then undo here.
		select {
		case err := <-done:
			if err == nil && abandon != nil {
				_ = t.submit(abandon)
			}
		default:
		}
		return ctx.Err()
	}
}

func (t *Transport) callSync(f func() error) error {
	return t.call(context.Background(), f, nil)
}

// ---- progress goroutine ---------------------------------------------------

func (t *Transport) run(initErr chan<- error) {
	defer close(t.loopDone)
	t.wmu.Lock()
	err := t.init()
	t.wmu.Unlock()
	if err != nil {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		initErr <- err
		return
	}
	initErr <- nil

	lastActive := time.Now()
	spinning := false
	stopSpin := func() {
		if spinning {
			spinning = false
			spinners.Add(-1)
		}
	}
	defer stopSpin()
	for {
		t.wmu.Lock()
		ran := t.drain()
		if t.testHook != nil {
			t.testHook()
		}
		if t.stopping {
			t.shutdown()
			t.wmu.Unlock()
			return
		}
		events := uint(C.hx_progress(t.wc, progressBurst))
		if len(t.failed) > 0 {
			t.handleFailed()
		}
		busy := t.pollBatches()
		if len(t.orphans) > 0 {
			t.pollOrphans()
		}
		if len(t.closing) > 0 {
			t.pollCloses()
			busy = true
		}
		if active := ran || events > 0 || busy; active || t.cfg.Idle == IdleSpin {
			t.wmu.Unlock()
			stopSpin() // the spin slot is for idle loops waiting for the next event
			lastActive = time.Time{}
			if !active {
				runtime.Gosched() // spinning: let a goroutine that needs the core run
			}
			continue
		}
		now := time.Now()
		if lastActive.IsZero() {
			lastActive = now
		}
		if now.Sub(lastActive) < t.cfg.SpinFor && (spinning || t.takeSpin()) {
			spinning = true
			t.wmu.Unlock()
			runtime.Gosched()
			continue
		}
		stopSpin()
		// Idle: arm the worker under the lock, block without it (a
		// notifier may use the worker meanwhile; see Peer.Notify).
		efd := C.int(-1)
		timeout := waitCap
		if t.cfg.Idle == IdleSleep {
			timeout = t.cfg.IdleSleep
		} else if C.hx_arm(t.worker, &efd) != 0 {
			t.wmu.Unlock()
			continue // events pending
		}
		t.sleeping.Store(1)
		t.wmu.Unlock()
		if t.qlen.Load() == 0 {
			C.hx_poll(efd, t.wakeFd, C.int64_t(timeout/time.Microsecond))
		}
		t.sleeping.Store(0)
		lastActive = time.Time{}
	}
}

// spinners counts the progress loops of this process that are
// busy-polling after activity; takeSpin lets at most half the cores (at
// least one) do it, so that transports of many ranks in one process do not
// take every core a small request needs. The others idle at once and are
// woken by events.
var spinners atomic.Int32

func (t *Transport) takeSpin() bool {
	limit := int32(max(1, runtime.GOMAXPROCS(0)/2))
	for {
		n := spinners.Load()
		if n >= limit {
			return false
		}
		if spinners.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// ucxOptions returns the options init applies on top of the environment:
// Config.UCX under the environment rule of resolveOptions, plus the
// process's shared-memory directory (see shm.go) unless the operator or
// the Config chose the posix directory. It holds the directory (t.shm)
// when it adds it.
func (t *Transport) ucxOptions() []ucxOption {
	opts, _ := resolveOptions(t.cfg.UCX, os.LookupEnv)
	if _, bare := t.cfg.UCX["DIR"]; bare || optionSet(t.cfg.UCX, "POSIX_DIR") {
		slog.Info("ucx: posix shared-memory directory chosen by the environment or Config; " +
			"a killed process may leave ucx_shm_posix_* files there")
		return opts
	}
	dir, err := acquireShm()
	if err != nil {
		slog.Warn("ucx: private shared-memory directory unavailable; a killed process may leave ucx_shm_posix_* files in /dev/shm",
			"err", err)
		return opts
	}
	t.shm = true
	return append(opts, ucxOption{Key: "POSIX_DIR", Name: optionName("POSIX_DIR"), Value: dir})
}

func (t *Transport) releaseShm() {
	if t.shm {
		t.shm = false
		releaseShm()
	}
}

func (t *Transport) init() error {
	opts := t.ucxOptions()
	ok := false
	defer func() {
		if !ok {
			t.releaseShm()
		}
	}()
	keys := make([]*C.char, 0, len(opts))
	vals := make([]*C.char, 0, len(opts))
	defer func() {
		for i := range keys {
			C.free(unsafe.Pointer(keys[i]))
			C.free(unsafe.Pointer(vals[i]))
		}
	}()
	for _, o := range opts {
		keys = append(keys, C.CString(o.Name))
		vals = append(vals, C.CString(o.Value))
	}
	var kp, vp **C.char
	if len(keys) > 0 {
		// Arrays of C pointers in C memory.
		sz := C.size_t(len(keys)) * C.size_t(unsafe.Sizeof(uintptr(0)))
		kp = (**C.char)(C.malloc(sz))
		vp = (**C.char)(C.malloc(sz))
		defer C.free(unsafe.Pointer(kp))
		defer C.free(unsafe.Pointer(vp))
		copy(unsafe.Slice(kp, len(keys)), keys)
		copy(unsafe.Slice(vp, len(vals)), vals)
	}
	wakeup := C.int(0)
	if t.cfg.Idle == IdleWait {
		wakeup = 1
	}
	if st := C.hx_init(&t.ctx, kp, vp, C.int(len(keys)), wakeup); st != 0 {
		return statusErr("ucp_init", int(st))
	}
	t.memTypes = uint64(C.hx_mem_types(t.ctx))
	if st := C.hx_worker_create(t.ctx, wakeup, C.uintptr_t(t.key), &t.wc); st != 0 {
		C.ucp_cleanup(t.ctx)
		return statusErr("ucp_worker_create", int(st))
	}
	t.worker = t.wc.worker
	var (
		buf unsafe.Pointer
		n   C.size_t
	)
	if st := C.hx_worker_address(t.worker, &buf, &n); st != 0 {
		C.hx_worker_destroy(t.wc)
		C.ucp_cleanup(t.ctx)
		return statusErr("ucp_worker_get_address", int(st))
	}
	t.addr = make([]byte, 0, len(addrMagic)+8+int(n))
	t.addr = append(t.addr, addrMagic...)
	t.addr = binary.LittleEndian.AppendUint64(t.addr, t.tid)
	t.addr = append(t.addr, C.GoBytes(buf, C.int(n))...)
	C.hx_worker_address_free(t.worker, buf)
	t.wakeFd = C.hx_eventfd()
	if t.wakeFd < 0 {
		C.hx_worker_destroy(t.wc)
		C.ucp_cleanup(t.ctx)
		return errors.New("ucx: eventfd failed")
	}
	ok = true
	return nil
}

// drain runs queued commands; reports whether there were any.
func (t *Transport) drain() bool {
	if t.qlen.Load() == 0 {
		return false
	}
	t.mu.Lock()
	q := t.queue
	t.queue = nil
	t.qlen.Store(0)
	t.mu.Unlock()
	for i, f := range q {
		f()
		q[i] = nil
	}
	return len(q) > 0
}

// Close implements transport.Transport. In-flight batches fail with
// transport.ErrClosed, endpoints are closed (forced where batches are in
// flight or the mode is ErrModePeer, else flushed for at most CloseTimeout),
// the worker is flushed within the same bound, memory is unmapped, and the
// worker and context are destroyed. Memory from
// Alloc must not be used after Close.
func (t *Transport) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		t.queue = append(t.queue, func() { t.stopping = true })
		t.qlen.Add(1)
		t.wakeLocked()
	}
	t.mu.Unlock()
	<-t.loopDone
	return nil
}

// shutdown runs on the progress goroutine after the stop command.
func (t *Transport) shutdown() {
	closedErr := fmt.Errorf("ucx: %w", transport.ErrClosed)
	for b := range t.active {
		t.abort(b, closedErr)
	}
	for p := range t.peers {
		if !p.closed {
			t.closePeer(p, closedErr)
		}
	}
	deadline := time.Now().Add(t.cfg.CloseTimeout)
	for time.Now().Before(deadline) && (len(t.closing) > 0 || len(t.active) > 0) {
		C.hx_progress(t.wc, progressBurst)
		if len(t.failed) > 0 {
			t.handleFailed()
		}
		t.pollBatches()
		t.pollCloses()
	}
	t.flushWorker(deadline)
	for _, c := range t.closing {
		if c.req != nil {
			C.hx_req_free(c.req) // released by UCX when it completes
			c.req = nil
		}
		t.finishPeer(c.p)
		if !c.signaled {
			close(c.done)
			c.signaled = true
		}
	}
	t.closing = nil
	for p := range t.peers {
		t.finishPeer(p)
	}
	C.hx_worker_destroy(t.wc)
	// No callback can run any more: settle what is left.
	for b := range t.active {
		t.finalize(b)
	}
	for c := range t.orphans {
		C.hx_batch_free(c)
		delete(t.orphans, c)
	}
	for m := range t.mems {
		m.unmapLocked()
	}
	C.ucp_cleanup(t.ctx)
	t.releaseShm()
	t.mu.Lock()
	C.hx_close_fd(t.wakeFd)
	t.wakeFd = -1
	t.mu.Unlock()
	transports.Delete(t.key)
	t.ev.close()
}

// flushWorker flushes every endpoint of the worker, progressing until the
// flush completes or deadline passes. Besides the Peers' endpoints the
// worker holds endpoints UCX created for remote transports that connected to
// this one; their wireup replies may still be queued (for instance when a
// peer connected just before this Close). ucp_worker_destroy purges such a
// queued reply with an assertion failure on UCX 1.13 ("got REP message"),
// so they are sent first. When closing the endpoints already used up the
// bound (a peer that does not progress), the flush is not started.
func (t *Transport) flushWorker(deadline time.Time) {
	if !time.Now().Before(deadline) {
		return
	}
	r := C.hx_flush_worker(t.worker)
	if r == nil || C.hx_ptr_is_err(C.ucs_status_ptr_t(r)) != 0 {
		return
	}
	for C.hx_req_status(r) == statusInProgress && time.Now().Before(deadline) {
		C.hx_progress(t.wc, progressBurst)
		if len(t.failed) > 0 {
			t.handleFailed()
		}
		t.pollBatches()
		t.pollCloses()
	}
	C.hx_req_free(r) // released by UCX when it completes
}

// ---- peers ids and events ---------------------------------------------------

func (t *Transport) idFor(tid uint64) PeerID {
	t.ids.Lock()
	defer t.ids.Unlock()
	if id, ok := t.ids.byTid[tid]; ok {
		return id
	}
	t.ids.next++
	t.ids.byTid[tid] = t.ids.next
	return t.ids.next
}

//export hxGoNotify
func hxGoNotify(tkey C.uintptr_t, from C.uint64_t, data unsafe.Pointer, n C.size_t) {
	v, ok := transports.Load(uint64(tkey))
	if !ok {
		return
	}
	t := v.(*Transport)
	if t.h.Notify == nil {
		return
	}
	// data is valid only inside this callback: copy it.
	msg := C.GoBytes(data, C.int(n))
	id := t.idFor(uint64(from))
	t.ev.post(func() { t.h.Notify(id, msg) })
}

//export hxGoEpError
func hxGoEpError(pkey C.uintptr_t, status C.int) {
	v, ok := peersByKey.Load(uint64(pkey))
	if !ok {
		return
	}
	p := v.(*Peer)
	if p.failErr != nil || p.closed {
		return
	}
	p.failErr = fmt.Errorf("%w: %w", transport.ErrDisconnected, statusErr("endpoint", int(status)))
	// Closing the endpoint inside UCX's error callback is not allowed;
	// the loop handles it after ucp_worker_progress returns.
	p.t.failed = append(p.t.failed, p)
}

// handleFailed fails the batches of peers whose endpoint failed, force-closes
// their endpoints and reports PeerFailed.
func (t *Transport) handleFailed() {
	failed := t.failed
	t.failed = nil
	for _, p := range failed {
		if p.closed {
			continue
		}
		t.failPeer(p, p.failErr)
	}
}

func (t *Transport) failPeer(p *Peer, err error) {
	p.failErr = err
	p.state.Store(peerFailed)
	p.setErr(err)
	t.closePeer(p, err)
	if t.h.PeerFailed != nil {
		id := p.id
		t.ev.post(func() { t.h.PeerFailed(id, err) })
	}
}

// closePeer aborts p's batches with err and starts closing its endpoint.
func (t *Transport) closePeer(p *Peer, err error) *epClose {
	p.closed = true
	if p.state.Load() == peerOpen {
		p.state.Store(peerClosed)
		p.setErr(err)
	}
	for b := range p.batches {
		t.abort(b, err)
	}
	// Force only when the peer is known dead, or when requests are in
	// flight and UCX can purge them (peer mode; UCX tracks requests for
	// purging only then). Otherwise flush, which drains in-flight requests
	// if the peer progresses, within CloseTimeout. Forcing more often is
	// not safe on UCX 1.13: force-closing a peer-mode endpoint whose wireup
	// is still in flight trips an assertion in ucp_request.c ("got REP
	// message") and aborts the process.
	force := p.failErr != nil || (t.cfg.ErrMode == ErrModePeer && len(p.batches) > 0)
	if !force && len(p.batches) == 0 {
		// Nothing in flight: the rkeys can go before a flushing close.
		p.destroyRkeys()
	}
	c := &epClose{p: p, force: force, deadline: time.Now().Add(t.cfg.CloseTimeout), done: make(chan struct{})}
	if p.ep != nil {
		r := C.hx_ep_close(p.ep, boolInt(force))
		p.ep = nil
		if r != nil && C.hx_ptr_is_err(C.ucs_status_ptr_t(r)) == 0 {
			c.req = r
		}
	}
	t.closing = append(t.closing, c)
	return c
}

// pollCloses completes endpoint closes.
func (t *Transport) pollCloses() {
	now := time.Now()
	kept := t.closing[:0]
	for _, c := range t.closing {
		if c.req != nil && C.hx_req_status(c.req) != statusInProgress {
			C.hx_req_free(c.req)
			c.req = nil
		}
		if c.req == nil && len(c.p.batches) > 0 && t.cfg.ErrMode != ErrModePeer && c.force {
			// Without peer error handling a forced close does not purge
			// requests (UCX tracks them only in peer mode): settle now.
			t.orphanAll(c.p)
		}
		if c.req == nil && len(c.p.batches) == 0 {
			t.finishPeer(c.p)
			if !c.signaled {
				close(c.done)
				c.signaled = true
			}
			continue
		}
		if !c.signaled && now.After(c.deadline) {
			// Stop waiting: settle the batches (their requests stay with
			// UCX; see orphan) and keep polling the close.
			t.orphanAll(c.p)
			close(c.done)
			c.signaled = true
		}
		kept = append(kept, c)
	}
	for i := len(kept); i < len(t.closing); i++ {
		t.closing[i] = nil
	}
	t.closing = kept
}

// finishPeer releases what is left of a closed peer.
func (t *Transport) finishPeer(p *Peer) {
	p.destroyRkeys()
	if p.ep != nil {
		// Only reached at shutdown for peers never closed.
		r := C.hx_ep_close(p.ep, 1)
		p.ep = nil
		if r != nil && C.hx_ptr_is_err(C.ucs_status_ptr_t(r)) == 0 {
			C.hx_req_free(r)
		}
	}
	delete(t.peers, p)
	peersByKey.Delete(p.key)
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func statusErr(op string, code int) error {
	return &StatusError{Code: code, Name: C.GoString(C.hx_status_string(C.int(code))), Op: op}
}

// ---- handler dispatch -----------------------------------------------------

// dispatcher runs handler calls in order on its own goroutine, so that
// handlers may call any Peer method (including ones that wait for the
// progress goroutine) and never stall UCX progress.
type dispatcher struct {
	mu     sync.Mutex
	q      []func()
	closed bool
	sig    chan struct{}
}

func (d *dispatcher) init() {
	d.sig = make(chan struct{}, 1)
	go d.loop()
}

func (d *dispatcher) post(f func()) {
	d.mu.Lock()
	if !d.closed {
		d.q = append(d.q, f)
	}
	d.mu.Unlock()
	select {
	case d.sig <- struct{}{}:
	default:
	}
}

func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.sig <- struct{}{}:
	default:
	}
}

func (d *dispatcher) loop() {
	for range d.sig {
		for {
			d.mu.Lock()
			q := d.q
			d.q = nil
			closed := d.closed
			d.mu.Unlock()
			for _, f := range q {
				f()
			}
			if len(q) == 0 {
				if closed {
					return
				}
				break
			}
		}
	}
}
