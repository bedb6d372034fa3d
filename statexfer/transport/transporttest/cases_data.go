package transporttest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// testAllocRegisterDesc checks Alloc, descriptors and Import: zeroed memory
// of the asked size, descriptors that do not overlap, import round trips,
// bad keys rejected with ErrBadKey, and a read and a write through imported
// descriptors.
func testAllocRegisterDesc(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	if a.tr.Name() == "" {
		t.Error("Name is empty")
	}
	if len(a.tr.Address()) == 0 || bytes.Equal(a.tr.Address(), b.tr.Address()) {
		t.Errorf("addresses %q and %q: want distinct and non-empty", a.tr.Address(), b.tr.Address())
	}
	p := connect(t, a.tr, b.tr)

	sizes := []int{1, 7, 4096, 65536 + 3}
	var mems []transport.Memory
	for _, size := range sizes {
		m := alloc(t, b.tr, size)
		if i := slices.IndexFunc(m.Bytes(), func(c byte) bool { return c != 0 }); i >= 0 {
			t.Errorf("Alloc(%d): byte %d is %#x, want zeroed memory", size, i, m.Bytes()[i])
		}
		d := m.Desc()
		if d.Len != uint64(size) || len(d.Key) == 0 {
			t.Errorf("Alloc(%d): desc Len %d, key %d bytes", size, d.Len, len(d.Key))
		}
		for _, o := range mems {
			od := o.Desc()
			if d.Addr < od.Addr+od.Len && od.Addr < d.Addr+d.Len {
				t.Errorf("descs [%#x, +%d) and [%#x, +%d) overlap", d.Addr, d.Len, od.Addr, od.Len)
			}
		}
		mems = append(mems, m)
	}
	for _, m := range mems {
		d := m.Desc()
		rd := importMem(t, p, m).Desc()
		if rd.Addr != d.Addr || rd.Len != d.Len || !bytes.Equal(rd.Key, d.Key) {
			t.Errorf("imported desc %+v, want %+v", rd, d)
		}
	}

	// Round trip through the largest range: read it, then write it back.
	src := mems[len(mems)-1]
	fill(src.Bytes(), 1)
	rm := importMem(t, p, src)
	local := alloc(t, a.tr, len(src.Bytes()))
	op := transport.Op{Local: local, Remote: rm, Len: uint64(len(src.Bytes()))}
	b1, err := p.Read([]transport.Op{op})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	mustSucceed(t, b1, 1)
	if d := diff(local.Bytes(), src.Bytes()); d != "" {
		t.Fatalf("read whole range: %s", d)
	}
	fill(local.Bytes(), 2)
	want := slices.Clone(local.Bytes())
	b2, err := p.Write([]transport.Op{op})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	mustSucceed(t, b2, 1)
	if d := diff(src.Bytes(), want); d != "" {
		t.Fatalf("write whole range: %s", d)
	}

	// Bad keys are rejected.
	good := src.Desc()
	flipped := slices.Clone(good.Key)
	for i := range flipped {
		flipped[i] ^= 0xa5
	}
	garbage := make([]byte, 64)
	fill(garbage, 3)
	for _, key := range [][]byte{nil, {}, {1, 2, 3}, garbage, flipped} {
		_, err := p.Import(transport.MemDesc{Addr: good.Addr, Len: good.Len, Key: key})
		if !errors.Is(err, transport.ErrBadKey) {
			t.Errorf("Import with key %x: %v, want ErrBadKey", key, err)
		}
	}

	// Closing memory twice is harmless.
	extra := alloc(t, a.tr, 64)
	if err := extra.Close(); err != nil {
		t.Errorf("Memory.Close: %v", err)
	}
	_ = extra.Close()
}

// testReadRandom reads many random ops (unaligned offsets and lengths) and
// compares the local memory byte for byte with a model, untouched bytes
// included.
func testReadRandom(t *testing.T, env Env) {
	testRandom(t, env, false)
}

// testWriteRandom is testReadRandom for writes.
func testWriteRandom(t *testing.T, env Env) {
	testRandom(t, env, true)
}

func testRandom(t *testing.T, env Env, write bool) {
	rng := rand.New(rand.NewPCG(0x7e57, 1))
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	local := alloc(t, a.tr, 1<<20+5)
	remoteMem := alloc(t, b.tr, 1<<20+13)
	rm := importMem(t, p, remoteMem)

	src, dst := remoteMem, local
	post := p.Read
	if write {
		src, dst = local, remoteMem
		post = p.Write
	}
	fill(src.Bytes(), 0x5eed)
	srcCopy := slices.Clone(src.Bytes())
	model := make([]byte, len(dst.Bytes()))

	ll, rl := uint64(len(local.Bytes())), uint64(len(remoteMem.Bytes()))
	edges := []transport.Op{
		{Local: local, Remote: rm, LocalOff: ll - 1, RemoteOff: rl - 1, Len: 1},
		{Local: local, Remote: rm, LocalOff: 0, RemoteOff: 0, Len: 1},
		{Local: local, Remote: rm, LocalOff: 1, RemoteOff: 3, Len: 4093},
	}
	batches := [][]transport.Op{edges}
	for range 12 {
		batches = append(batches, randomOps(rng, write, local, rm, 1+rng.IntN(256), 4099))
	}
	for i, ops := range batches {
		bt, err := post(ops)
		if err != nil {
			t.Fatalf("batch %d: post: %v", i, err)
		}
		mustSucceed(t, bt, len(ops))
		apply(model, srcCopy, ops, write, nil)
		if d := diff(dst.Bytes(), model); d != "" {
			t.Fatalf("batch %d (%d ops): destination differs from model: %s", i, len(ops), d)
		}
		if d := diff(src.Bytes(), srcCopy); d != "" {
			t.Fatalf("batch %d: source changed: %s", i, d)
		}
	}
}

