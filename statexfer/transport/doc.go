// Package transport defines how hybridxfer moves bytes between processes:
// the Transport and Peer interfaces (register memory, export and import
// descriptors, post batches of reads and writes with completion, send
// notifications), the errors every backend shares, an in-process backend for
// tests, a fault-injecting wrapper, and (in transporttest) the conformance
// suite that every backend passes. The UCX backend lives in statexfer/ucx.
package transport
