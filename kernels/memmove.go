package kernels

import "unsafe"

// StreamThreshold is the size, in bytes, from which Memmove copies with
// non-temporal (streaming) stores instead of copy(). Streaming stores write
// whole cache lines straight to memory: they skip the read for ownership
// that a plain store does on a line that is not cached, and they do not
// evict the caller's working set, but a destination that the caller reads
// again soon must then come back from memory.
//
// It was chosen by measurement (BenchmarkMemmove, BenchmarkCopyScatter, and
// the same copies of one hot buffer) on a 2-core AMD EPYC (Zen 5) VM with
// DDR memory at about 15 GB/s of copy bandwidth: copying blocks scattered
// over a 1 GiB source into a 1 GiB destination, which is what a KV transfer
// does, streaming is 5-20% faster than copy() from 8-12 KiB blocks up, and
// never slower from 16 KiB; copy() itself already streams from 1 MiB (Go's
// runtime switches to non-temporal stores there). When the same block is
// copied again and again from the caches, streaming is 2-8x slower up to the
// L2 size, so sizes below 16 KiB, which are most often hot small copies,
// keep using copy().
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
