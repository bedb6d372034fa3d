package transporttest

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// testPartialFailure wraps a transport of env with transport.WithFaults and
// checks partial failure: injected ops are listed in Failed exactly, the
// others complete byte-exact, and an injected disconnect fails the batch,
// reports PeerFailed and fails later calls.
func testPartialFailure(t *testing.T, env Env) {
	fail := transport.Fault{Kind: transport.FaultFail}
	plan := transport.NewFaultPlan(1).
		Add(transport.Rule{Kind: transport.OpRead, Calls: []int{0}, Ops: []int{1, 4, 5}, Fault: fail}).
		Add(transport.Rule{Kind: transport.OpWrite, Calls: []int{0}, Ops: []int{0, 5}, Fault: fail}).
		Add(transport.Rule{Kind: transport.OpRead, Calls: []int{1}, Fault: fail}).
		Add(transport.Rule{Kind: transport.OpRead, Calls: []int{2}, Ops: []int{0},
			Fault: transport.Fault{Kind: transport.FaultDisconnect}})
	rec := newRecorder()
	fa := transport.WithFaults(env.New(t, plan.Handlers(rec.handlers())), plan)
	t.Cleanup(func() { _ = fa.Close() })
	a := &node{tr: fa, rec: rec}
	b := newNode(t, env)
	p := connect(t, a.tr, b.tr)

	rng := rand.New(rand.NewPCG(0xfa17, 2))
	const size = 64 << 10
	local := alloc(t, a.tr, size)
	remoteMem := alloc(t, b.tr, size)
	rm := importMem(t, p, remoteMem)
	fill(remoteMem.Bytes(), 41)
	fill(local.Bytes(), 42)

	check := func(name string, write bool, ops []transport.Op, wantFailed []int) {
		t.Helper()
		dst, src := local.Bytes(), remoteMem.Bytes()
		post := p.Read
		if write {
			dst, src, post = src, dst, p.Write
		}
		want := slices.Clone(dst)
		apply(want, src, ops, write, wantFailed)
		bt, err := post(ops)
		if err != nil {
			t.Fatalf("%s: post: %v", name, err)
		}
		res := mustSettle(t, bt, len(ops))
		if !slices.Equal(res.Failed, wantFailed) {
			t.Fatalf("%s: Failed %v, want %v", name, res.Failed, wantFailed)
		}
		if !errors.Is(res.Err, transport.ErrInjected) {
			t.Fatalf("%s: Err %v, want ErrInjected", name, res.Err)
		}
		if d := diff(dst, want); d != "" {
			t.Fatalf("%s: destination differs (completed ops must land, failed ones were never posted): %s", name, d)
		}
	}
	check("read call 0", false, randomOps(rng, false, local, rm, 8, 4096), []int{1, 4, 5})
	check("write call 0", true, randomOps(rng, true, local, rm, 6, 4096), []int{0, 5})
	check("read call 1", false, randomOps(rng, false, local, rm, 3, 4096), []int{0, 1, 2})

	got := plan.Injected()
	if len(got) != 8 {
		t.Fatalf("injected %d faults, want 8: %+v", len(got), got)
	}
	for _, in := range got {
		if in.Peer != p.ID() || in.Fault.Kind != transport.FaultFail {
			t.Errorf("injection %+v: want a fail on peer %d", in, p.ID())
		}
	}

	ops := randomOps(rng, false, local, rm, 4, 4096)
	bt, err := p.Read(ops)
	if err != nil {
		t.Fatalf("read call 2: %v", err)
	}
	res := mustSettle(t, bt, len(ops))
	if !errors.Is(res.Err, transport.ErrDisconnected) || !errors.Is(res.Err, transport.ErrInjected) {
		t.Fatalf("read call 2: Err %v, want an injected ErrDisconnected", res.Err)
	}
	if !slices.Equal(res.Failed, []int{0, 1, 2, 3}) {
		t.Fatalf("read call 2: Failed %v, want every op", res.Failed)
	}
	if err := rec.waitFailed(t, p.ID()); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("PeerFailed error %v, want ErrDisconnected", err)
	}
	if err := p.Notify([]byte("x")); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("Notify after disconnect: %v, want ErrDisconnected", err)
	}
	if _, err := p.Read(ops); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("Read after disconnect: %v, want ErrDisconnected", err)
	}
}

// testRemoteClose closes the remote transport with batches in flight.
func testRemoteClose(t *testing.T, env Env) {
	testRemoteGone(t, env, func(tr transport.Transport) bool {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		return true
	})
}

// testRemoteKill kills the remote transport with batches in flight.
func testRemoteKill(t *testing.T, env Env) {
	testRemoteGone(t, env, func(tr transport.Transport) bool { return env.Kill(t, tr) })
}

