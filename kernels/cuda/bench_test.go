package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
)

const benchBytes = 256 << 20

// benchPair returns a 512 MiB source and a 256 MiB destination on the GPU.
func benchPair(b *testing.B, e *Engine) (dst, src kernels.Buffer) {
	var err error
	if src, err = e.Alloc(2 * benchBytes); err != nil {
		b.Fatal(err)
	}
	if dst, err = e.Alloc(benchBytes); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Free(); dst.Free() })
	return dst, src
}

// BenchmarkMemcpyDtoD is the baseline: one cuMemcpyDtoD of 256 MiB.
func BenchmarkMemcpyDtoD(b *testing.B) {
	e := openOrSkip(b)
	dst, src := benchPair(b, e)
	b.SetBytes(benchBytes)
	for b.Loop() {
		if err := e.memcpyDtoD(dst, src, benchBytes); err != nil {
			b.Fatal(err)
		}
		if err := e.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyGather gathers 256 MiB of random chunks with the copy
// kernel; compare its MB/s with BenchmarkMemcpyDtoD (goal >= 85%).
func BenchmarkCopyGather(b *testing.B) {
	for _, c := range []struct {
		name  string
		count int
		size  int64
	}{
		{"4096x64KiB", 4096, 64 << 10},
		{"16384x16KiB", 16384, 16 << 10},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := openOrSkip(b)
			dst, src := benchPair(b, e)
			chunks := rand.New(rand.NewPCG(1, 2)).Perm(2 * benchBytes / int(c.size))[:c.count]
			ranges := make([]kernels.Range, c.count)
			for i, ch := range chunks {
				ranges[i] = kernels.Range{Off: int64(ch) * c.size, Len: c.size}
			}
			ops := kernels.GatherOps(ranges, 0)
			b.SetBytes(kernels.TotalBytes(ops))
			for b.Loop() {
				if err := e.Copy(dst, src, ops); err != nil {
					b.Fatal(err)
				}
				if err := e.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTranspose runs the layout transposes on 128 MiB / 96 MiB.
func BenchmarkTranspose(b *testing.B) {
	for _, c := range []struct {
		name string
		tr   kernels.Transpose
	}{
		{"HNDToNHD/16x16x128bf16x2048", kernels.HNDToNHD(16, 16, 256).Batched(2048, 64<<10, 64<<10)},
		{"DSToSD/8192x3bf16x2048", kernels.DSToSD(8192, 3, 2).Batched(2048, 48<<10, 48<<10)},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := openOrSkip(b)
			dst, src := benchPair(b, e)
			b.SetBytes(c.tr.MatrixBytes() * int64(c.tr.Batches))
			for b.Loop() {
				if err := e.Transpose(dst, src, c.tr); err != nil {
					b.Fatal(err)
				}
				if err := e.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
