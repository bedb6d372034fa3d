package kernels

import "golang.org/x/sys/cpu"

// SetAVX2 turns the assembly kernels off, or back on where the CPU has
// them, and returns the function restoring them.
func SetAVX2(on bool) (restore func()) {
	old := useAVX2
	useAVX2 = on && cpu.X86.HasAVX2
	return func() { useAVX2 = old }
}
