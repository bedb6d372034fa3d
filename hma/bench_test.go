package hma

import (
	"strconv"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// BenchmarkAllocFree measures block alloc + free throughput through the
// public API: each iteration adds a request, allocates its blocks in one
// call and frees them. The blocks/s metric counts blocks allocated (and
// freed) per second on one core.
func BenchmarkAllocFree(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"full", Config{
			Groups:        []GroupSpec{full(16)},
			Pools:         []PoolSpec{{NumBlocks: 1 << 12}},
			EnableCaching: true,
		}},
		{"hybrid", Config{
			Groups: []GroupSpec{full(16), {Kind: groups.SlidingWindow, BlockSize: 16, Window: 4096},
				{Kind: groups.Recurrent, BlockSize: 16}},
			Pools:                []PoolSpec{{NumBlocks: 1 << 12}},
			RecurrentMode:        RecurrentAll,
			NumSpeculativeTokens: 2,
			EnableCaching:        true,
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a := mustNew(b, bc.cfg)
			prompt := toks(1024, 0)
			ids := make([]ReqID, 64)
			for i := range ids {
				ids[i] = ReqID("r" + strconv.Itoa(i))
			}
			free0 := a.NumFree(0)
			ok(b, a.AddRequest(ids[0], prompt, 0))
			ok(b, a.Allocate(ids[0], AllocSpec{New: len(prompt)}))
			perReq := free0 - a.NumFree(0)
			ok(b, a.Free(ids[0]))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := ids[i%len(ids)]
				if err := a.AddRequest(id, prompt, 0); err != nil {
					b.Fatal(err)
				}
				if err := a.Allocate(id, AllocSpec{New: len(prompt)}); err != nil {
					b.Fatal(err)
				}
				if err := a.Free(id); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(perReq)*float64(b.N)/b.Elapsed().Seconds(), "blocks/s")
			if a.NumFree(0) != free0 {
				b.Fatalf("leak: %d free, want %d", a.NumFree(0), free0)
			}
		})
	}
}

// BenchmarkScheduleStep256 measures one decode scheduling step for 256
// running hybrid requests (full attention, sliding window, recurrent align
// with speculative scratch, prefix caching on): per request append the
// sampled token, allocate one new token plus one lookahead slot, commit it
// (hashing and caching each block that fills, dropping out-of-window
// blocks). Requests that reach 2048 tokens are freed and replaced by a new
// 512-token prefill in the same step.
func BenchmarkScheduleStep256(b *testing.B) {
	const running, prompt, limit = 256, 512, 2048
	cfg := Config{
		Groups: []GroupSpec{full(16), {Kind: groups.SlidingWindow, BlockSize: 16, Window: 128},
			{Kind: groups.Recurrent, BlockSize: 16}},
		Pools:                []PoolSpec{{NumBlocks: running * (limit/16 + 16)}},
		RecurrentMode:        RecurrentAlign,
		NumSpeculativeTokens: 1,
		EnableCaching:        true,
	}
	a := mustNew(b, cfg)
	ids := make([]ReqID, running)
	gen := 0
	start := func(i int) {
		gen++
		ids[i] = ReqID("req-" + strconv.Itoa(gen))
		ok(b, a.AddRequest(ids[i], toks(prompt, uint32(gen)), 0))
		ok(b, a.Allocate(ids[i], AllocSpec{New: prompt}))
		ok(b, a.Commit(ids[i], prompt))
	}
	lens := make([]int, running)
	for i := range ids {
		start(i)
		// stagger lengths so refills spread over steps
		for j := 0; j < i*4; j++ {
			ok(b, a.AppendTokens(ids[i], uint32(j)))
			ok(b, a.Allocate(ids[i], AllocSpec{New: 1}))
			ok(b, a.Commit(ids[i], 1))
		}
		lens[i] = prompt + i*4
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i, id := range ids {
			if lens[i] >= limit {
				if err := a.Free(id); err != nil {
					b.Fatal(err)
				}
				start(i)
				lens[i] = prompt
				continue
			}
			if err := a.AppendTokens(id, uint32(n)); err != nil {
				b.Fatal(err)
			}
			if err := a.Allocate(id, AllocSpec{New: 1, Lookahead: 1}); err != nil {
				b.Fatal(err)
			}
			if err := a.Commit(id, 1); err != nil {
				b.Fatal(err)
			}
			lens[i]++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*running)/b.Elapsed().Seconds(), "req-steps/s")
	if err := a.CheckInvariants(); err != nil {
		b.Fatal(err)
	}
}
