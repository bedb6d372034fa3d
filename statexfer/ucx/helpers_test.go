package ucx

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// hangGuard bounds every wait in these tests. It is never a performance
// assertion: healthy runs finish far below it.
const hangGuard = 60 * time.Second

type namedConfig struct {
	name string
	cfg  Config
	path Path // path of a read of a single remote range
}

func shmTLS() map[string]string { return map[string]string{"TLS": "shm,self"} }
func tcpTLS() map[string]string { return map[string]string{"TLS": "tcp"} }

// configs are the in-process variants every behavior test runs on.
func configs() []namedConfig {
	return []namedConfig{
		{"shm-mapped", Config{UCX: shmTLS()}, PathMapped},
		{"shm-onesided", Config{UCX: shmTLS(), DisableMapped: true}, PathOneSided},
		{"tcp", Config{UCX: tcpTLS()}, PathEmulated},
		{"peer-emulated", Config{ErrMode: ErrModePeer, DisableMapped: true}, PathEmulated},
		{"spin-onesided", Config{UCX: shmTLS(), DisableMapped: true, Idle: IdleSpin}, PathOneSided},
	}
}

type event struct {
	from PeerID
	msg  []byte
	err  error
}

// recorder collects handler calls.
type recorder struct {
	notes  chan event
	failed chan event
	// check, if set, runs inside the Notify handler.
	check func(from PeerID, msg []byte)
}

func newRecorder() *recorder {
	return &recorder{notes: make(chan event, 4096), failed: make(chan event, 16)}
}

func (r *recorder) handlers() transport.Handlers {
	return transport.Handlers{
		Notify: func(from PeerID, msg []byte) {
			if r.check != nil {
				r.check(from, msg)
			}
			r.notes <- event{from: from, msg: bytes.Clone(msg)}
		},
		PeerFailed: func(p PeerID, err error) { r.failed <- event{from: p, err: err} },
	}
}

func (r *recorder) next(t testing.TB, ch chan event, what string) event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(hangGuard):
		t.Fatalf("no %s within %v", what, hangGuard)
		return event{}
	}
}

// pair is two Transports in this process: D reads from and writes to P.
type pair struct {
	P, D   *Transport
	pr, dr *recorder
	dp     *Peer // D's endpoint to P
	pd     *Peer // P's endpoint to D
}

func newPairB(t testing.TB, cfg Config) *pair { return newPair(t, cfg) }

func newPair(t testing.TB, cfg Config) *pair {
	t.Helper()
	x := &pair{pr: newRecorder(), dr: newRecorder()}
	var err error
	if x.P, err = New(cfg, x.pr.handlers()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.P.Close() })
	if x.D, err = New(cfg, x.dr.handlers()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.D.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if x.dp, err = x.D.ConnectPeer(ctx, x.P.Address()); err != nil {
		t.Fatal(err)
	}
	if x.pd, err = x.P.ConnectPeer(ctx, x.D.Address()); err != nil {
		t.Fatal(err)
	}
	return x
}

func alloc(t testing.TB, tr *Transport, n int) *Memory {
	t.Helper()
	m, err := tr.AllocMemory(n)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func importRemote(t testing.TB, p *Peer, m *Memory) *Remote {
	t.Helper()
	r, err := p.ImportRemote(m.Desc())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fill writes the pattern of seed into b: every 8-byte word holds a hash of
// its offset, so a misplaced or missing range is detected.
func fill(b []byte, seed uint64) {
	for o := 0; o+8 <= len(b); o += 8 {
		binary.LittleEndian.PutUint64(b[o:], word(uint64(o), seed))
	}
}

func word(off, seed uint64) uint64 {
	x := (off + seed) * 0x9E3779B97F4A7C15
	return x ^ x>>29
}

// checkRange verifies that got holds the pattern of seed at [off, off+len).
// off and len are multiples of 8.
func checkRange(t testing.TB, got []byte, off, seed uint64) bool {
	t.Helper()
	for o := 0; o+8 <= len(got); o += 8 {
		if w := binary.LittleEndian.Uint64(got[o:]); w != word(off+uint64(o), seed) {
			t.Errorf("word at remote offset %d: got %#x want %#x", off+uint64(o), w, word(off+uint64(o), seed))
			return false
		}
	}
	return true
}

func wait(t testing.TB, b transport.Batch) transport.Result {
	t.Helper()
	select {
	case <-b.Done():
		return b.Result()
	case <-time.After(hangGuard):
		t.Fatalf("batch not done within %v", hangGuard)
		return transport.Result{}
	}
}

// blockLoop stops tr's progress goroutine until the returned function is
// called (or the test ends).
func blockLoop(t *testing.T, tr *Transport) (release func()) {
	t.Helper()
	entered, rel := make(chan struct{}), make(chan struct{})
	if err := tr.submit(func() { close(entered); <-rel }); err != nil {
		t.Fatal(err)
	}
	<-entered
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return release
}

// scattered returns n ops of size bytes: local block i <- remote block perm[i].
func scattered(local *Memory, remote *Remote, n int, size uint64, seed uint64) []transport.Op {
	var lm transport.Memory
	var rm transport.RemoteMemory
	if local != nil {
		lm = local
	}
	if remote != nil {
		rm = remote
	}
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	// Deterministic shuffle.
	x := seed | 1
	for i := n - 1; i > 0; i-- {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		j := int(x % uint64(i+1))
		perm[i], perm[j] = perm[j], perm[i]
	}
	ops := make([]transport.Op, n)
	for i := range ops {
		ops[i] = transport.Op{Local: lm, LocalOff: uint64(i) * size, Remote: rm, RemoteOff: uint64(perm[i]) * size, Len: size}
	}
	return ops
}
