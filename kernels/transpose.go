package kernels

import "fmt"

// Transpose describes Batches matrices of Rows x Cols items of ItemBytes
// bytes each. For every batch b, item (r, c) at
//
//	src[SrcOff + b*SrcBatchStride + (r*Cols+c)*ItemBytes]
//
// goes to
//
//	dst[DstOff + b*DstBatchStride + (c*Rows+r)*ItemBytes].
//
// Strides are literal: SrcBatchStride may be smaller than a matrix (batches
// read overlapping bytes), DstBatchStride may not.
type Transpose struct {
	Batches, Rows, Cols, ItemBytes int
	SrcOff, DstOff                 int64
	SrcBatchStride, DstBatchStride int64
}

// HNDToNHD returns the transpose of one attention page from (heads, tokens,
// head) to (tokens, heads, head); headBytes is head dim * dtype size.
func HNDToNHD(heads, tokens, headBytes int) Transpose {
	return Transpose{Batches: 1, Rows: heads, Cols: tokens, ItemBytes: headBytes}
}

// NHDToHND returns the transpose of one attention page from (tokens, heads,
// head) to (heads, tokens, head).
func NHDToHND(heads, tokens, headBytes int) Transpose {
	return Transpose{Batches: 1, Rows: tokens, Cols: heads, ItemBytes: headBytes}
}

// DSToSD returns the transpose of one conv state from (dim, rows) to (rows,
// dim); elemBytes is the dtype size (1, 2 or 4).
func DSToSD(dim, rows, elemBytes int) Transpose {
	return Transpose{Batches: 1, Rows: dim, Cols: rows, ItemBytes: elemBytes}
}

// SDToDS returns the transpose of one conv state from (rows, dim) to (dim,
// rows).
func SDToDS(dim, rows, elemBytes int) Transpose {
	return Transpose{Batches: 1, Rows: rows, Cols: dim, ItemBytes: elemBytes}
}

// Batched returns t over n matrices, the source ones srcStride bytes apart and
// the destination ones dstStride bytes apart.
func (t Transpose) Batched(n int, srcStride, dstStride int64) Transpose {
	t.Batches, t.SrcBatchStride, t.DstBatchStride = n, srcStride, dstStride
	return t
}

// At returns t reading at srcOff and writing at dstOff.
func (t Transpose) At(srcOff, dstOff int64) Transpose {
	t.SrcOff, t.DstOff = srcOff, dstOff
	return t
}

// MatrixBytes returns the size of one matrix, or -1 if it overflows int64.
func (t Transpose) MatrixBytes() int64 {
	n, ok := mul(int64(t.Rows), int64(t.Cols))
	if ok {
		n, ok = mul(n, int64(t.ItemBytes))
	}
	if !ok || t.Rows < 0 || t.Cols < 0 || t.ItemBytes < 0 {
		return -1
	}
	return n
}

// Empty reports whether t moves no bytes.
func (t Transpose) Empty() bool {
	return t.Batches == 0 || t.Rows == 0 || t.Cols == 0
}

// Validate checks t against a destination of dstLen bytes and a source of
// srcLen bytes. same says that dst and src are the same memory; then no
// source matrix may overlap a destination matrix. Engines call it before
// running t.
func (t Transpose) Validate(dstLen, srcLen int64, same bool) error {
	return t.validate(dstLen, srcLen, same, 0)
}

func (t Transpose) validate(dstLen, srcLen int64, alias bool, delta int64) error {
	if t.Batches < 0 || t.Rows < 0 || t.Cols < 0 || t.ItemBytes <= 0 || t.SrcOff < 0 ||
		t.DstOff < 0 || t.SrcBatchStride < 0 || t.DstBatchStride < 0 {
		return fmt.Errorf("%w: transpose %+v", ErrInvalid, t)
	}
	m := t.MatrixBytes()
	if m < 0 {
		return fmt.Errorf("%w: transpose %+v: matrix size overflows", ErrOutOfRange, t)
	}
	if t.Empty() {
		return nil
	}
	n := int64(t.Batches - 1)
	srcEnd, ok1 := span(t.SrcOff, n, t.SrcBatchStride, m)
	dstEnd, ok2 := span(t.DstOff, n, t.DstBatchStride, m)
	if !ok1 || !ok2 || srcEnd > srcLen || dstEnd > dstLen {
		return fmt.Errorf("%w: transpose %+v: needs src %d dst %d bytes, have %d and %d",
			ErrOutOfRange, t, srcEnd, dstEnd, srcLen, dstLen)
	}
	if t.Batches > 1 && t.DstBatchStride < m {
		return fmt.Errorf("%w: transpose %+v: destination matrices overlap", ErrOverlap, t)
	}
	if alias && t.overlaps(delta, m) {
		return fmt.Errorf("%w: transpose %+v: source overlaps destination", ErrOverlap, t)
	}
	return nil
}

// overlaps reports whether a source matrix, at destination offset +delta,
// overlaps a destination matrix. Both sequences are sorted by offset and the
// destination ones are disjoint.
func (t Transpose) overlaps(delta, m int64) bool {
	i, j := int64(0), int64(0)
	n := int64(t.Batches)
	for i < n && j < n {
		slo := t.SrcOff + delta + i*t.SrcBatchStride
		dlo := t.DstOff + j*t.DstBatchStride
		if slo < dlo+m && dlo < slo+m {
			return true
		}
		if slo <= dlo { // equal sizes: the one starting first ends first
			i++
		} else {
			j++
		}
	}
	return false
}
