package ucx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// TestReadScattered reads a shuffled list of ranges from P and checks every
// byte and the reported path.
func TestReadScattered(t *testing.T) {
	const n, size = 512, 4096
	for _, nc := range configs() {
		t.Run(nc.name, func(t *testing.T) {
			x := newPair(t, nc.cfg)
			src := alloc(t, x.P, n*size)
			fill(src.Bytes(), 1)
			dst := alloc(t, x.D, n*size)
			r := importRemote(t, x.dp, src)
			ops := scattered(dst, r, n, size, 7)
			b, err := x.dp.ReadBatch(ops)
			if err != nil {
				t.Fatal(err)
			}
			if res := wait(t, b); res.Err != nil {
				t.Fatalf("read: %v (failed %v)", res.Err, res.Failed)
			}
			if b.Path() != nc.path {
				t.Errorf("path %v, want %v", b.Path(), nc.path)
			}
			for _, op := range ops {
				if !checkRange(t, dst.Bytes()[op.LocalOff:op.LocalOff+op.Len], op.RemoteOff, 1) {
					break
				}
			}
			if got := x.D.Stats().Batches[nc.path]; got != 1 {
				t.Errorf("stats: %d batches on %v, want 1", got, nc.path)
			}
			if got := x.D.Stats().Bytes[nc.path]; got != n*size {
				t.Errorf("stats: %d bytes on %v, want %d", got, nc.path, n*size)
			}
		})
	}
}

// TestWriteThenNotify writes into P, then notifies; P's handler must see the
// written bytes (writes are flushed before the batch completes, and Notify
// is ordered after completed batches).
func TestWriteThenNotify(t *testing.T) {
	const n, size = 256, 8192
	for _, nc := range configs() {
		t.Run(nc.name, func(t *testing.T) {
			x := newPair(t, nc.cfg)
			dst := alloc(t, x.P, n*size)
			src := alloc(t, x.D, n*size)
			fill(src.Bytes(), 3)
			bad := make(chan string, 16)
			x.pr.check = func(from PeerID, msg []byte) {
				var round int
				fmt.Sscanf(string(msg), "round %d", &round)
				seed := uint64(3 + round)
				for i := 0; i < n; i++ {
					blk := dst.Bytes()[i*size : (i+1)*size]
					// local block i of src (pattern of seed at offset
					// i*size) went to remote block i.
					want := make([]byte, size)
					fillAt(want, uint64(i*size), seed)
					if !bytes.Equal(blk, want) {
						bad <- fmt.Sprintf("round %d: block %d not written before the notification", round, i)
						return
					}
				}
			}
			r := importRemote(t, x.dp, dst)
			for round := 0; round < 3; round++ {
				fill(src.Bytes(), uint64(3+round))
				ops := make([]transport.Op, n)
				for i := range ops {
					ops[i] = transport.Op{Local: src, LocalOff: uint64(i * size), Remote: r, RemoteOff: uint64(i * size), Len: size}
				}
				b, err := x.dp.WriteBatch(ops)
				if err != nil {
					t.Fatal(err)
				}
				if res := wait(t, b); res.Err != nil {
					t.Fatalf("write: %v", res.Err)
				}
				if b.Path() != nc.path {
					t.Errorf("path %v, want %v", b.Path(), nc.path)
				}
				if err := x.dp.Notify(fmt.Appendf(nil, "round %d", round)); err != nil {
					t.Fatal(err)
				}
				e := x.pr.next(t, x.pr.notes, "notification")
				if e.from != x.pd.ID() {
					t.Errorf("notification from %v, want P's peer id for D %v", e.from, x.pd.ID())
				}
				select {
				case s := <-bad:
					t.Fatal(s)
				default:
				}
			}
		})
	}
}

func fillAt(b []byte, off, seed uint64) {
	tmp := make([]byte, len(b))
	for o := 0; o+8 <= len(b); o += 8 {
		w := word(off+uint64(o), seed)
		for k := 0; k < 8; k++ {
			tmp[o+k] = byte(w >> (8 * k))
		}
	}
	copy(b, tmp)
}

