package cuda

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// Driver constants (cuda.h).
const (
	attrComputeCapabilityMajor = 75
	attrComputeCapabilityMinor = 76
	streamNonBlocking          = 1
)

// Launch shapes.
const (
	copyThreads   = 256     // threads per block of hx_copy_ops
	opChunk       = 1 << 18 // ops longer than this are split for balance
	maxGrid       = 1 << 20 // blocks; kernels grid-stride beyond
	itemsThreads  = 256     // 8 warps, one item each
	opRecordBytes = 24      // device CopyOp: three int64
)

// Engine runs the kernels on one NVIDIA GPU. Work is queued on one stream;
// Copy and Transpose return once launched and Sync waits for them. Its
// methods serialise on a mutex and make the device's primary context current
// on the calling OS thread.
type Engine struct {
	mu       sync.Mutex
	l        *libs
	dev      int32
	ctx      uintptr
	stream   uintptr
	mod      uintptr
	fnCopy   uintptr
	fnTiled  map[int]uintptr // by item size 1, 2, 4, 8
	fnItems  map[int]uintptr // by unit size 1, 2, 4, 8, 16
	opsDev   uint64          // device scratch for op lists
	opsCap   int64
	pending  [][]byte // host memory of queued uploads, kept until Sync
	bufs     map[*buffer]struct{}
	name     string
	closed   bool
	released bool
}

var _ kernels.Engine = (*Engine)(nil)

// Open starts an engine on device ordinal: it loads libcuda and NVRTC,
// retains the device's primary context, compiles the kernels for the
// device and loads them. Every failure wraps ErrUnavailable (and the
// *Error or *CompileError of the failing call, if any), so that callers can
// fall back to kernels.Default.
func Open(ordinal int) (kernels.Engine, error) {
	e, err := open(ordinal)
	if err != nil && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

func open(ordinal int) (*Engine, error) {
	l, err := load()
	if err != nil {
		return nil, err
	}
	d := &l.drv
	if err := l.check("cuInit", d.cuInit(0)); err != nil {
		return nil, err
	}
	var count int32
	if err := l.check("cuDeviceGetCount", d.cuDeviceGetCount(&count)); err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= int(count) {
		return nil, fmt.Errorf("%w: device %d of %d", ErrUnavailable, ordinal, count)
	}
	e := &Engine{l: l, bufs: map[*buffer]struct{}{}, fnTiled: map[int]uintptr{}, fnItems: map[int]uintptr{}}
	if err := l.check("cuDeviceGet", d.cuDeviceGet(&e.dev, int32(ordinal))); err != nil {
		return nil, err
	}
	var major, minor int32
	if err := l.check("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&major, attrComputeCapabilityMajor, e.dev)); err != nil {
		return nil, err
	}
	if err := l.check("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&minor, attrComputeCapabilityMinor, e.dev)); err != nil {
		return nil, err
	}
	nameBuf := make([]byte, 256)
	if err := l.check("cuDeviceGetName", d.cuDeviceGetName(&nameBuf[0], int32(len(nameBuf)), e.dev)); err != nil {
		return nil, err
	}
	e.name = fmt.Sprintf("cuda:%d (%s, sm_%d%d)", ordinal, goString(&nameBuf[0]), major, minor)

	img, err := l.compile(int(major*10 + minor))
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := l.check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&e.ctx, e.dev)); err != nil {
		return nil, err
	}
	if err := e.setup(img); err != nil {
		e.teardown()
		return nil, err
	}
	return e, nil
}

// setup makes the context current, creates the stream and loads the
// kernels. The calling goroutine is locked to its thread.
func (e *Engine) setup(img []byte) error {
	d, l := &e.l.drv, e.l
	if err := l.check("cuCtxSetCurrent", d.cuCtxSetCurrent(e.ctx)); err != nil {
		return err
	}
	if err := l.check("cuStreamCreate", d.cuStreamCreate(&e.stream, streamNonBlocking)); err != nil {
		return err
	}
	if err := l.check("cuModuleLoadData", d.cuModuleLoadData(&e.mod, unsafe.Pointer(&img[0]))); err != nil {
		return err
	}
	get := func(name string) (uintptr, error) {
		var f uintptr
		n := cstr(name)
		return f, l.check("cuModuleGetFunction("+name+")", d.cuModuleGetFunction(&f, e.mod, &n[0]))
	}
	var err error
	if e.fnCopy, err = get("hx_copy_ops"); err != nil {
		return err
	}
	for size, name := range map[int]string{1: "u8", 2: "u16", 4: "u32", 8: "u64"} {
		if e.fnTiled[size], err = get("hx_transpose_" + name); err != nil {
			return err
		}
	}
	for size, name := range map[int]string{1: "u8", 2: "u16", 4: "u32", 8: "u64", 16: "u128"} {
		if e.fnItems[size], err = get("hx_items_" + name); err != nil {
			return err
		}
	}
	return nil
}

