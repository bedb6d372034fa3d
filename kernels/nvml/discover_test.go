//go:build cgo

package nvml

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// A library that does not exist is "no driver", reported by nvmlInit with
// the path, and Discover neither crashes nor calls NVML further (which
// would kill the process). It can be repeated.
func TestDiscoverMissingLibrary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	for range 2 {
		inv, err := Discover(WithLibraryPath(path))
		if inv != nil || !errors.Is(err, ErrNoDriver) {
			t.Fatalf("Discover(%s) = %v, %v; want nil and ErrNoDriver", path, inv, err)
		}
		var re *ReturnError
		if !errors.As(err, &re) || re.Op != "nvmlInit" || re.Code != gonvml.ERROR_LIBRARY_NOT_FOUND {
			t.Fatalf("Discover error %#v, want a *ReturnError of nvmlInit, ERROR_LIBRARY_NOT_FOUND", err)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "nvml: ") || !strings.Contains(msg, "ERROR_LIBRARY_NOT_FOUND") || !strings.Contains(msg, path) || re.Detail == "" {
			t.Errorf("message %q lacks the prefix, the code name or the library", msg)
		}
	}
}

// A library that loads but is not NVML (libc) is refused before any NVML
// call, which would die on the unresolved symbol, and is not "no driver".
func TestDiscoverNotNVML(t *testing.T) {
	inv, err := Discover(WithLibraryPath("libc.so.6"))
	if errors.Is(err, ErrNoDriver) {
		t.Skipf("no libc.so.6 here: %v", err)
	}
	var re *ReturnError
	if inv != nil || !errors.As(err, &re) || re.Code != gonvml.ERROR_FUNCTION_NOT_FOUND || re.Op != "dlsym nvmlInit_v2" {
		t.Fatalf("Discover(libc.so.6) = %v, %v; want a ReturnError of dlsym nvmlInit_v2, ERROR_FUNCTION_NOT_FOUND", inv, err)
	}
	if !strings.Contains(err.Error(), "not an NVML library") {
		t.Errorf("message %q", err)
	}
}

