// Package transport defines how hybridxfer moves bytes between processes:
// the Transport and Peer interfaces (register memory, export and import
// descriptors, post batches of reads and writes with completion, send
// notifications), the errors every backend shares, an in-process backend for
// tests, a fault-injecting wrapper, and (in transporttest) the conformance
// suite that every backend passes. The UCX backend lives in statexfer/ucx.
//
// # In-process backend
//
// NewInproc returns an *Inproc: memory is Go memory, reads and writes are
// real copies executed by one worker goroutine per transport (so completion
// is asynchronous), and handlers run on a second goroutine, in order. A
// process-wide registry maps addresses to live transports so Connect finds
// its peer. Closing a transport fails its own in-flight batches with
// ErrClosed and makes every linked transport see PeerFailed, with their
// batches to it failing with ErrDisconnected; Inproc.Kill does the same
// abruptly, as a dying process would, losing notifications not yet
// delivered.
//
// # Fault injection
//
// WithFaults wraps any Transport. Its FaultPlan holds Rules that pick, per
// OpKind (read batch, write batch, notify, connect), call index and op index
// (optionally with a seeded rate), a Fault: fail (ErrInjected, the op listed
// in Result.Failed while the rest of the batch completes), delay (through an
// injectable SleepFunc), drop (a notification silently lost) or disconnect
// (the peer is treated as failed: PeerFailed, ErrDisconnected for in-flight
// batches and later calls). Decisions are a pure function of seed, rules and
// index; FaultPlan.Injected records what was injected. Build the inner
// transport with FaultPlan.Handlers so PeerFailed reaches the caller once per
// peer, injected or real.
//
// # Conformance
//
// transporttest.Run checks a backend against the contract: data round trips
// byte-exact (random unaligned ops, multi-MiB ops), bounds are rejected
// before anything is posted, notifications are ordered after the batches
// that completed before them, partial failure, remote close and death with
// batches in flight, cancellation, heavy concurrency, closing while busy
// without leaking goroutines, and the PeerIDs handlers receive.
package transport
