package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// driver holds the CUDA driver API functions used here. CUresult is int32;
// CUdevice is int32; contexts, streams, modules and functions are handles;
// device pointers are uint64.
type driver struct {
	cuInit                    func(flags uint32) int32
	cuDriverGetVersion        func(v *int32) int32
	cuDeviceGetCount          func(n *int32) int32
	cuDeviceGet               func(dev *int32, ordinal int32) int32
	cuDeviceGetName           func(name *byte, n int32, dev int32) int32
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) int32
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuStreamCreate            func(s *uintptr, flags uint32) int32
	cuStreamDestroy           func(s uintptr) int32
	cuStreamSynchronize       func(s uintptr) int32
	cuMemAlloc                func(p *uint64, n uintptr) int32
	cuMemFree                 func(p uint64) int32
	cuMemsetD8Async           func(p uint64, v uint8, n uintptr, s uintptr) int32
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, n uintptr, s uintptr) int32
	cuMemcpyDtoHAsync         func(dst unsafe.Pointer, src uint64, n uintptr, s uintptr) int32
	cuMemcpyDtoDAsync         func(dst, src uint64, n uintptr, s uintptr) int32
	cuMemHostRegister         func(p unsafe.Pointer, n uintptr, flags uint32) int32
	cuMemHostUnregister       func(p unsafe.Pointer) int32
	cuMemHostGetDevicePointer func(d *uint64, p unsafe.Pointer, flags uint32) int32
	cuModuleLoadData          func(m *uintptr, image unsafe.Pointer) int32
	cuModuleUnload            func(m uintptr) int32
	cuModuleGetFunction       func(f *uintptr, m uintptr, name *byte) int32
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params, extra unsafe.Pointer) int32
	cuGetErrorName            func(res int32, s **byte) int32
}

// compiler holds the NVRTC functions used here. nvrtcResult is int32.
// The optional ones (nil when absent) appeared in later CUDA versions.
type compiler struct {
	nvrtcVersion           func(major, minor *int32) int32
	nvrtcGetErrorString    func(res int32) *byte
	nvrtcCreateProgram     func(p *uintptr, src, name *byte, nh int32, headers, includes unsafe.Pointer) int32
	nvrtcCompileProgram    func(p uintptr, nopt int32, opts unsafe.Pointer) int32
	nvrtcGetProgramLogSize func(p uintptr, n *uintptr) int32
	nvrtcGetProgramLog     func(p uintptr, log *byte) int32
	nvrtcGetPTXSize        func(p uintptr, n *uintptr) int32
	nvrtcGetPTX            func(p uintptr, ptx *byte) int32
	nvrtcDestroyProgram    func(p *uintptr) int32

	nvrtcGetCUBINSize         func(p uintptr, n *uintptr) int32  // optional (11.1)
	nvrtcGetCUBIN             func(p uintptr, cubin *byte) int32 // optional (11.1)
	nvrtcGetNumSupportedArchs func(n *int32) int32               // optional (11.2)
	nvrtcGetSupportedArchs    func(archs *int32) int32           // optional (11.2)
}

// libs are the loaded libraries, shared by all engines of the process.
type libs struct {
	drv  driver
	rtc  compiler
	desc string // which files were loaded
}

var (
	loadOnce sync.Once
	loaded   *libs
	loadErr  error
)

// load dlopens libcuda and NVRTC once and binds every symbol, probing each
// before binding it. The error wraps ErrUnavailable.
func load() (*libs, error) {
	loadOnce.Do(func() {
		loaded, loadErr = loadLibs()
		if loadErr != nil {
			loadErr = fmt.Errorf("%w: %w", ErrUnavailable, loadErr)
		}
	})
	return loaded, loadErr
}