// TestOneSidedWithoutTargetProgress checks the path claims: one-sided and
// mapped reads complete while P's progress goroutine is stopped; emulated
// reads complete only once it runs again.
func TestOneSidedWithoutTargetProgress(t *testing.T) {
	const size = 1 << 20
	for _, nc := range configs() {
		t.Run(nc.name, func(t *testing.T) {
			x := newPair(t, nc.cfg)
			src := alloc(t, x.P, size)
			fill(src.Bytes(), 5)
			dst := alloc(t, x.D, size)
			r := importRemote(t, x.dp, src)
			op := []transport.Op{{Local: dst, Remote: r, Len: size}}
			// Warm up: wire up the endpoint while P still progresses.
			b, err := x.dp.ReadBatch(op)
			if err != nil {
				t.Fatal(err)
			}
			if res := wait(t, b); res.Err != nil {
				t.Fatal(res.Err)
			}
			clear(dst.Bytes())
			release := blockLoop(t, x.P)
			b, err = x.dp.ReadBatch(op)
			if err != nil {
				t.Fatal(err)
			}
			if b.Path() == PathEmulated {
				select {
				case <-b.Done():
					t.Fatalf("emulated read completed while the target did not progress: path claim wrong")
				case <-time.After(200 * time.Millisecond):
				}
				release()
			}
			if res := wait(t, b); res.Err != nil {
				t.Fatal(res.Err)
			}
			release()
			checkRange(t, dst.Bytes(), 0, 5)
		})
	}
}

// TestCancel cancels batches posted while P's progress goroutine is stopped,
// on every configuration. Done always closes and the result is well formed;
// completed ops hold their bytes. Where no op can complete without P (the
// emulated path) the cancel must take effect: the batch fails with
// ErrCanceled, with at least every op that was never posted. Elsewhere (mapped
// and one-sided batches move without P) the batch may complete before the
// cancel takes effect, so either outcome is accepted: completed, or every op
// not completed failed with ErrCanceled. No assertion depends on timing.
func TestCancel(t *testing.T) {
	for _, nc := range configs() {
		t.Run(nc.name, func(t *testing.T) {
			cfg := nc.cfg
			cfg.Window = 16
			testCancel(t, cfg)
		})
	}
}

