package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels/nvml"
)

// runDevices runs the devices subcommand in-process: its stdout, stderr
// and exit status (as main would exit).
func runDevices(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	c := devicesCmd()
	var out, errOut bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&errOut)
	c.SetArgs(args)
	c.SilenceUsage, c.SilenceErrors = true, true
	if err := c.ExecuteContext(context.Background()); err != nil {
		code = exitCode(err)
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

// Without a driver (here: a library that does not exist) devices says so
// in one line and exits 0: no GPU is not an error.
func TestDevicesWithoutDriver(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	out, errOut, code := runDevices(t, "--nvml-library", lib)
	want := "no NVIDIA driver found (" + lib + "): the CPU engine will be used\n"
	if code != 0 || !strings.HasPrefix(out, want) || !strings.Contains(out, "\nUCX memory types: ") {
		t.Errorf("devices --nvml-library %s: exit %d, stdout %q (stderr %q); want exit 0, %q and the UCX line", lib, code, out, errOut, want)
	}

	out, errOut, code = runDevices(t, "--json", "--nvml-library", lib)
	var rep struct {
		DriverFound     *bool         `json:"driver_found"`
		Library         string        `json:"library"`
		Devices         []nvml.Device `json:"devices"`
		UCXMemoryTypes  string        `json:"ucx_memory_types"`
		UCXDeviceMemory string        `json:"ucx_device_memory"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("devices --json: exit %d, stdout %q: %v", code, out, err)
	}
	// UCX reports host memory at least; device memory is "yes" or why not.
	if rep.DriverFound == nil || *rep.DriverFound || rep.Library != lib || rep.Devices == nil || len(rep.Devices) != 0 ||
		!strings.Contains(rep.UCXMemoryTypes, "host") || rep.UCXDeviceMemory == "" {
		t.Errorf("devices --json without a driver: %s", out)
	}
	if !strings.Contains(errOut, "no NVIDIA driver found") {
		t.Errorf("devices --json: stderr %q lacks the no-driver line", errOut)
	}
}

// With a fake NVML: the table, the JSON, and a failure other than "no
// driver" exits non-zero with the error.
func TestDevicesFakeNVML(t *testing.T) {
	inv := &nvml.Inventory{DriverVersion: "550.54.15", CUDADriverVersion: 12040, Devices: []nvml.Device{
		{Ordinal: 0, Name: "NVIDIA H100 80GB HBM3", UUID: "GPU-aaaa", PCIBusID: "00000000:3B:00.0", MemoryBytes: 80 << 30},
		{Ordinal: 1, Name: "NVIDIA H100 80GB HBM3", UUID: "GPU-bbbb", PCIBusID: "00000000:86:00.0", MemoryBytes: 80 << 30},
	}}
	var result error
	saved := discoverDevices
	t.Cleanup(func() { discoverDevices = saved })
	discoverDevices = func(...nvml.Option) (*nvml.Inventory, error) {
		if result != nil {
			return nil, result
		}
		return inv, nil
	}

	out, errOut, code := runDevices(t)
	if code != 0 {
		t.Fatalf("devices: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"driver 550.54.15, CUDA 12.4, 2 GPU(s)", "ORDINAL", "PCI BUS ID",
		"GPU-aaaa", "00000000:86:00.0", "80.00 GiB", "NVIDIA H100 80GB HBM3"} {
		if !strings.Contains(out, want) {
			t.Errorf("devices output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "no NVIDIA driver") {
		t.Errorf("devices with GPUs prints the no-driver line:\n%s", out)
	}

	out, _, code = runDevices(t, "--json")
	var rep devicesReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("devices --json: exit %d, %q: %v", code, out, err)
	}
	if !rep.DriverFound || rep.Library != nvml.DefaultLibrary || rep.DriverVersion != "550.54.15" || rep.CUDADriverVersion != 12040 ||
		len(rep.Devices) != 2 || rep.Devices[1] != inv.Devices[1] {
		t.Errorf("devices --json: %+v", rep)
	}

	result = errors.New("nvml: nvmlInit: ERROR_LIB_RM_VERSION_MISMATCH (code 18)")
	out, errOut, code = runDevices(t)
	if code == 0 || !strings.Contains(errOut, "ERROR_LIB_RM_VERSION_MISMATCH") || strings.Contains(out, "no NVIDIA driver") {
		t.Errorf("devices with a failing NVML: exit %d, stdout %q, stderr %q; want a non-zero exit with the error", code, out, errOut)
	}
	// A wrapped ErrNoDriver (the driver not loaded) is still "no driver".
	result = errors.Join(errors.New("nvml: nvmlInit: ERROR_DRIVER_NOT_LOADED (code 9)"), nvml.ErrNoDriver)
	if out, _, code = runDevices(t); code != 0 || !strings.HasPrefix(out, "no NVIDIA driver found (libnvidia-ml.so.1)") {
		t.Errorf("devices with the driver not loaded: exit %d, %q", code, out)
	}
}

// A library that is not NVML is an error, not "no driver".
func TestDevicesNotNVML(t *testing.T) {
	out, errOut, code := runDevices(t, "--nvml-library", "libc.so.6")
	if code == 0 && strings.HasPrefix(out, "no NVIDIA driver found") {
		t.Skip("no libc.so.6 here")
	}
	if code == 0 || !strings.Contains(errOut, "not an NVML library") {
		t.Errorf("devices --nvml-library libc.so.6: exit %d, stdout %q, stderr %q; want a non-zero exit", code, out, errOut)
	}
}

func TestDevicesRefusesArguments(t *testing.T) {
	if _, _, code := runDevices(t, "extra"); code == 0 {
		t.Error("devices extra: exit 0, want an error")
	}
}
