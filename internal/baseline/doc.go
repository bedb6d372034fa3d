// Package baseline holds the baselines that benchmarks compare against:
// what this machine can do without the project in the way.
//
//   - Limit is the best copy of a buffer this machine does: the range split
//     into one contiguous, 4 KiB-aligned chunk per worker, each copied on its
//     own goroutine with the streaming copy of the kernels package. It is the
//     ceiling for any transfer that ends in this process's memory.
//   - TCPStream is one loopback TCP stream (127.0.0.1, TCP_NODELAY, socket
//     buffer sizes left at the kernel defaults: net.ipv4.tcp_rmem/tcp_wmem
//     and autotuning decide) moving n bytes between pre-touched buffers. It
//     is the floor a transfer over UCX's tcp transport should beat or match.
//   - Median and GBps are the two numbers every benchmark reports the same
//     way: the median over iterations, and bandwidth in 1e9 bytes per
//     second.
//
// The package is pure Go (no cgo) and makes no timing assertions of its
// own; callers decide what the numbers mean.
package baseline
