package kerneltest

import (
	"errors"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// Copy applies ops one byte at a time, in order. ops must be valid.
func Copy(dst, src []byte, ops []kernels.CopyOp) {
	for _, op := range ops {
		for i := int64(0); i < op.Len; i++ {
			dst[op.Dst+i] = src[op.Src+i]
		}
	}
}

// ValidateOps is the reference of kernels.ValidateOps with aliasing at
// delta: it returns nil or the sentinel the first bad op (by index) breaks;
// overlaps are checked after bounds, pairwise.
func ValidateOps(ops []kernels.CopyOp, dstLen, srcLen int64, alias bool, delta int64) error {
	for _, op := range ops {
		if op.Len < 0 || op.Dst < 0 || op.Src < 0 {
			return kernels.ErrInvalid
		}
		// Written without overflow: op.Dst+op.Len may not fit int64.
		if op.Dst > dstLen || op.Len > dstLen-op.Dst || op.Src > srcLen || op.Len > srcLen-op.Src {
			return kernels.ErrOutOfRange
		}
	}
	for i, a := range ops {
		for _, b := range ops[i+1:] {
			if a.Len > 0 && b.Len > 0 && a.Dst < b.Dst+b.Len && b.Dst < a.Dst+a.Len {
				return kernels.ErrOverlap
			}
		}
	}
	if alias {
		for _, a := range ops {
			for _, b := range ops {
				s := a.Src + delta
				if a.Len > 0 && b.Len > 0 && s < b.Dst+b.Len && b.Dst < s+a.Len {
					return kernels.ErrOverlap
				}
			}
		}
	}
	return nil
}

// Transpose moves every byte of every item of t, one at a time. t must be
// valid.
func Transpose(dst, src []byte, t kernels.Transpose) {
	for b := 0; b < t.Batches; b++ {
		s := t.SrcOff + int64(b)*t.SrcBatchStride
		d := t.DstOff + int64(b)*t.DstBatchStride
		for r := 0; r < t.Rows; r++ {
			for c := 0; c < t.Cols; c++ {
				for k := 0; k < t.ItemBytes; k++ {
					dst[d+int64((c*t.Rows+r)*t.ItemBytes+k)] = src[s+int64((r*t.Cols+c)*t.ItemBytes+k)]
				}
			}
		}
	}
}

// ValidateTranspose is the reference of Transpose.Validate for small shapes
// (it lists every batch) with aliasing at delta.
func ValidateTranspose(t kernels.Transpose, dstLen, srcLen int64, alias bool, delta int64) error {
	if t.Batches < 0 || t.Rows < 0 || t.Cols < 0 || t.ItemBytes <= 0 || t.SrcOff < 0 ||
		t.DstOff < 0 || t.SrcBatchStride < 0 || t.DstBatchStride < 0 {
		return kernels.ErrInvalid
	}
	if t.Batches == 0 || t.Rows == 0 || t.Cols == 0 {
		return nil
	}
	m := int64(t.Rows) * int64(t.Cols) * int64(t.ItemBytes)
	type iv struct{ lo, hi int64 }
	var ss, ds []iv
	for b := int64(0); b < int64(t.Batches); b++ {
		s := iv{t.SrcOff + b*t.SrcBatchStride, t.SrcOff + b*t.SrcBatchStride + m}
		d := iv{t.DstOff + b*t.DstBatchStride, t.DstOff + b*t.DstBatchStride + m}
		if s.hi > srcLen || d.hi > dstLen {
			return kernels.ErrOutOfRange
		}
		ss, ds = append(ss, s), append(ds, d)
	}
	for i := range ds {
		for j := range ds[:i] {
			if ds[i].lo < ds[j].hi && ds[j].lo < ds[i].hi {
				return kernels.ErrOverlap
			}
		}
	}
	if alias {
		for _, s := range ss {
			for _, d := range ds {
				if s.lo+delta < d.hi && d.lo < s.hi+delta {
					return kernels.ErrOverlap
				}
			}
		}
	}
	return nil
}

// SameClass reports whether err and want are both nil or err wraps want.
func SameClass(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}
