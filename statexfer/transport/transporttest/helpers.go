package transporttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// note is one notification seen by a recorder.
type note struct {
	from transport.PeerID
	msg  []byte
}

// failure is one PeerFailed call seen by a recorder.
type failure struct {
	peer transport.PeerID
	err  error
}

// recorder collects handler calls and lets tests wait for them.
type recorder struct {
	// onNotify, when set before the transport exists, runs inside the
	// Notify handler before the note is recorded.
	onNotify func(from transport.PeerID, msg []byte)

	mu      sync.Mutex
	notes   []note
	failed  []failure
	changed chan struct{} // closed and replaced on every event
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) handlers() transport.Handlers {
	return transport.Handlers{
		Notify: func(from transport.PeerID, msg []byte) {
			if r.onNotify != nil {
				r.onNotify(from, msg)
			}
			r.mu.Lock()
			r.notes = append(r.notes, note{from: from, msg: slices.Clone(msg)})
			r.signalLocked()
			r.mu.Unlock()
		},
		PeerFailed: func(p transport.PeerID, err error) {
			r.mu.Lock()
			r.failed = append(r.failed, failure{peer: p, err: err})
			r.signalLocked()
			r.mu.Unlock()
		},
	}
}

func (r *recorder) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitFor waits until cond (called with r.mu held) is true, failing the test
// after settleWait.
func (r *recorder) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(settleWait)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("gave up after %v waiting for %s", settleWait, what)
		}
	}
}

// waitNotes waits for at least n notifications and returns a copy of all.
func (r *recorder) waitNotes(t testing.TB, n int) []note {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("%d notifications", n), func() bool { return len(r.notes) >= n })
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notes)
}

// waitFailed waits for PeerFailed(p) and returns its error.
func (r *recorder) waitFailed(t testing.TB, p transport.PeerID) error {
	t.Helper()
	var err error
	r.waitFor(t, fmt.Sprintf("PeerFailed(%d)", p), func() bool {
		for _, f := range r.failed {
			if f.peer == p {
				err = f.err
				return true
			}
		}
		return false
	})
	return err
}

// failures returns a copy of the PeerFailed calls so far.
func (r *recorder) failures() []failure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.failed)
}

// node is a transport under test with its recorder.
type node struct {
	tr  transport.Transport
	rec *recorder
}

// newNode makes a transport with a fresh recorder and closes it at cleanup.
func newNode(t *testing.T, env Env) *node {
	t.Helper()
	return newNodeWith(t, env, newRecorder())
}

func newNodeWith(t *testing.T, env Env, rec *recorder) *node {
	t.Helper()
	tr := env.New(t, rec.handlers())
	t.Cleanup(func() { _ = tr.Close() })
	return &node{tr: tr, rec: rec}
}

// connect opens a peer from a to b and closes it at cleanup.
func connect(t testing.TB, a, b transport.Transport) transport.Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleWait)
	defer cancel()
	p, err := a.Connect(ctx, b.Address())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// alloc allocates size bytes and closes them at cleanup.