// teardown releases what setup and Open acquired; errors are ignored (it
// runs on failure paths and in Close after the first error was taken).
func (e *Engine) teardown() {
	d := &e.l.drv
	if e.ctx == 0 || e.released {
		return
	}
	d.cuCtxSetCurrent(e.ctx)
	if e.stream != 0 {
		d.cuStreamSynchronize(e.stream)
	}
	for b := range e.bufs {
		b.release()
		b.freed = true
	}
	clear(e.bufs)
	if e.opsDev != 0 {
		d.cuMemFree(e.opsDev)
		e.opsDev = 0
	}
	if e.mod != 0 {
		d.cuModuleUnload(e.mod)
	}
	if e.stream != 0 {
		d.cuStreamDestroy(e.stream)
	}
	d.cuDevicePrimaryCtxRelease(e.dev)
	e.released = true
}

// check turns a CUresult into an error (nil for CUDA_SUCCESS).
func (l *libs) check(fn string, res int32) error {
	if res == 0 {
		return nil
	}
	var p *byte
	var name string
	if l.drv.cuGetErrorName(res, &p) == 0 {
		name = goString(p)
	}
	return &Error{Func: fn, Code: int(res), Name: name}
}

// enter locks the engine and the OS thread and makes the context current;
// the returned function undoes it.
func (e *Engine) enter() (func(), error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, kernels.ErrClosed
	}
	runtime.LockOSThread()
	leave := func() {
		runtime.UnlockOSThread()
		e.mu.Unlock()
	}
	if err := e.l.check("cuCtxSetCurrent", e.l.drv.cuCtxSetCurrent(e.ctx)); err != nil {
		leave()
		return nil, err
	}
	return leave, nil
}

// Name implements kernels.Engine.
func (e *Engine) Name() string { return e.name }

// Sync implements kernels.Engine.
func (e *Engine) Sync() error {
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	return e.syncLocked()
}

func (e *Engine) syncLocked() error {
	err := e.l.check("cuStreamSynchronize", e.l.drv.cuStreamSynchronize(e.stream))
	clear(e.pending)
	e.pending = e.pending[:0]
	return err
}

// Close implements kernels.Engine. It waits for queued work, frees every
// buffer and releases the context.
func (e *Engine) Close() error {
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	err = e.syncLocked()
	e.teardown()
	e.closed = true
	return err
}

// Alloc implements kernels.Engine: device memory (cuMemAlloc), zeroed.
func (e *Engine) Alloc(n int64) (kernels.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: alloc %d bytes", kernels.ErrInvalid, n)
	}
	leave, err := e.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	b := &buffer{e: e, n: n}
	if n > 0 {
		d := &e.l.drv
		if err := e.l.check("cuMemAlloc_v2", d.cuMemAlloc(&b.ptr, uintptr(n))); err != nil {
			return nil, err
		}
		if err := e.l.check("cuMemsetD8Async", d.cuMemsetD8Async(b.ptr, 0, uintptr(n), e.stream)); err != nil {
			d.cuMemFree(b.ptr)
			return nil, err
		}
	}
	e.bufs[b] = struct{}{}
	return b, nil
}

// CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP.
const hostRegisterFlags = 0x01 | 0x02

var _ kernels.HostMapper = (*Engine)(nil)

// MapHost implements kernels.HostMapper: it page-locks p
// (cuMemHostRegister) and returns a buffer over its device mapping
// (cuMemHostGetDevicePointer), so the kernels read and write host memory
// across the bus: host staging's device-to-host gathers on P and
// host-to-device scatters on D. p must stay allocated, and must not be Go
// memory the collector may free, until the buffer is freed (Free
// unregisters it).
func (e *Engine) MapHost(p []byte) (kernels.Buffer, error) {
	if len(p) == 0 {
		return nil, fmt.Errorf("%w: map an empty host range", kernels.ErrInvalid)
	}
	leave, err := e.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	d := &e.l.drv
	host := unsafe.Pointer(&p[0])
	if err := e.l.check("cuMemHostRegister_v2", d.cuMemHostRegister(host, uintptr(len(p)), hostRegisterFlags)); err != nil {
		return nil, err
	}
	b := &buffer{e: e, n: int64(len(p)), host: host}
	if err := e.l.check("cuMemHostGetDevicePointer_v2", d.cuMemHostGetDevicePointer(&b.ptr, host, 0)); err != nil {
		d.cuMemHostUnregister(host)
		return nil, err
	}
	e.bufs[b] = struct{}{}
	return b, nil
}

