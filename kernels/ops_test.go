package kernels_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
	"pgregory.net/rapid"
)

func TestCoalesce(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		// Runs of ops that continue each other, broken at random places.
		var ops []kernels.CopyOp
		var d, s int64
		for range rapid.IntRange(0, 40).Draw(rt, "n") {
			if rapid.Bool().Draw(rt, "jump") {
				d += rapid.Int64Range(1, 9).Draw(rt, "dgap")
			}
			if rapid.Bool().Draw(rt, "jump") {
				s += rapid.Int64Range(1, 9).Draw(rt, "sgap")
			}
			l := rapid.Int64Range(0, 9).Draw(rt, "len")
			ops = append(ops, kernels.CopyOp{Dst: d, Src: s, Len: l})
			d, s = d+l, s+l
		}
		orig := append([]kernels.CopyOp(nil), ops...)
		got := kernels.Coalesce(ops)
		if kernels.TotalBytes(got) != kernels.TotalBytes(orig) {
			rt.Fatalf("coalescing changed the byte count")
		}
		for i, op := range got {
			if op.Len == 0 {
				rt.Fatalf("op %d is empty", i)
			}
			if i > 0 && got[i-1].Dst+got[i-1].Len == op.Dst && got[i-1].Src+got[i-1].Len == op.Src {
				rt.Fatalf("ops %d and %d should have merged", i-1, i)
			}
		}
		a, b := make([]byte, d), make([]byte, d)
		src := kerneltest.Fill(s, 1)
		kerneltest.Copy(a, src, orig)
		kerneltest.Copy(b, src, got)
		if !bytes.Equal(a, b) {
			rt.Fatalf("coalesced ops copy different bytes")
		}
	})
}

// TestGatherScatterOps gathers random ranges, compares with the
// concatenation, and scatters them back into a zeroed buffer.
func TestGatherScatterOps(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		size := rapid.Int64Range(0, 512).Draw(rt, "size")
		var ranges []kernels.Range
		for range rapid.IntRange(0, 12).Draw(rt, "n") {
			off := rapid.Int64Range(0, size).Draw(rt, "off")
			ranges = append(ranges, kernels.Range{Off: off, Len: rapid.Int64Range(0, size-off).Draw(rt, "len")})
		}
		at := rapid.Int64Range(0, 5).Draw(rt, "at")
		src := kerneltest.Fill(size, 2)
		want := make([]byte, at)
		for _, r := range ranges {
			want = append(want, src[r.Off:r.Off+r.Len]...)
		}
		got := make([]byte, len(want))
		ops := kernels.GatherOps(ranges, at)
		if len(ops) > len(ranges) {
			rt.Fatalf("%d ops for %d ranges", len(ops), len(ranges))
		}
		if err := kernels.Copy(got, src, ops); err != nil {
			rt.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			rt.Fatalf("gather differs")
		}
		// Scatter back the ranges whose destinations do not overlap.
		var disjoint []kernels.Range
		back := make([]byte, size)
		wantBack := make([]byte, size)
		pos := at
		var keep []kernels.Range
		for _, r := range ranges {
			ok := true
			for _, o := range disjoint {
				if r.Off < o.Off+o.Len && o.Off < r.Off+r.Len {
					ok = false
				}
			}
			if ok {
				disjoint = append(disjoint, r)
				keep = append(keep, kernels.Range{Off: pos, Len: r.Len})
				copy(wantBack[r.Off:], got[pos:pos+r.Len])
			}
			pos += r.Len
		}
		// Scatter from a packed copy of the kept pieces.
		packed := make([]byte, 0, len(got))
		for _, k := range keep {
			packed = append(packed, got[k.Off:k.Off+k.Len]...)
		}
		if err := kernels.Copy(back, packed, kernels.ScatterOps(0, disjoint)); err != nil {
			rt.Fatal(err)
		}
		if !bytes.Equal(back, wantBack) {
			rt.Fatalf("scatter differs")
		}
	})
}

// headAt returns the byte offset of (head h, token t, byte k) in a tensor.
func headAt(l kernels.Layout, heads, tokens int, hb int64, h, t int, k int64) int64 {
	if l == kernels.HND {
		return (int64(h)*int64(tokens)+int64(t))*hb + k
	}
	return (int64(t)*int64(heads)+int64(h))*hb + k
}

