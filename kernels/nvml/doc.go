// Package nvml discovers the NVIDIA GPUs of this machine through NVML: which
// devices are present and, for each, its NVML ordinal, name, UUID, total
// memory and PCI bus id, together with the driver version and the CUDA
// driver version (the CUDA API version the driver supports). It answers
// "which GPUs could the CUDA engine (package kernels/cuda) use here?"; it
// allocates nothing and runs nothing on a device.
//
// Discover loads libnvidia-ml.so.1 (or the path WithLibraryPath names) with
// dlopen through github.com/NVIDIA/go-nvml, so the binary neither links
// against NVML nor needs NVIDIA headers or a driver at build time. Without a
// driver the load fails and Discover returns an error that errors.Is
// ErrNoDriver, quickly and without crashing: that is the normal state of a
// CPU-only machine, where the CPU engine is used.
//
// go-nvml resolves NVML's C symbols only once the library is loaded, and
// calling any NVML function other than nvmlInit after a failed nvmlInit
// kills the process with an unrecoverable symbol lookup error. Discover
// therefore makes no NVML call unless nvmlInit returned NVML_SUCCESS, always
// calls nvmlShutdown after a successful nvmlInit, and formats NVML return
// codes itself (ReturnError) rather than through nvmlErrorString. Calls are
// serialized: go-nvml keeps process-wide state.
//
// NVML numbers devices in PCI bus order; CUDA numbers them fastest first
// unless CUDA_DEVICE_ORDER=PCI_BUS_ID. Match devices by UUID or PCI bus id
// rather than by ordinal.
//
// go-nvml needs cgo. In a CGO_ENABLED=0 build Discover returns
// ErrUnavailable and ReturnError does not exist.
package nvml
