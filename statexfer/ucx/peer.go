package ucx

/*
#include <stdlib.h>
#include "hx.h"
*/
import "C"

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// PeerID is transport.PeerID.
type PeerID = transport.PeerID

const (
	peerOpen int32 = iota
	peerClosed
	peerFailed
)

// Peer is an endpoint to one remote Transport. It implements transport.Peer.
type Peer struct {
	t         *Transport
	id        PeerID
	key       uint64
	remoteTid uint64

	state  atomic.Int32
	errMu  sync.Mutex
	errVal error // why the peer is closed or failed

	// mapMu is held for reading by mapped copies (which dereference
	// pointers from ucp_rkey_ptr) and for writing while rkeys are destroyed.
	mapMu   sync.RWMutex
	mapGone bool

	// rmaGet: the endpoint has get protocols of its own (ucp_ep_print_info
	// lists "get[" lines), i.e. one-sided lanes to memory of their md.
	rmaGet atomic.Bool

	// Owned by the progress goroutine.
	ep      C.ucp_ep_h
	closed  bool
	failErr error
	remotes map[string]*Remote
	batches map[*Batch]struct{}
}

var _ transport.Peer = (*Peer)(nil)

// Remote is a peer's memory range imported through Peer.Import.
type Remote struct {
	p      *Peer
	desc   transport.MemDesc
	rkey   C.ucp_rkey_h
	mapped unsafe.Pointer // Desc().Addr mapped by ucp_rkey_ptr, or nil (not Go memory)
}

// Desc implements transport.RemoteMemory.
func (r *Remote) Desc() transport.MemDesc { return r.desc }

// Mapped reports whether ucp_rkey_ptr mapped the range into this process
// (the peer is on this host and its memory is UCX-allocated shared memory).
func (r *Remote) Mapped() bool { return r.mapped != nil }

// MappedBytes returns the range as mapped into this process by
// ucp_rkey_ptr, or nil when it is not mapped. The slice aliases the
// peer's memory (not Go memory) and is valid only while the Peer is open;
// benchmarks use it to copy the same source bytes the mapped path reads.
func (r *Remote) MappedBytes() []byte {
	if r.mapped == nil {
		return nil
	}
	return unsafe.Slice((*byte)(r.mapped), r.desc.Len)
}

// Connect implements transport.Transport. It creates an endpoint from the
// peer's address with Config.ErrMode. UCX wires it up in the background; the
// first operations complete once it is connected.
func (t *Transport) Connect(ctx context.Context, addr []byte) (transport.Peer, error) {
	return t.ConnectPeer(ctx, addr)
}

