//go:build !cgo

package nvml

// Discover needs go-nvml, which needs cgo: a CGO_ENABLED=0 build returns
// ErrUnavailable.
func Discover(opts ...Option) (*Inventory, error) {
	_ = applyOptions(opts)
	return nil, ErrUnavailable
}
