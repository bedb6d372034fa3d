package kernels

// SetTuning overrides the parallel split knobs for a test and returns the
// function restoring them.
func SetTuning(threshold, share int64, workers int) (restore func()) {
	t, s, w := parallelThreshold, minShare, maxWorkers
	parallelThreshold, minShare, maxWorkers = threshold, share, workers
	return func() { parallelThreshold, minShare, maxWorkers = t, s, w }
}

// SetStreamThreshold makes Memmove (and so Copy) and RunTranspose stream
// from n bytes instead of StreamThreshold and returns the function restoring
// it.
func SetStreamThreshold(n int) (restore func()) {
	old := streamMin
	streamMin = n
	return func() { streamMin = old }
}

// MemmoveNT is the streaming copy whatever the length (copy() where there is
// none, below 128 bytes and for overlapping ranges).
func MemmoveNT(dst, src []byte) { memmoveNT(dst, src) }

// CopyPlain is the copy Memmove makes below StreamThreshold.
func CopyPlain(dst, src []byte) { copyPlain(dst, src) }

// HasAVX2 reports whether the assembly kernels run.
func HasAVX2() bool { return useAVX2 }
