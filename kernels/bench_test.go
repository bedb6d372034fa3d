package kernels_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// Benchmark buffers, shared and touched once: a 512 MiB source (bigger than
// any cache) and a 256 MiB destination; 768 MiB in all.
var (
	benchOnce   sync.Once
	benchSrc    []byte
	benchDst    []byte
	memcpyMu    sync.Mutex
	memcpyRates = map[int64]float64{}
)

const (
	benchSrcLen = 512 << 20
	benchDstLen = 256 << 20
)

func benchBuffers() ([]byte, []byte) {
	benchOnce.Do(func() {
		benchSrc = make([]byte, benchSrcLen)
		benchDst = make([]byte, benchDstLen)
		for i := 0; i < len(benchSrc); i += 4096 {
			benchSrc[i] = byte(i >> 12)
		}
		for i := 0; i < len(benchDst); i += 4096 {
			benchDst[i] = 1
		}
	})
	return benchDst, benchSrc
}

// memcpyRate returns the best bytes per second of one copy() of n bytes
// between the benchmark buffers, measured once per n.
func memcpyRate(n int64) float64 {
	memcpyMu.Lock()
	defer memcpyMu.Unlock()
	if r, ok := memcpyRates[n]; ok {
		return r
	}
	dst, src := benchBuffers()
	best := time.Duration(1 << 62)
	for range 3 {
		start := time.Now()
		copy(dst[:n], src[benchSrcLen-n:])
		best = min(best, time.Since(start))
	}
	r := float64(n) / best.Seconds()
	memcpyRates[n] = r
	return r
}

// reportRatio reports the throughput of the benchmark relative to memcpy of
// the same bytes.
func reportRatio(b *testing.B, n int64) {
	rate := float64(n) * float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate/memcpyRate(n), "memcpy-ratio")
}

func BenchmarkMemcpyBaseline(b *testing.B) {
	dst, src := benchBuffers()
	n := int64(benchDstLen)
	b.SetBytes(n)
	b.ResetTimer()
	for b.Loop() {
		copy(dst[:n], src[benchSrcLen-n:])
	}
	b.StopTimer()
	reportRatio(b, n)
}

func BenchmarkCopyGather(b *testing.B) {
	for _, c := range []struct {
		name  string
		count int
		size  int64
	}{
		{"4096x64KiB", 4096, 64 << 10},
		{"16384x16KiB", 16384, 16 << 10},
		{"65536x4KiB", 65536, 4 << 10},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst, src := benchBuffers()
			// Distinct random chunks of the source, in random order.
			chunks := rand.New(rand.NewPCG(1, 2)).Perm(benchSrcLen / int(c.size))[:c.count]
			ranges := make([]kernels.Range, c.count)
			for i, ch := range chunks {
				ranges[i] = kernels.Range{Off: int64(ch) * c.size, Len: c.size}
			}
			ops := kernels.GatherOps(ranges, 0)
			n := kernels.TotalBytes(ops)
			b.SetBytes(n)
			b.ResetTimer()
			for b.Loop() {
				if err := kernels.Copy(dst, src, ops); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportRatio(b, n)
		})
	}
}

func BenchmarkTranspose(b *testing.B) {
	for _, c := range []struct {
		name string
		tr   kernels.Transpose
	}{
		// 16 heads x 16 tokens x 128 dims bf16: 64 KiB pages, 2048 of them.
		{"HNDToNHD/16x16x128bf16x2048", kernels.HNDToNHD(16, 16, 256).Batched(2048, 64<<10, 64<<10)},
		{"NHDToHND/16x16x128bf16x2048", kernels.NHDToHND(16, 16, 256).Batched(2048, 64<<10, 64<<10)},
		// Conv states (8192, 3) bf16: 48 KiB each, 2048 of them.
		{"DSToSD/8192x3bf16x2048", kernels.DSToSD(8192, 3, 2).Batched(2048, 48<<10, 48<<10)},
		{"SDToDS/8192x3bf16x2048", kernels.SDToDS(8192, 3, 2).Batched(2048, 48<<10, 48<<10)},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst, src := benchBuffers()
			n := c.tr.MatrixBytes() * int64(c.tr.Batches)
			b.SetBytes(n)
			b.ResetTimer()
			for b.Loop() {
				if err := kernels.RunTranspose(dst, src, c.tr); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportRatio(b, n)
		})
	}
}
