package kernels_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
)

// checkTranspose runs tr between random buffers of the sizes it needs (plus
// slack, so that a write past the end shows) and compares with the reference.
func checkTranspose(t *testing.T, rng *rand.Rand, tr kernels.Transpose, slack int64) {
	t.Helper()
	m := tr.MatrixBytes()
	n := int64(max(tr.Batches-1, 0))
	src := make([]byte, tr.SrcOff+n*tr.SrcBatchStride+m+slack)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	got := make([]byte, tr.DstOff+n*tr.DstBatchStride+m+slack)
	for i := range got {
		got[i] = guard
	}
	want := bytes.Clone(got)
	if err := kernels.RunTranspose(got, src, tr); err != nil {
		t.Fatal(err)
	}
	kerneltest.Transpose(want, src, tr)
	if !bytes.Equal(got, want) {
		t.Fatalf("%+v: byte %d differs from the reference", tr, firstDiff(got, want))
	}
}

// The 3-row, 2-byte fast paths (DS<->SD of kernel-4 conv states) against
// the naive reference, for every length around the 4- and 16-channel steps
// and the streaming bands, with batches and offsets (odd ones too), in every
// mode: direct, parallel, streaming and without the assembly kernels.
func TestConvTransposeFastPaths(t *testing.T) {
	modes(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, dim := range []int{1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127,
			1000, 2047, 2048, 2049, 4111, 8192} {
			for _, dir := range []string{"DS->SD", "SD->DS"} {
				tr := kernels.DSToSD(dim, 3, 2)
				if dir == "SD->DS" {
					tr = kernels.SDToDS(dim, 3, 2)
				}
				m := tr.MatrixBytes()
				checkTranspose(t, rng, tr.Batched(3, m+6, m+10).At(4, 2), 7)
				checkTranspose(t, rng, tr.Batched(2, m+1, m+3).At(1, 3), 5)
				checkTranspose(t, rng, tr, 0)
			}
		}
	})
}

// TestTransposeShapes covers the shapes of conv states (rows 1 to 9, 1-, 2-,
// 4- and 8-byte elements, dims that do and do not keep rows 16-byte
// aligned) and attention pages (head vectors of 24 to 512 bytes) at sizes
// where the transposes cut matrices into several bands, against the
// reference, with matrices at aligned and odd offsets, in every mode.
func TestTransposeShapes(t *testing.T) {
	type shape struct{ rows, cols, item int }
	var shapes []shape
	for _, dim := range []int{5, 64, 100, 1024, 1500, 4099} {
		for _, rows := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9} {
			for _, es := range []int{1, 2, 4, 8} {
				shapes = append(shapes, shape{dim, rows, es}, shape{rows, dim, es})
			}
		}
	}
	for _, page := range []shape{{16, 16, 256}, {8, 32, 128}, {32, 8, 64}, {4, 100, 512}, {100, 4, 512}, {70, 70, 8}, {3, 5, 24}, {600, 3, 6}} {
		shapes = append(shapes, page)
	}
	modes(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, s := range shapes {
			t.Run(fmt.Sprintf("%dx%dx%d", s.rows, s.cols, s.item), func(t *testing.T) {
				tr := kernels.Transpose{Batches: 1, Rows: s.rows, Cols: s.cols, ItemBytes: s.item}
				m := tr.MatrixBytes()
				checkTranspose(t, rng, tr, 3)
				checkTranspose(t, rng, tr.Batched(3, m+1, m+5).At(3, 1), 3)
			})
		}
	})
}