// The default library: a GPU machine lists its devices, any other machine
// has no driver. Both are fine; anything else is not.
func TestDiscoverDefault(t *testing.T) {
	inv, err := Discover()
	if errors.Is(err, ErrNoDriver) {
		if inv != nil {
			t.Errorf("ErrNoDriver with an inventory %+v", inv)
		}
		t.Logf("no NVIDIA driver: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("Discover: %v (want an inventory or ErrNoDriver)", err)
	}
	checkInventory(t, inv)
	t.Logf("driver %s, CUDA %s, %d devices: %+v", inv.DriverVersion, CUDAVersionString(inv.CUDADriverVersion), len(inv.Devices), inv.Devices)
}

func checkInventory(t *testing.T, inv *Inventory) {
	t.Helper()
	if inv == nil || len(inv.Devices) == 0 {
		t.Fatalf("inventory %+v: no devices", inv)
	}
	if inv.DriverVersion == "" || inv.CUDADriverVersion <= 0 {
		t.Errorf("driver version %q, CUDA driver version %d", inv.DriverVersion, inv.CUDADriverVersion)
	}
	uuids := map[string]bool{}
	for i, d := range inv.Devices {
		if d.Ordinal != i || d.Name == "" || d.UUID == "" || d.PCIBusID == "" || d.MemoryBytes == 0 {
			t.Errorf("device %d: %+v", i, d)
		}
		if uuids[d.UUID] {
			t.Errorf("device %d: UUID %s twice", i, d.UUID)
		}
		uuids[d.UUID] = true
	}
}

func TestReturnErrorUnwrap(t *testing.T) {
	for _, c := range []struct {
		code     gonvml.Return
		noDriver bool
		name     string
	}{
		{gonvml.ERROR_LIBRARY_NOT_FOUND, true, "ERROR_LIBRARY_NOT_FOUND (code 12)"},
		{gonvml.ERROR_DRIVER_NOT_LOADED, true, "ERROR_DRIVER_NOT_LOADED (code 9)"},
		{gonvml.ERROR_NO_PERMISSION, false, "ERROR_NO_PERMISSION (code 4)"},
		{gonvml.ERROR_LIB_RM_VERSION_MISMATCH, false, "ERROR_LIB_RM_VERSION_MISMATCH (code 18)"},
		{gonvml.ERROR_GPU_IS_LOST, false, "ERROR_GPU_IS_LOST (code 15)"},
		{gonvml.ERROR_UNKNOWN, false, "ERROR_UNKNOWN (code 999)"},
		{gonvml.Return(4242), false, "code 4242"},
	} {
		err := error(&ReturnError{Op: "nvmlDeviceGetName(3)", Code: c.code})
		if got := errors.Is(err, ErrNoDriver); got != c.noDriver {
			t.Errorf("code %d: errors.Is(ErrNoDriver) = %v, want %v", c.code, got, c.noDriver)
		}
		if errors.Is(err, ErrUnavailable) {
			t.Errorf("code %d reads as ErrUnavailable", c.code)
		}
		if want := "nvml: nvmlDeviceGetName(3): " + c.name; err.Error() != want {
			t.Errorf("code %d: %q, want %q", c.code, err.Error(), want)
		}
	}
	if got := (&ReturnError{Op: "nvmlInit", Code: gonvml.ERROR_DRIVER_NOT_LOADED, Library: "/l.so"}).Error(); got != "nvml: nvmlInit: ERROR_DRIVER_NOT_LOADED (code 9) (library /l.so)" {
		t.Errorf("with a library: %q", got)
	}
}

// Every code go-nvml names has a name here too (one map per version).
func TestReturnNamesCoverGoNVML(t *testing.T) {
	for r := gonvml.SUCCESS; r <= gonvml.ERROR_RESET_TYPE_NOT_SUPPORTED; r++ {
		if _, ok := returnNames[r]; !ok {
			t.Errorf("code %d has no name", r)
		}
	}
	for r, name := range returnNames {
		if !strings.HasPrefix(name, "ERROR_") && r != gonvml.SUCCESS {
			t.Errorf("code %d: name %q", r, name)
		}
	}
}

// After a failed nvmlInit nothing else is called: the mock panics on any
// method without a function, Shutdown included.
func TestDiscoverFailedInitCallsNothingElse(t *testing.T) {
	for _, code := range []gonvml.Return{gonvml.ERROR_LIBRARY_NOT_FOUND, gonvml.ERROR_DRIVER_NOT_LOADED, gonvml.ERROR_NO_PERMISSION} {
		lib := &mock.Interface{InitFunc: func() gonvml.Return { return code }}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("code %d: an NVML call after a failed Init: %v", code, p)
				}
			}()
			inv, err := discover(lib, "libx.so")
			var re *ReturnError
			if inv != nil || !errors.As(err, &re) || re.Code != code || re.Op != "nvmlInit" || re.Library != "libx.so" {
				t.Errorf("code %d: discover = %v, %v", code, inv, err)
			}
		}()
		if n := len(lib.InitCalls()); n != 1 {
			t.Errorf("code %d: %d Init calls", code, n)
		}
	}
}

func busID(s string) (b [32]int8) {
	for i := range len(s) {
		b[i] = int8(s[i])
	}
	return b
}

// fakeLib is an NVML with the given devices; fail makes one call of one
// device fail.
func fakeLib(names []string, failOp string, failDevice int, failCode gonvml.Return) *mock.Interface {
	devs := make([]gonvml.Device, len(names))
	for i, name := range names {
		ret := func(op string) gonvml.Return {
			if op == failOp && i == failDevice {
				return failCode
			}
			return gonvml.SUCCESS
		}
		devs[i] = &mock.Device{
			GetNameFunc: func() (string, gonvml.Return) { return name, ret("name") },
			GetUUIDFunc: func() (string, gonvml.Return) { return "GPU-" + name, ret("uuid") },
			GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
				return gonvml.Memory{Total: uint64(i+1) << 30, Free: 1}, ret("memory")
			},
			GetPciInfoFunc: func() (gonvml.PciInfo, gonvml.Return) {
				return gonvml.PciInfo{BusId: busID("00000000:0" + string(rune('a'+i)) + ":00.0")}, ret("pci")
			},
		}
	}
	return &mock.Interface{
		InitFunc:                       func() gonvml.Return { return gonvml.SUCCESS },
		ShutdownFunc:                   func() gonvml.Return { return gonvml.SUCCESS },
		SystemGetDriverVersionFunc:     func() (string, gonvml.Return) { return "550.54.15", gonvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, gonvml.Return) { return 12040, gonvml.SUCCESS },
		DeviceGetCountFunc:             func() (int, gonvml.Return) { return len(devs), gonvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (gonvml.Device, gonvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, gonvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], gonvml.SUCCESS
		},
	}
}

