package ucx

import (
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// BenchmarkPostCost times posting (ReadRanges until it returns, not the
// copy) of 51,200 small scattered reads of one region pair on the mapped
// path, as the decode session posts them: the per-read cost of checks and
// bookkeeping before copying starts.
func BenchmarkPostCost(b *testing.B) {
	const n, size = 51200, 64
	x := newPairB(b, Config{UCX: shmTLS()})
	src := alloc(b, x.P, n*size)
	dst := alloc(b, x.D, n*size)
	r := importRemote(b, x.dp, src)
	ops := scatteredPerm(dst, r, n, size)
	runs := transport.RunsOf(ops)
	var post time.Duration
	for b.Loop() {
		t0 := time.Now()
		bt, err := x.dp.ReadRanges(runs)
		post += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if res := wait(b, bt); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	b.ReportMetric(float64(post.Nanoseconds())/float64(b.N)/n, "post-ns/read")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "total-ns/read")
}