func TestHeadSlice(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		hs := kernels.HeadSlice{
			Layout:    rapid.SampledFrom([]kernels.Layout{kernels.HND, kernels.NHD}).Draw(rt, "layout"),
			Heads:     rapid.IntRange(1, 8).Draw(rt, "heads"),
			Tokens:    rapid.IntRange(0, 8).Draw(rt, "tokens"),
			HeadBytes: rapid.Int64Range(1, 8).Draw(rt, "headBytes"),
			TensorOff: rapid.Int64Range(0, 8).Draw(rt, "tensorOff"),
			PackedOff: rapid.Int64Range(0, 8).Draw(rt, "packedOff"),
		}
		hs.First = rapid.IntRange(0, hs.Heads).Draw(rt, "first")
		hs.Count = rapid.IntRange(0, hs.Heads-hs.First).Draw(rt, "count")
		n := int64(hs.Heads*hs.Tokens) * hs.HeadBytes
		m := int64(hs.Count*hs.Tokens) * hs.HeadBytes
		tensor := kerneltest.Fill(hs.TensorOff+n, 3)
		packed := make([]byte, hs.PackedOff+m)
		ops, err := hs.PackOps()
		if err != nil {
			rt.Fatal(err)
		}
		if hs.Layout == kernels.HND && len(ops) > 1 {
			rt.Fatalf("HND head slice took %d ops", len(ops))
		}
		if err := kernels.Copy(packed, tensor, ops); err != nil {
			rt.Fatal(err)
		}
		back := make([]byte, len(tensor))
		ops, err = hs.UnpackOps()
		if err != nil {
			rt.Fatal(err)
		}
		if err := kernels.Copy(back, packed, ops); err != nil {
			rt.Fatal(err)
		}
		for h := 0; h < hs.Heads; h++ {
			for tk := 0; tk < hs.Tokens; tk++ {
				for k := int64(0); k < hs.HeadBytes; k++ {
					orig := tensor[hs.TensorOff+headAt(hs.Layout, hs.Heads, hs.Tokens, hs.HeadBytes, h, tk, k)]
					got := back[hs.TensorOff+headAt(hs.Layout, hs.Heads, hs.Tokens, hs.HeadBytes, h, tk, k)]
					in := h >= hs.First && h < hs.First+hs.Count
					if in {
						p := packed[hs.PackedOff+headAt(hs.Layout, hs.Count, hs.Tokens, hs.HeadBytes, h-hs.First, tk, k)]
						if p != orig || got != orig {
							rt.Fatalf("head %d token %d byte %d: packed %d, unpacked %d, want %d", h, tk, k, p, got, orig)
						}
					} else if got != 0 {
						rt.Fatalf("head %d outside the slice was written", h)
					}
				}
			}
		}
	})
	bad := []kernels.HeadSlice{
		{Heads: 4, First: 3, Count: 2},
		{Heads: 4, Count: -1},
		{Heads: 4, Count: 1, HeadBytes: -2},
		{Layout: 7, Heads: 1, Count: 1},
		{Heads: 1 << 40, Tokens: 1 << 40, HeadBytes: 1 << 20, Count: 1},
	}
	for _, hs := range bad {
		if _, err := hs.PackOps(); err == nil {
			t.Errorf("PackOps(%+v) succeeded", hs)
		}
	}
}

