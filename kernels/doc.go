// Package kernels holds the copy kernels that the transfer planner runs over
// per-rank memory before and after moving bytes between a prefill (P) and a
// decode (D) instance, implemented on the CPU in pure Go.
//
// Two primitives cover every post-processing step of a transfer:
//
//   - Copy runs a list of CopyOp (dst, src, len) byte ranges. Gathering
//     blocks into a staging area, scattering staging into blocks, packing and
//     unpacking a slice of heads (strided runs) and regrouping tokens between
//     block sizes are all op lists; GatherOps, ScatterOps, Strided.Ops,
//     HeadSlice.PackOps/UnpackOps and Regroup.Ops build them, and Coalesce
//     merges ops whose source and destination both continue the previous op.
//   - RunTranspose transposes batches of matrices of fixed-size items
//     (Transpose). HNDToNHD/NHDToHND cover attention pages ((H, T, D) <->
//     (T, H, D), an item is a whole head vector) and DSToSD/SDToDS cover conv
//     states ((dim, rows) <-> (rows, dim), an item is one element).
//
// Both validate every range before touching memory and report bad input as
// errors wrapping ErrInvalid, ErrOutOfRange or ErrOverlap; they never panic.
// Destination ranges of one call must be pairwise disjoint (the work runs in
// parallel, so overlapping writes would be nondeterministic), and when dst and
// src share memory no source range may overlap a destination range.
//
// Large calls (more than a few MiB) are split, balanced by bytes, across
// runtime.GOMAXPROCS goroutines; small calls run on the caller's goroutine.
//
// Engine abstracts where the kernels run: the CPU engine (Default, NewCPU)
// works on CPUBuffer, a wrapped []byte; package kernels/cuda implements the
// same interface on NVIDIA GPUs. Callers write against Engine and Buffer and
// do not care which one runs.
package kernels
