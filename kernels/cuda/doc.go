// Package cuda implements kernels.Engine on NVIDIA GPUs without cgo and
// without a CUDA toolkit at build time.
//
// Open dlopens libcuda (the driver API) and NVRTC with purego, probing every
// symbol before binding it, compiles the embedded kernels.cu with NVRTC for
// the device (a CUBIN for its exact architecture when NVRTC knows it, else
// PTX that the driver JIT-compiles), and loads it into the device's primary
// context. On a machine without libcuda, NVRTC or a GPU, Open returns an
// error wrapping ErrUnavailable with the reason, and callers use
// kernels.Default instead.
//
// Buffers are device memory from cuMemAlloc (never managed memory). The
// engine queues work on one non-blocking stream: Copy uploads its op list
// (long ops split into 256 KiB pieces) and launches hx_copy_ops, one thread
// block per piece, with 16-byte loads and stores when source and destination
// are equally aligned (8, 4, 2 or 1 otherwise); Transpose launches a 32x32
// shared-memory tiled kernel for items of 1, 2, 4 or 8 bytes and a
// warp-per-item kernel for larger items (head vectors). Both validate their
// arguments on the host with the same rules as the CPU kernels before
// launching. Every CUresult and nvrtcResult other than success becomes an
// *Error or *CompileError carrying the code and its name.
//
// NVRTC is found as libnvrtc.so (or .so.13, .so.12, .so.11.2) on the linker
// path, in $CUDA_HOME or $CUDA_PATH, in /usr/local/cuda, or at the path in
// $HYBRIDXFER_NVRTC.
//
// Status: this package has not yet run on a GPU. It builds and its tests
// pass on machines without one (they skip, naming the reason); its tests
// compare the engine with the CPU engine and the naive references of
// package kernels/kerneltest and its benchmarks compare it with
// cuMemcpyDtoD, and both need to be run on a GPU machine before the package
// is relied on.
package cuda
