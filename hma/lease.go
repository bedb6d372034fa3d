package hma

import "slices"

// hold is the transfer lease of a finished request.
type hold struct {
	expiry    Time
	consumers int
	notified  int
}

// LeaseStats counts releases by cause and lease operations that named no
// held request (already released, never held, or unknown): such calls are
// ignored, never errors, so a late or duplicate notification is harmless.
type LeaseStats struct {
	ReleasedNotified uint64
	ReleasedExpired  uint64
	ReleasedAborted  uint64
	IgnoredExtend    uint64
	IgnoredNotify    uint64
	IgnoredAbort     uint64
}

// Hold finishes a running request and keeps its blocks for a transfer until
// consumers notifications arrived, the lease expired (Sweep at or after
// expiry) or the request was aborted, whichever comes first.
func (a *Allocator) Hold(id ReqID, expiry Time, consumers int) error {
	r, err := a.running(id)
	if err != nil {
		return err
	}
	if r.pending > 0 {
		return stateErr(id, "waiting for %d external tokens", r.pending)
	}
	if consumers < 1 {
		return argErr("hold with %d consumers", consumers)
	}
	r.held = true
	r.lease = hold{expiry: expiry, consumers: consumers}
	a.holds[id] = r
	return nil
}

// Extend moves a hold's expiry to newExpiry if that is later (a heartbeat
// never shortens a lease). It reports whether id named a held request.
func (a *Allocator) Extend(id ReqID, newExpiry Time) bool {
	r := a.holds[id]
	if r == nil {
		a.leases.IgnoredExtend++
		return false
	}
	r.lease.expiry = max(r.lease.expiry, newExpiry)
	return true
}

// Notify records one consumer notification; the expected count releases the
// hold. It reports whether this call released the blocks.
func (a *Allocator) Notify(id ReqID) bool {
	r := a.holds[id]
	if r == nil {
		a.leases.IgnoredNotify++
		return false
	}
	r.lease.notified++
	if r.lease.notified < r.lease.consumers {
		return false
	}
	a.leases.ReleasedNotified++
	a.release(r)
	return true
}

// Abort ends a request: a held one releases its hold, a running one is
// freed. It reports whether id named a live request.
func (a *Allocator) Abort(id ReqID) bool {
	r := a.reqs[id]
	if r == nil {
		a.leases.IgnoredAbort++
		return false
	}
	if r.held {
		a.leases.ReleasedAborted++
	}
	a.release(r)
	return true
}

// Sweep releases every hold whose expiry is at or before now, whatever the
// order holds were made or extended in, and returns their ids sorted.
func (a *Allocator) Sweep(now Time) []ReqID {
	var out []ReqID
	for id, r := range a.holds {
		if r.lease.expiry <= now {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	for _, id := range out {
		a.leases.ReleasedExpired++
		a.release(a.holds[id])
	}
	return out
}

// release frees a request's blocks and forgets it. Every path that ends a
// request goes through here once: the request is gone afterwards, so a second
// path finds nothing.
func (a *Allocator) release(r *request) {
	a.freeBlocks(r)
	delete(a.reqs, r.id)
	delete(a.holds, r.id)
}

// HoldInfo describes a hold, for views and tests.
type HoldInfo struct {
	Expiry    Time
	Consumers int
	Notified  int
}

// Holding returns the hold of id, if it is held.
func (a *Allocator) Holding(id ReqID) (HoldInfo, bool) {
	r := a.holds[id]
	if r == nil {
		return HoldInfo{}, false
	}
	return HoldInfo{Expiry: r.lease.expiry, Consumers: r.lease.consumers, Notified: r.lease.notified}, true
}
