package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/hybridxfer/hybridxfer/internal/hostmem"
	"github.com/hybridxfer/hybridxfer/kernels/nvml"
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
			if errors.Is(err, nvml.ErrNoDriver) {
				msg := fmt.Sprintf("no NVIDIA driver found (%s): the CPU engine will be used", lib)
				if asJSON {
					// stdout stays one JSON object; the line goes to stderr.
					fmt.Fprintln(cmd.ErrOrStderr(), msg)
					return writeJSON(out, devicesReport{Library: lib, Inventory: nvml.Inventory{Devices: []nvml.Device{}}})
				}
				_, err := fmt.Fprintln(out, msg)
				return err
			}
			if err != nil {
				return fmt.Errorf("devices: %w", err)
			}
			if asJSON {
				return writeJSON(out, devicesReport{DriverFound: true, Library: lib, Inventory: *inv})
			}
			return printDevices(out, inv)
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
