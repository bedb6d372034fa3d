package kernels_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
)

// The 3-row, 2-byte fast paths (DS<->SD of kernel-4 conv states) against
// the naive reference, for every length around the 4-channel step, with
// batches and offsets.
func TestConvTransposeFastPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dim := range []int{1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 127, 1000, 8192} {
		for _, dir := range []string{"DS->SD", "SD->DS"} {
			tr := kernels.DSToSD(dim, 3, 2)
			if dir == "SD->DS" {
				tr = kernels.SDToDS(dim, 3, 2)
			}
			m := tr.MatrixBytes()
			tr = tr.Batched(3, m+6, m+10).At(4, 2)
			src := make([]byte, 4+3*(m+6))
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			got := make([]byte, 2+3*(m+10))
			want := bytes.Clone(got)
			if err := kernels.RunTranspose(got, src, tr); err != nil {
				t.Fatal(err)
			}
			kerneltest.Transpose(want, src, tr)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s dim %d: differs from the reference", dir, dim)
			}
		}
	}
}
