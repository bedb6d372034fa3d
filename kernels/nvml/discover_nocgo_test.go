//go:build !cgo

package nvml

import (
	"errors"
	"testing"
)

// Without cgo there is no go-nvml: Discover says so instead of guessing.
func TestDiscoverWithoutCgo(t *testing.T) {
	inv, err := Discover(WithLibraryPath("/nonexistent/libnvidia-ml.so.1"))
	if !errors.Is(err, ErrUnavailable) || inv != nil {
		t.Fatalf("Discover = %v, %v; want nil, ErrUnavailable", inv, err)
	}
	if errors.Is(err, ErrNoDriver) {
		t.Error("ErrUnavailable must not read as ErrNoDriver: the build, not the machine, lacks NVML")
	}
}
