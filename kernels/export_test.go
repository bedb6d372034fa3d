package kernels

// SetTuning overrides the parallel split knobs for a test and returns the
// function restoring them.
func SetTuning(threshold, share int64, workers int) (restore func()) {
	t, s, w := parallelThreshold, minShare, maxWorkers
	parallelThreshold, minShare, maxWorkers = threshold, share, workers
	return func() { parallelThreshold, minShare, maxWorkers = t, s, w }
}
