package refmodel_test

import (
	"fmt"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// BenchmarkPrefill is the reference model's prefill of one prompt of n
// tokens on qwen3.5-27b's miniature (GDN and full attention layers) into
// the store the engines use: a RankStore over tp 2 rank memories in the
// default layouts (HND, DS, 16-token blocks). Reported: ns per op (one
// whole prefill) and ns per token. What it leaves out: decode steps and
// the transfer; the engines add their own bookkeeping on top.
func BenchmarkPrefill(b *testing.B) {
	mini := presetMini(b, "qwen3.5-27b", groups.PresetOptions{})
	m := refmodel.New(mini, 9)
	for _, n := range []int{100, 1000, 2000} {
		prompt := make([]uint32, n)
		for i := range prompt {
			prompt[i] = uint32(i*7+3) % refmodel.Vocab
		}
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				in := newInstance(b, mini, groups.InstanceConfig{TP: 2}, n, 0, 5)
				b.StartTimer()
				if _, err := m.Prefill(in.store, prompt, 0, n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/token")
		})
	}
}
