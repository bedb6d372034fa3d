//go:build amd64

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAVX2 says that the assembly kernels (the streaming copy and the conv
// transposes) may run: they need AVX2, and the OS saving the YMM registers,
// which cpu.X86.HasAVX2 includes. Tests turn it off to run the fallbacks.
var useAVX2 = cpu.X86.HasAVX2

const (
	// ntMin is the smallest length copyNT accepts.
	ntMin = 128
	// ntChunk is the most bytes one copyNT call moves: assembly cannot be
	// preempted, so a long copy returns to Go every ntChunk bytes (about
	// 100 µs) to let the scheduler and the garbage collector in.
	ntChunk = 1 << 20
)

// copyNT copies n >= ntMin bytes from src to dst, which must not overlap,
// with non-temporal stores (memmove_nt_amd64.s). It needs AVX2.
//
//go:noescape
func copyNT(dst, src *byte, n int)

// memmoveNT copies min(len(dst), len(src)) bytes with the streaming copy,
// or with copy() when the CPU lacks AVX2, the copy is shorter than ntMin
// bytes or the ranges overlap.
func memmoveNT(dst, src []byte) {
	n := min(len(dst), len(src))
	if !useAVX2 || n < ntMin || overlap(dst, src, n) {
		copy(dst, src)
		return
	}
	d, s := unsafe.SliceData(dst), unsafe.SliceData(src)
	for n > ntChunk+ntMin {
		// Chunks end on 64-byte boundaries of dst, so that the next one
		// starts aligned.
		c := ntChunk - int(uintptr(unsafe.Pointer(d))&63)
		copyNT(d, s, c)
		d, s = (*byte)(unsafe.Add(unsafe.Pointer(d), c)), (*byte)(unsafe.Add(unsafe.Pointer(s), c))
		n -= c
	}
	copyNT(d, s, n)
}

// copyNTLines copies n bytes, a multiple of 64, to a 64-byte aligned dst
// with non-temporal stores and no fence (memmove_nt_amd64.s). It needs
// AVX2. Call sfence after the last one.
//
//go:noescape
func copyNTLines(dst, src *byte, n int)

// sfence orders the non-temporal stores before it before every store after
// it, and makes them visible to other cores.
func sfence()