// testRemoteGone posts reads and writes, ends the remote with end, and
// checks that every batch settles, completed or failed with ErrDisconnected
// (completed reads byte-exact), that PeerFailed reports the peer, and that
// the peer then refuses work.
func testRemoteGone(t *testing.T, env Env, end func(transport.Transport) bool) {
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	const (
		nread  = 8
		nops   = 32
		opLen  = 32 << 10
		perBat = nops * opLen
	)
	local := alloc(t, a.tr, nread*perBat)
	wsrc := alloc(t, a.tr, perBat) // write sources, apart from read destinations
	remoteMem := alloc(t, b.tr, 4<<20)
	rm := importMem(t, p, remoteMem)
	fill(remoteMem.Bytes(), 51)
	fill(local.Bytes(), 52)
	src := slices.Clone(remoteMem.Bytes()) // remote memory may vanish

	rng := rand.New(rand.NewPCG(0xdead, 3))
	type posted struct {
		b     transport.Batch
		ops   []transport.Op
		write bool
	}
	var all []posted
	for i := range nread {
		// Reads come from the first half of the remote range, writes go
		// to the second half: a read's expected bytes never change.
		ops := randomOpsIn(rng, false, local, window{uint64(i * perBat), perBat}, rm, window{0, 2 << 20}, nops, opLen)
		bt, err := p.Read(ops)
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		all = append(all, posted{bt, ops, false})
		if i%4 == 3 {
			wops := randomOpsIn(rng, true, wsrc, window{0, perBat}, rm, window{2 << 20, 2 << 20}, nops, opLen)
			bt, err := p.Write(wops)
			if err != nil {
				t.Fatalf("Write %d: %v", i, err)
			}
			all = append(all, posted{bt, wops, true})
		}
	}
	if !end(b.tr) {
		t.Skip("backend cannot kill a transport")
	}

	for i, x := range all {
		res := mustSettle(t, x.b, len(x.ops))
		if res.Err != nil && !errors.Is(res.Err, transport.ErrDisconnected) {
			t.Errorf("batch %d: Err %v, want nil or ErrDisconnected", i, res.Err)
		}
		if x.write {
			continue
		}
		for j, op := range x.ops {
			if !slices.Contains(res.Failed, j) && !opBytesEqual(op, local.Bytes(), src) {
				t.Errorf("batch %d op %d: reported complete but bytes differ", i, j)
			}
		}
	}
	if err := a.rec.waitFailed(t, p.ID()); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("PeerFailed error %v, want ErrDisconnected", err)
	}
	if err := p.Notify([]byte("x")); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("Notify after the remote ended: %v, want ErrDisconnected", err)
	}
	ops := all[0].ops
	if bt, err := p.Read(ops); err == nil {
		res := mustSettle(t, bt, len(ops))
		if !errors.Is(res.Err, transport.ErrDisconnected) || len(res.Failed) != len(ops) {
			t.Errorf("Read after the remote ended: %+v, want every op failed with ErrDisconnected", res)
		}
	} else if !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("Read after the remote ended: %v, want ErrDisconnected", err)
	}
}

// testCancel cancels large in-flight batches: each settles, Done closes, the
// canceled ops are listed with ErrCanceled, the others are byte-exact, and
// Cancel is idempotent. Cancel must take effect at least once in a few
// attempts on 16 MiB batches.
func testCancel(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	const (
		nops  = 256
		opLen = 64 << 10
		size  = nops * opLen
	)
	local := alloc(t, a.tr, size)
	remoteMem := alloc(t, b.tr, size)
	rm := importMem(t, p, remoteMem)
	fill(remoteMem.Bytes(), 61)
	ops := make([]transport.Op, nops)
	for i := range ops {
		ops[i] = transport.Op{Local: local, Remote: rm, LocalOff: uint64(i * opLen), RemoteOff: uint64((nops - 1 - i) * opLen), Len: opLen}
	}

	const attempts = 10
	took := 0
	for range attempts {
		clear(local.Bytes())
		bt, err := p.Read(ops)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		bt.Cancel()
		res := mustSettle(t, bt, nops)
		bt.Cancel()
		if again := bt.Result(); !errors.Is(again.Err, res.Err) || !slices.Equal(again.Failed, res.Failed) {
			t.Fatalf("Result changed after settling: %+v then %+v", res, again)
		}
		if res.Err != nil {
			if !errors.Is(res.Err, transport.ErrCanceled) {
				t.Fatalf("Err %v, want ErrCanceled", res.Err)
			}
			took++
		}
		for j, op := range ops {
			if !slices.Contains(res.Failed, j) && !opBytesEqual(op, local.Bytes(), remoteMem.Bytes()) {
				t.Fatalf("op %d reported complete but bytes differ", j)
			}
		}
		if took > 0 {
			break
		}
	}
	if took == 0 {
		t.Fatalf("Cancel right after posting never took effect on a %d MiB batch in %d attempts", size>>20, attempts)
	}

	// Wait with an ended context cancels and still waits for settling.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	bt, err := p.Read(ops)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	done := make(chan transport.Result, 1)
	go func() { done <- transport.Wait(ctx, bt) }()
	select {
	case res := <-done:
		if err := checkResult(res, nops); err != nil {
			t.Fatal(err)
		}
	case <-time.After(settleWait):
		t.Fatalf("Wait with an ended context did not return within %v", settleWait)
	}

	// The peer still works after cancellations.
	clear(local.Bytes())
	bt, err = p.Read(ops[:4])
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	mustSucceed(t, bt, 4)
	for j, op := range ops[:4] {
		if !opBytesEqual(op, local.Bytes(), remoteMem.Bytes()) {
			t.Fatalf("read after cancel: op %d differs", j)
		}
	}
}