// own returns b as a live buffer of e. Called with e.mu held.
func (e *Engine) own(b kernels.Buffer) (*buffer, error) {
	db, ok := b.(*buffer)
	switch {
	case !ok || db == nil:
		return nil, kernels.ErrForeignBuffer
	case db.e != e:
		return nil, kernels.ErrForeignBuffer
	case db.freed:
		return nil, kernels.ErrClosed
	}
	return db, nil
}

func (e *Engine) pair(dst, src kernels.Buffer) (*buffer, *buffer, error) {
	d, err := e.own(dst)
	if err != nil {
		return nil, nil, err
	}
	s, err := e.own(src)
	if err != nil {
		return nil, nil, err
	}
	return d, s, nil
}

// Copy implements kernels.Engine: it validates ops, uploads them split into
// pieces of at most opChunk bytes, and launches hx_copy_ops, one block per
// piece.
func (e *Engine) Copy(dst, src kernels.Buffer, ops []kernels.CopyOp) error {
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	d, s, err := e.pair(dst, src)
	if err != nil {
		return err
	}
	total, err := kernels.ValidateOps(ops, d.n, s.n, d == s)
	if err != nil || total == 0 {
		return err
	}
	rec := encodeOps(ops)
	n := int64(len(rec) / opRecordBytes)
	if err := e.reserveOps(int64(len(rec))); err != nil {
		return err
	}
	dr := &e.l.drv
	if err := e.l.check("cuMemcpyHtoDAsync_v2", dr.cuMemcpyHtoDAsync(e.opsDev, unsafe.Pointer(&rec[0]), uintptr(len(rec)), e.stream)); err != nil {
		return err
	}
	e.pending = append(e.pending, rec)
	return e.launch(e.fnCopy, uint32(min(n, maxGrid)), copyThreads, 1, d.ptr, s.ptr, e.opsDev, uint64(n))
}

// encodeOps returns the device records of ops (little-endian int64 dst,
// src, len), dropping empty ops and splitting long ones.
func encodeOps(ops []kernels.CopyOp) []byte {
	var rec []byte
	for _, op := range ops {
		for off := int64(0); off < op.Len; off += opChunk {
			l := min(opChunk, op.Len-off)
			rec = binary.LittleEndian.AppendUint64(rec, uint64(op.Dst+off))
			rec = binary.LittleEndian.AppendUint64(rec, uint64(op.Src+off))
			rec = binary.LittleEndian.AppendUint64(rec, uint64(l))
		}
	}
	return rec
}

// reserveOps makes the op scratch hold n bytes. Growing it waits for the
// kernels that may still read the old one.
func (e *Engine) reserveOps(n int64) error {
	if n <= e.opsCap {
		return nil
	}
	d := &e.l.drv
	if e.opsDev != 0 {
		if err := e.syncLocked(); err != nil {
			return err
		}
		if err := e.l.check("cuMemFree_v2", d.cuMemFree(e.opsDev)); err != nil {
			return err
		}
		e.opsDev, e.opsCap = 0, 0
	}
	c := max(n, 2*e.opsCap, 64<<10)
	if err := e.l.check("cuMemAlloc_v2", d.cuMemAlloc(&e.opsDev, uintptr(c))); err != nil {
		return err
	}
	e.opsCap = c
	return nil
}

// launchArgs holds kernel arguments, all 64-bit, and the pointers to them
// that cuLaunchKernel reads.
type launchArgs struct {
	vals [8]uint64
	ptrs [8]unsafe.Pointer
}

// launch queues f on the stream with a 1-D grid of blocks of bx*by threads.
func (e *Engine) launch(f uintptr, grid, bx, by uint32, args ...uint64) error {
	a := new(launchArgs)
	for i, v := range args {
		a.vals[i] = v
		a.ptrs[i] = unsafe.Pointer(&a.vals[i])
	}
	var pin runtime.Pinner
	pin.Pin(a)
	defer pin.Unpin()
	res := e.l.drv.cuLaunchKernel(f, grid, 1, 1, bx, by, 1, 0, e.stream, unsafe.Pointer(&a.ptrs[0]), nil)
	return e.l.check("cuLaunchKernel", res)
}

