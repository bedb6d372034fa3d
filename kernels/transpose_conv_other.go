//go:build !amd64

package kernels

// splitRows and mergeRows have no kernels outside amd64: they do nothing.

func splitRows(d []byte, stride int, s []byte, n, w, item int, nt bool) int { return 0 }

func mergeRows(d, s []byte, stride, n, w, item int, nt bool) int { return 0 }
