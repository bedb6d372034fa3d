package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/hybridxfer/hybridxfer/internal/hostmem"
	"github.com/hybridxfer/hybridxfer/kernels/nvml"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/spf13/cobra"
)

// discoverDevices is nvml.Discover; tests replace it to fake NVML failures.
var discoverDevices = nvml.Discover

// devicesReport is the --json output: the inventory and whether a driver
// was found (false: no devices, the CPU engine is used).
type devicesReport struct {
	DriverFound bool   `json:"driver_found"`
	Library     string `json:"library"`
	nvml.Inventory
	// UCXMemoryTypes are the memory types the installed UCX supports;
	// UCXDeviceMemory says whether it registers device memory ("yes") or
	// why not.
	UCXMemoryTypes  string `json:"ucx_memory_types"`
	UCXDeviceMemory string `json:"ucx_device_memory"`
}

// ucxMemory asks a UCX context which memory types it supports and whether
// it registers device memory (else why not: the line serve and verify
// print when --memory-kind device is refused).
func ucxMemory() (types, device string) {
	t, err := ucx.New(ucx.Config{Name: "devices"}, transport.Handlers{})
	if err != nil {
		return "unknown", fmt.Sprintf("no UCX context: %v", err)
	}
	defer t.Close()
	device = "yes"
	if err := t.Supports(transport.DeviceMemory(0)); err != nil {
		device = err.Error()
	}
	return t.MemTypes(), device
}

func devicesCmd() *cobra.Command {
	var (
		asJSON  bool
		library string
	)
	c := &cobra.Command{
		Use:   "devices [--json] [--nvml-library PATH]",
		Short: "List the NVIDIA GPUs NVML reports (ordinal, name, UUID, PCI bus id, memory)",
		Long: `devices loads NVML (libnvidia-ml.so.1, or --nvml-library PATH) and prints the driver
version, the CUDA version the driver supports and, per GPU, its NVML ordinal, name, UUID,
PCI bus id and total memory, as a table or (--json) one JSON object. NVML numbers GPUs in
PCI bus order, which is CUDA's order only with CUDA_DEVICE_ORDER=PCI_BUS_ID.

Without an NVIDIA driver it prints one line saying so and exits 0: that is a CPU-only
machine, where the CPU engine is used. Any other NVML failure is an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lib := library
			if lib == "" {
				lib = nvml.DefaultLibrary
			}
			out := cmd.OutOrStdout()
			inv, err := discoverDevices(nvml.WithLibraryPath(lib))
			if err != nil && !errors.Is(err, nvml.ErrNoDriver) {
				return fmt.Errorf("devices: %w", err)
			}
			rep := devicesReport{DriverFound: err == nil, Library: lib, Inventory: nvml.Inventory{Devices: []nvml.Device{}}}
			if inv != nil {
				rep.Inventory = *inv
			}
			rep.UCXMemoryTypes, rep.UCXDeviceMemory = ucxMemory()
			msg := fmt.Sprintf("no NVIDIA driver found (%s): the CPU engine will be used", lib)
			if asJSON {
				if !rep.DriverFound {
					fmt.Fprintln(cmd.ErrOrStderr(), msg) // stdout stays one JSON object
				}
				return writeJSON(out, rep)
			}
			if !rep.DriverFound {
				fmt.Fprintln(out, msg)
			} else if err := printDevices(out, inv); err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "UCX memory types: %s; device memory: %s\n", rep.UCXMemoryTypes, rep.UCXDeviceMemory)
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the inventory as one JSON object")
	c.Flags().StringVar(&library, "nvml-library", "", "NVML library to load (default "+nvml.DefaultLibrary+")")
	return c
}

func printDevices(w io.Writer, inv *nvml.Inventory) error {
	fmt.Fprintf(w, "driver %s, CUDA %s, %d GPU(s)\n", inv.DriverVersion, nvml.CUDAVersionString(inv.CUDADriverVersion), len(inv.Devices))
	if len(inv.Devices) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDINAL\tNAME\tUUID\tPCI BUS ID\tMEMORY")
	for _, d := range inv.Devices {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.Ordinal, d.Name, d.UUID, d.PCIBusID, hostmem.GiB(int64(d.MemoryBytes)))
	}
	return tw.Flush()
}