// ConnectPeer is Connect returning the concrete type.
func (t *Transport) ConnectPeer(ctx context.Context, addr []byte) (*Peer, error) {
	tid, waddr, err := parseAddress(addr)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := &Peer{
		t:         t,
		id:        t.idFor(tid),
		key:       regNext.Add(1),
		remoteTid: tid,
		remotes:   make(map[string]*Remote),
		batches:   make(map[*Batch]struct{}),
	}
	caddr := C.CBytes(waddr)
	defer C.free(caddr)
	err = t.call(ctx, func() error {
		peersByKey.Store(p.key, p)
		mode := C.int(0)
		if t.cfg.ErrMode == ErrModePeer {
			mode = 1
		}
		if st := C.hx_ep_create(t.worker, caddr, mode, C.uintptr_t(p.key), &p.ep); st != 0 {
			peersByKey.Delete(p.key)
			return statusErr("ucp_ep_create", int(st))
		}
		t.peers[p] = struct{}{}
		return nil
	}, func() {
		t.closePeer(p, fmt.Errorf("ucx: connect abandoned: %w", transport.ErrClosed))
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ID implements transport.Peer. Every Peer connected to the same remote
// Transport has the same ID, which is also the ID notifications from that
// Transport carry.
func (p *Peer) ID() PeerID { return p.id }

func (p *Peer) setErr(err error) {
	p.errMu.Lock()
	if p.errVal == nil {
		p.errVal = err
	}
	p.errMu.Unlock()
}

// usable returns nil while the peer is open.
func (p *Peer) usable() error {
	if p.state.Load() == peerOpen {
		return nil
	}
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.errVal != nil {
		return p.errVal
	}
	return fmt.Errorf("ucx: peer: %w", transport.ErrClosed)
}

// Packed keys in MemDesc.Key: "HXK1", crc32 of the rest, owner transport id,
// UCX packed rkey. The envelope lets Import reject foreign or damaged keys
// before UCX parses them (ucp_ep_rkey_unpack trusts its input).
func wrapKey(tid uint64, rkey []byte) []byte {
	k := make([]byte, 0, 16+len(rkey))
	k = append(k, keyMagic...)
	k = append(k, 0, 0, 0, 0)
	k = binary.LittleEndian.AppendUint64(k, tid)
	k = append(k, rkey...)
	binary.LittleEndian.PutUint32(k[4:], crc32.ChecksumIEEE(k[8:]))
	return k
}

func unwrapKey(k []byte) (tid uint64, rkey []byte, ok bool) {
	if len(k) <= 16 || string(k[:4]) != keyMagic {
		return 0, nil, false
	}
	if binary.LittleEndian.Uint32(k[4:]) != crc32.ChecksumIEEE(k[8:]) {
		return 0, nil, false
	}
	return binary.LittleEndian.Uint64(k[8:]), k[16:], true
}

// Import implements transport.Peer: it checks the descriptor's envelope and
// owner, unpacks the rkey on this endpoint and tries ucp_rkey_ptr. Importing
// the same descriptor again returns the same Remote. Remotes live until the
// Peer closes.
func (p *Peer) Import(d transport.MemDesc) (transport.RemoteMemory, error) {
	return p.ImportRemote(d)
}

// ImportRemote is Import returning the concrete type.
func (p *Peer) ImportRemote(d transport.MemDesc) (*Remote, error) {
	tid, rkey, ok := unwrapKey(d.Key)
	if !ok {
		return nil, fmt.Errorf("%w: not a ucx key (%d bytes)", transport.ErrBadKey, len(d.Key))
	}
	if tid != p.remoteTid {
		return nil, fmt.Errorf("%w: key belongs to transport %x, peer is %x", transport.ErrBadKey, tid, p.remoteTid)
	}
	if d.Len == 0 || d.Addr+d.Len < d.Addr {
		return nil, fmt.Errorf("%w: range [%#x, +%d)", transport.ErrBadKey, d.Addr, d.Len)
	}
	if err := p.t.Supports(d.Kind); err != nil {
		return nil, fmt.Errorf("import a peer's range: %w", err)
	}
	if err := p.usable(); err != nil {
		return nil, err
	}
	ck := fmt.Sprintf("%x/%x/", d.Addr, d.Len) + string(d.Key)
	crkey := C.CBytes(rkey)
	defer C.free(crkey)
	var r *Remote
	err := p.t.callSync(func() error {
		if p.closed {
			return p.usable()
		}
		if old, ok := p.remotes[ck]; ok {
			r = old
			return nil
		}
		nr := &Remote{p: p, desc: transport.MemDesc{Addr: d.Addr, Len: d.Len, Key: bytes.Clone(d.Key), Kind: d.Kind}}
		if st := C.ucp_ep_rkey_unpack(p.ep, crkey, &nr.rkey); st != 0 {
			return fmt.Errorf("%w: %w", transport.ErrBadKey, statusErr("ucp_ep_rkey_unpack", int(st)))
		}
		p.rmaGet.Store(strings.Contains(p.infoLocked(), "get["))
		var ptr unsafe.Pointer
		if d.Kind.IsHost() && C.ucp_rkey_ptr(nr.rkey, C.uint64_t(d.Addr), &ptr) == 0 && ptr != nil {
			nr.mapped = ptr
			p.prefault(ptr, d.Len)
		}
		p.remotes[ck] = nr
		r = nr
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// destroyRkeys runs on the progress goroutine once no op uses them.
func (p *Peer) destroyRkeys() {
	if len(p.remotes) == 0 && p.mapGone {
		return
	}
	p.mapMu.Lock() // waits for mapped copies in progress
	p.mapGone = true
	p.mapMu.Unlock()
	for k, r := range p.remotes {
		C.ucp_rkey_destroy(r.rkey)
		r.rkey = nil
		delete(p.remotes, k)
	}
}

// Read implements transport.Peer.
func (p *Peer) Read(ops []transport.Op) (transport.Batch, error) {
	b, err := p.post(transport.RunsOf(ops), false)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// ReadRanges implements transport.Peer: each run's memories are resolved
// and its ranges bounds-checked once, in one pass.
func (p *Peer) ReadRanges(runs []transport.Ranges) (transport.Batch, error) {
	b, err := p.post(runs, false)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Write implements transport.Peer. The batch completes after an endpoint
// flush, when the data is visible in the peer's memory.
func (p *Peer) Write(ops []transport.Op) (transport.Batch, error) {
	b, err := p.post(transport.RunsOf(ops), true)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// ReadBatch and WriteBatch are Read and Write returning the concrete type.
func (p *Peer) ReadBatch(ops []transport.Op) (*Batch, error) {
	return p.post(transport.RunsOf(ops), false)
}
func (p *Peer) WriteBatch(ops []transport.Op) (*Batch, error) {
	return p.post(transport.RunsOf(ops), true)
}

// run is a checked run of a batch: its memories resolved to this package's
// types.
type run struct {
	local  *Memory
	remote *Remote
	ranges []transport.Range
}

func (p *Peer) post(in []transport.Ranges, write bool) (*Batch, error) {
	runs := make([]run, len(in))
	mapped := !p.t.noMap.Load()
	var total uint64
	n := 0
	for i, r := range in {
		if err := transport.CheckRanges(n, r); err != nil {
			return nil, err
		}
		lm, ok := r.Local.(*Memory)
		if !ok || lm.t != p.t {
			return nil, fmt.Errorf("%w: %w: op %d: local memory", transport.ErrUnsupported, ErrForeignMemory, n)
		}
		if lm.closed.Load() {
			return nil, fmt.Errorf("%w: op %d: local memory closed", transport.ErrClosed, n)
		}
		rm, ok := r.Remote.(*Remote)
		if !ok || rm.p != p {
			return nil, fmt.Errorf("%w: %w: op %d: remote memory not imported through this peer", transport.ErrBadKey, ErrForeignMemory, n)
		}
		for _, g := range r.Ranges {
			total += g.Len
		}
		runs[i] = run{local: lm, remote: rm, ranges: r.Ranges}
		// The mapped path copies with the CPU: host memory on both ends.
		mapped = mapped && ((rm.mapped != nil && lm.buf != nil) || len(r.Ranges) == 0)
		n += len(r.Ranges)
	}
	if err := p.usable(); err != nil {
		return nil, err
	}
	b := &Batch{p: p, t: p.t, write: write, n: n, bytes: total, done: make(chan struct{})}
	switch {
	case n == 0:
		b.path = PathNone
		b.settle(transport.Result{})
		return b, nil
	case mapped:
		b.path = PathMapped
		if total <= inlineMapped {
			b.copyMapped(runs) // small: no goroutine hand-off
		} else {
			go b.copyMapped(runs)
		}
		return b, nil
	}
	b.path = p.rmaPath(runs)
	c := C.hx_batch_new(nil, C.uint32_t(n), boolInt(write))
	if c == nil {
		return nil, fmt.Errorf("%w: batch of %d ops", ErrNoResource, n)
	}
	laddr := unsafe.Slice((*uint64)(unsafe.Pointer(c.laddr)), n)
	raddr := unsafe.Slice((*uint64)(unsafe.Pointer(c.raddr)), n)
	lens := unsafe.Slice((*uint64)(unsafe.Pointer(c.len)), n)
	i := 0
	for _, r := range runs {
		lb, rb := uint64(r.local.base), r.remote.desc.Addr
		for _, g := range r.ranges {
			laddr[i], raddr[i], lens[i] = lb+g.LocalOff, rb+g.RemoteOff, g.Len
			i++
		}
	}
	b.c = c
	// The rkeys are copied by start, on the progress goroutine: it owns
	// them and destroys them when the peer closes.
	err := p.t.submit(func() { p.t.start(b, runs) })
	if err != nil {
		C.hx_batch_free(c)
		return nil, err
	}
	return b, nil
}

// MappedReadNs is the fixed cost of one read on the mapped path, as
// ReadCostNs reports it: BenchmarkMappedSmallReads measured about 55 ns per
// 2 KiB read over copy() of the same ranges (posting included; bench
// transfer's post_ns_per_read was 11-52 ns), where plan.DefaultCost
// assumes 500 ns for a UCX-posted read.
const MappedReadNs = 50

// EmulatedReadNs is the fixed cost of one read on the emulated path (gets
// served by active messages in the target's progress: UCX over tcp, or
// error mode peer), as ReadCostNs reports it. Measured with `UCX_TLS=tcp
// hybridxfer bench transfer --prompt-tokens 8192` (qwen3.5-27b 2 -> 4,
// 66,304 reads, loopback): 12 us per read beyond one TCP stream's time
// for the same bytes (the ranks' reads overlap, so a rank's own reads
// cost more); 10 us keeps it conservative. At this price Auto stages
// plans of many small reads, which bench transfer measured faster there
// (staged 0.26, direct 0.19 of a TCP stream).
const EmulatedReadNs = 10000

// ReadCostNs implements transport.ReadCoster: MappedReadNs for a remote
// memory the mapped path copies (ucp_rkey_ptr mapped it and mapping is
// on), EmulatedReadNs where UCX emulates the gets, unknown otherwise
// (one-sided gets on shared memory with mapping off).
func (p *Peer) ReadCostNs(m transport.RemoteMemory) (float64, bool) {
	r, ok := m.(*Remote)
	if !ok || r.p != p {
		return 0, false
	}
	if r.mapped != nil && !p.t.noMap.Load() {
		return MappedReadNs, true
	}
	if p.rmaPath([]run{{remote: r, ranges: []transport.Range{{Len: 1}}}}) == PathEmulated {
		return EmulatedReadNs, true
	}
	return 0, false
}

// rmaPath is the path UCX takes for gets/puts through this endpoint:
// one-sided when the memory is reachable through shared memory (rkey_ptr
// works, so UCX-allocated shm) and the endpoint has get protocols on shm
// lanes (error mode none); emulated (active messages served by the target's
// progress) otherwise. TestOneSidedWithoutTargetProgress checks the claim.
func (p *Peer) rmaPath(runs []run) Path {
	if p.t.cfg.ErrMode == ErrModePeer || !p.rmaGet.Load() {
		return PathEmulated
	}
	for _, r := range runs {
		if r.remote.mapped == nil && len(r.ranges) > 0 {
			return PathEmulated
		}
	}
	return PathOneSided
}

// Notify implements transport.Peer. The message is sent as an eager active
// message after every batch that completed before the call. When the worker
// is free (its progress loop idle or between rounds) and no command is
// queued, the caller sends it at once under the worker lock; otherwise it
// is queued behind the commands submitted before it. Payloads above
// Config.MaxNotify fail with ErrNotifyTooLarge. A send that fails marks
// the peer failed (Handlers.PeerFailed).
func (p *Peer) Notify(msg []byte) error {
	if len(msg) > p.t.cfg.MaxNotify {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrNotifyTooLarge, len(msg), p.t.cfg.MaxNotify)
	}
	if err := p.usable(); err != nil {
		return err
	}
	t := p.t
	if t.qlen.Load() == 0 && t.wmu.TryLock() {
		sent := t.notifyLocked(p, msg)
		t.wmu.Unlock()
		if sent {
			return nil
		}
	}
	var cmsg unsafe.Pointer
	if len(msg) > 0 {
		cmsg = C.CBytes(msg)
	}
	// Queued: the send follows every command submitted before it (so it
	// follows the batches this side completed), and the caller does not
	// wait for the progress goroutine to wake.
	err := t.submit(func() {
		defer C.free(cmsg)
		t.sendNotify(p, cmsg, len(msg))
	})
	if err != nil {
		C.free(cmsg)
	}
	return err
}

// notifyLocked sends msg now if nothing is queued before it (wmu held):
// a queued command may be an earlier notification, which must go first.
// It reports whether it sent (or dropped it for a closed peer).
func (t *Transport) notifyLocked(p *Peer, msg []byte) bool {
	if t.stopping || t.qlen.Load() != 0 {
		return false
	}
	var ptr unsafe.Pointer
	if len(msg) > 0 {
		ptr = unsafe.Pointer(&msg[0]) // hx_am_send copies it before returning
	}
	t.sendNotify(p, ptr, len(msg))
	if t.sleeping.Load() != 0 {
		// Wake the loop (off the message's path: it is on its way): it
		// completes a send still in flight and then spins for
		// Config.SpinFor, ready for the answer a notification usually
		// gets.
		t.mu.Lock()
		t.wakeLocked()
		t.mu.Unlock()
	}
	return true
}

// sendNotify posts the active message (wmu held); a closed peer's message
// is dropped.
func (t *Transport) sendNotify(p *Peer, msg unsafe.Pointer, n int) {
	if p.closed {
		return
	}
	st := int(C.hx_am_send(p.ep, C.HX_AM_NOTIFY, C.uint64_t(t.tid), msg, C.size_t(n), 0))
	if st != statusOK && st != statusInProgress {
		t.failPeer(p, statusErr("ucp_am_send_nbx", st))
	}
}

// inlineMapped is the largest mapped batch copied on the caller's
// goroutine; larger ones get a goroutine of their own.
const inlineMapped = 256 << 10

// Close implements transport.Peer: in-flight batches fail with
// transport.ErrClosed and the endpoint is closed. The close is forced when
// the error mode is ErrModePeer and UCX requests are in flight (UCX then
// purges them); otherwise it flushes, which needs the peer to progress, and
// Close waits for at most Config.CloseTimeout. Batches still in flight then
// are settled and their requests left to UCX (see the package
// documentation).
func (p *Peer) Close() error {
	var c *epClose
	err := p.t.callSync(func() error {
		if p.closed {
			return nil
		}
		c = p.t.closePeer(p, fmt.Errorf("ucx: peer: %w", transport.ErrClosed))
		return nil
	})
	if err != nil {
		if p.t.isClosed() {
			return nil
		}
		return err
	}
	if c != nil {
		<-c.done
	}
	return nil
}

// Fail declares the peer dead from outside UCX, for example when the side
// channel's heartbeat stops while the endpoint uses ErrModeNone (in which
// UCX does not detect peer failure). In-flight batches fail with an error
// wrapping transport.ErrDisconnected and cause, the endpoint is
// force-closed and Handlers.PeerFailed is called. It returns when the
// failure has been applied, not when the endpoint close completes.
func (p *Peer) Fail(cause error) {
	if cause == nil {
		cause = fmt.Errorf("ucx: peer declared failed")
	}
	err := fmt.Errorf("%w: %w", transport.ErrDisconnected, cause)
	_ = p.t.callSync(func() error {
		if !p.closed {
			p.t.failPeer(p, err)
		}
		return nil
	})
}

// Info returns UCX's description of the endpoint (ucp_ep_print_info): its
// lanes and the transports they use.
func (p *Peer) Info() string {
	var s string
	_ = p.t.callSync(func() error {
		s = p.infoLocked()
		return nil
	})
	return s
}

func (p *Peer) infoLocked() string {
	if p.ep == nil {
		return ""
	}
	var n C.size_t
	buf := C.hx_ep_info(p.ep, &n)
	if buf == nil {
		return ""
	}
	defer C.free(unsafe.Pointer(buf))
	return C.GoStringN(buf, C.int(n))
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}
