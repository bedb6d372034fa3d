package zmqchan

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pebbe/zmq4"
)

// DefaultFetchTimeout is the timeout of Fetch without WithTimeout.
const DefaultFetchTimeout = 5 * time.Second

// cancelPollInterval bounds how long Fetch waits on its socket without
// looking at its context, when the context can be canceled.
const cancelPollInterval = 20 * time.Millisecond

// FetchOption configures Fetch.
type FetchOption func(*fetchOptions)

type fetchOptions struct {
	timeout        time.Duration
	expectedEngine string
	summary        map[string]string
	diff           func(local, remote map[string]string) string
	curve          *CurveClient
}

// WithTimeout bounds the whole fetch (connect, request, reply). The
// context's deadline applies as well; the earlier one wins.
func WithTimeout(d time.Duration) FetchOption {
	return func(o *fetchOptions) { o.timeout = d }
}

// WithExpectedEngine makes Fetch fail with *EngineMismatchError unless the
// server's engine id is id (for example the remote_engine_id of the
// transfer parameters).
func WithExpectedEngine(id string) FetchOption {
	return func(o *fetchOptions) { o.expectedEngine = id }
}

// WithSummary gives the client's own compatibility summary (the inputs of
// Request.CompatHash). On a hash mismatch, Fetch compares it with the
// server's and names the differing keys in the *HashMismatchError.
func WithSummary(local map[string]string) FetchOption {
	return func(o *fetchOptions) { o.summary = local }
}

// WithSummaryDiff replaces the default account of a hash mismatch: on a
// mismatch Fetch calls f with the client's summary (nil without WithSummary)
// and the server's, and puts the result in HashMismatchError.Diff.
func WithSummaryDiff(f func(local, remote map[string]string) string) FetchOption {
	return func(o *fetchOptions) { o.diff = f }
}

// monitorSeq numbers the inproc endpoints of Fetch's socket monitors.
var monitorSeq atomic.Uint64

// monitorEvents are the socket events Fetch watches.
const monitorEvents = zmq4.EVENT_CONNECTED | zmq4.EVENT_HANDSHAKE_SUCCEEDED |
	zmq4.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL |
	zmq4.EVENT_HANDSHAKE_FAILED_AUTH

// zmtpMechanismMismatch is ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, the
// value of a HANDSHAKE_FAILED_PROTOCOL event when one side uses CURVE and
// the other does not.
const zmtpMechanismMismatch = 0x11000002

// clientContext is the zmq context of every Fetch socket, created on first
// use and kept for the life of the process (one I/O thread).
var clientContext = sync.OnceValues(func() (*zmq4.Context, error) {
	return zmq4.NewContext()
})