func testCancel(t *testing.T, cfg Config) {
	x := newPair(t, cfg)
	const n, size = 1000, 4096
	src := alloc(t, x.P, n*size)
	fill(src.Bytes(), 13)
	dst := alloc(t, x.D, n*size)
	r := importRemote(t, x.dp, src)
	warm, _ := x.dp.ReadBatch([]transport.Op{{Local: dst, Remote: r, Len: 8}})
	if res := wait(t, warm); res.Err != nil {
		t.Fatal(res.Err)
	}

	// check verifies a canceled batch's result. minFailed applies to the
	// emulated path only.
	check := func(what string, b *Batch, ops []transport.Op, res transport.Result, minFailed int) {
		t.Helper()
		if (res.Err == nil) != (len(res.Failed) == 0) {
			t.Fatalf("%s: Err %v with %d failed ops", what, res.Err, len(res.Failed))
		}
		for i := 1; i < len(res.Failed); i++ {
			if res.Failed[i] <= res.Failed[i-1] {
				t.Fatalf("%s: Failed not ascending: %v", what, res.Failed[:i+1])
			}
		}
		if res.Err != nil && !errors.Is(res.Err, transport.ErrCanceled) {
			t.Fatalf("%s: err %v, want nil or ErrCanceled", what, res.Err)
		}
		if b.Path() == PathEmulated {
			// P was stopped when the cancel was issued: the ops cannot
			// all have completed before it took effect.
			if !errors.Is(res.Err, transport.ErrCanceled) {
				t.Fatalf("%s: emulated path: err %v, want ErrCanceled", what, res.Err)
			}
			if len(res.Failed) < minFailed || len(res.Failed) > len(ops) {
				t.Fatalf("%s: %d ops failed, want between %d and %d", what, len(res.Failed), minFailed, len(ops))
			}
		}
		failed := make(map[int]bool, len(res.Failed))
		for _, i := range res.Failed {
			failed[i] = true
		}
		for i, op := range ops {
			if !failed[i] && !checkRange(t, dst.Bytes()[op.LocalOff:op.LocalOff+op.Len], op.RemoteOff, 13) {
				t.Fatalf("%s: op %d reported complete but its bytes differ", what, i)
			}
		}
	}

	release := blockLoop(t, x.P)
	clear(dst.Bytes())
	ops := scattered(dst, r, n, size, 1)
	b, err := x.dp.ReadBatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	b.Cancel()
	b.Cancel() // idempotent
	release()
	// At most one window was posted while P was stopped, and the cancel
	// was issued before P ran again; only that window can have completed.
	check("Cancel", b, ops, wait(t, b), n-cfg.Window)

	// The peer still works.
	b, _ = x.dp.ReadBatch([]transport.Op{{Local: dst, Remote: r, Len: size}})
	if res := wait(t, b); res.Err != nil {
		t.Fatal(res.Err)
	}

	// transport.Wait cancels when its context ends. P runs again only once
	// Wait has issued the cancel (cancelHook), so on the emulated path the
	// batch cannot complete first.
	release = blockLoop(t, x.P)
	clear(dst.Bytes())
	ops = scattered(dst, r, n, size, 2)
	b, err = x.dp.ReadBatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res := transport.Wait(ctx, cancelHook{Batch: b, after: release})
	select {
	case <-b.Done():
	default:
		t.Fatal("Wait returned before the batch was done")
	}
	// Completions before the cancel takes effect: the window in flight
	// and at most one more posted when it completed.
	check("Wait after the context ended", b, ops, res, n-2*cfg.Window)
}

// cancelHook is a batch whose Cancel runs after once the cancel is issued.
type cancelHook struct {
	transport.Batch
	after func()
}

func (c cancelHook) Cancel() {
	c.Batch.Cancel()
	c.after()
}

// TestNotify checks sizes up to the limit, order, sender ids and the limit.
func TestNotify(t *testing.T) {
	for _, nc := range []namedConfig{
		{name: "shm", cfg: Config{UCX: shmTLS()}},
		{name: "tcp", cfg: Config{UCX: tcpTLS()}},
		{name: "peer", cfg: Config{ErrMode: ErrModePeer}},
	} {
		t.Run(nc.name, func(t *testing.T) {
			x := newPair(t, nc.cfg)
			sizes := []int{0, 1, 93, 94, 6 << 10, 8 << 10, 9 << 10, 20 << 10, MaxNotifyLimit}
			for i, sz := range sizes {
				msg := bytes.Repeat([]byte{byte(i + 1)}, sz)
				if err := x.dp.Notify(msg); err != nil {
					t.Fatalf("Notify(%d bytes): %v", sz, err)
				}
			}
			for i, sz := range sizes {
				e := x.pr.next(t, x.pr.notes, "notification")
				if len(e.msg) != sz || (sz > 0 && (e.msg[0] != byte(i+1) || e.msg[sz-1] != byte(i+1))) {
					t.Fatalf("notification %d: %d bytes, want %d of %d (out of order or damaged)", i, len(e.msg), sz, i+1)
				}
				if e.from != x.pd.ID() {
					t.Fatalf("from %v, want %v", e.from, x.pd.ID())
				}
			}
			// Both directions.
			if err := x.pd.Notify([]byte("back")); err != nil {
				t.Fatal(err)
			}
			if e := x.dr.next(t, x.dr.notes, "notification"); string(e.msg) != "back" || e.from != x.dp.ID() {
				t.Fatalf("got %q from %v", e.msg, e.from)
			}
			if err := x.dp.Notify(make([]byte, MaxNotifyLimit+1)); !errors.Is(err, ErrNotifyTooLarge) {
				t.Fatalf("oversized Notify: %v", err)
			}
		})
	}
}

