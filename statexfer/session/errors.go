package session

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
var (
	// ErrPeer: the prefill instance could not be reached, its handshake
	// failed, or it failed (died, restarted) while the request used it.
	ErrPeer = errors.New("session: prefill peer failed")
	// ErrStaleIncarnation: the request names a prefill incarnation (boot
	// id) that is not the one serving at its address: the state it refers
	// to is gone.
	ErrStaleIncarnation = errors.New("session: request names a prefill incarnation that is gone")
	// ErrLeaseExpired: P's hold of the request expired (or is about to)
	// before its reads could be posted or completed.
	ErrLeaseExpired = errors.New("session: prefill lease expired")
	// ErrNoHold: P answered that it holds no such request (released,
	// expired, aborted, or a wrong grant).
	ErrNoHold = errors.New("session: prefill holds no such request")
	// ErrRead: reads of the request failed.
	ErrRead = errors.New("session: reads failed")
	// ErrStaging: a staging range could not be had (too large, or a bad
	// free).
	ErrStaging = errors.New("session: staging")
	// ErrStagingFull: the staging pool is full now (backpressure; retry).
	ErrStagingFull = errors.New("session: staging pool full")
	// ErrClosed: the session is closed.
	ErrClosed = errors.New("session: closed")
	// ErrBadRequest: the load request is inconsistent.
	ErrBadRequest = errors.New("session: bad load request")
	// ErrClaimed: P refused D's claim: another load claimed the request's
	// decode ranks (its params were replayed), so nothing was read.
	ErrClaimed = errors.New("session: request claimed by another load")
)

// errNoSuchHold is P's answer text for a request it holds no grant for.
var errNoSuchHold = errors.New("no such hold")

func isFull(err error) bool { return errors.Is(err, ErrStagingFull) }

// BlockRef names one decode block of a group.
type BlockRef struct {
	Group, Block int
}

// LoadError reports a failed load: which peer, which request, in which
// phase, and which decode blocks hold no valid state (per group; a nil
// Failed means every block of the request is suspect). It wraps the cause.
type LoadError struct {
	Peer   string // engine id@host:port#boot
	ReqID  string
	Phase  string // handshake, expired (before any read), plan, claim, stage, lease, read, post
	Failed []BlockRef
	Err    error
}

func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "request %s from %s: %s failed", e.ReqID, e.Peer, e.Phase)
	if e.Failed != nil {
		fmt.Fprintf(&b, " (%d blocks:", len(e.Failed))
		for i, f := range e.Failed {
			if i == 8 {
				b.WriteString(" ...")
				break
			}
			fmt.Fprintf(&b, " g%d/b%d", f.Group, f.Block)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *LoadError) Unwrap() error { return e.Err }
