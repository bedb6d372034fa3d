package zmqchan

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Sentinel errors. Every error this package returns for a failed handshake
// is one of the typed errors below, which wrap these sentinels, so callers
// can branch with errors.Is and read details with errors.As.
var (
	// ErrHashMismatch: the server's compatibility hash differs from the
	// client's (*HashMismatchError).
	ErrHashMismatch = errors.New("zmqchan: compatibility hash mismatch")
	// ErrVersionMismatch: the peers speak different protocol versions
	// (*VersionMismatchError).
	ErrVersionMismatch = errors.New("zmqchan: protocol version mismatch")
	// ErrTimeout: no reply within the timeout (*TimeoutError).
	ErrTimeout = errors.New("zmqchan: timeout")
	// ErrMalformed: a frame could not be decoded (*MalformedError).
	ErrMalformed = errors.New("zmqchan: malformed frame")
	// ErrEngineMismatch: the server's engine id is not the expected one
	// (*EngineMismatchError).
	ErrEngineMismatch = errors.New("zmqchan: engine id mismatch")
	// ErrRemote: the server answered with an error, typically its handler's
	// (*RemoteError).
	ErrRemote = errors.New("zmqchan: remote error")
)

// HashMismatchError reports that a server's compatibility hash differs from
// the one the client expected.
type HashMismatchError struct {
	Addr   string // the server's address
	Engine string // the server's engine id
	Local  string // the client's hash, hex
	Remote string // the server's hash, hex
	// Keys lists, sorted, the summary keys whose values differ (or that
	// only one side has), when the client gave its own summary.
	Keys []string
	// Diff is a human-readable account of the differences: the output of
	// the caller's WithSummaryDiff hook, or else a list of the differing
	// keys with both values.
	Diff string
}

func (e *HashMismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "zmqchan: compatibility hash mismatch with %s (engine %q): local %s, remote %s",
		e.Addr, e.Engine, e.Local, e.Remote)
	if e.Diff != "" {
		fmt.Fprintf(&b, "; differing fields: %s", e.Diff)
	} else if len(e.Keys) > 0 {
		fmt.Fprintf(&b, "; differing fields: %s", strings.Join(e.Keys, ", "))
	}
	b.WriteString("; P and D must run the same model and state-layout configuration (see the fields above), restart one of them with matching settings")
	return b.String()
}

func (e *HashMismatchError) Unwrap() error { return ErrHashMismatch }

// VersionMismatchError reports peers that speak different protocol versions.
type VersionMismatchError struct {
	Addr   string // the peer's address, when known
	Local  uint16 // the version this side speaks
	Remote uint16 // the version the peer speaks
}

func (e *VersionMismatchError) Error() string {
	peer := "peer"
	if e.Addr != "" {
		peer = e.Addr
	}
	return fmt.Sprintf("zmqchan: protocol version mismatch with %s: local version %d, remote version %d; deploy P and D from hybridxfer builds that speak the same handshake version",
		peer, e.Local, e.Remote)
}

func (e *VersionMismatchError) Unwrap() error { return ErrVersionMismatch }

// TimeoutError reports a fetch that got no reply in time.
type TimeoutError struct {
	Addr    string        // the address tried
	Timeout time.Duration // the timeout in force
	// Cause is context.DeadlineExceeded when the caller's context expired
	// first, else nil.
	Cause error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("zmqchan: no reply from %s within %v; check that the prefill instance is up and listening there (host, base port + dp index) and reachable through firewalls",
		e.Addr, e.Timeout)
}

// Unwrap returns ErrTimeout and, when the context expired, its error.
func (e *TimeoutError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrTimeout, e.Cause}
	}
	return []error{ErrTimeout}
}

// MalformedError reports a frame that could not be decoded.
type MalformedError struct {
	Addr   string // the peer's address, when known
	What   string // "request" or "reply"
	Reason string // what was wrong
}

func (e *MalformedError) Error() string {
	from := ""
	if e.Addr != "" {
		from = " from " + e.Addr
	}
	return fmt.Sprintf("zmqchan: malformed %s%s: %s", e.What, from, e.Reason)
}

func (e *MalformedError) Unwrap() error { return ErrMalformed }

func malformed(what, format string, args ...any) *MalformedError {
	return &MalformedError{What: what, Reason: fmt.Sprintf(format, args...)}
}

// EngineMismatchError reports a server whose engine id is not the one the
// client was told to expect (WithExpectedEngine): the address points at
// another engine than the one named in the transfer parameters.
type EngineMismatchError struct {
	Addr     string
	Expected string
	Got      string
}

func (e *EngineMismatchError) Error() string {
	return fmt.Sprintf("zmqchan: engine id mismatch at %s: expected %q, got %q; the remote host/port in the transfer parameters points at another engine (stale parameters or a restarted prefill instance?)",
		e.Addr, e.Expected, e.Got)
}

func (e *EngineMismatchError) Unwrap() error { return ErrEngineMismatch }

// RemoteError reports a server that answered with an error.
type RemoteError struct {
	Addr    string
	Engine  string // the server's engine id
	Status  Status
	Message string // the server's error text
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("zmqchan: %s (engine %q) answered %s: %s", e.Addr, e.Engine, e.Status, e.Message)
}

func (e *RemoteError) Unwrap() error { return ErrRemote }

// SummaryDiffKeys returns, sorted, the keys whose values differ between two
// compatibility summaries, including keys only one of them has.
func SummaryDiffKeys(local, remote map[string]string) []string {
	var keys []string
	for k, lv := range local {
		if rv, ok := remote[k]; !ok || rv != lv {
			keys = append(keys, k)
		}
	}
	for k := range remote {
		if _, ok := local[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// describeSummaryDiff renders the differing keys with both values.
func describeSummaryDiff(keys []string, local, remote map[string]string) string {
	show := func(m map[string]string, k string) string {
		if v, ok := m[k]; ok {
			return fmt.Sprintf("%q", v)
		}
		return "(absent)"
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: local %s, remote %s", k, show(local, k), show(remote, k))
	}
	return strings.Join(parts, "; ")
}
