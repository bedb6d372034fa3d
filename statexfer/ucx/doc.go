// Package ucx is the UCX backend of statexfer/transport, and the only package
// of the project that calls UCX (libucp through cgo, `#cgo pkg-config: ucx`).
//
// # Objects
//
// A Transport owns one UCX context and one worker. New reads the UCX_*
// environment (ucp_config_read with a nil prefix; UCX_TLS, UCX_NET_DEVICES,
// UCX_ALLOC_PRIO, ... pass through) and applies Config.UCX on top (see
// Network exposure for the precedence rule), so
// two Transports in one process may use different transports. Address is
// "HXU1", a random 64-bit transport id and the worker address. Connect
// creates an endpoint from such an address; each endpoint is a Peer. Alloc
// returns Memory: UCX-allocated (ucp_mem_map with UCP_MEM_MAP_ALLOCATE),
// zeroed, with its packed rkey in Desc().Key (wrapped in a checked envelope
// that names the owning transport). Peer.Import unpacks a peer's key on that
// endpoint (ucp_ep_rkey_unpack) into a Remote. Peer.Read and Peer.Write post
// batches of gets (ucp_get_nbx) and puts (ucp_put_nbx, then an endpoint
// flush). Peer.Notify sends an active message that the remote Transport
// hands to its Handlers.Notify.
//
// # Threading
//
// The worker is created in serialized mode (UCS_THREAD_MODE_SERIALIZED):
// any goroutine may call UCX while it holds the transport's worker lock,
// and only then. One progress goroutine owns the worker's state; other
// goroutines submit commands (closures) to a queue; the loop takes the lock
// for one round at a time, draining the queue and calling
// ucp_worker_progress (up to 32 calls per cgo call). Peer.Notify, when the
// queue is empty and the lock is free, sends at once on the caller's
// goroutine instead of waking the loop. The loop busy-polls while a
// command, a batch or an endpoint close is pending and for Config.SpinFor
// after the last UCX event (yielding the core to runnable goroutines
// between rounds; at most half the cores of the process spin at once, the
// other loops idle at once), then idles according to Config.Idle:
//
//   - IdleWait (default): arm the worker and block in ppoll on its event fd
//     and the queue's eventfd (at most 50ms at a time, so UCX timers run).
//     No CPU while idle; an incoming request or a submitted command wakes it
//     within microseconds. Needs UCP_FEATURE_WAKEUP.
//   - IdleSpin: never block. Lowest latency, one core per Transport.
//   - IdleSleep: sleep Config.IdleSleep per round, woken by commands only.
//     Cheapest, but a peer's emulated gets are served once per round.
//
// The idle strategy matters on the side being read: on UCX 1.13, gets that
// are not one-sided (see Paths) are served by the TARGET's progress loop, so
// the target must keep progressing while others read from it.
//
// Handlers are called on a separate dispatcher goroutine, in order, with
// notification payloads copied inside the UCX callback: a handler may call
// any Peer method, and a slow handler never stalls UCX progress.
//
// # Completion and memory rules
//
// C never holds a Go pointer after a call returns. A batch's addresses,
// rkeys, per-op statuses and callback records live in one C allocation
// (hx_batch_t); UCX's completion callbacks write statuses and count
// completions there (a request that completes immediately returns no handle
// and fires no callback, and is counted by the posting C loop). The
// progress loop finalizes a batch when its completion count reaches the
// number of posted requests, so thousands of requests never cost a Go call
// each. Batches post at most Config.Window ops at a time. Endpoint error
// callbacks and active-message callbacks reach Go through exported functions
// that carry registry keys (integers), never pointers. Memory handed to UCX
// is UCX-allocated or C memory, never Go heap memory.
//
// # Paths
//
// Every batch reports the path that served it (Batch.Path, Transport.Stats):
//
//   - mapped: the peer is on this host and its Memory is UCX-allocated shared
//     memory, so ucp_rkey_ptr maps it into this process; the batch is a Go
//     copy() per op on a goroutine of its own, without UCX requests (the
//     fastest path, about memcpy speed). It works whatever the endpoint's
//     error mode, because it uses no endpoint lane. Config.DisableMapped
//     turns it off.
//   - one-sided: UCX gets/puts on shared-memory lanes (sysv/posix) to
//     UCX-allocated memory: the initiator copies, the target does nothing.
//   - emulated: UCX implements the get/put with active messages the target's
//     progress loop serves: always on tcp, and on one host whenever the
//     endpoint is in ErrModePeer (UCX 1.13 drops shm lanes for it).
//
// # Errors and failure detection
//
// UCX statuses are *StatusError values, which wrap this package's sentinels
// (and transport.ErrDisconnected for connection failures). With ErrModePeer
// an endpoint failure fails every in-flight op of that peer with an error
// wrapping transport.ErrDisconnected and calls Handlers.PeerFailed. With
// ErrModeNone (the default, because it keeps shm lanes) UCX reports nothing
// when a peer dies; the side channel must detect it (heartbeat, process
// exit, connection loss) and call Peer.Fail, which does the same.
//
// Close stops the loop: batches in flight fail with transport.ErrClosed,
// endpoints are closed (forced for dead peers and for ErrModePeer endpoints
// with requests in flight, which UCX then purges; otherwise flushed for at
// most Config.CloseTimeout), the worker is flushed within the same bound (so
// that wireup replies to transports that just connected to this one are
// sent), memory is unmapped, and the worker and context are destroyed.
// Without peer error handling UCX cannot purge requests: a batch still in
// flight after CloseTimeout is settled with ErrClosed and its requests are
// left to UCX until they complete or the worker is destroyed; if that peer
// was merely slow, a late get may still land in local memory.
//
// # UCX 1.13 defects worked around or documented
//
//   - A target that replies to emulated gets of an initiator that has
//     closed or died aborts in ucp_request_try_send ("Fatal: unexpected
//     error"), in both error modes (TestTwoProcessTargetAbort). Keep
//     emulated reads off production paths that can lose initiators, or
//     prefer the mapped/one-sided paths.
//   - Force-closing a peer-mode endpoint whose wireup is in flight asserts
//     ("got REP message"); this package forces only when it must. Destroying
//     a worker does the same to the endpoints UCX created for remote
//     transports that connected to it, so Close flushes the worker first.
//   - Peer.Fail force-closes the endpoint: if the peer was in fact alive and
//     later serves emulated gets that were in flight, it aborts (first item).
//     The tests declare a peer failed only in a child process they then
//     kill (TestTwoProcessFailHook).
//   - Forced close without peer error handling does not purge requests.
//
// # Network exposure
//
// UCX 1.13 opens one tcp listener per network interface it may use (all by
// default), each bound to that interface's address, and accepts
// connections on all of them (TestListenOnlyOnHost measured 127.0.0.1 and
// the eth0 address on a two-interface VM). NetDevicesFor maps a serving
// host (IP literal or name) to the interface that holds it, refusing
// wildcards (0.0.0.0, ::) and addresses no interface holds;
// Config.RestrictToHost puts it in Config.UCX["NET_DEVICES"], which
// restricts the tcp transport (its listeners and its connections) to that
// interface. The rule for options: Config.UCX overrides the environment,
// except that UCX_NET_DEVICES and UCX_TCP_* set by the operator win over
// NET_DEVICES and TCP_* entries (see Config.UCX). This package creates no
// UCX listener of its own (no ucp_listener_create); the worker's tcp
// listeners are the only ones.
//
// # Shared memory left by killed processes
//
// Registered memory is SysV shared memory when UCX can get it (marked for
// removal at once: the kernel frees it when the last process detaches,
// also after SIGKILL) and otherwise POSIX shared memory: UCX's mm/posix
// creates ucx_shm_posix_<id> in UCX_POSIX_DIR, writes the whole length
// into it, and only then (UCX_POSIX_USE_PROC_LINK=y, the default) unlinks
// it, peers opening it through /proc/<pid>/fd. A process killed during the
// write (seconds for gigabytes) left the file in /dev/shm with all it had
// written; the posix receive FIFOs (a few MiB per Transport) have the same
// window. UCX 1.13 fails the allocation when the name is gone before its
// own unlink, so it cannot be removed earlier from outside. Instead every
// process gives UCX its own directory, ShmDir():
// /dev/shm/hybridxfer-ucx-<uid>/<pidns>-<pid>-<start time> (mode 0700). The
// first Transport of a process (and CleanStaleShm) removes the directories
// of this user's dead processes in the same pid namespace, identified by
// pid and start time, so a reused pid is not taken for the owner; the last
// Close removes the process's own. A killed process thus leaves at most
// the files it was writing, in its own directory, until the next
// Transport starts (TestShmKilledLeavesNothing). Setting UCX_POSIX_DIR (or
// POSIX_DIR in Config.UCX) turns this off.
//
// # Environment
//
// libucs installs signal handlers when it is loaded; set UCX_HANDLE_ERRORS=none
// in the process environment to get Go's tracebacks. Set UCX_NET_DEVICES=lo
// to keep tcp on loopback in tests. The tests of this package re-execute
// themselves with both set.
package ucx
