package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// Benchmark buffers, shared and touched once: a 1 GiB source and a 1 GiB
// destination, far bigger than any cache, so that every benchmark measures
// copies from and to memory.
var (
	benchOnce sync.Once
	benchSrc  []byte
	benchDst  []byte
)

const benchLen = 1 << 30

func benchBuffers() ([]byte, []byte) {
	benchOnce.Do(func() {
		benchSrc = make([]byte, benchLen)
		benchDst = make([]byte, benchLen)
		for i := 0; i < benchLen; i += 4096 {
			benchSrc[i] = byte(i >> 12)
			benchDst[i] = 1
		}
	})
	return benchDst, benchSrc
}

// walk hands out consecutive n-byte regions of the benchmark buffers,
// wrapping around, so that each run copies memory that the runs before it
// have pushed out of the caches.
type walk struct {
	n, at int64
}

func (w *walk) next() int64 {
	if w.at+w.n > benchLen {
		w.at = 0
	}
	at := w.at
	w.at += w.n
	return at
}

// baseline is the work a benchmark compares its kernel with: the same bytes
// of the same buffers, moved another way.
type baseline struct {
	name string
	run  func()
}

// versus runs kernel as the benchmark, moving n bytes per run, and each
// baseline once per run with the timer stopped, interleaved: on even runs
// the baselines go first, on odd runs the kernel does, so that neither side
// always finds the caches warmed or flushed by the other. It reports each
// baseline's throughput (name_GB/s) and the kernel's throughput relative to
// it (x_name).
func versus(b *testing.B, n int64, kernel func(), baselines ...baseline) {
	b.SetBytes(n)
	spent := make([]time.Duration, len(baselines))
	runBaselines := func() {
		b.StopTimer()
		for i, bl := range baselines {
			start := time.Now()
			bl.run()
			spent[i] += time.Since(start)
		}
		b.StartTimer()
	}
	runs := 0
	for b.Loop() {
		if runs%2 == 0 {
			runBaselines()
		}
		kernel()
		if runs%2 == 1 {
			runBaselines()
		}
		runs++
	}
	b.StopTimer()
	for i, bl := range baselines {
		b.ReportMetric(float64(n)*float64(runs)/spent[i].Seconds()/1e9, bl.name+"_GB/s")
		b.ReportMetric(spent[i].Seconds()/b.Elapsed().Seconds(), "x_"+bl.name)
	}
}

// BenchmarkMemmove compares Memmove with copy() of the same sizes over
// consecutive regions of the buffers (so the data is in memory, not in the
// caches); each run copies at least 16 MiB. Below StreamThreshold both are
// copy().
func BenchmarkMemmove(b *testing.B) {
	for _, size := range []int64{4 << 10, 64 << 10, 256 << 10, 2 << 20, 16 << 20, 256 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			dst, src := benchBuffers()
			per := max(16<<20/size, 1) // copies per run
			w := walk{n: per * size}
			copies := func(f func(d, s []byte)) func() {
				return func() {
					at := w.next()
					for i := range per {
						o := at + i*size
						f(dst[o:o+size], src[o:o+size])
					}
				}
			}
			versus(b, per*size, copies(kernels.Memmove), baseline{"copy", copies(kernels.CopyPlain)})
		})
	}
}

// BenchmarkCopyScatter moves blocks from random places of the 1 GiB source
// to random places of the 1 GiB destination, as a KV transfer does: 128 MiB
// per run, with Copy (streaming the blocks of StreamThreshold bytes and
// more, on every core) against the same Copy with streaming off (copy() per
// block).
func BenchmarkCopyScatter(b *testing.B) {
	for _, size := range []int64{4 << 10, 16 << 10, 64 << 10, 256 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			dst, src := benchBuffers()
			n := int(128 << 20 / size)
			rng := rand.New(rand.NewPCG(1, uint64(size)))
			from, to := rng.Perm(benchLen / int(size))[:n], rng.Perm(benchLen / int(size))[:n]
			ops := make([]kernels.CopyOp, n)
			for i := range ops {
				ops[i] = kernels.CopyOp{Dst: int64(to[i]) * size, Src: int64(from[i]) * size, Len: size}
			}
			run := func() {
				if err := kernels.Copy(dst, src, ops); err != nil {
					b.Fatal(err)
				}
			}
			versus(b, int64(n)*size, run, baseline{"plain", func() {
				defer kernels.SetStreamThreshold(1 << 62)()
				run()
			}})
		})
	}
}

// BenchmarkCopyGather gathers distinct random chunks of the source, in
// random order, into the start of the destination, against one copy() of
// the same number of bytes.
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
			chunks := rand.New(rand.NewPCG(1, 2)).Perm(benchLen / int(c.size))[:c.count]
			ranges := make([]kernels.Range, c.count)
			for i, ch := range chunks {
				ranges[i] = kernels.Range{Off: int64(ch) * c.size, Len: c.size}
			}
			ops := kernels.GatherOps(ranges, 0)
			n := kernels.TotalBytes(ops)
			versus(b, n, func() {
				if err := kernels.Copy(dst, src, ops); err != nil {
					b.Fatal(err)
				}
			}, baseline{"memcpy", func() { copy(dst[:n], src[benchLen-n:]) }})
		})
	}
}

