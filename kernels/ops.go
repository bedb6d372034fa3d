package kernels

import (
	"fmt"
	"math"
)

// CopyOp copies src[Src:Src+Len] to dst[Dst:Dst+Len].
type CopyOp struct {
	Dst, Src, Len int64
}

// Range is a byte range [Off, Off+Len) of one buffer.
type Range struct {
	Off, Len int64
}

// TotalBytes returns the sum of the lengths of ops (negative lengths count
// as zero; Copy rejects them anyway).
func TotalBytes(ops []CopyOp) int64 {
	var n int64
	for _, op := range ops {
		if op.Len > 0 {
			n += op.Len
		}
	}
	return n
}

// Coalesce merges every op whose source and destination both directly follow
// the previous op's into it, and drops zero-length ops. It works in place:
// the result shares ops' backing array, which it overwrites. Ops with a
// negative length are kept as they are so that Copy reports them.
func Coalesce(ops []CopyOp) []CopyOp {
	out := ops[:0]
	for _, op := range ops {
		out = appendOp(out, op)
	}
	return out
}

// appendOp appends op to ops, merging it into the last op when both of its
// ranges continue the last op's.
func appendOp(ops []CopyOp, op CopyOp) []CopyOp {
	if op.Len == 0 {
		return ops
	}
	if n := len(ops); n > 0 && op.Len > 0 {
		last := &ops[n-1]
		if last.Len > 0 && last.Src+last.Len == op.Src && last.Dst+last.Len == op.Dst {
			last.Len += op.Len
			return ops
		}
	}
	return append(ops, op)
}

// GatherOps returns the coalesced ops that copy the source ranges, in order,
// to one contiguous destination range starting at dstOff.
func GatherOps(ranges []Range, dstOff int64) []CopyOp {
	ops := make([]CopyOp, 0, len(ranges))
	for _, r := range ranges {
		ops = appendOp(ops, CopyOp{Dst: dstOff, Src: r.Off, Len: r.Len})
		if r.Len > 0 {
			dstOff += r.Len
		}
	}
	return ops
}

// ScatterOps returns the coalesced ops that copy one contiguous source range
// starting at srcOff, in order, to the destination ranges.
func ScatterOps(srcOff int64, ranges []Range) []CopyOp {
	ops := make([]CopyOp, 0, len(ranges))
	for _, r := range ranges {
		ops = appendOp(ops, CopyOp{Dst: r.Off, Src: srcOff, Len: r.Len})
		if r.Len > 0 {
			srcOff += r.Len
		}
	}
	return ops
}

// Strided describes Count runs of Len bytes; run i is read at
// SrcOff+i*SrcStride and written at DstOff+i*DstStride.
type Strided struct {
	Count             int
	Len               int64
	SrcOff, SrcStride int64
	DstOff, DstStride int64
}

// Ops returns the coalesced op list of s. Runs that follow each other in both
// buffers (a stride equal to Len on both sides) become one op.
func (s Strided) Ops() ([]CopyOp, error) {
	if s.Count < 0 || s.Len < 0 || s.SrcOff < 0 || s.DstOff < 0 || s.SrcStride < 0 || s.DstStride < 0 {
		return nil, fmt.Errorf("%w: strided %+v", ErrInvalid, s)
	}
	if s.Count == 0 || s.Len == 0 {
		return nil, nil
	}
	n := int64(s.Count - 1)
	if _, ok := span(s.SrcOff, n, s.SrcStride, s.Len); !ok {
		return nil, fmt.Errorf("%w: strided %+v overflows", ErrOutOfRange, s)
	}
	if _, ok := span(s.DstOff, n, s.DstStride, s.Len); !ok {
		return nil, fmt.Errorf("%w: strided %+v overflows", ErrOutOfRange, s)
	}
	ops := make([]CopyOp, 0, s.Count)
	for i := int64(0); i <= n; i++ {
		ops = appendOp(ops, CopyOp{Dst: s.DstOff + i*s.DstStride, Src: s.SrcOff + i*s.SrcStride, Len: s.Len})
	}
	return ops, nil
}

// span returns off + n*stride + length, reporting false on overflow.
func span(off, n, stride, length int64) (int64, bool) {
	p, ok := mul(n, stride)
	if !ok {
		return 0, false
	}
	return add(off, p, length)
}

// mul multiplies non-negative a and b, reporting false on overflow.
func mul(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	if a > math.MaxInt64/b {
		return 0, false
	}
	return a * b, true
}

// add sums non-negative terms, reporting false on overflow.
func add(terms ...int64) (int64, bool) {
	var s int64
	for _, t := range terms {
		if t > math.MaxInt64-s {
			return 0, false
		}
		s += t
	}
	return s, true
}
