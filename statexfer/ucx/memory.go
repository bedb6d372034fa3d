package ucx

/*
#include <stdlib.h>
#include "hx.h"
*/
import "C"

import (
	"fmt"
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
	buf    []byte
	desc   transport.MemDesc
	closed atomic.Bool
}

var _ transport.Memory = (*Memory)(nil)

// Alloc implements transport.Transport: size zeroed bytes of UCX-allocated
// memory, registered for remote read and write, with its rkey packed into
// Desc().Key. The pages are touched (zeroed) before Alloc returns, so
// transfers do not pay first-touch faults.
func (t *Transport) Alloc(size int) (transport.Memory, error) {
	return t.AllocMemory(size)
}

// AllocMemory is Alloc returning the concrete type.
func (t *Transport) AllocMemory(size int) (*Memory, error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: alloc of %d bytes", ErrInvalid, size)
	}
	m := &Memory{t: t}
	err := t.callSync(func() error {
		var (
			addr unsafe.Pointer
			n    C.size_t
		)
		if st := C.hx_mem_alloc(t.ctx, C.size_t(size), &m.memh, &addr, &n); st != 0 {
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
		m.buf = unsafe.Slice((*byte)(addr), size)
		m.desc = transport.MemDesc{Addr: uint64(m.base), Len: uint64(size), Key: wrapKey(t.tid, rkey)}
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
// its Transport.
func (m *Memory) Bytes() []byte { return m.buf }

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
