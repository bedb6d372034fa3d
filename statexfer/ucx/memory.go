package ucx

/*
#include <stdlib.h>
#include "hx.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Memory is UCX-allocated registered memory (ucp_mem_map with
// UCP_MEM_MAP_ALLOCATE). It implements transport.Memory. UCX allocates it
// from shared memory (UCX_ALLOC_PRIO, by default sysv then posix before
// private mappings), which is what lets a same-host peer read it one-sided
// or map it with ucp_rkey_ptr. It is never Go heap memory. Posix segments
// are files in this process's ShmDir (see the package documentation on
// what a killed process leaves). Size allocations against the machine first
// (internal/hostmem.Check): UCX's posix domain writes the whole length into
// /dev/shm before it can fail.
type Memory struct {
	t      *Transport
	memh   C.ucp_mem_h
	base   uintptr
	buf    []byte // nil for device memory
	desc   transport.MemDesc
	closed atomic.Bool
}

var _ transport.Memory = (*Memory)(nil)

// ucs_memory_type_t values (ucs/memory/memory_type.h).
const (
	ucsMemHost = 0
	ucsMemCUDA = 1
)

// MemTypes names the memory types this UCX context supports
// (ucp_context_query), such as "host" or "host,cuda,cuda-managed".
func (t *Transport) MemTypes() string {
	names := []string{"host", "cuda", "cuda-managed", "rocm", "rocm-managed"}
	var out []string
	for i, n := range names {
		if t.memTypes&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none reported"
	}
	return strings.Join(out, ",")
}

// Supports implements transport.Transport. Host and host-pinned memory are
// UCX-allocated host memory (pinning for a device's DMA is the CUDA
// engine's registration); device memory needs a UCX built with CUDA
// support (its cuda memory domain loaded: memory type cuda in the
// context), and only device 0, the device UCX allocates on when no CUDA
// context is current on the progress thread.
func (t *Transport) Supports(kind transport.MemKind) error {
	if err := kind.Valid(); err != nil {
		return err
	}
	switch {
	case kind.IsHost():
		return nil
	case t.memTypes&(1<<ucsMemCUDA) == 0:
		return &transport.KindError{Backend: "ucx", Kind: kind,
			Why: "this UCX was built without CUDA support (its memory types: " + t.MemTypes() + "); use host staging (--staging host)"}
	case kind.Device != 0:
		return &transport.KindError{Backend: "ucx", Kind: kind, Why: "UCX allocates on device 0 only (no CUDA context is made current on the progress thread)"}
	}
	return nil
}

// Alloc implements transport.Transport: size zeroed bytes of UCX-allocated
// memory of kind, registered for remote read and write, with its rkey
// packed into Desc().Key. Host pages are touched (zeroed) before Alloc
// returns, so transfers do not pay first-touch faults; device memory has
// no host view (Bytes is nil) and is not zeroed by the CPU.
func (t *Transport) Alloc(size int, kind transport.MemKind) (transport.Memory, error) {
	return t.AllocKind(size, kind)
}

// AllocMemory is Alloc of host memory returning the concrete type.
func (t *Transport) AllocMemory(size int) (*Memory, error) {
	return t.AllocKind(size, transport.HostMemory)
}

// AllocKind is Alloc returning the concrete type.
func (t *Transport) AllocKind(size int, kind transport.MemKind) (*Memory, error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: alloc of %d bytes", ErrInvalid, size)
	}
	if err := t.Supports(kind); err != nil {
		return nil, err
	}
	memType := C.int(ucsMemHost)
	if !kind.IsHost() {
		memType = ucsMemCUDA
	}
	m := &Memory{t: t}
	err := t.callSync(func() error {
		var (
			addr unsafe.Pointer
			n    C.size_t
		)
		if st := C.hx_mem_alloc(t.ctx, C.size_t(size), memType, &m.memh, &addr, &n); st != 0 {
			return statusErr("ucp_mem_map", int(st))
		}
		var (
			kbuf unsafe.Pointer
			kn   C.size_t
		)
		if st := C.hx_rkey_pack(t.ctx, m.memh, &kbuf, &kn); st != 0 {
			C.ucp_mem_unmap(t.ctx, m.memh)
			return statusErr("ucp_rkey_pack", int(st))
		}
		rkey := C.GoBytes(kbuf, C.int(kn))
		C.ucp_rkey_buffer_release(kbuf)
		m.base = uintptr(addr)
		if kind.IsHost() {
			m.buf = unsafe.Slice((*byte)(addr), size)
		}
		m.desc = transport.MemDesc{Addr: uint64(m.base), Len: uint64(size), Key: wrapKey(t.tid, rkey), Kind: kind}
		t.mems[m] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	clear(m.buf)
	return m, nil
}

// Bytes implements transport.Memory. Valid until Close of the Memory or of
// its Transport; nil for device memory.
func (m *Memory) Bytes() []byte { return m.buf }

// Kind implements transport.Memory.
func (m *Memory) Kind() transport.MemKind { return m.desc.Kind }

// Desc implements transport.Memory.
func (m *Memory) Desc() transport.MemDesc {
	d := m.desc
	d.Key = append([]byte(nil), d.Key...)
	return d
}

// Close implements transport.Memory: it unmaps the memory. No batch may be
// in flight on it. Peers that mapped it keep their mapping (of stale data)
// until they destroy their rkey.
func (m *Memory) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	err := m.t.callSync(func() error {
		if _, ok := m.t.mems[m]; ok {
			m.unmapLocked()
		}
		return nil
	})
	if err != nil && m.t.isClosed() {
		return nil // the transport unmapped it
	}
	return err
}

// unmapLocked runs on the progress goroutine.
func (m *Memory) unmapLocked() {
	C.ucp_mem_unmap(m.t.ctx, m.memh)
	delete(m.t.mems, m)
	m.closed.Store(true)
}
