package kerneltest

import (
	"github.com/hybridxfer/hybridxfer/kernels"
)

// Opaque is an Engine whose buffers, like device memory, have no host
// view: its Alloc returns buffers that are not *kernels.CPUBuffer, so code
// written for a device engine (regions kept as engine buffers, host bytes
// reached through Upload and Download, host staging buffers mapped with
// MapHost) runs on a machine without one. The kernels are the CPU
// engine's. It stands in for the control flow of a device engine, not for
// the CUDA engine itself, which kernels/cuda tests on a GPU.
type Opaque struct {
	cpu *kernels.CPU
}

var (
	_ kernels.Engine     = (*Opaque)(nil)
	_ kernels.HostMapper = (*Opaque)(nil)
)

// NewOpaque returns an Opaque engine.
func NewOpaque() *Opaque { return &Opaque{cpu: kernels.NewCPU()} }

type opaqueBuf struct{ b *kernels.CPUBuffer }

func (b opaqueBuf) Len() int64                         { return b.b.Len() }
func (b opaqueBuf) Upload(off int64, p []byte) error   { return b.b.Upload(off, p) }
func (b opaqueBuf) Download(off int64, p []byte) error { return b.b.Download(off, p) }
func (b opaqueBuf) Free() error                        { return b.b.Free() }

// Name implements kernels.Engine.
func (e *Opaque) Name() string { return "opaque" }

// Alloc implements kernels.Engine.
func (e *Opaque) Alloc(n int64) (kernels.Buffer, error) {
	b, err := e.cpu.Alloc(n)
	if err != nil {
		return nil, err
	}
	return opaqueBuf{b.(*kernels.CPUBuffer)}, nil
}

// MapHost implements kernels.HostMapper.
func (e *Opaque) MapHost(p []byte) (kernels.Buffer, error) {
	return opaqueBuf{e.cpu.Wrap(p)}, nil
}

func (e *Opaque) unwrap(b kernels.Buffer) kernels.Buffer {
	if ob, ok := b.(opaqueBuf); ok {
		return ob.b
	}
	return nil // not ours: the CPU engine refuses it
}

// Copy implements kernels.Engine.
func (e *Opaque) Copy(dst, src kernels.Buffer, ops []kernels.CopyOp) error {
	return e.cpu.Copy(e.unwrap(dst), e.unwrap(src), ops)
}

// Transpose implements kernels.Engine.
func (e *Opaque) Transpose(dst, src kernels.Buffer, t kernels.Transpose) error {
	return e.cpu.Transpose(e.unwrap(dst), e.unwrap(src), t)
}

// Sync implements kernels.Engine.
func (e *Opaque) Sync() error { return e.cpu.Sync() }

// Close implements kernels.Engine.
func (e *Opaque) Close() error { return e.cpu.Close() }
