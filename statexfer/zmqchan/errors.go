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
	// ErrUnauthenticated: the ZMTP handshake failed, in practice because
	// the CURVE configurations of the two sides do not agree
	// (*UnauthenticatedError).
	ErrUnauthenticated = errors.New("zmqchan: unauthenticated")
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
	// Connected: a TCP connection to Addr was made. Handshaken: the ZMTP
	// handshake (CURVE's included) completed on it, so the request was
	// delivered.
	Connected, Handshaken bool
}

func (e *TimeoutError) Error() string {
	switch {
	case e.Handshaken:
		return fmt.Sprintf("zmqchan: no reply from %s within %v; the connection and handshake succeeded, so the prefill instance got the request but did not answer in time (handlers stuck or overloaded?)",
			e.Addr, e.Timeout)
	case e.Connected:
		return fmt.Sprintf("zmqchan: no reply from %s within %v; a TCP connection was made but the ZMTP handshake never completed: the process listening there is hung or is not a hybridxfer handshake server",
			e.Addr, e.Timeout)
	}
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

// AuthFailure says how a handshake failed (UnauthenticatedError.Failure).
//
//go:generate go tool stringer -type=AuthFailure -linecomment
type AuthFailure uint8

const (
	// AuthRefused: the server's ZAP handler refused the client's CURVE key
	// (it is not in the server's allow-list).
	AuthRefused AuthFailure = iota + 1 // client key refused
	// AuthServerRequiresCurve: a client without CURVE met a server with
	// CURVE (or the handshake failed in a way only that explains).
	AuthServerRequiresCurve // server requires CURVE
	// AuthServerPlaintext: a CURVE client met a server without CURVE.
	AuthServerPlaintext // server does not use CURVE
	// AuthHandshakeFailed: a CURVE client's handshake was broken off by
	// the server without a reason: the server public key the client uses
	// is not the server's, or the server does not use CURVE. ZeroMQ does
	// not tell these two apart.
	AuthHandshakeFailed // CURVE handshake failed
)

// UnauthenticatedError reports a ZMTP handshake that failed, so that no
// request was delivered. Without it the failure would look like a timeout:
// ZeroMQ retries refused connections silently; Fetch watches its socket's
// handshake events to report the first failure at once.
type UnauthenticatedError struct {
	Addr    string
	Failure AuthFailure
	// ClientPublic is the client's CURVE public key and ServerPublic the
	// server key it expected, when the client uses CURVE; else "".
	ClientPublic, ServerPublic string
	// Detail is the zmq event that reported the failure, with its value
	// (the ZAP status code, or a ZMTP protocol error code).
	Detail string
}

func (e *UnauthenticatedError) Error() string {
	var fix string
	switch e.Failure {
	case AuthRefused:
		fix = fmt.Sprintf("the prefill refused our CURVE key %s: add %s to its allow-list (and restart it)", e.ClientPublic, e.ClientPublic)
	case AuthServerRequiresCurve:
		fix = "the prefill requires CURVE authentication and we connected without it: configure a CURVE client key (WithCurve) with the prefill's public key, and have our public key added to its allow-list"
	case AuthServerPlaintext:
		fix = "we use CURVE but the prefill does not: enable CURVE on the prefill, or connect without a CURVE key"
	case AuthHandshakeFailed:
		fix = fmt.Sprintf("the prefill broke off the CURVE handshake: check that %s, the server public key we use, is that prefill's public key (its .pub file), and that the prefill runs with CURVE enabled", e.ServerPublic)
	default:
		fix = "the handshake failed"
	}
	return fmt.Sprintf("zmqchan: handshake with %s failed (%s, %s); %s", e.Addr, e.Failure, e.Detail, fix)
}

func (e *UnauthenticatedError) Unwrap() error { return ErrUnauthenticated }

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
