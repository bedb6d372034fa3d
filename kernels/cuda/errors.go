package cuda

import (
	"errors"
	"fmt"
)

// ErrUnavailable reports that CUDA cannot be used here: libcuda or NVRTC
// cannot be loaded, a symbol is missing, the driver finds no device, or the
// ordinal is out of range. Open wraps it with the reason.
var ErrUnavailable = errors.New("cuda: unavailable")

// Error is a failed CUDA driver call: the CUresult code and its name.
type Error struct {
	Func string // driver function, such as "cuMemAlloc_v2"
	Code int    // CUresult
	Name string // such as "CUDA_ERROR_OUT_OF_MEMORY"; empty if unknown
}

func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = "CUDA_ERROR_UNKNOWN_CODE"
	}
	return fmt.Sprintf("cuda: %s: %s (%d)", e.Func, name, e.Code)
}

// CompileError is a failed NVRTC call: the nvrtcResult code, its name and,
// for a failed compilation, the program log.
type CompileError struct {
	Func string // NVRTC function, such as "nvrtcCompileProgram"
	Code int    // nvrtcResult
	Name string // such as "NVRTC_ERROR_COMPILATION"
	Log  string // compiler output, if any
}

func (e *CompileError) Error() string {
	s := fmt.Sprintf("cuda: %s: %s (%d)", e.Func, e.Name, e.Code)
	if e.Log != "" {
		s += ":\n" + e.Log
	}
	return s
}
