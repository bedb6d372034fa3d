// Package kerneltest holds the naive reference implementations of the
// kernels of package kernels (plain loops, obviously correct), rapid
// generators of copy and transpose cases, and Conformance, a property suite
// that any kernels.Engine must pass: engine == reference on random cases.
// Package kernels checks its CPU functions against it; package kernels/cuda
// runs Conformance on the GPU engine.
package kerneltest
