//go:build cgo

package nvml

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/dl"
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ReturnError is a failed NVML call: the function and its nvmlReturn_t.
// NVML_ERROR_LIBRARY_NOT_FOUND and NVML_ERROR_DRIVER_NOT_LOADED unwrap to
// ErrNoDriver.
type ReturnError struct {
	Op      string        // NVML function, such as "nvmlInit" or "nvmlDeviceGetName(1)"
	Code    gonvml.Return // never gonvml.SUCCESS
	Library string        // the library Discover loaded (set when loading fails)
	Detail  string        // dlerror's reason when loading fails
}

// Error names the code without calling NVML: nvml.ErrorString and
// Return.Error call nvmlErrorString while go-nvml holds the library open,
// which after a failed load or in a race with another Shutdown is a call
// into a library that is not there.
func (e *ReturnError) Error() string {
	s := fmt.Sprintf("nvml: %s: %s", e.Op, ReturnName(e.Code))
	if e.Library != "" {
		s += " (library " + e.Library + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap is ErrNoDriver for the codes that mean no driver, else nil.
func (e *ReturnError) Unwrap() error {
	switch e.Code {
	case gonvml.ERROR_LIBRARY_NOT_FOUND, gonvml.ERROR_DRIVER_NOT_LOADED:
		return ErrNoDriver
	}
	return nil
}

// returnNames are the nvmlReturn_t names of go-nvml v0.13.4-1.
var returnNames = map[gonvml.Return]string{
	gonvml.SUCCESS:                         "SUCCESS",
	gonvml.ERROR_UNINITIALIZED:             "ERROR_UNINITIALIZED",
	gonvml.ERROR_INVALID_ARGUMENT:          "ERROR_INVALID_ARGUMENT",
	gonvml.ERROR_NOT_SUPPORTED:             "ERROR_NOT_SUPPORTED",
	gonvml.ERROR_NO_PERMISSION:             "ERROR_NO_PERMISSION",
	gonvml.ERROR_ALREADY_INITIALIZED:       "ERROR_ALREADY_INITIALIZED",
	gonvml.ERROR_NOT_FOUND:                 "ERROR_NOT_FOUND",
	gonvml.ERROR_INSUFFICIENT_SIZE:         "ERROR_INSUFFICIENT_SIZE",
	gonvml.ERROR_INSUFFICIENT_POWER:        "ERROR_INSUFFICIENT_POWER",
	gonvml.ERROR_DRIVER_NOT_LOADED:         "ERROR_DRIVER_NOT_LOADED",
	gonvml.ERROR_TIMEOUT:                   "ERROR_TIMEOUT",
	gonvml.ERROR_IRQ_ISSUE:                 "ERROR_IRQ_ISSUE",
	gonvml.ERROR_LIBRARY_NOT_FOUND:         "ERROR_LIBRARY_NOT_FOUND",
	gonvml.ERROR_FUNCTION_NOT_FOUND:        "ERROR_FUNCTION_NOT_FOUND",
	gonvml.ERROR_CORRUPTED_INFOROM:         "ERROR_CORRUPTED_INFOROM",
	gonvml.ERROR_GPU_IS_LOST:               "ERROR_GPU_IS_LOST",
	gonvml.ERROR_RESET_REQUIRED:            "ERROR_RESET_REQUIRED",
	gonvml.ERROR_OPERATING_SYSTEM:          "ERROR_OPERATING_SYSTEM",
	gonvml.ERROR_LIB_RM_VERSION_MISMATCH:   "ERROR_LIB_RM_VERSION_MISMATCH",
	gonvml.ERROR_IN_USE:                    "ERROR_IN_USE",
	gonvml.ERROR_MEMORY:                    "ERROR_MEMORY",
	gonvml.ERROR_NO_DATA:                   "ERROR_NO_DATA",
	gonvml.ERROR_VGPU_ECC_NOT_SUPPORTED:    "ERROR_VGPU_ECC_NOT_SUPPORTED",
	gonvml.ERROR_INSUFFICIENT_RESOURCES:    "ERROR_INSUFFICIENT_RESOURCES",
	gonvml.ERROR_FREQ_NOT_SUPPORTED:        "ERROR_FREQ_NOT_SUPPORTED",
	gonvml.ERROR_ARGUMENT_VERSION_MISMATCH: "ERROR_ARGUMENT_VERSION_MISMATCH",
	gonvml.ERROR_DEPRECATED:                "ERROR_DEPRECATED",
	gonvml.ERROR_NOT_READY:                 "ERROR_NOT_READY",
	gonvml.ERROR_GPU_NOT_FOUND:             "ERROR_GPU_NOT_FOUND",
	gonvml.ERROR_INVALID_STATE:             "ERROR_INVALID_STATE",
	gonvml.ERROR_RESET_TYPE_NOT_SUPPORTED:  "ERROR_RESET_TYPE_NOT_SUPPORTED",
	gonvml.ERROR_UNKNOWN:                   "ERROR_UNKNOWN",
}

// ReturnName is "NAME (code N)" for an nvmlReturn_t, such as
// "ERROR_LIBRARY_NOT_FOUND (code 12)", or "code N" for a code this version
// does not know. It is pure Go: safe whether or not NVML is loaded.
func ReturnName(r gonvml.Return) string {
	if name, ok := returnNames[r]; ok {
		return fmt.Sprintf("%s (code %d)", name, int32(r))
	}
	return fmt.Sprintf("code %d", int32(r))
}

// mu serializes Discover: go-nvml keeps process-wide state (the resolved
// symbols and its error-string function) that Init and Shutdown update.
var mu sync.Mutex

// Discover loads NVML, lists the devices and unloads it. Without a driver
// the error errors.Is ErrNoDriver; any other failed NVML call is a
// *ReturnError.
func Discover(opts ...Option) (*Inventory, error) {
	o := applyOptions(opts)
	mu.Lock()
	defer mu.Unlock()
	h, err := probe(o.library)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return discover(gonvml.New(gonvml.WithLibraryPath(o.library)), o.library)
}

// required are the NVML symbols discover calls, each a list of versions
// of which one is enough (go-nvml calls the newest the library has).
var required = [][]string{
	{"nvmlInit_v2", "nvmlInit"},
	{"nvmlShutdown"},
	{"nvmlSystemGetDriverVersion"},
	{"nvmlSystemGetCudaDriverVersion"},
	{"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"},
	{"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"},
	{"nvmlDeviceGetName"},
	{"nvmlDeviceGetUUID"},
	{"nvmlDeviceGetMemoryInfo"},
	{"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo"},
}

// probe opens the library as go-nvml will and checks that it exports every
// function discover calls: go-nvml calls NVML through symbols the dynamic
// linker resolves on first use, so a missing one (a library that is not
// NVML, or too old) would kill the process instead of failing. A library
// that cannot be opened is ERROR_LIBRARY_NOT_FOUND, as go-nvml's Init
// reports it, with dlerror's reason. The caller closes the handle.
func probe(library string) (*dl.DynamicLibrary, error) {
	h := dl.New(library, dl.RTLD_LAZY|dl.RTLD_GLOBAL)
	if err := h.Open(); err != nil {
		return nil, &ReturnError{Op: "nvmlInit", Code: gonvml.ERROR_LIBRARY_NOT_FOUND, Library: library, Detail: err.Error()}
	}
	for _, versions := range required {
		found := false
		for _, sym := range versions {
			if h.Lookup(sym) == nil {
				found = true
				break
			}
		}
		if !found {
			h.Close()
			return nil, &ReturnError{Op: "dlsym " + versions[0], Code: gonvml.ERROR_FUNCTION_NOT_FOUND, Library: library,
				Detail: "not an NVML library, or too old"}
		}
	}
	return h, nil
}

// discover lists the devices of lib. It calls nothing on lib unless Init
// succeeded, and Shutdown whenever it did.
func discover(lib gonvml.Interface, library string) (inv *Inventory, err error) {
	if ret := lib.Init(); ret != gonvml.SUCCESS {
		return nil, &ReturnError{Op: "nvmlInit", Code: ret, Library: library}
	}
	defer func() {
		if ret := lib.Shutdown(); ret != gonvml.SUCCESS && err == nil {
			inv, err = nil, &ReturnError{Op: "nvmlShutdown", Code: ret}
		}
	}()
	inv = &Inventory{Devices: []Device{}}
	var ret gonvml.Return
	if inv.DriverVersion, ret = lib.SystemGetDriverVersion(); ret != gonvml.SUCCESS {
		return nil, &ReturnError{Op: "nvmlSystemGetDriverVersion", Code: ret}
	}
	if inv.CUDADriverVersion, ret = lib.SystemGetCudaDriverVersion(); ret != gonvml.SUCCESS {
		return nil, &ReturnError{Op: "nvmlSystemGetCudaDriverVersion", Code: ret}
	}
	n, ret := lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, &ReturnError{Op: "nvmlDeviceGetCount", Code: ret}
	}
	for i := range n {
		d, err := device(lib, i)
		if err != nil {
			return nil, err
		}
		inv.Devices = append(inv.Devices, d)
	}
	return inv, nil
}

func device(lib gonvml.Interface, i int) (Device, error) {
	fail := func(fn string, ret gonvml.Return) (Device, error) {
		return Device{}, &ReturnError{Op: fmt.Sprintf("%s(%d)", fn, i), Code: ret}
	}
	h, ret := lib.DeviceGetHandleByIndex(i)
	if ret != gonvml.SUCCESS {
		return fail("nvmlDeviceGetHandleByIndex", ret)
	}
	d := Device{Ordinal: i}
	if d.Name, ret = h.GetName(); ret != gonvml.SUCCESS {
		return fail("nvmlDeviceGetName", ret)
	}
	if d.UUID, ret = h.GetUUID(); ret != gonvml.SUCCESS {
		return fail("nvmlDeviceGetUUID", ret)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != gonvml.SUCCESS {
		return fail("nvmlDeviceGetMemoryInfo", ret)
	}
	d.MemoryBytes = mem.Total
	pci, ret := h.GetPciInfo()
	if ret != gonvml.SUCCESS {
		return fail("nvmlDeviceGetPciInfo", ret)
	}
	d.PCIBusID = cString(pci.BusId[:])
	return d, nil
}

// cString is the NUL-terminated string in b.
func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
