package refmodel_test

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// BenchmarkSpeculativeDecode is the cost of a decode step with
// speculation against the plain one, per emitted token, on the same
// miniature (qwen3.5-27b with 3 MTP tokens: GDN layers with scratch slots,
// full attention, the MTP layer), the same 16-token prompt and 32 output
// tokens, the same store (MapStore): plain Generate; the Decoder with its
// own drafter (the miniature's random weights accept few drafts); and the
// Decoder proposing the true continuation (every draft accepted: the
// cheapest speculative case in positions computed per token). Reported:
// ns per emitted token and target positions computed per token. What it
// leaves out: a GPU's batched verify pass, where K+1 positions cost about
// one; here every position costs the same, so speculation can only lose
// per token: the figure is the overhead of the drafts and the verify pass
// on the reference model, not a serving speedup.
func BenchmarkSpeculativeDecode(b *testing.B) {
	mini := presetMini(b, "qwen3.5-27b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 3})
	m := refmodel.New(mini, 9)
	prompt := make([]uint32, 16)
	for i := range prompt {
		prompt[i] = uint32(i*7) % refmodel.Vocab
	}
	const n = 32
	truth, err := m.Generate(refmodel.NewMapStore(mini), prompt, 0, n)
	if err != nil {
		b.Fatal(err)
	}
	seq := append(append([]uint32(nil), prompt...), truth...)
	for _, mode := range []string{"plain", "drafter", "all-accepted"} {
		b.Run(mode, func(b *testing.B) {
			var stats refmodel.SpecStats
			for b.Loop() {
				s := refmodel.NewMapStore(mini)
				if mode == "plain" {
					if _, err := m.Generate(s, prompt, 0, n); err != nil {
						b.Fatal(err)
					}
					continue
				}
				dec := m.NewDecoder()
				if mode == "all-accepted" {
					dec.Propose = func(pos int, _ uint32) uint32 { return seq[pos] }
				}
				if _, err := m.GenerateSpeculative(s, prompt, 0, n, dec); err != nil {
					b.Fatal(err)
				}
				stats.Add(dec.Stats)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/token")
			positions := float64(len(prompt) + n - 1) // plain: one per position
			if mode != "plain" {
				// Prefill positions, plus per step its input and its drafts.
				positions = float64(len(prompt)-1) + float64(stats.Steps+stats.Drafted)/float64(b.N)
			}
			b.ReportMetric(positions/float64(len(prompt)+n-1), "positions/position")
			if stats.Drafted > 0 {
				b.ReportMetric(float64(stats.Accepted)/float64(stats.Drafted), "acceptance")
			}
		})
	}
}
