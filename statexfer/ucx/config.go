package ucx

import (
	"fmt"
	"time"
)

// ErrMode is the UCX error-handling mode of the endpoints a Transport
// creates.
//
//go:generate go tool stringer -type=ErrMode -linecomment
type ErrMode int

const (
	// ErrModeNone creates endpoints with UCP_ERR_HANDLING_MODE_NONE. UCX 1.13
	// then uses its shared-memory lanes (posix/sysv, plus cma) between
	// processes on one host, and gets from UCX-allocated memory are
	// one-sided. UCX does not detect a dead peer in this mode: a read from
	// a peer that died may never complete. Detecting that is the side
	// channel's job; it reports it with Peer.Fail. This is the default.
	ErrModeNone ErrMode = iota // none
	// ErrModePeer creates endpoints with UCP_ERR_HANDLING_MODE_PEER. UCX
	// detects peer failure (connection reset, keepalive) and this package
	// fails every in-flight op with transport.ErrDisconnected. On UCX 1.13
	// the shared-memory transports do not support peer failure, so such
	// endpoints use tcp even on one host and every get is emulated with
	// active messages (the notes measured 1.0-1.6 GB/s). The mapped path
	// (ucp_rkey_ptr) is unaffected because it does not use endpoint lanes.
	ErrModePeer // peer
)

// IdleMode is what the progress goroutine does when it has nothing to do:
// no command queued, no batch in flight, and no UCX event for SpinFor.
//
// While it idles this side's worker makes no progress, so it does not serve
// the peer's emulated gets until it wakes (see the package documentation).
//
//go:generate go tool stringer -type=IdleMode -linecomment
type IdleMode int

const (
	// IdleWait arms the worker and blocks in ppoll on the worker's event fd
	// and the command eventfd. An incoming request (an emulated get, an
	// active message) wakes it; it then spins again for SpinFor. No CPU is
	// used while idle; the first event after idling costs a wakeup (a few
	// microseconds on shm, the kernel's socket path on tcp). The context is
	// created with UCP_FEATURE_WAKEUP, which limits UCX to transports that
	// support events. This is the default.
	IdleWait IdleMode = iota // wait
	// IdleSpin never blocks: the goroutine calls ucp_worker_progress in a
	// loop forever. Lowest latency; burns one core per Transport for its
	// whole life. Use it for benchmarks on dedicated machines.
	IdleSpin // spin
	// IdleSleep sleeps IdleSleep between progress calls (woken early by
	// commands, but not by UCX events). Little CPU, but a peer reading
	// emulated gets from this side is served only once per IdleSleep: the
	// notes measured 0.08 GB/s with a 1 ms poll. Only for sides that never
	// serve reads.
	IdleSleep // sleep
)

// Config configures a Transport. The zero value is usable.
type Config struct {
	// Name is reported by Transport.Name; default "ucx".
	Name string
	// ErrMode is the endpoints' error-handling mode; default ErrModeNone.
	ErrMode ErrMode
	// Idle is the idle strategy; default IdleWait.
	Idle IdleMode
	// SpinFor is how long the progress goroutine keeps busy-polling after
	// its last activity before it idles (IdleWait, IdleSleep). Default
	// 200µs. Longer keeps bursts of remote reads at full speed at the cost
	// of CPU after each burst.
	SpinFor time.Duration
	// IdleSleep is the sleep of IdleSleep; default 1ms.
	IdleSleep time.Duration
	// NoPrefault leaves the page tables of a peer's mapped memory to be
	// filled by the first copies (one fault per page) instead of
	// populating them in the background at import (see Peer.prefault).
	NoPrefault bool
	// DisableMapped turns off the mapped path: reads and writes of ranges
	// that ucp_rkey_ptr can map are then posted to UCX like any other.
	DisableMapped bool
	// UCX holds UCX context options applied with ucp_config_modify on top of
	// the environment (UCX_* variables are read with a nil prefix), keyed
	// as the environment variable without the UCX_ prefix: {"TLS":
	// "shm,self"}, {"NET_DEVICES": "lo"}, {"TCP_PORT_RANGE": "40000-40100"}.
	//
	// Precedence: an entry overrides the environment, except NET_DEVICES
	// and every TCP_* entry, which yield to UCX_NET_DEVICES / UCX_TCP_* when
	// the operator set that variable (the entry is dropped and logged): the
	// operator decides which interfaces and ports UCX uses. RestrictToHost
	// sets NET_DEVICES.
	//
	// Transport options (TCP_, POSIX_, SYSV_, CMA_) are passed without that
	// prefix, the only form UCX 1.13's ucp_config_modify applies (it
	// accepts "TCP_PORT_RANGE" and ignores it; "PORT_RANGE" works); UCX then
	// applies the name to every transport that has a field of that name.
	// Options read by libucs at load time (UCX_HANDLE_ERRORS,
	// UCX_LOG_LEVEL) must be in the process environment instead.
	//
	// Unless POSIX_DIR is set here or UCX_POSIX_DIR in the environment, the
	// Transport sets it to this process's directory (see ShmDir and the
	// package documentation).
	UCX map[string]string
	// MaxNotify caps Notify payloads; default and maximum 64 KiB.
	// Notifications are sent eager-only so that receivers copy them inside
	// the UCX callback and never start a rendezvous receive.
	MaxNotify int
	// Window is the maximum number of ops of one batch posted to UCX at a
	// time; the rest are posted as earlier ones complete. It bounds UCX
	// request memory and how long Cancel waits. Default 8192.
	Window int
	// CloseTimeout bounds how long Close and Peer.Close wait for endpoint
	// closes to complete; default 2s.
	CloseTimeout time.Duration
}

// MaxNotifyLimit is the largest Config.MaxNotify.
const MaxNotifyLimit = 64 << 10

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = "ucx"
	}
	if c.ErrMode != ErrModeNone && c.ErrMode != ErrModePeer {
		return c, fmt.Errorf("%w: error mode %v", ErrInvalid, c.ErrMode)
	}
	if c.Idle != IdleWait && c.Idle != IdleSpin && c.Idle != IdleSleep {
		return c, fmt.Errorf("%w: idle mode %v", ErrInvalid, c.Idle)
	}
	if c.SpinFor <= 0 {
		c.SpinFor = 200 * time.Microsecond
	}
	if c.IdleSleep <= 0 {
		c.IdleSleep = time.Millisecond
	}
	if c.MaxNotify <= 0 {
		c.MaxNotify = MaxNotifyLimit
	}
	if c.MaxNotify > MaxNotifyLimit {
		return c, fmt.Errorf("%w: MaxNotify %d above %d", ErrInvalid, c.MaxNotify, MaxNotifyLimit)
	}
	if c.Window <= 0 {
		c.Window = 8192
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 2 * time.Second
	}
	return c, nil
}
