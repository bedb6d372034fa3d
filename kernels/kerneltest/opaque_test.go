package kerneltest_test

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
)

// The stand-in for a device engine computes what the references compute
// and refuses buffers of other engines (a CPU buffer among them).
func TestOpaqueConformance(t *testing.T) {
	kerneltest.Conformance(t, kerneltest.NewOpaque(), 4096, kernels.NewCPU().Wrap(make([]byte, 64)))
}

// Its buffers have no host view: code must go through the engine.
func TestOpaqueHidesHostMemory(t *testing.T) {
	e := kerneltest.NewOpaque()
	b, err := e.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(*kernels.CPUBuffer); ok {
		t.Fatal("Opaque.Alloc returned a CPU buffer (a host view)")
	}
	m, err := e.MapHost(make([]byte, 64))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*kernels.CPUBuffer); ok {
		t.Fatal("Opaque.MapHost returned a CPU buffer")
	}
	if _, ok := kernels.Engine(e).(kernels.HostKernels); ok {
		t.Fatal("Opaque runs host kernels: the executor would bypass its buffers")
	}
}
