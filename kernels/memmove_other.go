//go:build !amd64

package kernels

// useAVX2 is false: the assembly kernels exist only on amd64.
const useAVX2 = false

// memmoveNT is copy() where there is no streaming copy.
func memmoveNT(dst, src []byte) {
	copy(dst, src)
}

// copyNTLines and sfence exist only on amd64; useAVX2 is false elsewhere, so
// they are never called.

func copyNTLines(dst, src *byte, n int) { panic("kernels: copyNTLines without AVX2") }

func sfence() {}
