package kernels

import "fmt"

// Layout is the order of the dimensions of an attention page.
//
//go:generate go tool stringer -type=Layout -linecomment
type Layout uint8

const (
	// HND stores a page as (heads, tokens, head dim).
	HND Layout = iota // HND
	// NHD stores a page as (tokens, heads, head dim).
	NHD // NHD
)

// HeadSlice describes heads [First, First+Count) of one attention tensor of
// Heads heads and Tokens tokens laid out as Layout at TensorOff, and its
// packed copy at PackedOff: the same layout with Count heads, contiguous.
// Packing is how a rank sends the heads a peer of another TP size needs.
type HeadSlice struct {
	Layout        Layout
	Heads, Tokens int
	HeadBytes     int64 // bytes of one head vector (head dim * dtype size)
	First, Count  int
	TensorOff     int64
	PackedOff     int64
}

// PackOps returns the ops copying the heads from the tensor (src) to the
// packed range (dst).
func (h HeadSlice) PackOps() ([]CopyOp, error) {
	s, err := h.strided()
	if err != nil {
		return nil, err
	}
	return s.Ops()
}

// UnpackOps returns the ops copying the packed range (src) back into the
// heads of the tensor (dst).
func (h HeadSlice) UnpackOps() ([]CopyOp, error) {
	s, err := h.strided()
	if err != nil {
		return nil, err
	}
	s.SrcOff, s.DstOff = s.DstOff, s.SrcOff
	s.SrcStride, s.DstStride = s.DstStride, s.SrcStride
	return s.Ops()
}

// strided returns the pack direction as runs.
func (h HeadSlice) strided() (Strided, error) {
	if h.Heads < 0 || h.Tokens < 0 || h.HeadBytes < 0 || h.First < 0 || h.Count < 0 ||
		h.TensorOff < 0 || h.PackedOff < 0 || h.First > h.Heads-h.Count {
		return Strided{}, fmt.Errorf("%w: head slice %+v", ErrInvalid, h)
	}
	tb, ok1 := mul(int64(h.Tokens), h.HeadBytes)
	hb, ok2 := mul(int64(h.Heads), h.HeadBytes)
	if _, ok3 := mul(tb, int64(h.Heads)); !ok1 || !ok2 || !ok3 {
		return Strided{}, fmt.Errorf("%w: head slice %+v overflows", ErrOutOfRange, h)
	}
	switch h.Layout {
	case HND:
		// Heads are outermost: the slice is one contiguous run.
		return Strided{
			Count:  1,
			Len:    int64(h.Count) * tb,
			SrcOff: h.TensorOff + int64(h.First)*tb,
			DstOff: h.PackedOff,
		}, nil
	case NHD:
		// One run of Count heads per token.
		n := int64(h.Count) * h.HeadBytes
		return Strided{
			Count:     h.Tokens,
			Len:       n,
			SrcOff:    h.TensorOff + int64(h.First)*h.HeadBytes,
			SrcStride: hb,
			DstOff:    h.PackedOff,
			DstStride: n,
		}, nil
	}
	return Strided{}, fmt.Errorf("%w: layout %v", ErrInvalid, h.Layout)
}

// Regroup moves Tokens consecutive tokens between two block tables of
// different block sizes (re-chunking): token i is read at position
// SrcStart+i of the source table and written at position DstStart+i of the
// destination table. Position p of a table with block size B lives in the
// page at byte offset Blocks[p/B], slot p%B.
//
// A page is Planes planes of BlockTokens*TokenBytes bytes each: Planes is 1
// for pages whose token is outermost (NHD: TokenBytes = heads*head bytes) and
// the number of heads for HND pages (TokenBytes = head bytes). Zero Planes
// means one.
type Regroup struct {
	Tokens                         int
	SrcStart, DstStart             int
	SrcBlockTokens, DstBlockTokens int
	SrcBlocks, DstBlocks           []int64 // byte offset of each page
	TokenBytes                     int64
	Planes                         int
}

// Ops returns the coalesced op list of r.
func (r Regroup) Ops() ([]CopyOp, error) {
	planes := r.Planes
	if planes == 0 {
		planes = 1
	}
	if r.Tokens < 0 || r.SrcStart < 0 || r.DstStart < 0 || r.SrcBlockTokens <= 0 ||
		r.DstBlockTokens <= 0 || r.TokenBytes < 0 || planes < 0 {
		return nil, fmt.Errorf("%w: regroup tokens=%d starts=%d/%d block tokens=%d/%d token bytes=%d planes=%d",
			ErrInvalid, r.Tokens, r.SrcStart, r.DstStart, r.SrcBlockTokens, r.DstBlockTokens, r.TokenBytes, r.Planes)
	}
	if r.Tokens == 0 || r.TokenBytes == 0 {
		return nil, nil
	}
	srcPlane, err := checkTable("source", r.SrcBlocks, r.SrcStart, r.Tokens, r.SrcBlockTokens, r.TokenBytes, planes)
	if err != nil {
		return nil, err
	}
	dstPlane, err := checkTable("destination", r.DstBlocks, r.DstStart, r.Tokens, r.DstBlockTokens, r.TokenBytes, planes)
	if err != nil {
		return nil, err
	}
	var ops []CopyOp
	for p := int64(0); p < int64(planes); p++ {
		for t := 0; t < r.Tokens; {
			sp, dp := r.SrcStart+t, r.DstStart+t
			sb, ss := sp/r.SrcBlockTokens, sp%r.SrcBlockTokens
			db, ds := dp/r.DstBlockTokens, dp%r.DstBlockTokens
			n := min(r.SrcBlockTokens-ss, r.DstBlockTokens-ds, r.Tokens-t)
			ops = appendOp(ops, CopyOp{
				Dst: r.DstBlocks[db] + p*dstPlane + int64(ds)*r.TokenBytes,
				Src: r.SrcBlocks[sb] + p*srcPlane + int64(ss)*r.TokenBytes,
				Len: int64(n) * r.TokenBytes,
			})
			t += n
		}
	}
	return ops, nil
}

// checkTable validates one block table and returns its plane size in bytes.
func checkTable(side string, blocks []int64, start, tokens, blockTokens int, tokenBytes int64, planes int) (int64, error) {
	last := (int64(start) + int64(tokens) - 1) / int64(blockTokens)
	if last >= int64(len(blocks)) {
		return 0, fmt.Errorf("%w: regroup %s table has %d blocks, needs %d", ErrOutOfRange, side, len(blocks), last+1)
	}
	plane, ok := mul(int64(blockTokens), tokenBytes)
	page, ok2 := mul(plane, int64(planes))
	if !ok || !ok2 {
		return 0, fmt.Errorf("%w: regroup %s page size overflows", ErrOutOfRange, side)
	}
	for i := int64(start) / int64(blockTokens); i <= last; i++ {
		if blocks[i] < 0 {
			return 0, fmt.Errorf("%w: regroup %s block %d at negative offset %d", ErrInvalid, side, i, blocks[i])
		}
		if _, ok := add(blocks[i], page); !ok {
			return 0, fmt.Errorf("%w: regroup %s block %d overflows", ErrOutOfRange, side, i)
		}
	}
	return plane, nil
}
