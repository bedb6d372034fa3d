package plan

import (
	"fmt"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
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

// BenchmarkRunSteps: D's post-steps of a staged gpt-oss-120b 4 -> 8 plan
// at 8,192 tokens (scatters of 2 KiB pieces from staging into the cache)
// and of qwen3.5-27b 2 -> 4 with D's conv layout SD (transposes), run
// through the CPU engine (RunSteps) and, as the baseline, by the same
// loop calling the package kernels directly (the executor before engines
// were passed in), interleaved in one run on the same memory. It measures
// the dispatch the engine adds, not the copies (the same in both).
func BenchmarkRunSteps(b *testing.B) {
	for _, c := range []struct {
		model string
		p, d  groups.InstanceConfig
		tok   int
	}{
		{"gpt-oss-120b", groups.InstanceConfig{TP: 4}, groups.InstanceConfig{TP: 8}, 8192},
		{"qwen3.5-27b", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 4, ConvLayout: groups.SD}, 8192},
	} {
		m, err := groups.Preset(c.model, groups.PresetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		pl, req, err := Synthetic(m, c.p, c.d, c.tok, 0, 1)
		if err != nil {
			b.Fatal(err)
		}
		p, err := pl.Plan(0, req, Staged)
		if err != nil {
			b.Fatal(err)
		}
		mem := NewRankMemory(pl.D.Ranks[0], pl.D.NumBlocks)
		mem.EnsureStaging(p.ScratchBytes)
		cpu := kernels.NewCPU()
		for _, v := range []struct {
			name string
			run  func() error
		}{
			{"engine", func() error { return RunSteps(cpu, mem, p.Post) }},
			{"direct-calls", func() error { return runStepsDirect(mem, p.Post) }},
		} {
			b.Run(c.model+"/"+v.name, func(b *testing.B) {
				b.SetBytes(p.Bytes())
				for b.Loop() {
					if err := v.run(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(p.Post)), "steps")
			})
		}
	}
}

// runStepsDirect is RunSteps as it was before the engine: the package
// kernels called on the host views.
func runStepsDirect(m *RankMemory, steps []Step) error {
	var ops []kernels.CopyOp
	for i := 0; i < len(steps); {
		s := steps[i]
		if s.Kind == StepTranspose {
			t := kernels.Transpose{Batches: 1, Rows: s.Rows, Cols: s.Cols, ItemBytes: s.ItemBytes, SrcOff: s.SrcOff, DstOff: s.DstOff}
			if err := kernels.RunTranspose(m.Region(s.Dst), m.Region(s.Src), t); err != nil {
				return err
			}
			i++
			continue
		}
		j := i
		ops = ops[:0]
		for ; j < len(steps) && steps[j].Kind == StepCopy && steps[j].Src == s.Src && steps[j].Dst == s.Dst; j++ {
			ops = append(ops, kernels.CopyOp{Dst: steps[j].DstOff, Src: steps[j].SrcOff, Len: steps[j].Len})
		}
		if err := kernels.Copy(m.Region(s.Dst), m.Region(s.Src), ops); err != nil {
			return err
		}
		i = j
	}
	return nil
}