func TestDiscoverListsDevices(t *testing.T) {
	lib := fakeLib([]string{"NVIDIA H100", "NVIDIA L4"}, "", 0, 0)
	inv, err := discover(lib, "x")
	if err != nil {
		t.Fatal(err)
	}
	checkInventory(t, inv)
	want := Inventory{DriverVersion: "550.54.15", CUDADriverVersion: 12040, Devices: []Device{
		{Ordinal: 0, Name: "NVIDIA H100", UUID: "GPU-NVIDIA H100", PCIBusID: "00000000:0a:00.0", MemoryBytes: 1 << 30},
		{Ordinal: 1, Name: "NVIDIA L4", UUID: "GPU-NVIDIA L4", PCIBusID: "00000000:0b:00.0", MemoryBytes: 2 << 30},
	}}
	if inv.DriverVersion != want.DriverVersion || inv.CUDADriverVersion != want.CUDADriverVersion || len(inv.Devices) != 2 ||
		inv.Devices[0] != want.Devices[0] || inv.Devices[1] != want.Devices[1] {
		t.Errorf("inventory %+v, want %+v", *inv, want)
	}
	if n := len(lib.ShutdownCalls()); n != 1 {
		t.Errorf("%d Shutdown calls, want 1", n)
	}
}

// No devices behind a working driver: an empty (non-nil) list, no error.
func TestDiscoverNoDevices(t *testing.T) {
	lib := fakeLib(nil, "", 0, 0)
	inv, err := discover(lib, "x")
	if err != nil || inv == nil || inv.Devices == nil || len(inv.Devices) != 0 {
		t.Fatalf("discover = %+v, %v", inv, err)
	}
	if n := len(lib.ShutdownCalls()); n != 1 {
		t.Errorf("%d Shutdown calls, want 1", n)
	}
}

// A failed call after a successful Init is a ReturnError naming the call
// and the device, not "no driver", and Shutdown still runs.
func TestDiscoverDeviceFailure(t *testing.T) {
	for _, c := range []struct{ op, wantOp string }{
		{"name", "nvmlDeviceGetName(1)"}, {"uuid", "nvmlDeviceGetUUID(1)"},
		{"memory", "nvmlDeviceGetMemoryInfo(1)"}, {"pci", "nvmlDeviceGetPciInfo(1)"},
	} {
		lib := fakeLib([]string{"a", "b", "c"}, c.op, 1, gonvml.ERROR_GPU_IS_LOST)
		inv, err := discover(lib, "x")
		var re *ReturnError
		if inv != nil || !errors.As(err, &re) || re.Op != c.wantOp || re.Code != gonvml.ERROR_GPU_IS_LOST || errors.Is(err, ErrNoDriver) {
			t.Errorf("%s fails: discover = %v, %v; want a ReturnError of %s", c.op, inv, err, c.wantOp)
		}
		if n := len(lib.ShutdownCalls()); n != 1 {
			t.Errorf("%s fails: %d Shutdown calls, want 1", c.op, n)
		}
	}
}

func TestDiscoverSystemAndShutdownFailures(t *testing.T) {
	lib := fakeLib([]string{"a"}, "", 0, 0)
	lib.SystemGetDriverVersionFunc = func() (string, gonvml.Return) { return "", gonvml.ERROR_NO_PERMISSION }
	if _, err := discover(lib, "x"); err == nil || !strings.Contains(err.Error(), "nvmlSystemGetDriverVersion: ERROR_NO_PERMISSION") || len(lib.ShutdownCalls()) != 1 {
		t.Errorf("driver version fails: %v, %d Shutdown calls", err, len(lib.ShutdownCalls()))
	}
	lib = fakeLib([]string{"a"}, "", 0, 0)
	lib.DeviceGetCountFunc = func() (int, gonvml.Return) { return 0, gonvml.ERROR_UNKNOWN }
	if _, err := discover(lib, "x"); err == nil || !strings.Contains(err.Error(), "nvmlDeviceGetCount") || len(lib.ShutdownCalls()) != 1 {
		t.Errorf("count fails: %v, %d Shutdown calls", err, len(lib.ShutdownCalls()))
	}
	lib = fakeLib([]string{"a"}, "", 0, 0)
	lib.ShutdownFunc = func() gonvml.Return { return gonvml.ERROR_UNINITIALIZED }
	if inv, err := discover(lib, "x"); inv != nil || err == nil || !strings.Contains(err.Error(), "nvmlShutdown: ERROR_UNINITIALIZED") {
		t.Errorf("shutdown fails: %v, %v", inv, err)
	}
}
