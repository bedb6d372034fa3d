package kernels

import (
	"fmt"
	"slices"
	"unsafe"
)

// ValidateOps checks ops against a destination of dstLen bytes and a source
// of srcLen bytes and returns the total number of bytes they copy. same says
// that dst and src are the same memory (offset 0 of both is the same byte);
// then no source range may overlap a destination range. Destination ranges
// must be pairwise disjoint. Engines call it before running ops.
func ValidateOps(ops []CopyOp, dstLen, srcLen int64, same bool) (int64, error) {
	return validateOps(ops, dstLen, srcLen, same, 0)
}

// validateOps is ValidateOps where, when alias is set, source offset s is
// destination offset s+delta.
func validateOps(ops []CopyOp, dstLen, srcLen int64, alias bool, delta int64) (int64, error) {
	var total int64
	sorted := true // destination ranges in increasing, disjoint order
	var end int64  // end of the previous non-empty destination range
	for i, op := range ops {
		switch {
		case op.Len < 0 || op.Dst < 0 || op.Src < 0:
			return 0, &OpError{Index: i, Op: op, Err: ErrInvalid}
		case op.Dst > dstLen-op.Len || op.Src > srcLen-op.Len:
			return 0, &OpError{Index: i, Op: op, Err: ErrOutOfRange}
		case op.Len == 0:
			continue
		}
		total += op.Len // cannot overflow: ops are disjoint in dst once checked
		if op.Dst < end {
			sorted = false
		}
		end = op.Dst + op.Len
	}
	if !sorted {
		if i, j, ok := findDstOverlap(ops); ok {
			return 0, &OpError{Index: j, Op: ops[j], Err: fmt.Errorf("%w with op %d", ErrOverlap, i)}
		}
	}
	if alias {
		if i, ok := findSrcDstOverlap(ops, delta); ok {
			return 0, &OpError{Index: i, Op: ops[i], Err: fmt.Errorf("%w: source overlaps a destination", ErrOverlap)}
		}
	}
	return total, nil
}

// interval is a half-open byte interval tagged with the op it comes from.
type interval struct {
	lo, hi int64
	op     int
}

func sortIntervals(iv []interval) {
	slices.SortFunc(iv, func(a, b interval) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return a.op - b.op
	})
}

// findDstOverlap returns two ops whose destination ranges overlap.
func findDstOverlap(ops []CopyOp) (int, int, bool) {
	iv := make([]interval, 0, len(ops))
	for i, op := range ops {
		if op.Len > 0 {
			iv = append(iv, interval{op.Dst, op.Dst + op.Len, i})
		}
	}
	sortIntervals(iv)
	for k := 1; k < len(iv); k++ {
		if iv[k].lo < iv[k-1].hi {
			a, b := iv[k-1].op, iv[k].op
			return min(a, b), max(a, b), true
		}
	}
	return 0, 0, false
}

// findSrcDstOverlap returns an op whose source range, shifted by delta into
// destination coordinates, overlaps some destination range.
func findSrcDstOverlap(ops []CopyOp, delta int64) (int, bool) {
	dst := make([]interval, 0, len(ops))
	src := make([]interval, 0, len(ops))
	for i, op := range ops {
		if op.Len > 0 {
			dst = append(dst, interval{op.Dst, op.Dst + op.Len, i})
			src = append(src, interval{op.Src + delta, op.Src + delta + op.Len, i})
		}
	}
	sortIntervals(dst) // pairwise disjoint, checked before
	sortIntervals(src) // may overlap each other
	i, j := 0, 0
	for i < len(src) && j < len(dst) {
		s, d := src[i], dst[j]
		if s.lo < d.hi && d.lo < s.hi {
			return s.op, true
		}
		if s.hi <= d.hi {
			i++
		} else {
			j++
		}
	}
	return 0, false
}

// aliasOf reports whether dst and src share memory and, if so, the offset in
// dst of src[0].
func aliasOf(dst, src []byte) (int64, bool) {
	if len(dst) == 0 || len(src) == 0 {
		return 0, false
	}
	d := uintptr(unsafe.Pointer(unsafe.SliceData(dst)))
	s := uintptr(unsafe.Pointer(unsafe.SliceData(src)))
	if s >= d+uintptr(len(dst)) || d >= s+uintptr(len(src)) {
		return 0, false
	}
	return int64(s - d), true // two's complement: negative when s < d
}
