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

// BenchmarkNotifyRoundTrip: a one-block mapped read, a notification, the
// target's handler echoing it and this side's handler receiving the echo
// (the path of bench transfer's fixed overhead, without the session),
// interleaved with raw rounds (a get and an active-message ping/pong in
// C); reports both means and their ratio.
func BenchmarkNotifyRoundTrip(b *testing.B) {
	x := newPairB(b, Config{UCX: shmTLS()})
	src := alloc(b, x.P, 4096)
	dst := alloc(b, x.D, 4096)
	r := importRemote(b, x.dp, src)
	echo := make(chan struct{}, 1)
	x.pr.check = func(_ PeerID, msg []byte) { _ = x.pd.Notify(msg) }
	x.dr.check = func(PeerID, []byte) { echo <- struct{}{} }
	stop := make(chan struct{})
	defer close(stop)
	for _, rec := range []*recorder{x.pr, x.dr} { // the recorders keep every note: drop them
		go func() {
			for {
				select {
				case <-rec.notes:
				case <-stop:
					return
				}
			}
		}()
	}
	ops := []transport.Op{{Local: dst, Remote: r, Len: 4096}}
	one := func() {
		bt, err := x.dp.ReadBatch(ops)
		if err != nil {
			b.Fatal(err)
		}
		<-bt.Done()
		if err := x.dp.Notify([]byte("done")); err != nil {
			b.Fatal(err)
		}
		<-echo
	}
	for range 100 {
		one()
	}
	var ours, raw time.Duration
	rounds := 0
	for b.Loop() {
		t0 := time.Now()
		for range 100 {
			one()
		}
		ours += time.Since(t0)
		d, err := x.dp.RawRoundTrip(dst, r, 4096, 100)
		if err != nil {
			b.Fatal(err)
		}
		raw += d * 100
		rounds++
	}
	n := float64(rounds * 100)
	b.ReportMetric(float64(ours.Nanoseconds())/n/1e3, "ours-us")
	b.ReportMetric(float64(raw.Nanoseconds())/n/1e3, "raw-us")
	b.ReportMetric(float64(ours)/float64(raw), "x-raw")
}
