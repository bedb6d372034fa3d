package transport

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// OpKind names the calls a FaultPlan can hit.
//
//go:generate go tool stringer -type=OpKind -linecomment
type OpKind uint8

// The calls a FaultPlan can hit. Read and write batches are hit per op;
// notifications and connects per call.
const (
	OpRead    OpKind = iota // read
	OpWrite                 // write
	OpNotify                // notify
	OpConnect               // connect
	numOpKinds
)

// String returns the kind's name ("read", "write", "notify", "connect").

// FaultKind is what an injected fault does.
//
//go:generate go tool stringer -type=FaultKind -linecomment
type FaultKind uint8

// The faults a FaultPlan can inject.
const (
	// FaultNone injects nothing.
	FaultNone FaultKind = iota // none
	// FaultFail fails the op with ErrInjected: a batch op is not posted and
	// is listed in Result.Failed; Notify and Connect return the error.
	FaultFail // fail
	// FaultDelay delays the op by Fault.Delay through the plan's sleep
	// function: a batch completes no earlier than the delay after it was
	// posted (its ops still run at once); Notify and Connect wait before
	// going on.
	FaultDelay // delay
	// FaultDrop loses a notification: Notify returns nil and sends nothing.
	// Only for OpNotify.
	FaultDrop // drop
	// FaultDisconnect treats the peer as failed: PeerFailed fires for it,
	// its in-flight batches fail with ErrDisconnected, and later calls on it
	// fail with ErrDisconnected. A batch that hits it posts nothing and fails
	// every op; a Connect that hits it returns a peer that has already
	// failed.
	FaultDisconnect // disconnect
)

// String returns the fault kind's name.

// Fault is one injected fault.
type Fault struct {
	Kind FaultKind
	// Delay is how long FaultDelay delays; it must be positive then.
	Delay time.Duration
}

// String describes the fault, with its duration for a delay.
func (f Fault) String() string {
	if f.Kind == FaultDelay {
		return fmt.Sprintf("delay(%v)", f.Delay)
	}
	return f.Kind.String()
}

// Rule says which calls or ops of one kind get a fault. Calls are counted
// per plan and kind from 0, in the order they are made (only calls that pass
// the wrapper's own checks count: a batch rejected for bounds is not a
// call). The first rule that matches decides.
type Rule struct {
	Kind OpKind
	// Calls lists the call indexes the rule applies to; nil means every call.
	Calls []int
	// Ops lists, for read and write batches, the op indexes within the batch
	// the rule applies to; nil means every op. Ignored for notify and connect.
	Ops []int
	// Rate, when strictly between 0 and 1, is the probability that a
	// matching op or call is hit, decided by a hash of the plan's seed, the
	// rule's position and the (call, op) index, never by a clock or by the
	// order of concurrent calls. 0 and 1 mean always.
	Rate  float64
	Fault Fault
}

// Injection records one injected fault.
type Injection struct {
	Kind OpKind
	Call int
	// Op is the op index within the batch (0 for notify and connect).
	Op int
	// Peer is the peer the call was made on; for connect, the new peer
	// (0 when the connect failed).
	Peer  PeerID
	Fault Fault
}

// SleepFunc waits for d or until ctx is done, whichever comes first. A
// FaultPlan uses it for FaultDelay; tests supply one driven by a fake clock.
type SleepFunc func(ctx context.Context, d time.Duration)

// FaultPlan decides which faults a wrapper made by WithFaults injects, and
// records them. Decisions are a pure function of the seed, the rules and the
// (kind, call, op) index, so a plan is deterministic given its seed whatever
// the goroutine schedule. A plan drives one wrapper. It is safe for
// concurrent use; rules may be added while the wrapper is in use.
type FaultPlan struct {
	seed uint64

	mu       sync.Mutex
	rules    []Rule
	calls    [numOpKinds]int
	injected []Injection
	sleep    SleepFunc
	h        Handlers
	w        *Faulty
}

// NewFaultPlan returns a plan with no rules (a pass-through) that sleeps on
// real timers.
func NewFaultPlan(seed uint64) *FaultPlan {
	return &FaultPlan{seed: seed, sleep: timerSleep}
}

// timerSleep is the default SleepFunc.
func timerSleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Seed returns the plan's seed.
func (p *FaultPlan) Seed() uint64 { return p.seed }

// Add appends a rule and returns p. It panics on a rule that cannot apply
// (unknown kinds, FaultDrop on anything but OpNotify, a delay that is not
// positive, a rate outside [0, 1], negative indexes): plans are test set-up.
func (p *FaultPlan) Add(r Rule) *FaultPlan {
	if err := r.validate(); err != nil {
		panic(err)
	}
	r.Calls = slices.Clone(r.Calls)
	r.Ops = slices.Clone(r.Ops)
	p.mu.Lock()
	p.rules = append(p.rules, r)
	p.mu.Unlock()
	return p
}

