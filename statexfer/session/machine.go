package session

import (
	"fmt"
	"slices"
)

// Time is nanoseconds on D's clock. The machine never reads a clock: the
// shell passes the time in.
type Time int64

// Key names one load attempt on D (a transfer id).
type Key uint64

// State is where a request is on D.
//
//go:generate go tool stringer -type=State -linecomment
type State uint8

// Request states. Done and Failed are final.
const (
	// Accepted: known, not yet talking to P
	Accepted State = iota + 1 // accepted
	// Handshaking: waiting for the peer's metadata
	Handshaking // handshaking
	// Loading: staging and reads in flight
	Loading // loading
	// Done: every read completed
	Done // done
	// Failed: ended with an error (Reason)
	Failed // failed
)

func (s State) final() bool { return s == Done || s == Failed }

// Failure reasons the machine decides on its own.
const (
	ReasonExpired = "lease expired"
	ReasonSuspect = "peer stopped answering heartbeats"
	ReasonNoHold  = "prefill holds no such request"
)

// MachineConfig are the timing rules of the D side.
type MachineConfig struct {
	// HeartbeatInterval between two heartbeats of a request (0: none).
	HeartbeatInterval Time
	// LeaseMargin: reads are neither posted nor waited for once the lease
	// expires within this margin (clock uncertainty, read time).
	LeaseMargin Time
	// SuspectAfter: a request whose peer answered none of its heartbeats
	// for this long fails (0: never). Only requests with heartbeats (a
	// lease) are judged.
	SuspectAfter Time
}

type reqState struct {
	state    State
	peer     string
	expiry   Time // P's hold expiry on D's clock; 0: no lease
	nextHB   Time
	answered Time // last answer from the peer (or acceptance)
	reason   string
}

// Machine is the pure per-request state machine of D: states, leases as D
// knows them, heartbeats due, and the failures time alone decides (an
// expired lease, a silent peer). The I/O shell calls Ready with the time,
// acts on what it lists (sends heartbeats, cancels loads), then Advance
// with the same Ready, in the style of raft's Ready/Advance. Not safe for
// concurrent use: the shell serializes calls.
type Machine struct {
	cfg  MachineConfig
	reqs map[Key]*reqState
}

// NewMachine returns an empty machine.
func NewMachine(cfg MachineConfig) *Machine {
	return &Machine{cfg: cfg, reqs: map[Key]*reqState{}}
}

func (m *Machine) get(k Key) (*reqState, error) {
	r := m.reqs[k]
	if r == nil {
		return nil, fmt.Errorf("%w: unknown transfer %d", ErrBadRequest, k)
	}
	return r, nil
}

// Accept registers a request D has taken on, from peer, whose hold on P
// expires at expiry (D's clock; 0 for none).
func (m *Machine) Accept(k Key, peer string, expiry, now Time) error {
	if m.reqs[k] != nil {
		return fmt.Errorf("%w: transfer %d accepted twice", ErrBadRequest, k)
	}
	m.reqs[k] = &reqState{state: Accepted, peer: peer, expiry: expiry, nextHB: now + m.cfg.HeartbeatInterval, answered: now}
	return nil
}

// To moves a request forward: Accepted -> Handshaking -> Loading -> Done,
// and any live state -> Failed. Anything else is an error; a final state
// never changes.
func (m *Machine) To(k Key, s State, reason string) error {
	r, err := m.get(k)
	if err != nil {
		return err
	}
	ok := false
	switch s {
	case Handshaking:
		ok = r.state == Accepted
	case Loading:
		ok = r.state == Accepted || r.state == Handshaking
	case Done:
		ok = r.state == Loading
	case Failed:
		ok = !r.state.final()
	}
	if !ok {
		return fmt.Errorf("%w: transfer %d cannot go from %s to %s", ErrBadRequest, k, r.state, s)
	}
	r.state = s
	if s == Failed {
		r.reason = reason
	}
	return nil
}

// Lease records P's answer to a heartbeat: the hold now expires at expiry
// (D's clock). A lease is never shortened.
func (m *Machine) Lease(k Key, expiry, now Time) {
	if r := m.reqs[k]; r != nil && !r.state.final() {
		r.expiry = max(r.expiry, expiry)
		r.answered = max(r.answered, now)
	}
}

// NoHold records P's answer that it holds no such request: a live request
// fails.
func (m *Machine) NoHold(k Key) {
	if r := m.reqs[k]; r != nil && !r.state.final() {
		r.state, r.reason = Failed, ReasonNoHold
	}
}

// CheckPost says whether reads may be posted (or still be waited for) at
// now: the request is live and its lease, if any, does not expire within
// the margin.
func (m *Machine) CheckPost(k Key, now Time) error {
	r, err := m.get(k)
	if err != nil {
		return err
	}
	if r.state.final() {
		return fmt.Errorf("transfer %d is %s (%s)", k, r.state, r.reason)
	}
	if r.expiry != 0 && now >= r.expiry-m.cfg.LeaseMargin {
		return fmt.Errorf("%w: %s holds it until %d, now %d (margin %d)", ErrLeaseExpired, r.peer, r.expiry, now, m.cfg.LeaseMargin)
	}
	return nil
}

// State reports a request's state and failure reason.
func (m *Machine) State(k Key) (State, string, bool) {
	r := m.reqs[k]
	if r == nil {
		return 0, "", false
	}
	return r.state, r.reason, true
}

// Forget drops a request (when the shell is done with it).
func (m *Machine) Forget(k Key) { delete(m.reqs, k) }

// Len is the number of requests the machine knows.
func (m *Machine) Len() int { return len(m.reqs) }

// Ready is what is due at a time: heartbeats to send, and the live
// requests that fail now (expired leases, silent peers), each list in
// ascending key order.
type Ready struct {
	Now        Time
	Heartbeats []Key
	Expired    []Key
	Suspect    []Key
}

// Ready lists what is due at now; it changes nothing.
func (m *Machine) Ready(now Time) Ready {
	rd := Ready{Now: now}
	for k, r := range m.reqs {
		if r.state.final() || r.expiry == 0 {
			continue
		}
		switch {
		case now >= r.expiry-m.cfg.LeaseMargin:
			rd.Expired = append(rd.Expired, k)
		case m.cfg.SuspectAfter > 0 && now-r.answered >= m.cfg.SuspectAfter:
			rd.Suspect = append(rd.Suspect, k)
		case m.cfg.HeartbeatInterval > 0 && now >= r.nextHB:
			rd.Heartbeats = append(rd.Heartbeats, k)
		}
	}
	slices.Sort(rd.Heartbeats)
	slices.Sort(rd.Expired)
	slices.Sort(rd.Suspect)
	return rd
}

// Advance records that the shell acted on rd: heartbeats were sent (the
// next is due an interval later), expired and suspect requests failed.
func (m *Machine) Advance(rd Ready) {
	for _, k := range rd.Heartbeats {
		if r := m.reqs[k]; r != nil {
			r.nextHB = rd.Now + m.cfg.HeartbeatInterval
		}
	}
	fail := func(ks []Key, reason string) {
		for _, k := range ks {
			if r := m.reqs[k]; r != nil && !r.state.final() {
				r.state, r.reason = Failed, reason
			}
		}
	}
	fail(rd.Expired, ReasonExpired)
	fail(rd.Suspect, ReasonSuspect)
}
