package kerneltest

import (
	"sync/atomic"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// Recorder is an Engine that counts the kernels run through it and passes
// them to its inner engine. It shows only the Engine methods and MapHost
// (it hides kernels.HostKernels), so callers go through its buffers, as
// they do with a device engine: a test that gives it to the executor or a
// session sees whether the kernels really run on the engine passed in.
type Recorder struct {
	kernels.Engine
	Copies, Transposes, Syncs, Maps atomic.Int64
}

// NewRecorder wraps inner (which must implement kernels.HostMapper for
// host memory to be mapped).
func NewRecorder(inner kernels.Engine) *Recorder { return &Recorder{Engine: inner} }

// Name implements kernels.Engine.
func (r *Recorder) Name() string { return "recorder(" + r.Engine.Name() + ")" }

// Copy implements kernels.Engine.
func (r *Recorder) Copy(dst, src kernels.Buffer, ops []kernels.CopyOp) error {
	r.Copies.Add(1)
	return r.Engine.Copy(dst, src, ops)
}

// Transpose implements kernels.Engine.
func (r *Recorder) Transpose(dst, src kernels.Buffer, t kernels.Transpose) error {
	r.Transposes.Add(1)
	return r.Engine.Transpose(dst, src, t)
}

// Sync implements kernels.Engine.
func (r *Recorder) Sync() error {
	r.Syncs.Add(1)
	return r.Engine.Sync()
}

// MapHost implements kernels.HostMapper through the inner engine.
func (r *Recorder) MapHost(p []byte) (kernels.Buffer, error) {
	hm, ok := r.Engine.(kernels.HostMapper)
	if !ok {
		return nil, kernels.ErrForeignBuffer
	}
	r.Maps.Add(1)
	return hm.MapHost(p)
}
