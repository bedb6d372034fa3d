package kernels_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
	"pgregory.net/rapid"
)

// TestTransposeMatchesReference runs random transposes, with misaligned
// offsets and between slices that may share an array, against the reference.
func TestTransposeMatchesReference(t *testing.T) {
	modes(t, func(t *testing.T) {
		rapid.Check(t, func(rt *rapid.T) {
			tr, dstLen, srcLen := kerneltest.DrawTranspose(rt, 200)
			size := dstLen + srcLen
			d0 := rapid.Int64Range(0, size-dstLen).Draw(rt, "dstAt")
			s0 := rapid.Int64Range(0, size-srcLen).Draw(rt, "srcAt")
			if rapid.Bool().Draw(rt, "apart") {
				d0, s0 = 0, dstLen
			}
			arr, want := kerneltest.Fill(size, 9), kerneltest.Fill(size, 9)
			alias := dstLen > 0 && srcLen > 0 && d0 < s0+srcLen && s0 < d0+dstLen
			werr := kerneltest.ValidateTranspose(tr, dstLen, srcLen, alias, s0-d0)
			if werr == nil {
				kerneltest.Transpose(want[d0:d0+dstLen], kerneltest.Fill(size, 9)[s0:s0+srcLen], tr)
			}
			err := kernels.RunTranspose(arr[d0:d0+dstLen], arr[s0:s0+srcLen], tr)
			if !kerneltest.SameClass(err, werr) {
				rt.Fatalf("RunTranspose = %v, reference says %v", err, werr)
			}
			if !bytes.Equal(arr, want) {
				rt.Fatalf("memory differs from the reference")
			}
		})
	})
}

// TestAttentionLayouts fills an HND page with the coordinates of every
// element, converts it to NHD and back, and checks every coordinate.
func TestAttentionLayouts(t *testing.T) {
	modes(t, func(t *testing.T) {
		const heads, tokens, dim, blocks = 5, 7, 3, 3 // 2-byte elements
		hb := dim * 2
		page := int64(heads * tokens * hb)
		hnd := make([]byte, page*blocks)
		for b := 0; b < blocks; b++ {
			for h := 0; h < heads; h++ {
				for tk := 0; tk < tokens; tk++ {
					for d := 0; d < dim; d++ {
						o := int64(b)*page + int64(((h*tokens+tk)*dim+d)*2)
						hnd[o], hnd[o+1] = byte(b*16+h), byte(tk*16+d)
					}
				}
			}
		}
		nhd := make([]byte, len(hnd))
		tr := kernels.HNDToNHD(heads, tokens, hb).Batched(blocks, page, page)
		if err := kernels.RunTranspose(nhd, hnd, tr); err != nil {
			t.Fatal(err)
		}
		for b := 0; b < blocks; b++ {
			for tk := 0; tk < tokens; tk++ {
				for h := 0; h < heads; h++ {
					for d := 0; d < dim; d++ {
						o := int64(b)*page + int64(((tk*heads+h)*dim+d)*2)
						if nhd[o] != byte(b*16+h) || nhd[o+1] != byte(tk*16+d) {
							t.Fatalf("NHD block %d token %d head %d dim %d = %x", b, tk, h, d, nhd[o:o+2])
						}
					}
				}
			}
		}
		back := make([]byte, len(hnd))
		if err := kernels.RunTranspose(back, nhd, kernels.NHDToHND(heads, tokens, hb).Batched(blocks, page, page)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, hnd) {
			t.Fatal("HND -> NHD -> HND is not the identity")
		}
	})
}