// testLargeOps moves single ops of several MiB (larger than any sane
// internal chunk) both ways.
func testLargeOps(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	const size = 5<<20 + 3
	remoteMem := alloc(t, b.tr, size)
	local := alloc(t, a.tr, size)
	rm := importMem(t, p, remoteMem)
	fill(remoteMem.Bytes(), 11)

	whole := []transport.Op{{Local: local, Remote: rm, Len: size}}
	bt, err := p.Read(whole)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	mustSucceed(t, bt, 1)
	if d := diff(local.Bytes(), remoteMem.Bytes()); d != "" {
		t.Fatalf("large read: %s", d)
	}

	// Two unaligned halves written crosswise.
	fill(local.Bytes(), 12)
	const half = size / 2
	halves := []transport.Op{
		{Local: local, Remote: rm, LocalOff: 0, RemoteOff: half + 1, Len: size - half - 1},
		{Local: local, Remote: rm, LocalOff: size - half - 1, RemoteOff: 0, Len: half + 1},
	}
	want := make([]byte, size)
	apply(want, local.Bytes(), halves, true, nil)
	bt, err = p.Write(halves)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	mustSucceed(t, bt, 2)
	if d := diff(remoteMem.Bytes(), want); d != "" {
		t.Fatalf("large write: %s", d)
	}
}

// testBoundsRejected posts batches whose last op is out of bounds: the post
// fails with ErrOutOfBounds, returns no batch, and no byte changes, not even
// for the valid ops before the bad one.
func testBoundsRejected(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	const size = 4096
	local := alloc(t, a.tr, size)
	remoteMem := alloc(t, b.tr, size)
	rm := importMem(t, p, remoteMem)
	fill(local.Bytes(), 21)
	fill(remoteMem.Bytes(), 22)
	localWant := slices.Clone(local.Bytes())
	remoteWant := slices.Clone(remoteMem.Bytes())

	const maxU = ^uint64(0)
	bad := []struct {
		name string
		op   transport.Op
	}{
		{"local offset at end", transport.Op{Local: local, Remote: rm, LocalOff: size, Len: 1}},
		{"local end past end", transport.Op{Local: local, Remote: rm, LocalOff: 4000, Len: 97}},
		{"remote offset at end", transport.Op{Local: local, Remote: rm, RemoteOff: size, Len: 1}},
		{"remote end past end", transport.Op{Local: local, Remote: rm, RemoteOff: 1, Len: size}},
		{"zero length", transport.Op{Local: local, Remote: rm}},
		{"local offset overflow", transport.Op{Local: local, Remote: rm, LocalOff: maxU, Len: 2}},
		{"length overflow", transport.Op{Local: local, Remote: rm, LocalOff: 8, Len: maxU - 3}},
		{"remote offset overflow", transport.Op{Local: local, Remote: rm, RemoteOff: maxU - 1, Len: 4}},
		{"nil local", transport.Op{Remote: rm, Len: 1}},
		{"nil remote", transport.Op{Local: local, Len: 1}},
	}
	good := []transport.Op{
		{Local: local, Remote: rm, LocalOff: 0, RemoteOff: 100, Len: 1000},
		{Local: local, Remote: rm, LocalOff: 2000, RemoteOff: 0, Len: 2096},
	}
	for _, c := range bad {
		for _, write := range []bool{false, true} {
			ops := append(slices.Clone(good), c.op)
			post, verb := p.Read, "Read"
			if write {
				post, verb = p.Write, "Write"
			}
			bt, err := post(ops)
			if !errors.Is(err, transport.ErrOutOfBounds) {
				t.Errorf("%s with %s: err %v, want ErrOutOfBounds", verb, c.name, err)
			}
			if bt != nil {
				t.Errorf("%s with %s: got a batch", verb, c.name)
				mustSettle(t, bt, len(ops))
			}
		}
	}

	// A valid batch on other memory, posted and completed after the
	// rejected ones, gives any wrongly posted op time to land.
	fenceLocal := alloc(t, a.tr, 64)
	fenceRemote := importMem(t, p, alloc(t, b.tr, 64))
	bt, err := p.Read([]transport.Op{{Local: fenceLocal, Remote: fenceRemote, Len: 64}})
	if err != nil {
		t.Fatalf("fence Read: %v", err)
	}
	mustSucceed(t, bt, 1)
	if d := diff(local.Bytes(), localWant); d != "" {
		t.Errorf("local memory changed by rejected batches: %s", d)
	}
	if d := diff(remoteMem.Bytes(), remoteWant); d != "" {
		t.Errorf("remote memory changed by rejected batches: %s", d)
	}
}
