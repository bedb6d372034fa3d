package transport

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors shared by every Transport implementation. Implementations
// wrap them (with %w) so callers can test with errors.Is whatever the backend.
var (
	ErrClosed       = errors.New("transport: closed")
	ErrDisconnected = errors.New("transport: peer disconnected")
	ErrCanceled     = errors.New("transport: canceled")
	ErrOutOfBounds  = errors.New("transport: access outside registered memory")
	ErrBadKey       = errors.New("transport: bad remote key")
	ErrUnsupported  = errors.New("transport: unsupported")
	// ErrInjected marks failures made by the fault-injecting wrapper.
	ErrInjected = errors.New("transport: injected fault")
)

// MemDesc is what a peer needs to read a registered range: the owner's base
// address (opaque outside the owner, used for offsets and bounds only), its
// length, and a packed remote key. It travels in the handshake metadata.
type MemDesc struct {
	Addr uint64
	Len  uint64
	Key  []byte
	// Kind is the memory the range is registered in (host by default).
	Kind MemKind
}

// Memory is a local range registered with a Transport. Bytes is valid until
// Close. Real transports hand out memory that is not Go heap memory (mmap'd or
// transport-allocated), so it may be referenced by C code and remote peers.
//
// Bytes is the host view of the range: nil for memory the CPU cannot
// address (Kind device); such memory is moved by the transport and by a
// device kernels.Engine only.
type Memory interface {
	Bytes() []byte
	Desc() MemDesc
	// Kind is the memory the range was allocated in.
	Kind() MemKind
	Close() error
}

// RemoteMemory is a peer's registered range imported from its MemDesc.
type RemoteMemory interface {
	Desc() MemDesc
}

// Op is one read (Peer.Read: remote -> local) or write (Peer.Write:
// local -> remote) of Len bytes.
type Op struct {
	Local     Memory
	LocalOff  uint64
	Remote    RemoteMemory
	RemoteOff uint64
	Len       uint64
}

// Range is one op of a Ranges run: Len bytes between LocalOff of the run's
// local memory and RemoteOff of its remote memory.
type Range struct {
	LocalOff, RemoteOff, Len uint64
}

// Ranges is a run of ops between one local and one remote memory. Plans
// come grouped by region pair, so a backend resolves and checks the two
// memories once per run instead of once per op, and builds no per-op
// interface values.
type Ranges struct {
	Local  Memory
	Remote RemoteMemory
	Ranges []Range
}

// Flatten returns the ops of runs in order (op i of the result is the op
// that Result.Failed index i names for ReadRanges).
func Flatten(runs []Ranges) []Op {
	n := 0
	for _, r := range runs {
		n += len(r.Ranges)
	}
	ops := make([]Op, 0, n)
	for _, r := range runs {
		for _, g := range r.Ranges {
			ops = append(ops, Op{Local: r.Local, LocalOff: g.LocalOff, Remote: r.Remote, RemoteOff: g.RemoteOff, Len: g.Len})
		}
	}
	return ops
}

// RunsOf groups consecutive ops with the same local and remote memory into
// runs (the inverse of Flatten).
func RunsOf(ops []Op) []Ranges {
	var runs []Ranges
	for i, op := range ops {
		if i == 0 || op.Local != ops[i-1].Local || op.Remote != ops[i-1].Remote {
			runs = append(runs, Ranges{Local: op.Local, Remote: op.Remote})
		}
		r := &runs[len(runs)-1]
		r.Ranges = append(r.Ranges, Range{LocalOff: op.LocalOff, RemoteOff: op.RemoteOff, Len: op.Len})
	}
	return runs
}

// Result is the outcome of a batch. Err is nil when every op succeeded. When
// some ops failed, Failed lists their indexes in the posted slice (ascending)
// and Err wraps the cause of the first of them (ErrDisconnected, ErrCanceled,
// ErrClosed, ErrInjected, a backend status error). The destination bytes of a
// failed op are undefined; those of every other op are final.
type Result struct {
	Err    error
	Failed []int
}

// Batch is a posted set of ops. Done is closed when every op has completed
// or failed; Result is then final (before that it is not meaningful). Cancel
// asks the batch to stop: ops not yet complete fail with ErrCanceled; Done
// still closes. Cancel after Done, or twice, does nothing.
type Batch interface {
	Done() <-chan struct{}
	Result() Result
	Cancel()
}

// Wait blocks until b is done or ctx ends. When ctx ends first the batch is
// canceled and Wait still waits for it to settle, so no op is left in flight.
func Wait(ctx context.Context, b Batch) Result {
	select {
	case <-b.Done():
	case <-ctx.Done():
		b.Cancel()
		<-b.Done()
	}
	return b.Result()
}

// PeerID identifies a connected peer on the local side. A transport has one
// PeerID per remote transport, whichever side connected first: Peers that
// Connect returns for that remote have it, notifications from that remote
// carry it as from, and PeerFailed reports it.
type PeerID uint64

// Handlers receive events from the transport's progress loop, one call at a
// time. They must not block for long; they may call Peer methods but not
// Transport.Close (which waits for the handlers to return).
type Handlers struct {
	// Notify receives a notification message sent by a peer with
	// Peer.Notify. msg is only valid during the call.
	Notify func(from PeerID, msg []byte)
	// PeerFailed reports that a peer's endpoint failed (its process died or
	// the connection broke). In-flight batches to it fail with ErrDisconnected.
	PeerFailed func(p PeerID, err error)
}

