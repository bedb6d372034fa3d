package transport_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// safetyNet bounds waits in this package's tests; it only turns hangs into
// failures.
const safetyNet = 60 * time.Second

type note struct {
	from transport.PeerID
	msg  []byte
}

type failure struct {
	peer transport.PeerID
	err  error
}

// events records handler calls on channels.
type events struct {
	notes  chan note
	failed chan failure
}

func newEvents() *events {
	return &events{notes: make(chan note, 1024), failed: make(chan failure, 1024)}
}

func (e *events) handlers() transport.Handlers {
	return transport.Handlers{
		Notify: func(from transport.PeerID, msg []byte) {
			e.notes <- note{from, slices.Clone(msg)}
		},
		PeerFailed: func(p transport.PeerID, err error) {
			e.failed <- failure{p, err}
		},
	}
}

// recv receives from ch or fails the test after safetyNet.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(safetyNet):
		t.Fatalf("no %s within %v", what, safetyNet)
		panic("unreachable")
	}
}

// settle waits for b or fails the test after safetyNet.
func settle(t *testing.T, b transport.Batch) transport.Result {
	t.Helper()
	select {
	case <-b.Done():
	case <-time.After(safetyNet):
		t.Fatalf("batch did not settle within %v", safetyNet)
	}
	return b.Result()
}

// isDone reports whether b has settled, without waiting.
func isDone(b transport.Batch) bool {
	select {
	case <-b.Done():
		return true
	default:
		return false
	}
}

func newInproc(t *testing.T) (transport.Transport, *events) {
	ev := newEvents()
	tr := transport.NewInproc(ev.handlers())
	t.Cleanup(func() { _ = tr.Close() })
	return tr, ev
}

// newFaulty returns a fault-wrapped inproc transport driven by plan.
func newFaulty(t *testing.T, plan *transport.FaultPlan) (transport.Transport, *events) {
	ev := newEvents()
	tr := transport.WithFaults(transport.NewInproc(plan.Handlers(ev.handlers())), plan)
	t.Cleanup(func() { _ = tr.Close() })
	return tr, ev
}

func mustConnect(t *testing.T, a, b transport.Transport) transport.Peer {
	t.Helper()
	p, err := a.Connect(context.Background(), b.Address())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return p
}

func mustAlloc(t *testing.T, tr transport.Transport, n int) transport.Memory {
	t.Helper()
	m, err := tr.Alloc(n, transport.HostMemory)
	if err != nil {
		t.Fatalf("Alloc: %v", err)
	}
	return m
}

func mustImport(t *testing.T, p transport.Peer, m transport.Memory) transport.RemoteMemory {
	t.Helper()
	rm, err := p.Import(m.Desc())
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return rm
}

// opsOf returns n ops of size bytes at i*size on both sides.
func opsOf(local transport.Memory, remote transport.RemoteMemory, n, size int) []transport.Op {
	ops := make([]transport.Op, n)
	for i := range ops {
		off := uint64(i * size)
		ops[i] = transport.Op{Local: local, Remote: remote, LocalOff: off, RemoteOff: off, Len: uint64(size)}
	}
	return ops
}

// manualSleep is a SleepFunc driven by the test: each sleep reports its
// duration on calls and returns when the test releases it or ctx ends.
type manualSleep struct {
	calls   chan time.Duration
	release chan struct{}
}

func newManualSleep() *manualSleep {
	return &manualSleep{calls: make(chan time.Duration, 64), release: make(chan struct{})}
}

func (m *manualSleep) sleep(ctx context.Context, d time.Duration) {
	m.calls <- d
	select {
	case <-m.release:
	case <-ctx.Done():
	}
}