// testConcurrent runs 64 goroutines posting 50 batches each, reads and
// writes, half through a shared peer and half through their own, each on
// its own memory windows; every op must land byte-exact. Each goroutine
// then notifies once.
func testConcurrent(t *testing.T, env Env) {
	const (
		workers = 64
		rounds  = 50
		win     = 16 << 10
		shared  = 256 << 10
	)
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	local := alloc(t, a.tr, workers*win)
	readArea := alloc(t, b.tr, shared)
	writeArea := alloc(t, b.tr, workers*win)
	fill(readArea.Bytes(), 71)
	fill(local.Bytes(), 72)

	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(0xc0c0, uint64(g)))
			peer := p
			if g%2 == 1 {
				ctx, cancel := context.WithTimeout(context.Background(), settleWait)
				defer cancel()
				own, err := a.tr.Connect(ctx, b.tr.Address())
				if err != nil {
					t.Errorf("worker %d: Connect: %v", g, err)
					return
				}
				defer own.Close()
				peer = own
			}
			d := readArea.Desc()
			d.Key = slices.Clone(d.Key)
			rr, err := peer.Import(d)
			if err != nil {
				t.Errorf("worker %d: Import: %v", g, err)
				return
			}
			d = writeArea.Desc()
			d.Key = slices.Clone(d.Key)
			rw, err := peer.Import(d)
			if err != nil {
				t.Errorf("worker %d: Import: %v", g, err)
				return
			}
			lw := window{uint64(g * win), win}
			for i := range rounds {
				write := i%2 == 1
				var ops []transport.Op
				var bt transport.Batch
				if write {
					ops = randomOpsIn(rng, true, local, lw, rw, lw, 1+rng.IntN(8), 2048)
					bt, err = peer.Write(ops)
				} else {
					ops = randomOpsIn(rng, false, local, lw, rr, window{0, shared}, 1+rng.IntN(8), 2048)
					bt, err = peer.Read(ops)
				}
				if err != nil {
					t.Errorf("worker %d batch %d: post: %v", g, i, err)
					return
				}
				res, err := waitBatch(bt)
				if err == nil {
					err = checkResult(res, len(ops))
				}
				if err == nil && res.Err != nil {
					err = res.Err
				}
				if err != nil {
					t.Errorf("worker %d batch %d: %v", g, i, err)
					return
				}
				remote := readArea.Bytes()
				if write {
					remote = writeArea.Bytes()
				}
				for j, op := range ops {
					if !opBytesEqual(op, local.Bytes(), remote) {
						t.Errorf("worker %d batch %d op %d: bytes differ", g, i, j)
						return
					}
				}
			}
			if err := peer.Notify([]byte{byte(g)}); err != nil {
				t.Errorf("worker %d: Notify: %v", g, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := make(map[byte]bool)
	for _, nt := range b.rec.waitNotes(t, workers) {
		seen[nt.msg[0]] = true
	}
	if len(seen) != workers {
		t.Fatalf("notifications from %d workers, want %d", len(seen), workers)
	}
}

// testPeerCloseWhileBusy closes a Peer with batches in flight: they settle,
// completed or failed with ErrClosed, and the transport still works through
// a new peer.
func testPeerCloseWhileBusy(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	const (
		nbat  = 8
		nops  = 16
		opLen = 32 << 10
		per   = nops * opLen
	)
	local := alloc(t, a.tr, nbat*per)
	remoteMem := alloc(t, b.tr, 4<<20)
	fill(remoteMem.Bytes(), 81)
	rm := importMem(t, p, remoteMem)
	rng := rand.New(rand.NewPCG(0xc105e, 4))
	var batches []transport.Batch
	var opss [][]transport.Op
	for i := range nbat {
		ops := randomOpsIn(rng, false, local, window{uint64(i * per), per}, rm, window{0, 4 << 20}, nops, opLen)
		bt, err := p.Read(ops)
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		batches, opss = append(batches, bt), append(opss, ops)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Peer.Close: %v", err)
	}
	for i, bt := range batches {
		res := mustSettle(t, bt, nops)
		if res.Err != nil && !errors.Is(res.Err, transport.ErrClosed) {
			t.Errorf("batch %d: Err %v, want nil or ErrClosed", i, res.Err)
		}
		for j, op := range opss[i] {
			if !slices.Contains(res.Failed, j) && !opBytesEqual(op, local.Bytes(), remoteMem.Bytes()) {
				t.Errorf("batch %d op %d: reported complete but bytes differ", i, j)
			}
		}
	}

	p2 := connect(t, a.tr, b.tr)
	rm2 := importMem(t, p2, remoteMem)
	clear(local.Bytes())
	ops := []transport.Op{{Local: local, Remote: rm2, Len: 1 << 20, RemoteOff: 12345}}
	bt, err := p2.Read(ops)
	if err != nil {
		t.Fatalf("Read through a new peer: %v", err)
	}
	mustSucceed(t, bt, 1)
	if !opBytesEqual(ops[0], local.Bytes(), remoteMem.Bytes()) {
		t.Fatal("read through a new peer: bytes differ")
	}
}

// testCloseWhileBusy closes a transport while goroutines keep posting:
// Close returns, every batch settles (completed or ErrClosed), later calls
// fail with ErrClosed, and once both transports are closed no goroutine
// started by the test is left.
func testCloseWhileBusy(t *testing.T, env Env) {
	leaks := leakCheck(t)
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	const (
		workers = 8
		slots   = 4
		slotLen = 32 << 10
		remLen  = 1 << 20
	)
	local := alloc(t, a.tr, workers*slots*slotLen)
	remoteMem := alloc(t, b.tr, remLen)
	fill(remoteMem.Bytes(), 91)
	rm := importMem(t, p, remoteMem)

	var posted atomic.Int64
	busy := make(chan struct{})
	// Close releases the memory a transport allocated: bytes are compared
	// only while a is open (memMu orders the checks against Close).
	var memMu sync.RWMutex
	aClosed := false
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(0xb05e, uint64(g)))
			var inflight [slots]transport.Batch
			var opss [slots][]transport.Op
			settle := func(s int) bool {
				bt := inflight[s]
				if bt == nil {
					return true
				}
				inflight[s] = nil
				res, err := waitBatch(bt)
				if err == nil {
					err = checkResult(res, len(opss[s]))
				}
				if err != nil {
					t.Errorf("worker %d: %v", g, err)
					return false
				}
				if res.Err != nil && !errors.Is(res.Err, transport.ErrClosed) {
					t.Errorf("worker %d: Err %v, want nil or ErrClosed", g, res.Err)
					return false
				}
				memMu.RLock()
				defer memMu.RUnlock()
				if aClosed {
					return true
				}
				for j, op := range opss[s] {
					if !slices.Contains(res.Failed, j) && !opBytesEqual(op, local.Bytes(), remoteMem.Bytes()) {
						t.Errorf("worker %d op %d: reported complete but bytes differ", g, j)
						return false
					}
				}
				return true
			}
			defer func() {
				for s := range slots {
					settle(s)
				}
			}()
			for i := 0; ; i++ {
				s := i % slots
				if !settle(s) {
					return
				}
				w := window{uint64((g*slots + s) * slotLen), slotLen}
				ops := randomOpsIn(rng, false, local, w, rm, window{0, remLen}, 1+rng.IntN(16), 4096)
				bt, err := p.Read(ops)
				if err != nil {
					if !errors.Is(err, transport.ErrClosed) {
						t.Errorf("worker %d: post after close: %v, want ErrClosed", g, err)
					}
					return
				}
				inflight[s], opss[s] = bt, ops
				if posted.Add(1) == 64 {
					close(busy)
				}
			}
		})
	}
	select {
	case <-busy:
	case <-time.After(settleWait):
		t.Fatalf("workers did not post 64 batches within %v", settleWait)
	}
	closed := make(chan error, 1)
	go func() {
		memMu.Lock()
		aClosed = true
		memMu.Unlock()
		closed <- a.tr.Close()
	}()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(settleWait):
		t.Fatalf("Close did not return within %v", settleWait)
	}
	wg.Wait()

	if err := p.Notify([]byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Notify after Close: %v, want ErrClosed", err)
	}
	if _, err := a.tr.Alloc(64, transport.HostMemory); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Alloc after Close: %v, want ErrClosed", err)
	}
	_ = a.tr.Close()
	_ = p.Close()
	if err := b.tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	leaks()
}
