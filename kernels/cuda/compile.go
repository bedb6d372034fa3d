package cuda

import (
	_ "embed"
	"fmt"
	"slices"
	"unsafe"
)

//go:embed kernels.cu
var source string

// rtcErr turns an nvrtcResult into an error (nil for NVRTC_SUCCESS).
func (l *libs) rtcErr(fn string, res int32) error {
	if res == 0 {
		return nil
	}
	return &CompileError{Func: fn, Code: int(res), Name: goString(l.rtc.nvrtcGetErrorString(res))}
}

// compile builds the kernels for a device of compute capability cc (major*10
// + minor): a CUBIN for that exact architecture when this NVRTC supports it,
// else PTX for the newest virtual architecture it supports that the device
// can run (the driver JIT-compiles it). The image is NUL-terminated.
func (l *libs) compile(cc int) ([]byte, error) {
	c := &l.rtc
	arch, cubin := cc, c.nvrtcGetCUBIN != nil
	if c.nvrtcGetSupportedArchs != nil {
		var n int32
		if err := l.rtcErr("nvrtcGetNumSupportedArchs", c.nvrtcGetNumSupportedArchs(&n)); err != nil {
			return nil, err
		}
		archs := make([]int32, max(n, 1))
		if err := l.rtcErr("nvrtcGetSupportedArchs", c.nvrtcGetSupportedArchs(&archs[0])); err != nil {
			return nil, err
		}
		archs = archs[:n]
		if !slices.Contains(archs, int32(cc)) {
			cubin, arch = false, 0
			for _, a := range archs {
				if int(a) <= cc && int(a) > arch {
					arch = int(a)
				}
			}
			if arch == 0 {
				return nil, fmt.Errorf("%w: NVRTC supports none of the architectures up to sm_%d", ErrUnavailable, cc)
			}
		}
	}
	opt := fmt.Sprintf("--gpu-architecture=compute_%d", arch)
	if cubin {
		opt = fmt.Sprintf("--gpu-architecture=sm_%d", arch)
	}

	src, name := cstr(source), cstr("hybridxfer_kernels.cu")
	var prog uintptr
	if err := l.rtcErr("nvrtcCreateProgram", c.nvrtcCreateProgram(&prog, &src[0], &name[0], 0, nil, nil)); err != nil {
		return nil, err
	}
	defer c.nvrtcDestroyProgram(&prog)
	o := cstr(opt)
	opts := []*byte{&o[0]}
	if res := c.nvrtcCompileProgram(prog, int32(len(opts)), unsafe.Pointer(&opts[0])); res != 0 {
		err := l.rtcErr("nvrtcCompileProgram", res).(*CompileError)
		err.Log = l.programLog(prog)
		return nil, err
	}
	sizeFn, getFn, what := c.nvrtcGetPTXSize, c.nvrtcGetPTX, "PTX"
	if cubin {
		sizeFn, getFn, what = c.nvrtcGetCUBINSize, c.nvrtcGetCUBIN, "CUBIN"
	}
	var n uintptr
	if err := l.rtcErr("nvrtcGet"+what+"Size", sizeFn(prog, &n)); err != nil {
		return nil, err
	}
	img := make([]byte, n+1)
	if n > 0 {
		if err := l.rtcErr("nvrtcGet"+what, getFn(prog, &img[0])); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// programLog returns the compilation log of prog.
func (l *libs) programLog(prog uintptr) string {
	var n uintptr
	if l.rtc.nvrtcGetProgramLogSize(prog, &n) != 0 || n <= 1 {
		return ""
	}
	b := make([]byte, n)
	if l.rtc.nvrtcGetProgramLog(prog, &b[0]) != 0 {
		return ""
	}
	return string(b[:n-1])
}
