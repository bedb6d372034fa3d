package kernels

import "unsafe"

// StreamThreshold is the size, in bytes, from which Memmove copies with
// non-temporal (streaming) stores instead of copy(). Streaming stores write
// whole cache lines straight to memory: they skip the read for ownership
// that a plain store does on a line that is not cached, and they do not
// evict the caller's working set, but a destination that the caller reads
// again soon must then come back from memory.
//
// It was chosen with BenchmarkStreamThreshold (medians of 5 runs on a
// 2-core AMD EPYC Zen 5 VM, 48 KiB L1D, 1 MiB L2, shared with other jobs).
// Blocks copied from random places of a 1 GiB source to random places of a
// 1 GiB destination, as a KV transfer does, stream faster than copy() from
// 4-8 KiB on: x1.06 at 4 KiB, x1.07-1.20 at 8 KiB (varying between runs),
// x1.1-1.3 from 16 KiB to 256 KiB, x1.06 at 1 MiB (where copy() streams
// too: Go's runtime switches to non-temporal stores from 1 MiB). The same
// block copied again and again from the caches streams far slower: x0.11 at
// 4 KiB, x0.28 at 16 KiB, x0.6 from 64 to 256 KiB (x1.0 at 1 MiB, where
// both stream). 16 KiB is the smallest size that gained at least 10% in
// every run; below it, copies are more often small and hot than part of a
// transfer, and keep copy().
const StreamThreshold = 16 << 10

// streamMin is the size from which Memmove streams: StreamThreshold, a
// variable so that tests can send small copies down the streaming path.
var streamMin = StreamThreshold

// Memmove copies min(len(dst), len(src)) bytes from src to dst, like copy.
// Copies of StreamThreshold bytes or more use non-temporal stores on amd64
// CPUs with AVX2 (see StreamThreshold); smaller ones, other CPUs and
// overlapping dst and src (which the streaming copy does not support) use
// copy(). The bytes written are the same either way.
func Memmove(dst, src []byte) {
	n := min(len(dst), len(src))
	if n < streamMin || !useAVX2 {
		copy(dst, src)
		return
	}
	memmoveNT(dst[:n], src[:n])
}

// BulkStreamThreshold is the size from which MemmoveBulk streams. The
// copies of a transfer (a mapped read of remote KV pages into local ones)
// touch memory that neither side has in cache, where streaming already
// pays from 8 KiB (x1.07-1.20 on the VM of StreamThreshold, x1.21 on a
// second 2-core VM; x1.08-1.12 at 2-4 KiB there, below 10% on the first):
// see BenchmarkStreamThreshold's Scatter rows.
const BulkStreamThreshold = 8 << 10

// MemmoveBulk is Memmove for copies that are part of a bulk transfer, cold
// on both sides (the UCX backend's mapped path): it streams from
// BulkStreamThreshold. Copies whose destination is read again soon (post
// steps, gathers the next stage reads) keep Memmove.
func MemmoveBulk(dst, src []byte) {
	n := min(len(dst), len(src))
	if n < min(streamMin, BulkStreamThreshold) || !useAVX2 {
		copy(dst, src)
		return
	}
	memmoveNT(dst[:n], src[:n])
}

// copyPlain is Memmove without the streaming path: copy().
func copyPlain(dst, src []byte) {
	copy(dst, src)
}

// overlap reports whether the n bytes at dst and at src share memory.
func overlap(dst, src []byte, n int) bool {
	if n == 0 {
		return false
	}
	d, s := addr(dst), addr(src)
	return d < s+uintptr(n) && s < d+uintptr(n)
}

// addr returns the address of the first byte of b's array.
func addr(b []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}