// TestConvLayouts checks DS -> SD on element coordinates and the round trip
// for 1, 2 and 4-byte elements.
func TestConvLayouts(t *testing.T) {
	for _, es := range []int{1, 2, 4} {
		const dim, rows = 37, 3
		ds := make([]byte, dim*rows*es)
		for c := 0; c < dim; c++ {
			for r := 0; r < rows; r++ {
				for k := 0; k < es; k++ {
					ds[(c*rows+r)*es+k] = byte(c*4 + r + k*128)
				}
			}
		}
		sd := make([]byte, len(ds)+1)[1:] // misaligned for es > 1
		if err := kernels.RunTranspose(sd, ds, kernels.DSToSD(dim, rows, es)); err != nil {
			t.Fatal(err)
		}
		for r := 0; r < rows; r++ {
			for c := 0; c < dim; c++ {
				for k := 0; k < es; k++ {
					if got := sd[(r*dim+c)*es+k]; got != byte(c*4+r+k*128) {
						t.Fatalf("elem %d: SD row %d dim %d byte %d = %d", es, r, c, k, got)
					}
				}
			}
		}
		back := make([]byte, len(ds))
		if err := kernels.RunTranspose(back, sd, kernels.SDToDS(dim, rows, es)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, ds) {
			t.Fatalf("elem %d: DS -> SD -> DS is not the identity", es)
		}
	}
}

func TestTransposeErrors(t *testing.T) {
	buf := make([]byte, 64)
	ok := kernels.Transpose{Batches: 1, Rows: 2, Cols: 4, ItemBytes: 2}
	for _, tc := range []struct {
		name     string
		dst, src []byte
		tr       kernels.Transpose
		want     error
	}{
		{"zero item", buf[:32], buf[32:], kernels.Transpose{Batches: 1, Rows: 1, Cols: 1}, kernels.ErrInvalid},
		{"negative rows", buf[:32], buf[32:], kernels.Transpose{Batches: 1, Rows: -1, Cols: 1, ItemBytes: 1}, kernels.ErrInvalid},
		{"negative stride", buf[:32], buf[32:], ok.Batched(2, -16, 16), kernels.ErrInvalid},
		{"negative offset", buf[:32], buf[32:], ok.At(-1, 0), kernels.ErrInvalid},
		{"src short", buf[:32], buf[32:40], ok, kernels.ErrOutOfRange},
		{"dst short", buf[:15], buf[32:], ok, kernels.ErrOutOfRange},
		{"offset past end", buf[:32], buf[32:], ok.At(17, 0), kernels.ErrOutOfRange},
		{"batches past end", buf[:32], buf[32:], ok.Batched(3, 16, 16), kernels.ErrOutOfRange},
		{"size overflow", buf[:32], buf[32:], kernels.Transpose{Batches: 1, Rows: math.MaxInt32, Cols: math.MaxInt32, ItemBytes: math.MaxInt32}, kernels.ErrOutOfRange},
		{"stride overflow", buf[:32], buf[32:], ok.Batched(3, math.MaxInt64/2, 16), kernels.ErrOutOfRange},
		{"dst batches overlap", buf[:32], buf[32:], ok.Batched(2, 16, 8), kernels.ErrOverlap},
		{"in place", buf, buf, ok, kernels.ErrOverlap},
		{"shifted", buf[4:], buf[:40], ok, kernels.ErrOverlap},
		{"interleaved batches", buf, buf, ok.Batched(2, 32, 32).At(16, 8), kernels.ErrOverlap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range buf {
				buf[i] = byte(i)
			}
			before := bytes.Clone(buf)
			if err := kernels.RunTranspose(tc.dst, tc.src, tc.tr); !errors.Is(err, tc.want) {
				t.Fatalf("RunTranspose = %v, want %v", err, tc.want)
			}
			if !bytes.Equal(buf, before) {
				t.Fatal("failed RunTranspose wrote memory")
			}
		})
	}
	// Interleaved batches that do not overlap are fine, and so is a source
	// read by every batch (stride 0).
	if err := kernels.RunTranspose(buf, buf, ok.Batched(2, 32, 32).At(16, 0)); err != nil {
		t.Fatal(err)
	}
	if err := kernels.RunTranspose(buf[:32], buf[32:48], ok.Batched(2, 0, 16)); err != nil {
		t.Fatal(err)
	}
}