// Transport moves bytes between registered memory of processes. Handlers are
// given at construction time (no notification can arrive before a handler
// exists). All methods are safe for concurrent use.
type Transport interface {
	// Name is the backend's name ("inproc", "ucx", ...).
	Name() string
	// Alloc returns size bytes of zeroed memory of kind registered for
	// remote access. A kind the backend cannot serve is refused with a
	// *KindError (errors.Is ErrUnsupported) saying why.
	Alloc(size int, kind MemKind) (Memory, error)
	// Supports reports whether the backend registers, and reads from
	// peers, memory of kind: nil, or a *KindError saying what is missing.
	Supports(kind MemKind) error
	// Address is what a peer passes to Connect to reach this transport.
	Address() []byte
	// Connect opens an endpoint to the transport at addr.
	Connect(ctx context.Context, addr []byte) (Peer, error)
	// Close stops the transport: in-flight batches fail with ErrClosed, and
	// memory it allocated is released.
	Close() error
}

// Peer is an endpoint to one remote transport.
type Peer interface {
	ID() PeerID
	// Import checks and unpacks a remote range descriptor.
	Import(d MemDesc) (RemoteMemory, error)
	// Read posts ops that copy remote bytes into local memory. Bounds are
	// checked for every op before anything is posted: an out-of-range op
	// fails the call with ErrOutOfBounds and posts nothing.
	Read(ops []Op) (Batch, error)
	// ReadRanges posts runs of reads: the same as Read of Flatten(runs),
	// with the same checks (Result.Failed counts ops across the runs).
	ReadRanges(runs []Ranges) (Batch, error)
	// Write posts ops that copy local bytes into remote memory, with the
	// same checks. The batch completes when the data is visible remotely.
	Write(ops []Op) (Batch, error)
	// Notify sends a small message, delivered to the remote Handlers.Notify
	// after every batch this side completed before calling Notify.
	Notify(msg []byte) error
	// Close releases the endpoint; in-flight batches fail with ErrClosed.
	Close() error
}

// MemLen is the registered length of m: its host view's length, or its
// descriptor's for memory without one (device memory).
func MemLen(m Memory) uint64 {
	if b := m.Bytes(); b != nil {
		return uint64(len(b))
	}
	return m.Desc().Len
}

// CheckOp validates one op against the local and remote registered bounds.
// Backends call it for every op before posting a batch.
func CheckOp(i int, op Op) error {
	if op.Local == nil || op.Remote == nil {
		return fmt.Errorf("%w: op %d: nil memory", ErrOutOfBounds, i)
	}
	if op.Len == 0 {
		return fmt.Errorf("%w: op %d: zero length", ErrOutOfBounds, i)
	}
	ll := MemLen(op.Local)
	if op.LocalOff > ll || op.Len > ll-op.LocalOff {
		return fmt.Errorf("%w: op %d: local [%d, +%d) outside %d bytes", ErrOutOfBounds, i, op.LocalOff, op.Len, ll)
	}
	rl := op.Remote.Desc().Len
	if op.RemoteOff > rl || op.Len > rl-op.RemoteOff {
		return fmt.Errorf("%w: op %d: remote [%d, +%d) outside %d bytes", ErrOutOfBounds, i, op.RemoteOff, op.Len, rl)
	}
	return nil
}

// CheckRanges validates run r, whose first op has index first in its
// batch, against the local and remote registered bounds: one pass over the
// ranges with the memories resolved once. The error names the first bad op
// as CheckOp does.
func CheckRanges(first int, r Ranges) error {
	if r.Local == nil || r.Remote == nil {
		return fmt.Errorf("%w: op %d: nil memory", ErrOutOfBounds, first)
	}
	ll := MemLen(r.Local)
	rl := r.Remote.Desc().Len
	for k, g := range r.Ranges {
		if g.Len == 0 || g.LocalOff > ll || g.Len > ll-g.LocalOff || g.RemoteOff > rl || g.Len > rl-g.RemoteOff {
			return CheckOp(first+k, Op{Local: r.Local, LocalOff: g.LocalOff, Remote: r.Remote, RemoteOff: g.RemoteOff, Len: g.Len})
		}
	}
	return nil
}

// PathCount is how many batches a transport completed through one path
// and their bytes (failed ops excluded).
type PathCount struct {
	Path           string
	Batches, Bytes uint64
}

// ReadCoster is implemented by peers that know what one read costs on the
// path they take to a remote memory: ReadCostNs is the fixed cost in
// nanoseconds of one read of m (posting, completion, per-read work), apart
// from moving its bytes; ok false when the peer cannot say. The planner's
// cost model weighs it against staging (plan.CostModel.PerReadNs).
type ReadCoster interface {
	ReadCostNs(m RemoteMemory) (ns float64, ok bool)
}

// PathCounter is implemented by transports that count their completed
// batches by the path that served them (UCX: mapped, one-sided,
// emulated; Inproc: inproc), for metrics read at scrape time.
type PathCounter interface {
	PathCounts() []PathCount
}
