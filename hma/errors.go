package hma

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps one of them, so
// callers can test with errors.Is.
var (
	// ErrInvalidConfig: the Config is inconsistent (see ConfigError).
	ErrInvalidConfig = errors.New("hma: invalid config")
	// ErrInvalidArgument: an argument is out of range for the request.
	ErrInvalidArgument = errors.New("hma: invalid argument")
	// ErrNoSpace: a pool has too few free blocks; nothing was changed.
	ErrNoSpace = errors.New("hma: not enough free blocks")
	// ErrUnknownRequest: no live request has the given id.
	ErrUnknownRequest = errors.New("hma: unknown request")
	// ErrDuplicateRequest: AddRequest with an id that is still live.
	ErrDuplicateRequest = errors.New("hma: duplicate request id")
	// ErrBadState: the operation is not allowed in the request's current
	// state (held, waiting for external tokens, uncommitted step, ...).
	ErrBadState = errors.New("hma: operation not allowed in this request state")
	// ErrStalePrefix: the prefix length passed to Allocate is no longer a hit
	// (a block was evicted since LookupPrefix).
	ErrStalePrefix = errors.New("hma: prefix hit no longer valid")
	// ErrForeignBlock: a block reference does not name a block the request is
	// loading.
	ErrForeignBlock = errors.New("hma: block does not belong to the request")
	// ErrInUse: the operation needs every block to be free.
	ErrInUse = errors.New("hma: blocks in use")
)

// ConfigError names the Config field that is wrong. It wraps ErrInvalidConfig.
type ConfigError struct {
	Field string // e.g. "Groups[2].Window"
	Msg   string
}

func (e *ConfigError) Error() string {
	return ErrInvalidConfig.Error() + ": " + e.Field + ": " + e.Msg
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// NoSpaceError reports which pool ran short. It wraps ErrNoSpace.
type NoSpaceError struct {
	Pool int // index into Config.Pools
	Need int // blocks the operation needed from the free queue
	Free int // blocks the free queue held
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("%s: pool %d needs %d, has %d free", ErrNoSpace.Error(), e.Pool, e.Need, e.Free)
}

func (e *NoSpaceError) Unwrap() error { return ErrNoSpace }

func argErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

func stateErr(id ReqID, format string, args ...any) error {
	return fmt.Errorf("%w: request %q: "+format, append([]any{ErrBadState, id}, args...)...)
}

func unknownErr(id ReqID) error {
	return fmt.Errorf("%w: %q", ErrUnknownRequest, id)
}

func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