// BenchmarkTranspose runs batched transposes, and single conv states as the
// planner runs them (one call per state, 2048 calls per run over memory not
// touched for a while), against memcpy of the same bytes from the same
// source regions to the same destination regions: copy() (x_memcpy; Go's
// copy() streams from 1 MiB, on one core) and Copy (x_Copy: streaming from
// StreamThreshold, on every core for big calls).
func BenchmarkTranspose(b *testing.B) {
	for _, c := range []struct {
		name  string
		tr    kernels.Transpose
		calls int64
	}{
		// 16 heads x 16 tokens x 128 dims bf16: 64 KiB pages, 2048 of them.
		{"HNDToNHD/16x16x128bf16x2048", kernels.HNDToNHD(16, 16, 256).Batched(2048, 64<<10, 64<<10), 1},
		{"NHDToHND/16x16x128bf16x2048", kernels.NHDToHND(16, 16, 256).Batched(2048, 64<<10, 64<<10), 1},
		// Conv states (8192, 3) bf16: 48 KiB each, 2048 of them.
		{"DSToSD/8192x3bf16x2048", kernels.DSToSD(8192, 3, 2).Batched(2048, 48<<10, 48<<10), 1},
		{"SDToDS/8192x3bf16x2048", kernels.SDToDS(8192, 3, 2).Batched(2048, 48<<10, 48<<10), 1},
		// With one speculative token (4 rows), and fp32 states.
		{"DSToSD/8192x4bf16x2048", kernels.DSToSD(8192, 4, 2).Batched(2048, 64<<10, 64<<10), 1},
		{"SDToDS/8192x4bf16x2048", kernels.SDToDS(8192, 4, 2).Batched(2048, 64<<10, 64<<10), 1},
		{"DSToSD/8192x3fp32x1024", kernels.DSToSD(8192, 3, 4).Batched(1024, 96<<10, 96<<10), 1},
		{"SDToDS/8192x3fp32x1024", kernels.SDToDS(8192, 3, 4).Batched(1024, 96<<10, 96<<10), 1},
		// One conv state per call.
		{"DSToSD/8192x3bf16x1", kernels.DSToSD(8192, 3, 2), 2048},
		{"SDToDS/8192x3bf16x1", kernels.SDToDS(8192, 3, 2), 2048},
		{"DSToSD/8192x4bf16x1", kernels.DSToSD(8192, 4, 2), 2048},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst, src := benchBuffers()
			m := c.tr.MatrixBytes() * int64(max(c.tr.Batches, 1)) // bytes of one call
			w := walk{n: m * c.calls}
			var at int64 // first byte of the run's region, in dst and src
			versus(b, m*c.calls, func() {
				at = w.next()
				for i := range c.calls {
					o := at + i*m
					if err := kernels.RunTranspose(dst, src, c.tr.At(o, o)); err != nil {
						b.Fatal(err)
					}
				}
			}, baseline{"memcpy", func() {
				for i := range c.calls {
					o := at + i*m
					copy(dst[o:o+m], src[o:o+m])
				}
			}}, baseline{"Copy", func() {
				for i := range c.calls {
					o := at + i*m
					if err := kernels.Copy(dst, src, []kernels.CopyOp{{Dst: o, Src: o, Len: m}}); err != nil {
						b.Fatal(err)
					}
				}
			}})
		})
	}
}

func sizeName(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// BenchmarkStreamThreshold is the measurement behind StreamThreshold: the
// streaming copy (forced, whatever the size) against copy() for single
// blocks around the threshold, on one goroutine, in two settings. Scatter:
// each block from a random place of the source to a random place of the
// destination, 64 MiB per run (memory-bound, as in a transfer). Hot: the
// same block again and again (cache-bound; the streaming copy still goes to
// memory).
func BenchmarkStreamThreshold(b *testing.B) {
	for _, size := range []int64{2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, 256 << 10, 1 << 20} {
		b.Run("Scatter/"+sizeName(size), func(b *testing.B) {
			dst, src := benchBuffers()
			n := int(64 << 20 / size)
			rng := rand.New(rand.NewPCG(2, uint64(size)))
			from, to := rng.Perm(benchLen / int(size))[:n], rng.Perm(benchLen / int(size))[:n]
			copies := func(f func(d, s []byte)) func() {
				return func() {
					for i := range n {
						d, s := int64(to[i])*size, int64(from[i])*size
						f(dst[d:d+size], src[s:s+size])
					}
				}
			}
			versus(b, int64(n)*size, copies(kernels.MemmoveNT), baseline{"copy", copies(kernels.CopyPlain)})
		})
	}
	for _, size := range []int64{4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		b.Run("Hot/"+sizeName(size), func(b *testing.B) {
			dst, src := benchBuffers()
			n := max(16<<20/size, 1)
			copies := func(f func(d, s []byte)) func() {
				return func() {
					for range n {
						f(dst[:size], src[:size])
					}
				}
			}
			versus(b, n*size, copies(kernels.MemmoveNT), baseline{"copy", copies(kernels.CopyPlain)})
		})
	}
}
