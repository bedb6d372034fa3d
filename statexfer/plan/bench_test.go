package plan

import (
	"fmt"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// BenchmarkPlan397B: one 131,072-token request of qwen3.5-397b-a17b,
// heterogeneous TP in both directions (the DESIGN goal: well under 1 ms).
func BenchmarkPlan397B(b *testing.B) {
	m, err := groups.Preset("qwen3.5-397b-a17b", groups.PresetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, tp := range [][2]int{{8, 2}, {2, 8}} {
		for _, mode := range []Mode{Direct, Staged} {
			b.Run(fmt.Sprintf("P%d_D%d_%s", tp[0], tp[1], mode), func(b *testing.B) {
				pl, req, err := Synthetic(m, groups.InstanceConfig{TP: tp[0]}, groups.InstanceConfig{TP: tp[1]}, 131072, 0, 1)
				if err != nil {
					b.Fatal(err)
				}
				var reads int
				b.ReportAllocs()
				for b.Loop() {
					p, err := pl.Plan(0, req, mode)
					if err != nil {
						b.Fatal(err)
					}
					reads = p.NumReads()
				}
				b.ReportMetric(float64(reads), "reads")
			})
		}
	}
}

// BenchmarkPlanPerRead: qwen3.5-27b 2 -> 4 at 32,768 tokens, decode rank 0
// (the bench transfer row), reported per read.
func BenchmarkPlanPerRead(b *testing.B) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	pl, req, err := Synthetic(m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 4}, 32768, 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	var reads int
	for b.Loop() {
		p, err := pl.Plan(0, req, Direct)
		if err != nil {
			b.Fatal(err)
		}
		reads = p.NumReads()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(reads), "ns/read")
	b.ReportMetric(float64(reads), "reads")
}