// Fetch sends req to the handshake server at addr (a zmq endpoint such as
// tcp://10.0.0.5:5600, see Endpoint) and returns its reply once level 1 has
// been checked, in this order: magic and protocol version (else
// *VersionMismatchError or *MalformedError), request id (*MalformedError),
// compatibility hash against req.CompatHash (*HashMismatchError), engine id
// (*EngineMismatchError, with WithExpectedEngine), status (*RemoteError).
// Only then does the caller get Payload, the level-2 metadata.
//
// Fetch uses a fresh DEALER socket with ZMQ_LINGER 0, so a dead or absent
// server costs the timeout and nothing more: it returns a *TimeoutError, or
// the context's error when the context is canceled. A failed ZMTP handshake
// (with WithCurve: a refused key, a wrong server key, a server without
// CURVE; without it: a server that requires CURVE) is reported at once as
// an *UnauthenticatedError. Fetch is safe for concurrent use.
//
// Fetch fills req.Version (ProtocolVersion) and req.ID (random) when zero.
// The reply's Sent and Received are the local clock around the round trip;
// see Reply.ClockOffset.
func Fetch(ctx context.Context, addr string, req Request, opts ...FetchOption) (*Reply, error) {
	o := fetchOptions{timeout: DefaultFetchTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("zmqchan: fetch timeout %v is not positive", o.timeout)
	}
	if req.Version == 0 {
		req.Version = ProtocolVersion
	}
	for req.ID == 0 {
		req.ID = rand.Uint64()
	}
	body, err := AppendRequest(nil, &req)
	if err != nil {
		return nil, err
	}
	var curve CurveClient
	if o.curve != nil {
		if curve, err = o.curve.resolve(); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	deadline, timeout := start.Add(o.timeout), o.timeout
	var deadlineCause error // set when the context's deadline is the earlier
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, timeout, deadlineCause = d, d.Sub(start), context.DeadlineExceeded
	}

	zctx, err := clientContext()
	if err != nil {
		return nil, fmt.Errorf("zmqchan: new zmq context: %w", err)
	}
	sk, err := zctx.NewSocket(zmq4.DEALER)
	if err != nil {
		return nil, fmt.Errorf("zmqchan: new DEALER socket: %w", err)
	}
	defer sk.Close()
	if err := sk.SetLinger(0); err != nil {
		return nil, fmt.Errorf("zmqchan: set ZMQ_LINGER: %w", err)
	}
	if err := sk.SetMaxmsgsize(MaxReplyLen); err != nil {
		return nil, fmt.Errorf("zmqchan: set ZMQ_MAXMSGSIZE: %w", err)
	}
	if strings.Contains(addr, "[") {
		if err := sk.SetIpv6(true); err != nil {
			return nil, fmt.Errorf("zmqchan: set ZMQ_IPV6: %w", err)
		}
	}
	if o.curve != nil {
		if err := sk.ClientAuthCurve(curve.ServerPublic, curve.Public, curve.Secret); err != nil {
			return nil, fmt.Errorf("zmqchan: make the DEALER socket a CURVE client: %w", err)
		}
	}
	// The monitor reports the handshake's outcome, which zmq otherwise
	// keeps to itself (a refused peer is retried silently). It must be
	// attached before Connect.
	monEndpoint := fmt.Sprintf("inproc://zmqchan-monitor-%d", monitorSeq.Add(1))
	if err := sk.Monitor(monEndpoint, monitorEvents); err != nil {
		return nil, fmt.Errorf("zmqchan: monitor DEALER socket: %w", err)
	}
	mon, err := zctx.NewSocket(zmq4.PAIR)
	if err != nil {
		return nil, fmt.Errorf("zmqchan: new PAIR socket: %w", err)
	}
	defer mon.Close() // before sk (LIFO)
	if err := mon.SetLinger(0); err != nil {
		return nil, fmt.Errorf("zmqchan: set ZMQ_LINGER: %w", err)
	}
	if err := mon.Connect(monEndpoint); err != nil {
		return nil, fmt.Errorf("zmqchan: connect %s: %w", monEndpoint, err)
	}
	hs := handshakeState{addr: addr}
	if o.curve != nil {
		hs.curve = &curve
	}
	if err := sk.Connect(addr); err != nil {
		return nil, fmt.Errorf("zmqchan: connect %q: %w (want an endpoint like tcp://host:port)", addr, err)
	}

	sent := time.Now()
	// The empty delimiter makes the request look like a REQ socket's, so
	// that the server (and any zmq proxy between) can route it back.
	if _, err := sk.SendMessageDontwait("", body); err != nil {
		return nil, fmt.Errorf("zmqchan: send to %s: %w", addr, err)
	}

	poller := zmq4.NewPoller()
	poller.Add(sk, zmq4.POLLIN)
	poller.Add(mon, zmq4.POLLIN)
	timeoutError := func(cause error) error {
		return &TimeoutError{Addr: addr, Timeout: timeout, Cause: cause,
			Connected: hs.connected, Handshaken: hs.succeeded}
	}
	for {
		if err := ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, timeoutError(err)
			}
			return nil, fmt.Errorf("zmqchan: fetch from %s: %w", addr, err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, timeoutError(deadlineCause)
		}
		if ctx.Done() != nil {
			wait = min(wait, cancelPollInterval)
		}
		// zmq polls in whole milliseconds; round up so that the deadline
		// is not spun on.
		wait = (wait + time.Millisecond - 1).Truncate(time.Millisecond)
		polled, err := poller.PollAll(wait)
		if err != nil {
			return nil, fmt.Errorf("zmqchan: poll %s: %w", addr, err)
		}
		if polled[1].Events&zmq4.POLLIN != 0 {
			if err := hs.read(mon); err != nil {
				return nil, err
			}
		}
		if polled[0].Events&zmq4.POLLIN != 0 {
			break
		}
	}
	frames, err := recvFrames(sk, 2)
	received := time.Now()
	if err != nil {
		if errors.Is(err, errTooManyFrames) {
			return nil, &MalformedError{Addr: addr, What: "reply", Reason: err.Error()}
		}
		return nil, fmt.Errorf("zmqchan: receive from %s: %w", addr, err)
	}
	if len(frames) != 2 || len(frames[0]) != 0 {
		return nil, &MalformedError{Addr: addr, What: "reply",
			Reason: fmt.Sprintf("want an empty delimiter frame and a body frame, got %d frames", len(frames))}
	}
	rep, err := checkReply1(addr, &req, frames[1], &o)
	if err != nil {
		return nil, err
	}
	rep.Sent, rep.Received = sent, received
	return rep, nil
}

