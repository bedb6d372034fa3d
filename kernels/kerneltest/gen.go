package kerneltest

import (
	"math"

	"github.com/hybridxfer/hybridxfer/kernels"
	"pgregory.net/rapid"
)

// CopyCase is a random Copy input: buffer sizes and ops.
type CopyCase struct {
	DstLen, SrcLen int64
	Ops            []kernels.CopyOp
}

// disjoint draws up to n disjoint ranges of [0, size) in random order.
func disjoint(t *rapid.T, size int64, n int, label string) []kernels.Range {
	if size == 0 || n == 0 {
		return nil
	}
	cuts := rapid.SliceOfN(rapid.Int64Range(0, size), 0, 2*n).Draw(t, label+"Cuts")
	cuts = append(cuts, 0, size)
	sortInt64(cuts)
	var rs []kernels.Range
	for i := 1; i < len(cuts); i++ {
		if cuts[i] > cuts[i-1] && rapid.Bool().Draw(t, label+"Keep") {
			rs = append(rs, kernels.Range{Off: cuts[i-1], Len: cuts[i] - cuts[i-1]})
		}
	}
	perm := rapid.Permutation(rs).Draw(t, label+"Order")
	return perm
}

func sortInt64(a []int64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// DrawCopyCase draws a Copy case with buffers of at most maxLen bytes. Most
// cases are valid (disjoint destinations); some carry one broken op.
func DrawCopyCase(t *rapid.T, maxLen int64) CopyCase {
	c := CopyCase{
		DstLen: rapid.Int64Range(0, maxLen).Draw(t, "dstLen"),
		SrcLen: rapid.Int64Range(0, maxLen).Draw(t, "srcLen"),
	}
	n := rapid.IntRange(0, 24).Draw(t, "nops")
	for _, r := range disjoint(t, c.DstLen, n, "dst") {
		l := min(r.Len, c.SrcLen)
		l = rapid.Int64Range(0, l).Draw(t, "len")
		src := rapid.Int64Range(0, c.SrcLen-l).Draw(t, "src")
		c.Ops = append(c.Ops, kernels.CopyOp{Dst: r.Off, Src: src, Len: l})
	}
	if len(c.Ops) > 0 && rapid.IntRange(0, 9).Draw(t, "break") == 0 {
		i := rapid.IntRange(0, len(c.Ops)-1).Draw(t, "broken")
		c.Ops[i] = breakOp(t, c.Ops[i], c.DstLen, c.SrcLen)
	}
	return c
}

// breakOp returns op made invalid, out of range or (likely) overlapping.
func breakOp(t *rapid.T, op kernels.CopyOp, dstLen, srcLen int64) kernels.CopyOp {
	switch rapid.IntRange(0, 6).Draw(t, "how") {
	case 0:
		op.Len = -rapid.Int64Range(1, math.MaxInt64).Draw(t, "negLen")
	case 1:
		op.Dst = -rapid.Int64Range(1, math.MaxInt64).Draw(t, "negDst")
	case 2:
		op.Src = -1
	case 3:
		op.Dst = dstLen - op.Len + rapid.Int64Range(1, 64).Draw(t, "past")
	case 4:
		op.Src = srcLen - op.Len + rapid.Int64Range(1, math.MaxInt64/2).Draw(t, "past")
	case 5:
		op.Src, op.Len = math.MaxInt64, math.MaxInt64
	case 6:
		// Overlap the destination of another op (or run past the end).
		op.Len += rapid.Int64Range(1, 64).Draw(t, "grow")
		op.Dst = rapid.Int64Range(0, max(dstLen-1, 0)).Draw(t, "dst")
	}
	return op
}

// DrawAliasCase draws ops on one buffer of size n used as both dst and src.
// Ops pair up disjoint ranges, so most cases are valid; some are broken.
func DrawAliasCase(t *rapid.T, maxLen int64) CopyCase {
	size := rapid.Int64Range(0, maxLen).Draw(t, "size")
	c := CopyCase{DstLen: size, SrcLen: size}
	rs := disjoint(t, size, 24, "alias")
	for i := 0; i+1 < len(rs); i += 2 {
		l := min(rs[i].Len, rs[i+1].Len)
		c.Ops = append(c.Ops, kernels.CopyOp{Dst: rs[i].Off, Src: rs[i+1].Off, Len: l})
	}
	if len(c.Ops) > 0 && rapid.IntRange(0, 5).Draw(t, "break") == 0 {
		i := rapid.IntRange(0, len(c.Ops)-1).Draw(t, "broken")
		c.Ops[i].Src = rapid.Int64Range(0, max(size-c.Ops[i].Len, 0)).Draw(t, "src")
	}
	return c
}

// DrawTranspose draws a transpose with small shapes and returns it with the
// buffer sizes it needs (sometimes a little less, to provoke range errors).
func DrawTranspose(t *rapid.T, maxItems int) (tr kernels.Transpose, dstLen, srcLen int64) {
	tr.ItemBytes = rapid.SampledFrom([]int{1, 2, 3, 4, 8, 12, 16, 256}).Draw(t, "item")
	tr.Batches = rapid.IntRange(0, 4).Draw(t, "batches")
	tr.Rows = rapid.IntRange(0, maxItems).Draw(t, "rows")
	tr.Cols = rapid.IntRange(0, max(maxItems/max(tr.Rows, 1), 1)).Draw(t, "cols")
	tr.SrcOff = rapid.Int64Range(0, 17).Draw(t, "srcOff")
	tr.DstOff = rapid.Int64Range(0, 17).Draw(t, "dstOff")
	m := int64(tr.Rows) * int64(tr.Cols) * int64(tr.ItemBytes)
	tr.SrcBatchStride = m + rapid.Int64Range(-m, 9).Draw(t, "srcPad")
	tr.DstBatchStride = m + rapid.Int64Range(0, 9).Draw(t, "dstPad")
	if rapid.IntRange(0, 19).Draw(t, "dstOverlap") == 0 {
		tr.DstBatchStride = rapid.Int64Range(0, m).Draw(t, "dstStride")
	}
	need := func(off, stride int64) int64 {
		if tr.Batches == 0 {
			return off
		}
		return off + int64(tr.Batches-1)*stride + m
	}
	srcLen = need(tr.SrcOff, tr.SrcBatchStride) + rapid.Int64Range(-1, 8).Draw(t, "srcSlack")
	dstLen = need(tr.DstOff, tr.DstBatchStride) + rapid.Int64Range(-1, 8).Draw(t, "dstSlack")
	return tr, max(dstLen, 0), max(srcLen, 0)
}

// Fill returns n bytes of a pattern derived from seed.
func Fill(n int64, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
