package nvml

import (
	"errors"
	"strconv"
)

// DefaultLibrary is the NVML library Discover loads unless WithLibraryPath
// names another (the soname the NVIDIA driver installs).
const DefaultLibrary = "libnvidia-ml.so.1"

var (
	// ErrNoDriver: no NVIDIA driver here. libnvidia-ml cannot be loaded
	// (NVML_ERROR_LIBRARY_NOT_FOUND) or the kernel driver is not running
	// (NVML_ERROR_DRIVER_NOT_LOADED). Not a failure on a CPU-only machine.
	ErrNoDriver = errors.New("nvml: no NVIDIA driver")
	// ErrUnavailable: this binary was built without cgo, which go-nvml
	// needs, so it cannot tell whether there are GPUs.
	ErrUnavailable = errors.New("nvml: built without cgo")
)

// Inventory is what Discover found.
type Inventory struct {
	// DriverVersion is the NVIDIA driver version, such as "550.54.15".
	DriverVersion string `json:"driver_version"`
	// CUDADriverVersion is the CUDA version the driver supports, as
	// nvmlSystemGetCudaDriverVersion reports it: 1000*major + 10*minor
	// (12040 is CUDA 12.4). CUDAVersionString formats it.
	CUDADriverVersion int `json:"cuda_driver_version"`
	// Devices are in NVML order: Devices[i].Ordinal == i.
	Devices []Device `json:"devices"`
}

// Device is one GPU.
type Device struct {
	Ordinal     int    `json:"ordinal"`      // NVML index (PCI bus order)
	Name        string `json:"name"`         // such as "NVIDIA H100 80GB HBM3"
	UUID        string `json:"uuid"`         // such as "GPU-5e0f…"
	PCIBusID    string `json:"pci_bus_id"`   // domain:bus:device.function, such as "00000000:3B:00.0"
	MemoryBytes uint64 `json:"memory_bytes"` // total device memory
}

// CUDAVersionString formats a CUDA driver version (1000*major + 10*minor)
// as "major.minor"; a non-positive version is "unknown".
func CUDAVersionString(v int) string {
	if v <= 0 {
		return "unknown"
	}
	return strconv.Itoa(v/1000) + "." + strconv.Itoa(v%1000/10)
}

// Option configures Discover.
type Option func(*options)

type options struct {
	library string
}

// WithLibraryPath makes Discover load NVML from path (a file name dlopen
// searches for, or a path) instead of DefaultLibrary. An empty path keeps
// the default.
func WithLibraryPath(path string) Option {
	return func(o *options) {
		if path != "" {
			o.library = path
		}
	}
}

func applyOptions(opts []Option) options {
	o := options{library: DefaultLibrary}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