// handshakeState follows the handshake events of one Fetch socket.
type handshakeState struct {
	addr                 string
	curve                *CurveClient // nil: no CURVE
	connected, succeeded bool
}

// read takes the pending monitor events and returns an
// *UnauthenticatedError at the first failed handshake.
func (h *handshakeState) read(mon *zmq4.Socket) error {
	for {
		ev, _, value, err := mon.RecvEvent(zmq4.DONTWAIT)
		if err != nil {
			return nil // EAGAIN: drained
		}
		switch ev {
		case zmq4.EVENT_CONNECTED:
			h.connected = true
		case zmq4.EVENT_HANDSHAKE_SUCCEEDED:
			h.succeeded = true
		case zmq4.EVENT_HANDSHAKE_FAILED_AUTH, zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL,
			zmq4.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
			return h.failure(ev, value)
		}
	}
}

func (h *handshakeState) failure(ev zmq4.Event, value int) error {
	e := &UnauthenticatedError{Addr: h.addr}
	switch ev {
	case zmq4.EVENT_HANDSHAKE_FAILED_AUTH:
		e.Detail = fmt.Sprintf("ZAP status %d", value)
	case zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL:
		e.Detail = fmt.Sprintf("ZMTP protocol error %#x", value)
	default:
		e.Detail = "connection closed by the server during the handshake"
	}
	if h.curve == nil {
		// Against a server without CURVE a plain handshake does not fail;
		// a CURVE server refuses it with a mechanism mismatch (or closes
		// the connection first).
		e.Failure = AuthServerRequiresCurve
		return e
	}
	e.ClientPublic, e.ServerPublic = h.curve.Public, h.curve.ServerPublic
	switch {
	case ev == zmq4.EVENT_HANDSHAKE_FAILED_AUTH:
		e.Failure = AuthRefused
	case ev == zmq4.EVENT_HANDSHAKE_FAILED_PROTOCOL && value == zmtpMechanismMismatch:
		e.Failure = AuthServerPlaintext
	default:
		e.Failure = AuthHandshakeFailed
	}
	return e
}

// checkReply1 decodes a reply and checks its level 1 against the request.
func checkReply1(addr string, req *Request, b []byte, o *fetchOptions) (*Reply, error) {
	rep, err := DecodeReply(b)
	if err != nil {
		var vm *VersionMismatchError
		var me *MalformedError
		switch {
		case errors.As(err, &vm):
			vm.Addr = addr
		case errors.As(err, &me):
			me.Addr = addr
		}
		return nil, err
	}
	if rep.Version != req.Version {
		return nil, &VersionMismatchError{Addr: addr, Local: req.Version, Remote: rep.Version}
	}
	remoteErr := func() error {
		return &RemoteError{Addr: addr, Engine: rep.EngineID, Status: rep.Status, Message: rep.Message}
	}
	// The server could not read the request, so the reply has no id.
	if rep.Status == StatusBadRequest || rep.Status == StatusVersionMismatch {
		return nil, remoteErr()
	}
	if rep.RequestID != req.ID {
		return nil, &MalformedError{Addr: addr, What: "reply",
			Reason: fmt.Sprintf("answers request %d, sent %d", rep.RequestID, req.ID)}
	}
	if rep.CompatHash != req.CompatHash {
		e := &HashMismatchError{Addr: addr, Engine: rep.EngineID,
			Local: req.CompatHash.String(), Remote: rep.CompatHash.String()}
		if o.summary != nil {
			e.Keys = SummaryDiffKeys(o.summary, rep.Summary)
			e.Diff = describeSummaryDiff(e.Keys, o.summary, rep.Summary)
		}
		if o.diff != nil {
			e.Diff = o.diff(o.summary, rep.Summary)
		}
		return nil, e
	}
	if o.expectedEngine != "" && rep.EngineID != o.expectedEngine {
		return nil, &EngineMismatchError{Addr: addr, Expected: o.expectedEngine, Got: rep.EngineID}
	}
	if rep.Status != StatusOK {
		return nil, remoteErr()
	}
	return &rep, nil
}