func (r Rule) validate() error {
	switch {
	case r.Kind >= numOpKinds:
		return fmt.Errorf("transport: fault rule: unknown op kind %d", r.Kind)
	case r.Fault.Kind == FaultNone || r.Fault.Kind > FaultDisconnect:
		return fmt.Errorf("transport: fault rule: bad fault kind %v", r.Fault.Kind)
	case r.Fault.Kind == FaultDrop && r.Kind != OpNotify:
		return fmt.Errorf("transport: fault rule: drop applies to notify only, not %v", r.Kind)
	case r.Fault.Kind == FaultDelay && r.Fault.Delay <= 0:
		return fmt.Errorf("transport: fault rule: delay %v is not positive", r.Fault.Delay)
	case !(r.Rate >= 0 && r.Rate <= 1):
		return fmt.Errorf("transport: fault rule: rate %v outside [0, 1]", r.Rate)
	case slices.ContainsFunc(r.Calls, func(i int) bool { return i < 0 }),
		slices.ContainsFunc(r.Ops, func(i int) bool { return i < 0 }):
		return fmt.Errorf("transport: fault rule: negative index")
	}
	return nil
}

// SetSleep replaces the function used for FaultDelay and returns p.
func (p *FaultPlan) SetSleep(f SleepFunc) *FaultPlan {
	p.mu.Lock()
	p.sleep = f
	p.mu.Unlock()
	return p
}

// Handlers returns the handlers to build the inner transport with: they
// forward to h, and once WithFaults wraps that transport with this plan they
// also let the wrapper report each failed peer to h exactly once, injected
// disconnects included. Without them injected disconnects still fail calls
// and batches, but h.PeerFailed never hears of them.
func (p *FaultPlan) Handlers(h Handlers) Handlers {
	p.mu.Lock()
	p.h = h
	p.mu.Unlock()
	return Handlers{
		Notify:     h.Notify,
		PeerFailed: p.innerPeerFailed,
	}
}

func (p *FaultPlan) innerPeerFailed(id PeerID, err error) {
	p.mu.Lock()
	w, h := p.w, p.h
	p.mu.Unlock()
	if w != nil {
		w.innerPeerFailed(id, err)
		return
	}
	if h.PeerFailed != nil {
		h.PeerFailed(id, err)
	}
}

// bind attaches the plan to its wrapper.
func (p *FaultPlan) bind(w *Faulty) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w != nil {
		panic("transport: FaultPlan already drives another wrapper")
	}
	p.w = w
}

// handlers returns the user's handlers given to Handlers.
func (p *FaultPlan) handlers() Handlers {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.h
}

// sleeper returns the current sleep function.
func (p *FaultPlan) sleeper() SleepFunc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sleep
}

// Decide returns the fault for op (op index within the batch; 0 for notify
// and connect) of call number call of kind. It is pure: it neither counts nor
// records.
func (p *FaultPlan) Decide(kind OpKind, call, op int) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.decideLocked(kind, call, op)
}

func (p *FaultPlan) decideLocked(kind OpKind, call, op int) Fault {
	if kind != OpRead && kind != OpWrite {
		op = 0
	}
	for i, r := range p.rules {
		if r.Kind != kind {
			continue
		}
		if r.Calls != nil && !slices.Contains(r.Calls, call) {
			continue
		}
		if r.Ops != nil && (kind == OpRead || kind == OpWrite) && !slices.Contains(r.Ops, op) {
			continue
		}
		if r.Rate > 0 && r.Rate < 1 && unitFloat(p.seed, uint64(i), uint64(kind), uint64(call), uint64(op)) >= r.Rate {
			continue
		}
		return r.Fault
	}
	return Fault{}
}

// nextCall counts a call of kind and returns its index.
func (p *FaultPlan) nextCall(kind OpKind) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls[kind]
	p.calls[kind]++
	return c
}

// hit decides the fault for one op or call and records it if there is one.
func (p *FaultPlan) hit(kind OpKind, call, op int, peer PeerID) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.decideLocked(kind, call, op)
	if f.Kind != FaultNone {
		p.injected = append(p.injected, Injection{Kind: kind, Call: call, Op: op, Peer: peer, Fault: f})
	}
	return f
}

// record adds an injection decided earlier (for connect, once the peer is
// known).
func (p *FaultPlan) record(in Injection) {
	p.mu.Lock()
	p.injected = append(p.injected, in)
	p.mu.Unlock()
}

// Calls returns how many calls of kind the wrapper has counted.
func (p *FaultPlan) Calls(kind OpKind) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[kind]
}

// Injected returns a copy of the faults injected so far, in the order they
// were decided.
func (p *FaultPlan) Injected() []Injection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.injected)
}

// unitFloat hashes its inputs (splitmix64 rounds) into [0, 1).
func unitFloat(xs ...uint64) float64 {
	var h uint64
	for _, x := range xs {
		h = splitmix64(h ^ x)
	}
	return float64(h>>11) / (1 << 53)
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