func TestRegroup(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		r := kernels.Regroup{
			Tokens:         rapid.IntRange(0, 40).Draw(rt, "tokens"),
			SrcStart:       rapid.IntRange(0, 9).Draw(rt, "srcStart"),
			DstStart:       rapid.IntRange(0, 9).Draw(rt, "dstStart"),
			SrcBlockTokens: rapid.IntRange(1, 9).Draw(rt, "srcBS"),
			DstBlockTokens: rapid.IntRange(1, 9).Draw(rt, "dstBS"),
			TokenBytes:     rapid.Int64Range(1, 4).Draw(rt, "tokenBytes"),
			Planes:         rapid.IntRange(0, 3).Draw(rt, "planes"),
		}
		planes := max(r.Planes, 1)
		table := func(start, bs int, label string) ([]int64, int64) {
			nb := (start+r.Tokens+bs-1)/bs + 1
			page := int64(bs*planes) * r.TokenBytes
			order := make([]int64, nb)
			for i := range order {
				order[i] = int64(i)
			}
			order = rapid.Permutation(order).Draw(rt, label)
			for i := range order {
				order[i] *= page
			}
			return order, int64(nb) * page
		}
		var srcLen, dstLen int64
		r.SrcBlocks, srcLen = table(r.SrcStart, r.SrcBlockTokens, "srcTable")
		r.DstBlocks, dstLen = table(r.DstStart, r.DstBlockTokens, "dstTable")
		src := kerneltest.Fill(srcLen, 4)
		got, want := make([]byte, dstLen), make([]byte, dstLen)
		ops, err := r.Ops()
		if err != nil {
			rt.Fatal(err)
		}
		if err := kernels.Copy(got, src, ops); err != nil {
			rt.Fatal(err)
		}
		at := func(blocks []int64, bs, pos, p int) int64 {
			return blocks[pos/bs] + (int64(p*bs)+int64(pos%bs))*r.TokenBytes
		}
		for p := 0; p < planes; p++ {
			for i := 0; i < r.Tokens; i++ {
				s := at(r.SrcBlocks, r.SrcBlockTokens, r.SrcStart+i, p)
				d := at(r.DstBlocks, r.DstBlockTokens, r.DstStart+i, p)
				copy(want[d:d+r.TokenBytes], src[s:s+r.TokenBytes])
			}
		}
		if !bytes.Equal(got, want) {
			rt.Fatalf("regroup differs")
		}
	})
	short := kernels.Regroup{Tokens: 9, SrcBlockTokens: 4, DstBlockTokens: 16, TokenBytes: 1,
		SrcBlocks: []int64{0, 4}, DstBlocks: []int64{0}}
	if _, err := short.Ops(); !errors.Is(err, kernels.ErrOutOfRange) {
		t.Errorf("short table: %v, want ErrOutOfRange", err)
	}
	zero := kernels.Regroup{Tokens: 1, TokenBytes: 1, DstBlockTokens: 1, SrcBlocks: []int64{0}, DstBlocks: []int64{0}}
	if _, err := zero.Ops(); !errors.Is(err, kernels.ErrInvalid) {
		t.Errorf("zero block size: %v, want ErrInvalid", err)
	}
	neg := kernels.Regroup{Tokens: 1, TokenBytes: 1, SrcBlockTokens: 1, DstBlockTokens: 1, SrcBlocks: []int64{-5}, DstBlocks: []int64{0}}
	if _, err := neg.Ops(); !errors.Is(err, kernels.ErrInvalid) {
		t.Errorf("negative block offset: %v, want ErrInvalid", err)
	}
}

func TestStridedOps(t *testing.T) {
	ops, err := kernels.Strided{Count: 4, Len: 8, SrcOff: 2, SrcStride: 8, DstOff: 1, DstStride: 8}.Ops()
	if err != nil || len(ops) != 1 || ops[0] != (kernels.CopyOp{Dst: 1, Src: 2, Len: 32}) {
		t.Fatalf("contiguous strided = %v, %v; want one op of 32 bytes", ops, err)
	}
	ops, err = kernels.Strided{Count: 3, Len: 2, SrcStride: 5, DstStride: 2}.Ops()
	want := []kernels.CopyOp{{0, 0, 2}, {2, 5, 2}, {4, 10, 2}}
	if err != nil || len(ops) != 3 || ops[0] != want[0] || ops[1] != want[1] || ops[2] != want[2] {
		t.Fatalf("strided = %v, %v; want %v", ops, err, want)
	}
	if _, err := (kernels.Strided{Count: -1}).Ops(); !errors.Is(err, kernels.ErrInvalid) {
		t.Errorf("negative count: %v", err)
	}
	if _, err := (kernels.Strided{Count: 3, Len: 1, SrcStride: 1 << 62}).Ops(); !errors.Is(err, kernels.ErrOutOfRange) {
		t.Errorf("overflowing stride: %v", err)
	}
}
