package ucx

import (
	"errors"
	"fmt"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Sentinel errors of this package. UCX status codes arrive as *StatusError,
// which wraps the sentinel of its class (and, where one applies, the shared
// transport sentinel), so callers test with errors.Is.
var (
	// ErrUnreachable: no transport can reach the peer (UCS_ERR_UNREACHABLE,
	// UCS_ERR_NO_DEVICE).
	ErrUnreachable = errors.New("ucx: unreachable")
	// ErrConnection: the connection to a peer broke (reset, timeout, reject).
	// A *StatusError of this class also matches transport.ErrDisconnected.
	ErrConnection = errors.New("ucx: connection failure")
	// ErrNoResource: UCX ran out of memory or resources.
	ErrNoResource = errors.New("ucx: out of resources")
	// ErrInvalid: UCX rejected a parameter.
	ErrInvalid = errors.New("ucx: invalid parameter")
	// ErrStatus: any other UCX status.
	ErrStatus = errors.New("ucx: error status")

	// ErrBadAddress: Connect got bytes that are not an Address of this package.
	ErrBadAddress = errors.New("ucx: bad worker address")
	// ErrNotifyTooLarge: Notify payload above Config.MaxNotify.
	ErrNotifyTooLarge = errors.New("ucx: notification too large")
	// ErrForeignMemory: an op's Local memory was not allocated by this
	// Transport, or its Remote memory was not imported through this Peer.
	ErrForeignMemory = errors.New("ucx: memory does not belong to this transport or peer")
	// ErrTimeout: a bounded wait (endpoint close, raw benchmark) expired.
	ErrTimeout = errors.New("ucx: timed out")
)

// StatusError is a UCX ucs_status_t that is not UCS_OK.
type StatusError struct {
	Code int    // the ucs_status_t value (negative)
	Name string // ucs_status_string(Code)
	Op   string // the UCX call that returned it, if known
}

// UCX status codes this package distinguishes (ucs/type/status.h).
const (
	statusOK              = 0
	statusInProgress      = 1
	statusNoMessage       = -1
	statusNoResource      = -2
	statusIOError         = -3
	statusNoMemory        = -4
	statusInvalidParam    = -5
	statusUnreachable     = -6
	statusInvalidAddr     = -7
	statusNotImplemented  = -8
	statusMessageTrunc    = -9
	statusNoProgress      = -10
	statusBufferTooSmall  = -11
	statusNoElem          = -12
	statusSomeConnects    = -13
	statusNoDevice        = -14
	statusBusy            = -15
	statusCanceled        = -16
	statusShmemSegment    = -17
	statusAlreadyExists   = -18
	statusOutOfRange      = -19
	statusTimedOut        = -20
	statusExceedsLimit    = -21
	statusUnsupported     = -22
	statusRejected        = -23
	statusNotConnected    = -24
	statusConnectionReset = -25
	statusEndpointTimeout = -80
)

func (e *StatusError) Error() string {
	if e.Op != "" {
		return fmt.Sprintf("ucx: %s: %s (%d)", e.Op, e.Name, e.Code)
	}
	return fmt.Sprintf("ucx: %s (%d)", e.Name, e.Code)
}

// Unwrap returns the sentinels this status belongs to.
func (e *StatusError) Unwrap() []error {
	if isLinkOrEndpointFailure(e.Code) {
		return []error{ErrConnection, transport.ErrDisconnected}
	}
	switch e.Code {
	case statusUnreachable, statusNoDevice:
		return []error{ErrUnreachable}
	case statusConnectionReset, statusEndpointTimeout, statusRejected,
		statusNotConnected, statusTimedOut, statusIOError:
		return []error{ErrConnection, transport.ErrDisconnected}
	case statusNoResource, statusNoMemory, statusExceedsLimit:
		return []error{ErrNoResource}
	case statusInvalidParam, statusInvalidAddr, statusOutOfRange:
		return []error{ErrInvalid}
	case statusUnsupported, statusNotImplemented:
		return []error{transport.ErrUnsupported}
	case statusCanceled:
		return []error{transport.ErrCanceled}
	}
	return []error{ErrStatus}
}

// isConnectionStatus reports whether a failed request status is what UCX
// reports for requests of a failed or force-closed endpoint.
func isConnectionStatus(code int) bool {
	if isLinkOrEndpointFailure(code) {
		return true
	}
	switch code {
	case statusConnectionReset, statusEndpointTimeout, statusRejected,
		statusNotConnected, statusTimedOut, statusIOError, statusCanceled,
		statusUnreachable:
		return true
	}
	return false
}

// isLinkOrEndpointFailure covers UCS_ERR_FIRST_LINK_FAILURE (-40) through
// UCS_ERR_LAST_ENDPOINT_FAILURE (-89).
func isLinkOrEndpointFailure(code int) bool { return code <= -40 && code >= -89 }