// TestNotifyBeforeConnectBack: a notification from a transport this side has
// no endpoint to yet gets an id, which a later Connect to it reuses.
func TestNotifyBeforeConnectBack(t *testing.T) {
	pr := newRecorder()
	P, err := New(Config{UCX: shmTLS()}, pr.handlers())
	if err != nil {
		t.Fatal(err)
	}
	defer P.Close()
	D, err := New(Config{UCX: shmTLS()}, transport.Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	defer D.Close()
	ctx := context.Background()
	dp, err := D.ConnectPeer(ctx, P.Address())
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Notify([]byte("x")); err != nil {
		t.Fatal(err)
	}
	e := pr.next(t, pr.notes, "notification")
	pd, err := P.ConnectPeer(ctx, D.Address())
	if err != nil {
		t.Fatal(err)
	}
	if e.from == 0 || e.from != pd.ID() {
		t.Fatalf("notification from %v, later peer id %v", e.from, pd.ID())
	}
}

// TestValidation covers the checks made before anything is posted.
func TestValidation(t *testing.T) {
	x := newPair(t, Config{UCX: shmTLS()})
	src := alloc(t, x.P, 4096)
	dst := alloc(t, x.D, 4096)
	r := importRemote(t, x.dp, src)
	other := alloc(t, x.P, 4096) // P's memory used as D's local: foreign
	cases := []struct {
		name string
		ops  []transport.Op
		want error
	}{
		{"remote overflow", []transport.Op{{Local: dst, Remote: r, RemoteOff: 4000, Len: 100}}, transport.ErrOutOfBounds},
		{"local overflow", []transport.Op{{Local: dst, LocalOff: 4096, Remote: r, Len: 1}}, transport.ErrOutOfBounds},
		{"zero length", []transport.Op{{Local: dst, Remote: r}}, transport.ErrOutOfBounds},
		{"nil memory", []transport.Op{{Remote: r, Len: 1}}, transport.ErrOutOfBounds},
		{"huge offset", []transport.Op{{Local: dst, Remote: r, RemoteOff: ^uint64(0), Len: 2}}, transport.ErrOutOfBounds},
		{"second op bad", []transport.Op{{Local: dst, Remote: r, Len: 8}, {Local: dst, Remote: r, Len: 8192}}, transport.ErrOutOfBounds},
		{"foreign local", []transport.Op{{Local: other, Remote: r, Len: 8}}, ErrForeignMemory},
	}
	for _, c := range cases {
		for _, write := range []bool{false, true} {
			var err error
			if write {
				_, err = x.dp.Write(c.ops)
			} else {
				_, err = x.dp.Read(c.ops)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("%s (write=%v): %v, want %v", c.name, write, err, c.want)
			}
		}
	}
	// A remote imported through another peer is refused.
	ctx := context.Background()
	dp2, err := x.D.ConnectPeer(ctx, x.P.Address())
	if err != nil {
		t.Fatal(err)
	}
	r2 := importRemote(t, dp2, src)
	if _, err := x.dp.Read([]transport.Op{{Local: dst, Remote: r2, Len: 8}}); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("remote of another peer: %v", err)
	}
	// Keys: damaged, foreign owner, empty.
	d := src.Desc()
	d.Key[len(d.Key)-1] ^= 0xff
	if _, err := x.dp.Import(d); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("damaged key: %v", err)
	}
	if _, err := x.dp.Import(dst.Desc()); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("key of another transport: %v", err)
	}
	if _, err := x.dp.Import(transport.MemDesc{Addr: 1, Len: 1}); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := x.dp.Import(transport.MemDesc{Addr: d.Addr, Len: 0, Key: src.Desc().Key}); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("zero length: %v", err)
	}
	// Re-importing returns the same remote.
	if again := importRemote(t, x.dp, src); again != r {
		t.Errorf("re-import gave a new Remote")
	}
	// Addresses.
	if _, err := x.D.Connect(ctx, []byte("nope")); !errors.Is(err, ErrBadAddress) {
		t.Errorf("bad address: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := x.D.Connect(cctx, x.P.Address()); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled connect: %v", err)
	}
	// Alloc.
	if _, err := x.D.Alloc(0, transport.HostMemory); !errors.Is(err, ErrInvalid) {
		t.Errorf("Alloc(0): %v", err)
	}
	// Empty batches complete at once.
	b, err := x.dp.Read(nil)
	if err != nil {
		t.Fatal(err)
	}
	if res := wait(t, b); res.Err != nil {
		t.Fatal(res.Err)
	}
	// Memory.Close is idempotent; a closed memory is refused.
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.dp.Read([]transport.Op{{Local: dst, Remote: r, Len: 8}}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("closed local memory: %v", err)
	}
	// Bad configs.
	for _, c := range []Config{{ErrMode: 7}, {Idle: 9}, {MaxNotify: MaxNotifyLimit + 1}} {
		if _, err := New(c, transport.Handlers{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(%+v): %v", c, err)
		}
	}
	// UCX only warns about unknown option names, but rejects bad values.
	if _, err := New(Config{UCX: map[string]string{"RNDV_THRESH": "not-a-size"}}, transport.Handlers{}); err == nil {
		t.Errorf("New with a malformed UCX option value succeeded")
	}
}

