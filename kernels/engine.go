package kernels

import (
	"fmt"
	"sync/atomic"
)

// Buffer is memory owned by an Engine.
type Buffer interface {
	// Len returns the size of the buffer in bytes.
	Len() int64
	// Upload copies p into the buffer at off.
	Upload(off int64, p []byte) error
	// Download copies the buffer at off into p. It waits for the work the
	// engine queued before.
	Download(off int64, p []byte) error
	// Free releases the buffer. Using it afterwards returns ErrClosed.
	Free() error
}

// Engine runs the kernels on memory it owns. Copy and Transpose may run
// asynchronously: their effects are visible after Sync (or a Download).
// Validation errors are reported by the call itself. An Engine is safe for
// concurrent use.
type Engine interface {
	// Name identifies the engine and its device, such as "cpu".
	Name() string
	// Alloc returns a zeroed buffer of n bytes.
	Alloc(n int64) (Buffer, error)
	// Copy runs ops from src to dst (see Copy).
	Copy(dst, src Buffer, ops []CopyOp) error
	// Transpose runs t from src to dst (see RunTranspose).
	Transpose(dst, src Buffer, t Transpose) error
	// Sync waits for the queued work and returns its first error.
	Sync() error
	// Close releases the engine; its buffers become unusable.
	Close() error
}

// HostMapper is implemented by engines that can run kernels on host memory
// they did not allocate: the CPU engine on any []byte; a device engine on
// host memory it registers for its DMA (page-locked), what host staging of
// device caches copies through. The buffer does not own p: Free forgets it.
type HostMapper interface {
	MapHost(p []byte) (Buffer, error)
}

// HostKernels is implemented by engines that run the kernels on host memory
// directly, with no Buffer per call: the CPU engine, whose Copy and
// Transpose on mapped host memory are these calls. The executor uses it
// when both regions of a step are host memory, so the CPU path builds no
// wrappers.
type HostKernels interface {
	CopyHost(dst, src []byte, ops []CopyOp) error
	TransposeHost(dst, src []byte, t Transpose) error
}

// Default returns the CPU engine.
func Default() Engine { return NewCPU() }

// CPU is the Engine running the kernels of this package synchronously on the
// calling goroutine (and helpers for large calls).
type CPU struct {
	closed atomic.Bool
}

var (
	_ Engine      = (*CPU)(nil)
	_ HostMapper  = (*CPU)(nil)
	_ HostKernels = (*CPU)(nil)
)

// NewCPU returns a CPU engine.
func NewCPU() *CPU { return &CPU{} }

// CPUBuffer is a Buffer of the CPU engine: a []byte.
type CPUBuffer struct {
	eng *CPU
	b   []byte
}

// Name implements Engine.
func (e *CPU) Name() string { return "cpu" }

// Alloc implements Engine.
func (e *CPU) Alloc(n int64) (Buffer, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if n < 0 || int64(int(n)) != n {
		return nil, fmt.Errorf("%w: alloc %d bytes", ErrInvalid, n)
	}
	return &CPUBuffer{eng: e, b: make([]byte, n)}, nil
}

// Wrap returns a buffer of e over p without copying it.
func (e *CPU) Wrap(p []byte) *CPUBuffer { return &CPUBuffer{eng: e, b: p} }

// MapHost implements HostMapper: Wrap.
func (e *CPU) MapHost(p []byte) (Buffer, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return e.Wrap(p), nil
}

// CopyHost implements HostKernels: Copy on host memory.
func (e *CPU) CopyHost(dst, src []byte, ops []CopyOp) error {
	if e.closed.Load() {
		return ErrClosed
	}
	return Copy(dst, src, ops)
}

// TransposeHost implements HostKernels: RunTranspose on host memory.
func (e *CPU) TransposeHost(dst, src []byte, t Transpose) error {
	if e.closed.Load() {
		return ErrClosed
	}
	return RunTranspose(dst, src, t)
}

// Copy implements Engine.
func (e *CPU) Copy(dst, src Buffer, ops []CopyOp) error {
	d, s, err := e.pair(dst, src)
	if err != nil {
		return err
	}
	return Copy(d, s, ops)
}

// Transpose implements Engine.
func (e *CPU) Transpose(dst, src Buffer, t Transpose) error {
	d, s, err := e.pair(dst, src)
	if err != nil {
		return err
	}
	return RunTranspose(d, s, t)
}

// Sync implements Engine. CPU kernels are synchronous.
func (e *CPU) Sync() error {
	if e.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Close implements Engine.
func (e *CPU) Close() error {
	e.closed.Store(true)
	return nil
}

func (e *CPU) pair(dst, src Buffer) ([]byte, []byte, error) {
	if e.closed.Load() {
		return nil, nil, ErrClosed
	}
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

func (e *CPU) own(b Buffer) ([]byte, error) {
	cb, ok := b.(*CPUBuffer)
	switch {
	case !ok || cb == nil:
		return nil, ErrForeignBuffer
	case cb.freed():
		return nil, ErrClosed
	case cb.eng != e:
		return nil, ErrForeignBuffer
	}
	return cb.b, nil
}

// Bytes returns the memory of the buffer (nil once freed).
func (b *CPUBuffer) Bytes() []byte { return b.b }

// Len implements Buffer.
func (b *CPUBuffer) Len() int64 { return int64(len(b.b)) }

// Upload implements Buffer.
func (b *CPUBuffer) Upload(off int64, p []byte) error {
	if err := b.check(off, p); err != nil {
		return err
	}
	copy(b.b[off:], p)
	return nil
}

// Download implements Buffer.
func (b *CPUBuffer) Download(off int64, p []byte) error {
	if err := b.check(off, p); err != nil {
		return err
	}
	copy(p, b.b[off:])
	return nil
}

// Free implements Buffer. It must not run concurrently with other uses of b.
func (b *CPUBuffer) Free() error {
	if b.freed() {
		return ErrClosed
	}
	b.b = nil
	b.eng = nil
	return nil
}

func (b *CPUBuffer) freed() bool { return b.eng == nil }

func (b *CPUBuffer) check(off int64, p []byte) error {
	if b.freed() || b.eng.closed.Load() {
		return ErrClosed
	}
	if off < 0 || off > int64(len(b.b))-int64(len(p)) {
		return fmt.Errorf("%w: %d bytes at %d of a %d-byte buffer", ErrOutOfRange, len(p), off, len(b.b))
	}
	return nil
}
