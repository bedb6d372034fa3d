package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// TestSpeculativeDecodeServing: D decodes speculatively (qwen3.5 MTP with
// 3 tokens, GDN layers: scratch slots) and answers what the monolithic
// run without speculation answers, with its drafter proposing the true
// continuation (every draft accepted: accepted drafts are committed as
// known tokens and later requests hit their cached blocks), a wrong token
// (every draft rejected: nothing of them stays in the state), or its own
// guesses; each position is computed once.
func TestSpeculativeDecodeServing(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	prompts := []string{"the capital of France is", "the capital of France is a city", "x"}
	for _, mode := range []string{"right", "wrong", "drafter"} {
		t.Run(mode, func(t *testing.T) {
			truth := map[string][]uint32{}
			var x *pd
			x = newPD(t, m, groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4}, groups.InstanceConfig{TP: 4, BlockSize: 8, KernelBlockSize: 4},
				func(_, d *Config) {
					if mode == "drafter" {
						return
					}
					d.Propose = func(id string, pos int, draft uint32) uint32 {
						seq := truth[id[strings.LastIndex(id, "-")+1:]]
						if pos >= len(seq) {
							t.Errorf("request %s: a proposal for position %d, beyond its %d tokens", id, pos, len(seq))
							return draft
						}
						if mode == "right" {
							return seq[pos]
						}
						return (seq[pos] + 1) % refmodel.Vocab
					}
				})
			for i, prompt := range prompts {
				id := fmt.Sprintf("s%d", i)
				want := reference(t, x.d, prompt, n)
				truth[id] = append(tokenizer.Tokenize(prompt), want...)
				before := x.d.SpecStats()
				_, dr, err := x.run(context.Background(), id, prompt, n)
				if err != nil {
					t.Fatalf("prompt %d: %v", i, err)
				}
				if fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
					t.Fatalf("prompt %d: speculative disaggregated %v, monolithic without speculation %v", i, dr.Tokens, want)
				}
				x.checkExactlyOnce(t, id, refmodel.Computed(len(tokenizer.Tokenize(prompt)), n))
				st := x.d.SpecStats()
				drafted, accepted := st.Drafted-before.Drafted, st.Accepted-before.Accepted
				switch {
				case drafted == 0:
					t.Fatalf("prompt %d: no drafts in %d tokens", i, n)
				case mode == "right" && accepted != drafted:
					t.Fatalf("prompt %d: %d of %d true drafts accepted", i, accepted, drafted)
				case mode == "wrong" && accepted != 0:
					t.Fatalf("prompt %d: %d wrong drafts accepted", i, accepted)
				}
			}
			if err := x.d.WaitIdle(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