func TestStatusError(t *testing.T) {
	cases := []struct {
		code int
		want []error
	}{
		{statusConnectionReset, []error{ErrConnection, transport.ErrDisconnected}},
		{statusEndpointTimeout, []error{ErrConnection, transport.ErrDisconnected}},
		{-45, []error{ErrConnection, transport.ErrDisconnected}},
		{statusUnreachable, []error{ErrUnreachable}},
		{statusNoMemory, []error{ErrNoResource}},
		{statusInvalidParam, []error{ErrInvalid}},
		{statusUnsupported, []error{transport.ErrUnsupported}},
		{statusCanceled, []error{transport.ErrCanceled}},
		{statusBusy, []error{ErrStatus}},
	}
	for _, c := range cases {
		err := statusErr("op", c.code)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != c.code || se.Name == "" {
			t.Fatalf("%d: %#v", c.code, err)
		}
		for _, w := range c.want {
			if !errors.Is(err, w) {
				t.Errorf("%v does not match %v", err, w)
			}
		}
		if c.code != statusConnectionReset && errors.Is(err, ErrUnreachable) && c.code != statusUnreachable {
			t.Errorf("%v matches ErrUnreachable", err)
		}
	}
	if s := statusErr("ucp_x", statusNoResource).Error(); s != "ucx: ucp_x: No resources are available to initiate the operation (-2)" {
		t.Errorf("message %q", s)
	}
}

// TestRaw runs the raw benchmark helpers once on each fabric.
func TestRaw(t *testing.T) {
	for _, nc := range []namedConfig{
		{name: "shm", cfg: Config{UCX: shmTLS()}},
		{name: "tcp", cfg: Config{UCX: tcpTLS()}},
	} {
		t.Run(nc.name, func(t *testing.T) {
			x := newPair(t, nc.cfg)
			const n, size = 64, 4096
			src := alloc(t, x.P, n*size)
			fill(src.Bytes(), 9)
			dst := alloc(t, x.D, n*size)
			r := importRemote(t, x.dp, src)
			ops := scattered(dst, r, n, size, 3)
			ranges := make([]Range, n)
			for i, op := range ops {
				ranges[i] = Range{RemoteOff: op.RemoteOff, LocalOff: op.LocalOff, Len: op.Len}
			}
			for _, mapped := range []bool{false, true} {
				if mapped && !r.Mapped() {
					if _, err := x.dp.RawRead(dst, r, ranges, true); !errors.Is(err, transport.ErrUnsupported) {
						t.Fatalf("mapped raw read of unmapped remote: %v", err)
					}
					continue
				}
				clear(dst.Bytes())
				res, err := x.dp.RawRead(dst, r, ranges, mapped)
				if err != nil {
					t.Fatal(err)
				}
				if res.Bytes != n*size || res.Ops != n || res.Elapsed <= 0 {
					t.Fatalf("raw result %+v", res)
				}
				for _, op := range ops {
					if !checkRange(t, dst.Bytes()[op.LocalOff:op.LocalOff+op.Len], op.RemoteOff, 9) {
						t.FailNow()
					}
				}
				t.Logf("mapped=%v: %v %.2f GB/s", mapped, res.Path, res.GBps())
			}
			rtt, err := x.dp.RawRoundTrip(dst, r, 4096, 100)
			if err != nil {
				t.Fatal(err)
			}
			if rtt <= 0 {
				t.Fatalf("round trip %v", rtt)
			}
			t.Logf("get 4 KiB + AM round trip: %v", rtt)
			if _, err := x.dp.RawRead(dst, r, []Range{{Len: 1 << 30}}, false); !errors.Is(err, transport.ErrOutOfBounds) {
				t.Fatalf("out of bounds raw read: %v", err)
			}
		})
	}
}

