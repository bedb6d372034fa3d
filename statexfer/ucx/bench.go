package ucx

/*
#include <stdlib.h>
#include "hx.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// rawTimeout bounds a raw benchmark run (it blocks the progress goroutine).
const rawTimeout = 60 * time.Second

// Range is one read of a raw benchmark: Len bytes from RemoteOff of the
// remote range into LocalOff of the local memory.
type Range struct {
	RemoteOff, LocalOff, Len uint64
}

// RawResult is the outcome of a raw benchmark.
type RawResult struct {
	Elapsed time.Duration
	Bytes   uint64
	Ops     int
	Path    Path
}

// GBps is Bytes per Elapsed in 1e9 bytes per second.
func (r RawResult) GBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Elapsed.Seconds() / 1e9
}

// RawRead measures a scattered read without the batch machinery: on the
// progress goroutine, one C call posts a ucp_get_nbx per range on the bare
// endpoint and progresses the worker until a C counter says all completed.
// The clock covers posting and completion only. With mapped set (and the
// remote mapped, see Remote.Mapped) it times a plain copy of the same
// ranges from the ucp_rkey_ptr mapping instead. The progress goroutine is
// busy for the whole run; the peer must be alive and progressing.
func (p *Peer) RawRead(local *Memory, remote *Remote, ranges []Range, mapped bool) (RawResult, error) {
	if local == nil || local.t != p.t || remote == nil || remote.p != p {
		return RawResult{}, ErrForeignMemory
	}
	res := RawResult{Ops: len(ranges)}
	for i, r := range ranges {
		if err := transport.CheckOp(i, transport.Op{Local: local, LocalOff: r.LocalOff, Remote: remote, RemoteOff: r.RemoteOff, Len: r.Len}); err != nil {
			return RawResult{}, err
		}
		res.Bytes += r.Len
	}
	if len(ranges) == 0 {
		return res, nil
	}
	if mapped {
		if remote.mapped == nil {
			return RawResult{}, fmt.Errorf("%w: remote range is not mapped", transport.ErrUnsupported)
		}
		p.mapMu.RLock()
		defer p.mapMu.RUnlock()
		if p.mapGone {
			return RawResult{}, p.usable()
		}
		buf := local.Bytes()
		t0 := time.Now()
		for _, r := range ranges {
			src := unsafe.Slice((*byte)(unsafe.Add(remote.mapped, r.RemoteOff)), r.Len)
			copy(buf[r.LocalOff:r.LocalOff+r.Len], src)
		}
		res.Elapsed = time.Since(t0)
		res.Path = PathMapped
		return res, nil
	}
	n := len(ranges)
	arr := (*uint64)(C.malloc(C.size_t(3 * n * 8)))
	defer C.free(unsafe.Pointer(arr))
	a := unsafe.Slice(arr, 3*n)
	for i, r := range ranges {
		a[i], a[n+i], a[2*n+i] = r.RemoteOff, r.LocalOff, r.Len
	}
	res.Path = p.rmaPath([]run{{remote: remote, ranges: []transport.Range{{Len: 1}}}})
	err := p.t.callSync(func() error {
		if p.closed {
			return p.usable()
		}
		var ns C.uint64_t
		st := C.hx_raw_gets(p.t.wc, p.ep, remote.rkey, C.uint64_t(local.base), C.uint64_t(remote.desc.Addr),
			(*C.uint64_t)(unsafe.Pointer(&a[0])), (*C.uint64_t)(unsafe.Pointer(&a[n])),
			(*C.uint64_t)(unsafe.Pointer(&a[2*n])), C.uint32_t(n), C.uint64_t(rawTimeout), &ns)
		if st != 0 {
			return statusErr("ucp_get_nbx", int(st))
		}
		res.Elapsed = time.Duration(ns)
		return nil
	})
	if err != nil {
		return RawResult{}, err
	}
	return res, nil
}

// RawRoundTrip measures iters rounds of: get size bytes from the start of
// remote into the start of local, then send an active message and wait for
// the peer's progress goroutine to echo it. It reports the mean time of one
// round, after a few untimed warm-up rounds. This is the floor of "read a
// block, then notify and hear back".
func (p *Peer) RawRoundTrip(local *Memory, remote *Remote, size uint64, iters int) (time.Duration, error) {
	if local == nil || local.t != p.t || remote == nil || remote.p != p {
		return 0, ErrForeignMemory
	}
	if err := transport.CheckOp(0, transport.Op{Local: local, Remote: remote, Len: size}); err != nil {
		return 0, err
	}
	if iters <= 0 {
		return 0, fmt.Errorf("%w: %d iterations", ErrInvalid, iters)
	}
	var d time.Duration
	err := p.t.callSync(func() error {
		if p.closed {
			return p.usable()
		}
		var ns C.uint64_t
		// Untimed warm-up rounds first: the first reply wires up the
		// peer's reply endpoint.
		for _, n := range []int{min(iters, 16), iters} {
			st := C.hx_raw_rtt(p.t.wc, p.ep, remote.rkey, C.uint64_t(local.base), C.uint64_t(remote.desc.Addr),
				C.uint64_t(size), C.uint32_t(n), C.uint64_t(rawTimeout), &ns)
			if st != 0 {
				return statusErr("raw round trip", int(st))
			}
		}
		d = time.Duration(ns) / time.Duration(iters)
		return nil
	})
	return d, err
}
