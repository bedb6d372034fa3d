//go:build !amd64

package kernels

// SetAVX2 does nothing: there are no assembly kernels to turn off.
func SetAVX2(on bool) (restore func()) { return func() {} }