// TestIdleModes: reads from a target that idles in each mode still complete
// (IdleWait must be woken by the incoming requests).
func TestIdleModes(t *testing.T) {
	for _, idle := range []IdleMode{IdleWait, IdleSpin, IdleSleep} {
		for _, tls := range []string{"shm,self", "tcp"} {
			t.Run(fmt.Sprintf("%v/%s", idle, tls), func(t *testing.T) {
				cfg := Config{UCX: map[string]string{"TLS": tls}, Idle: idle, DisableMapped: true}
				x := newPair(t, cfg)
				const n, size = 64, 4096
				src := alloc(t, x.P, n*size)
				fill(src.Bytes(), 11)
				dst := alloc(t, x.D, n*size)
				r := importRemote(t, x.dp, src)
				for round := 0; round < 3; round++ {
					// Let both sides fall idle.
					time.Sleep(2 * x.P.Config().SpinFor)
					b, err := x.dp.ReadBatch(scattered(dst, r, n, size, uint64(round)))
					if err != nil {
						t.Fatal(err)
					}
					if res := wait(t, b); res.Err != nil {
						t.Fatal(res.Err)
					}
					if err := x.dp.Notify([]byte{byte(round)}); err != nil {
						t.Fatal(err)
					}
					if e := x.pr.next(t, x.pr.notes, "notification"); len(e.msg) != 1 || e.msg[0] != byte(round) {
						t.Fatalf("notification %v", e.msg)
					}
				}
			})
		}
	}
}

// TestReadCost: a peer reports the mapped path's per-read cost for memory
// it copies through the mapped path, and nothing for memory UCX's own gets
// read (tcp: emulated; mapping turned off: one-sided).
func TestReadCost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		mapOff bool
		ok     bool
		ns     float64
	}{
		{"shm-mapped", Config{UCX: shmTLS()}, false, true, MappedReadNs},
		{"shm-mapping-off", Config{UCX: shmTLS()}, true, false, 0}, // one-sided gets: not measured
		{"tcp", Config{UCX: tcpTLS()}, false, true, EmulatedReadNs},
		{"error-mode-peer-mapping-off", Config{ErrMode: ErrModePeer}, true, true, EmulatedReadNs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newPair(t, tc.cfg)
			r := importRemote(t, x.dp, alloc(t, x.P, 1<<16))
			if tc.mapOff {
				x.D.SetMapped(false)
			}
			var rc transport.ReadCoster = x.dp
			ns, ok := rc.ReadCostNs(r)
			if ok != tc.ok || ns != tc.ns {
				t.Fatalf("ReadCostNs = %v, %v; want %v, %v", ns, ok, tc.ns, tc.ok)
			}
			// Memory of another peer is not this peer's to price.
			other := newPair(t, tc.cfg)
			if _, ok := rc.ReadCostNs(importRemote(t, other.dp, alloc(t, other.P, 1<<16))); ok {
				t.Fatal("ReadCostNs priced another peer's memory")
			}
		})
	}
}