func loadLibs() (*libs, error) {
	l := &libs{}
	cu, cuPath, err := dlopenFirst([]string{"libcuda.so.1", "libcuda.so"})
	if err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	d := &l.drv
	for _, s := range []struct {
		fn    any
		names []string
	}{
		{&d.cuInit, []string{"cuInit"}},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&d.cuDeviceGetCount, []string{"cuDeviceGetCount"}},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}},
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&d.cuStreamCreate, []string{"cuStreamCreate"}},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}},
		{&d.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&d.cuMemFree, []string{"cuMemFree_v2"}},
		{&d.cuMemsetD8Async, []string{"cuMemsetD8Async"}},
		{&d.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&d.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}},
		{&d.cuMemcpyDtoDAsync, []string{"cuMemcpyDtoDAsync_v2"}},
		{&d.cuMemHostRegister, []string{"cuMemHostRegister_v2"}},
		{&d.cuMemHostUnregister, []string{"cuMemHostUnregister"}},
		{&d.cuMemHostGetDevicePointer, []string{"cuMemHostGetDevicePointer_v2"}},
		{&d.cuModuleLoadData, []string{"cuModuleLoadData"}},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}},
		{&d.cuLaunchKernel, []string{"cuLaunchKernel"}},
		{&d.cuGetErrorName, []string{"cuGetErrorName"}},
	} {
		if err := bind(cu, cuPath, s.fn, s.names, true); err != nil {
			return nil, err
		}
	}

	rtc, rtcPath, err := dlopenFirst(nvrtcCandidates())
	if err != nil {
		return nil, fmt.Errorf("nvrtc: %w", err)
	}
	c := &l.rtc
	for _, s := range []struct {
		fn       any
		name     string
		required bool
	}{
		{&c.nvrtcVersion, "nvrtcVersion", true},
		{&c.nvrtcGetErrorString, "nvrtcGetErrorString", true},
		{&c.nvrtcCreateProgram, "nvrtcCreateProgram", true},
		{&c.nvrtcCompileProgram, "nvrtcCompileProgram", true},
		{&c.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize", true},
		{&c.nvrtcGetProgramLog, "nvrtcGetProgramLog", true},
		{&c.nvrtcGetPTXSize, "nvrtcGetPTXSize", true},
		{&c.nvrtcGetPTX, "nvrtcGetPTX", true},
		{&c.nvrtcDestroyProgram, "nvrtcDestroyProgram", true},
		{&c.nvrtcGetCUBINSize, "nvrtcGetCUBINSize", false},
		{&c.nvrtcGetCUBIN, "nvrtcGetCUBIN", false},
		{&c.nvrtcGetNumSupportedArchs, "nvrtcGetNumSupportedArchs", false},
		{&c.nvrtcGetSupportedArchs, "nvrtcGetSupportedArchs", false},
	} {
		if err := bind(rtc, rtcPath, s.fn, []string{s.name}, s.required); err != nil {
			return nil, err
		}
	}
	if c.nvrtcGetCUBINSize == nil || c.nvrtcGetCUBIN == nil {
		c.nvrtcGetCUBINSize, c.nvrtcGetCUBIN = nil, nil
	}
	if c.nvrtcGetNumSupportedArchs == nil || c.nvrtcGetSupportedArchs == nil {
		c.nvrtcGetNumSupportedArchs, c.nvrtcGetSupportedArchs = nil, nil
	}
	l.desc = cuPath + ", " + rtcPath
	return l, nil
}

// dlopenFirst opens the first library of names that loads.
func dlopenFirst(names []string) (uintptr, string, error) {
	var errs []string
	for _, n := range names {
		h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err == nil {
			return h, n, nil
		}
		errs = append(errs, err.Error())
	}
	if len(errs) == 0 {
		return 0, "", fmt.Errorf("no candidate library")
	}
	return 0, "", fmt.Errorf("dlopen: %s", strings.Join(errs, "; "))
}

// bind looks the first present symbol of names up in lib and binds it to
// fn, a pointer to a func variable. A missing optional symbol leaves fn nil.
func bind(lib uintptr, path string, fn any, names []string, required bool) error {
	for _, n := range names {
		addr, err := purego.Dlsym(lib, n)
		if err == nil && addr != 0 {
			purego.RegisterFunc(fn, addr)
			return nil
		}
	}
	if !required {
		return nil
	}
	return fmt.Errorf("%s: missing symbol %s", path, strings.Join(names, " or "))
}

// nvrtcCandidates lists NVRTC libraries to try: $HYBRIDXFER_NVRTC, the
// names the dynamic linker resolves, then the files of the usual CUDA
// installation directories (newest version first).
func nvrtcCandidates() []string {
	var c []string
	if p := os.Getenv("HYBRIDXFER_NVRTC"); p != "" {
		c = append(c, p)
	}
	c = append(c, "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2")
	dirs := []string{"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/local/cuda/targets/sbsa-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"}
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if p := os.Getenv(env); p != "" {
			dirs = append([]string{filepath.Join(p, "lib64"), filepath.Join(p, "lib")}, dirs...)
		}
	}
	for _, d := range dirs {
		m, _ := filepath.Glob(filepath.Join(d, "libnvrtc.so*"))
		sort.Sort(sort.Reverse(sort.StringSlice(m)))
		c = append(c, m...)
	}
	return c
}

// goString copies the NUL-terminated C string at p.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// cstr returns s as a NUL-terminated byte slice.
func cstr(s string) []byte { return append([]byte(s), 0) }