// Transpose implements kernels.Engine: hx_transpose_* (shared-memory tiles)
// for aligned items of 1, 2, 4 or 8 bytes, else hx_items_* (one warp per
// item, in units of the largest size dividing items, offsets and strides).
func (e *Engine) Transpose(dst, src kernels.Buffer, t kernels.Transpose) error {
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	d, s, err := e.pair(dst, src)
	if err != nil {
		return err
	}
	if err := t.Validate(d.n, s.n, d == s); err != nil || t.Empty() {
		return err
	}
	unit := int64(16)
	for _, v := range []int64{int64(t.ItemBytes), t.SrcOff, t.DstOff, t.SrcBatchStride, t.DstBatchStride} {
		for v%unit != 0 {
			unit /= 2
		}
	}
	dp, sp := d.ptr+uint64(t.DstOff), s.ptr+uint64(t.SrcOff)
	b, r, c := uint64(t.Batches), uint64(t.Rows), uint64(t.Cols)
	ss, ds := uint64(t.SrcBatchStride/unit), uint64(t.DstBatchStride/unit)
	if int64(t.ItemBytes) == unit && unit <= 8 {
		tiles := int64(t.Batches) * ((int64(t.Rows) + 31) / 32) * ((int64(t.Cols) + 31) / 32)
		return e.launch(e.fnTiled[int(unit)], uint32(min(tiles, maxGrid)), 32, 8, dp, sp, b, r, c, ss, ds)
	}
	k := int64(t.ItemBytes) / unit
	items := int64(t.Batches) * int64(t.Rows) * int64(t.Cols)
	warps := int64(itemsThreads / 32)
	grid := min((items+warps-1)/warps, maxGrid)
	return e.launch(e.fnItems[int(unit)], uint32(grid), itemsThreads, 1, dp, sp, b, r, c, uint64(k), ss, ds)
}

// memcpyDtoD queues a plain device-to-device copy of n bytes (the
// benchmarks' baseline).
func (e *Engine) memcpyDtoD(dst, src kernels.Buffer, n int64) error {
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	d, s, err := e.pair(dst, src)
	if err != nil {
		return err
	}
	if n < 0 || n > d.n || n > s.n {
		return kernels.ErrOutOfRange
	}
	return e.l.check("cuMemcpyDtoDAsync_v2", e.l.drv.cuMemcpyDtoDAsync(d.ptr, s.ptr, uintptr(n), e.stream))
}

// buffer is device memory of an Engine.
type buffer struct {
	e     *Engine
	ptr   uint64 // 0 for an empty buffer
	n     int64
	freed bool
	// host is the host memory a MapHost buffer registered (its device
	// pointer is ptr); nil for device memory.
	host unsafe.Pointer
}

// release frees b's memory: unregisters mapped host memory, frees device
// memory. Called with e.mu held, after the stream is synchronized.
func (b *buffer) release() error {
	d := &b.e.l.drv
	switch {
	case b.ptr == 0:
		return nil
	case b.host != nil:
		return b.e.l.check("cuMemHostUnregister", d.cuMemHostUnregister(b.host))
	}
	return b.e.l.check("cuMemFree_v2", d.cuMemFree(b.ptr))
}

// Len implements kernels.Buffer.
func (b *buffer) Len() int64 { return b.n }

// Upload implements kernels.Buffer; it returns once the bytes are on the
// device.
func (b *buffer) Upload(off int64, p []byte) error {
	return b.transfer(off, p, true)
}

// Download implements kernels.Buffer; it waits for queued work first.
func (b *buffer) Download(off int64, p []byte) error {
	return b.transfer(off, p, false)
}

func (b *buffer) transfer(off int64, p []byte, up bool) error {
	e := b.e
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	if b.freed {
		return kernels.ErrClosed
	}
	if off < 0 || off > b.n-int64(len(p)) {
		return fmt.Errorf("%w: %d bytes at %d of a %d-byte buffer", kernels.ErrOutOfRange, len(p), off, b.n)
	}
	if len(p) == 0 {
		return nil
	}
	var pin runtime.Pinner
	pin.Pin(&p[0])
	defer pin.Unpin()
	d := &e.l.drv
	if up {
		err = e.l.check("cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync(b.ptr+uint64(off), unsafe.Pointer(&p[0]), uintptr(len(p)), e.stream))
	} else {
		err = e.l.check("cuMemcpyDtoHAsync_v2", d.cuMemcpyDtoHAsync(unsafe.Pointer(&p[0]), b.ptr+uint64(off), uintptr(len(p)), e.stream))
	}
	return errors.Join(err, e.syncLocked())
}

// Free implements kernels.Buffer. It waits for queued work first.
func (b *buffer) Free() error {
	e := b.e
	leave, err := e.enter()
	if err != nil {
		return err
	}
	defer leave()
	if b.freed {
		return kernels.ErrClosed
	}
	b.freed = true
	delete(e.bufs, b)
	if b.ptr == 0 {
		return nil
	}
	err = e.syncLocked()
	return errors.Join(err, b.release())
}
