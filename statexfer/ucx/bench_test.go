package ucx

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// BenchmarkScatteredRead reads 4096 x 64 KiB shuffled blocks of a 256 MiB
// region between two workers of this process, through the batch API and
// through RawRead, on shm (mapped, one-sided) and tcp (emulated), next to a
// plain copy of the same ranges between two ordinary buffers. b.SetBytes
// makes "go test -bench" report MB/s; the path is in the name and checked.
func BenchmarkScatteredRead(b *testing.B) {
	const n, size = 4096, 64 << 10
	b.Run("memcpy", func(b *testing.B) {
		src := make([]byte, n*size)
		dst := make([]byte, n*size)
		fill(src, 1)
		perm := scatterPerm(n)
		fill(dst, 2) // touch every page before timing
		b.SetBytes(n * size)
		for b.Loop() {
			for i, j := range perm {
				copy(dst[i*size:(i+1)*size], src[j*size:(j+1)*size])
			}
		}
	})
	for _, c := range []struct {
		name string
		cfg  Config
		path Path
	}{
		{"shm-mapped", Config{UCX: shmTLS()}, PathMapped},
		{"shm-onesided", Config{UCX: shmTLS(), DisableMapped: true}, PathOneSided},
		{"tcp-emulated", Config{UCX: tcpTLS()}, PathEmulated},
		{"peer-emulated", Config{ErrMode: ErrModePeer, DisableMapped: true}, PathEmulated},
	} {
		b.Run(c.name, func(b *testing.B) {
			x := newPairB(b, c.cfg)
			src := alloc(b, x.P, n*size)
			fill(src.Bytes(), 1)
			dst := alloc(b, x.D, n*size)
			r := importRemote(b, x.dp, src)
			ops := scatteredPerm(dst, r, n, size)
			warm, err := x.dp.ReadBatch(ops) // faults in mappings, wires up
			if err != nil {
				b.Fatal(err)
			}
			wait(b, warm)
			b.SetBytes(n * size)
			for b.Loop() {
				bt, err := x.dp.ReadBatch(ops)
				if err != nil {
					b.Fatal(err)
				}
				if res := wait(b, bt); res.Err != nil {
					b.Fatal(res.Err)
				}
				if bt.Path() != c.path {
					b.Fatalf("path %v, want %v", bt.Path(), c.path)
				}
			}
		})
		b.Run(c.name+"-raw", func(b *testing.B) {
			x := newPairB(b, c.cfg)
			src := alloc(b, x.P, n*size)
			fill(src.Bytes(), 1)
			dst := alloc(b, x.D, n*size)
			r := importRemote(b, x.dp, src)
			ops := scatteredPerm(dst, r, n, size)
			ranges := make([]Range, n)
			for i, op := range ops {
				ranges[i] = Range{RemoteOff: op.RemoteOff, LocalOff: op.LocalOff, Len: op.Len}
			}
			mapped := c.path == PathMapped
			if _, err := x.dp.RawRead(dst, r, ranges, mapped); err != nil { // warm-up
				b.Fatal(err)
			}
			b.SetBytes(n * size)
			var ns float64
			for b.Loop() {
				res, err := x.dp.RawRead(dst, r, ranges, mapped)
				if err != nil {
					b.Fatal(err)
				}
				ns += float64(res.Elapsed)
			}
			b.ReportMetric(float64(b.N)*n*size/ns, "GB/s(timed-in-C)")
		})
	}
}

func scatterPerm(n int) []int {
	ops := scattered(nil, nil, n, 1, 99)
	perm := make([]int, n)
	for i, op := range ops {
		perm[i] = int(op.RemoteOff)
	}
	return perm
}

func scatteredPerm(dst *Memory, r *Remote, n int, size uint64) []transport.Op {
	return scattered(dst, r, n, size, 99)
}

// BenchmarkMappedSmallReads reads 131072 scattered 2 KiB blocks of a 256
// MiB region (gpt-oss-120b's read size) through ReadRanges on the mapped
// path, next to copy() of the same ranges from the same mapped source
// into the same destination: the per-read cost of the mapped path.
func BenchmarkMappedSmallReads(b *testing.B) {
	const n, size = 131072, 2 << 10
	x := newPairB(b, Config{UCX: shmTLS()})
	src := alloc(b, x.P, n*size)
	fill(src.Bytes(), 1)
	dst := alloc(b, x.D, n*size)
	r := importRemote(b, x.dp, src)
	ops := scatteredPerm(dst, r, n, size)
	ranges := make([]transport.Range, n)
	for i, op := range ops {
		ranges[i] = transport.Range{LocalOff: op.LocalOff, RemoteOff: op.RemoteOff, Len: op.Len}
	}
	runs := []transport.Ranges{{Local: dst, Remote: r, Ranges: ranges}}
	from, to := r.MappedBytes(), dst.Bytes()
	if from == nil {
		b.Skip("not mapped")
	}
	warm, err := x.dp.ReadRanges(runs) // faults in the mapping and dst
	if err != nil {
		b.Fatal(err)
	}
	wait(b, warm)
	b.Run("memcpy", func(b *testing.B) {
		b.SetBytes(n * size)
		for b.Loop() {
			for _, g := range ranges {
				copy(to[g.LocalOff:g.LocalOff+g.Len], from[g.RemoteOff:g.RemoteOff+g.Len])
			}
		}
	})
	b.Run("mapped", func(b *testing.B) {
		b.SetBytes(n * size)
		for b.Loop() {
			bt, err := x.dp.ReadRanges(runs)
			if err != nil {
				b.Fatal(err)
			}
			if res := wait(b, bt); res.Err != nil {
				b.Fatal(res.Err)
			}
			if bt.(*Batch).Path() != PathMapped {
				b.Fatal("not mapped")
			}
		}
	})
}