func alloc(t testing.TB, tr transport.Transport, size int) transport.Memory {
	t.Helper()
	m, err := tr.Alloc(size, transport.HostMemory)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", size, err)
	}
	if got := len(m.Bytes()); got != size {
		t.Fatalf("Alloc(%d): %d bytes", size, got)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// importMem imports m's descriptor through p, as a peer would after
// receiving the descriptor on the wire (the key is copied).
func importMem(t testing.TB, p transport.Peer, m transport.Memory) transport.RemoteMemory {
	t.Helper()
	d := m.Desc()
	d.Key = slices.Clone(d.Key)
	rm, err := p.Import(d)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return rm
}

// fill writes deterministic pseudo-random bytes.
func fill(buf []byte, seed uint64) {
	var s [32]byte
	for i := range 4 {
		s[i] = byte(seed >> (8 * i))
		s[8+i] = byte(seed >> (8 * (i + 4)))
	}
	rand.NewChaCha8(s).Read(buf)
}

// waitBatch waits for b to settle, or returns an error after settleWait.
func waitBatch(b transport.Batch) (transport.Result, error) {
	timer := time.NewTimer(settleWait)
	defer timer.Stop()
	select {
	case <-b.Done():
		return b.Result(), nil
	case <-timer.C:
		return transport.Result{}, fmt.Errorf("batch did not settle within %v", settleWait)
	}
}

// mustSettle waits for b to settle and checks the shape of its Result.
func mustSettle(t testing.TB, b transport.Batch, nops int) transport.Result {
	t.Helper()
	res, err := waitBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkResult(res, nops); err != nil {
		t.Fatal(err)
	}
	return res
}

// mustSucceed waits for b and fails the test unless every op succeeded.
func mustSucceed(t testing.TB, b transport.Batch, nops int) {
	t.Helper()
	if res := mustSettle(t, b, nops); res.Err != nil {
		t.Fatalf("batch failed: %v (failed ops %v)", res.Err, res.Failed)
	}
}

// checkResult checks the Result invariants: Err nil iff Failed empty,
// Failed ascending, unique and in range.
func checkResult(res transport.Result, nops int) error {
	if (res.Err == nil) != (len(res.Failed) == 0) {
		return fmt.Errorf("result: Err %v with Failed %v", res.Err, res.Failed)
	}
	for i, f := range res.Failed {
		if f < 0 || f >= nops {
			return fmt.Errorf("result: failed index %d outside %d ops", f, nops)
		}
		if i > 0 && res.Failed[i-1] >= f {
			return fmt.Errorf("result: Failed %v not strictly ascending", res.Failed)
		}
	}
	return nil
}

// layout returns offsets for ranges of the given lengths that do not overlap
// and fit in size bytes, spread with random gaps, in the order of lens.
func layout(rng *rand.Rand, size uint64, lens []uint64) []uint64 {
	var total uint64
	for _, l := range lens {
		total += l
	}
	if total > size {
		panic(fmt.Sprintf("transporttest: %d bytes of ranges do not fit %d", total, size))
	}
	// Place ranges in a random order with random gaps.
	order := rng.Perm(len(lens))
	slack := size - total
	offs := make([]uint64, len(lens))
	var at uint64
	for _, i := range order {
		gap := uint64(0)
		if slack > 0 {
			gap = rng.Uint64N(slack/uint64(len(lens)) + 1)
		}
		slack -= gap
		at += gap
		offs[i] = at
		at += lens[i]
	}
	return offs
}

// window is a range of a memory region that random ops stay inside.
type window struct{ off, len uint64 }

// randomOps returns n ops of 1..maxLen bytes with unaligned offsets,
// anywhere in local and remote. The destination side (local for reads,
// remote for writes) never overlaps within the batch; the source side may.
func randomOps(rng *rand.Rand, write bool, local transport.Memory, remote transport.RemoteMemory, n int, maxLen uint64) []transport.Op {
	lw := window{0, uint64(len(local.Bytes()))}
	rw := window{0, remote.Desc().Len}
	return randomOpsIn(rng, write, local, lw, remote, rw, n, maxLen)
}

// randomOpsIn is randomOps inside windows of local and remote.
func randomOpsIn(rng *rand.Rand, write bool, local transport.Memory, lw window, remote transport.RemoteMemory, rw window, n int, maxLen uint64) []transport.Op {
	src, dst := rw, lw
	if write {
		src, dst = lw, rw
	}
	maxLen = min(maxLen, src.len, dst.len/uint64(n))
	lens := make([]uint64, n)
	for i := range lens {
		lens[i] = 1 + rng.Uint64N(maxLen)
	}
	dstOffs := layout(rng, dst.len, lens)
	ops := make([]transport.Op, n)
	for i, l := range lens {
		d := dst.off + dstOffs[i]
		s := src.off + rng.Uint64N(src.len-l+1)
		if i == n-1 && n > 1 {
			s = src.off + src.len - l // exercise the last source byte
		}
		op := transport.Op{Local: local, Remote: remote, Len: l, LocalOff: d, RemoteOff: s}
		if write {
			op.LocalOff, op.RemoteOff = s, d
		}
		ops[i] = op
	}
	return ops
}

// apply applies ops to a model of the destination from a copy of the source.
func apply(dst, src []byte, ops []transport.Op, write bool, skip []int) {
	for i, op := range ops {
		if slices.Contains(skip, i) {
			continue
		}
		if write {
			copy(dst[op.RemoteOff:op.RemoteOff+op.Len], src[op.LocalOff:op.LocalOff+op.Len])
		} else {
			copy(dst[op.LocalOff:op.LocalOff+op.Len], src[op.RemoteOff:op.RemoteOff+op.Len])
		}
	}
}

// diff describes the first difference between got and want, or "".
func diff(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	// got may still be changing under a broken backend: stay in range.
	i := 0
	for i < len(got)-1 && got[i] == want[i] {
		i++
	}
	j := len(got) - 1
	for j > i && got[j] == want[j] {
		j--
	}
	return fmt.Sprintf("bytes [%d, %d] differ (first: %#02x, want %#02x)", i, j, got[i], want[i])
}

// opBytesEqual reports whether op's destination holds its source bytes.
func opBytesEqual(op transport.Op, local, remote []byte) bool {
	l := local[op.LocalOff : op.LocalOff+op.Len]
	r := remote[op.RemoteOff : op.RemoteOff+op.Len]
	return bytes.Equal(l, r)
}

// isAny reports whether err matches any of targets.
func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
