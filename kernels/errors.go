package kernels

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors returned by this package wrap one of them; test
// with errors.Is.
var (
	// ErrInvalid reports a malformed argument: a negative length, offset,
	// count or stride, or a zero item size.
	ErrInvalid = errors.New("kernels: invalid argument")
	// ErrOutOfRange reports a range that does not fit its buffer, or sizes
	// whose product overflows int64.
	ErrOutOfRange = errors.New("kernels: range out of bounds")
	// ErrOverlap reports destination ranges that overlap each other, or a
	// source range overlapping a destination range of the same memory.
	ErrOverlap = errors.New("kernels: overlapping ranges")
	// ErrForeignBuffer reports a Buffer passed to an engine that did not
	// allocate it.
	ErrForeignBuffer = errors.New("kernels: buffer belongs to another engine")
	// ErrClosed reports use of a closed engine or a freed buffer.
	ErrClosed = errors.New("kernels: engine closed or buffer freed")
)

// OpError describes the CopyOp of a list that failed validation.
type OpError struct {
	Index int    // position of the op in the list
	Op    CopyOp // the op itself
	Err   error  // the sentinel: ErrInvalid, ErrOutOfRange or ErrOverlap
}

func (e *OpError) Error() string {
	return fmt.Sprintf("kernels: op %d {dst=%d src=%d len=%d}: %s",
		e.Index, e.Op.Dst, e.Op.Src, e.Op.Len, strings.TrimPrefix(e.Err.Error(), "kernels: "))
}

func (e *OpError) Unwrap() error { return e.Err }
