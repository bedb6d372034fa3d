package plan

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

var update = flag.Bool("update", false, "rewrite testdata/golden")

// tiny builds small models whose plans are short enough to read.
func tinyHybrid() *groups.Model {
	m := &groups.Model{Name: "tiny-hybrid", Layers: []groups.Layer{
		groups.RecurrentLayer("layers.0.gdn", groups.GDNState(4, 4, 2, 2, 3, groups.BF16, groups.FP32)),
		groups.AttentionLayer("layers.1.attn", 2, 4, groups.BF16),
	}}
	return m
}

func tinySliding() *groups.Model {
	return &groups.Model{Name: "tiny-sliding", Layers: []groups.Layer{
		groups.SlidingLayer("layers.0.attn", 2, 4, 6, groups.BF16),
		groups.AttentionLayer("layers.1.attn", 2, 4, groups.BF16),
	}}
}

func tinyMLA() *groups.Model {
	return &groups.Model{Name: "tiny-mla", Layers: []groups.Layer{
		groups.MLALayer("layers.0.mla", 8, 4, groups.BF16, groups.MLAPlain),
		groups.MLALayer("layers.1.mla", 8, 4, groups.BF16, groups.MLAPlain),
	}}
}

type goldenCase struct {
	name   string
	model  *groups.Model
	p, d   groups.InstanceConfig
	tokens int
	hit    int
	mode   Mode
}

var goldenCases = []goldenCase{
	{"hybrid-tp1-to-tp2-DS-direct", tinyHybrid(), groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4},
		groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4}, 9, 0, Direct},
	{"hybrid-tp2-to-tp1-SD-to-DS", tinyHybrid(), groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, ConvLayout: groups.SD},
		groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4}, 9, 0, Direct},
	{"hybrid-tp1-to-tp2-DS-to-SD", tinyHybrid(), groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4},
		groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, ConvLayout: groups.SD}, 9, 0, Direct},
	{"gqa-replicated-tp4-to-tp2-HND-to-NHD", tinySliding(), groups.InstanceConfig{TP: 4, BlockSize: 4, KernelBlockSize: 2, Memory: groups.Separate},
		groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, AttnLayout: groups.NHD, Memory: groups.Separate}, 10, 0, Direct},
	{"sliding-block-4-to-8-prefix-hit", tinySliding(), groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4, Memory: groups.Separate},
		groups.InstanceConfig{TP: 1, BlockSize: 8, KernelBlockSize: 8, Memory: groups.Separate}, 21, 8, Direct},
	{"mla-tp1-to-tp4-notify-only", tinyMLA(), groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4},
		groups.InstanceConfig{TP: 4, BlockSize: 4, KernelBlockSize: 4}, 7, 0, Direct},
	{"mla-tp4-to-tp1-notify-only", tinyMLA(), groups.InstanceConfig{TP: 4, BlockSize: 4, KernelBlockSize: 4},
		groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4}, 7, 0, Direct},
	{"hybrid-tp2-to-tp1-staged", tinyHybrid(), groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4},
		groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4}, 9, 0, Staged},
	{"hybrid-cross-layer-both-tp2-separate", tinyHybrid(), groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, Memory: groups.Separate, BlockLayout: groups.CrossLayer},
		groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, Memory: groups.Separate, BlockLayout: groups.CrossLayer}, 8, 0, Direct},
	{"mla-per-layer-to-cross-layer-tp1-to-tp2", tinyMLA(), groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4},
		groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, BlockLayout: groups.CrossLayer}, 8, 0, Direct},
	{"mla-cross-layer-both-tp2-to-tp1", tinyMLA(), groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, BlockLayout: groups.CrossLayer},
		groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4, BlockLayout: groups.CrossLayer}, 9, 0, Direct},
	{"hybrid-cross-layer-to-per-layer-tp1-to-tp2-staged", tinyHybrid(), groups.InstanceConfig{TP: 1, BlockSize: 4, KernelBlockSize: 4, BlockLayout: groups.CrossLayer},
		groups.InstanceConfig{TP: 2, BlockSize: 4, KernelBlockSize: 4, ConvLayout: groups.SD}, 9, 0, Staged},
}

// dump renders every D rank's plan for c as text.
func dump(c goldenCase) (string, error) {
	pl, req, err := Synthetic(c.model, c.p, c.d, c.tokens, c.hit, 7)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: P tp %d -> D tp %d, %d tokens, D prefix hit %d, mode %s\n", c.model.Name, c.p.TP, c.d.TP, c.tokens, c.hit, c.mode)
	for _, x := range []struct {
		side string
		s    *Side
	}{{"P", pl.P}, {"D", pl.D}} {
		if x.s.Ranks[0].Config.BlockLayout == groups.CrossLayer {
			fmt.Fprintf(&b, "# %s cross-layer:", x.side)
			for p := range x.s.Ranks[0].Pools {
				fmt.Fprintf(&b, " pool %d block stride %d", p, x.s.Ranks[0].Pools[p].BlockStride())
			}
			fmt.Fprintln(&b)
		}
	}
	for gi, g := range pl.P.Ranks[0].Groups {
		fmt.Fprintf(&b, "# group %d %s layers %v: P block %d page %d stride %d, D block %d page %d stride %d\n", gi, g.Kind, g.Layers,
			g.BlockSize, g.PageBytes, pl.P.Ranks[0].Pools[g.Pool].PageStride,
			pl.D.Ranks[0].Groups[gi].BlockSize, pl.D.Ranks[0].Groups[gi].PageBytes, pl.D.Ranks[0].Pools[pl.D.Ranks[0].Groups[gi].Pool].PageStride)
		fmt.Fprintf(&b, "#   P blocks %v  D blocks %v\n", req.PBlocks[gi], req.DBlocks[gi])
	}
	for p := 0; p < pl.P.TP(); p++ {
		fmt.Fprintf(&b, "P rank %d expects %d notifications\n", p, pl.Consumers(p))
	}
	for d := 0; d < pl.D.TP(); d++ {
		p, err := pl.Plan(d, req, c.mode)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "D rank %d: mode %s, %d reads, %d bytes, scratch %d, notify %v\n", d, p.Mode, p.NumReads(), p.Bytes(), p.ScratchBytes, p.Notify)
		for _, rp := range p.Remotes {
			for _, s := range rp.Gather {
				fmt.Fprintf(&b, "  P%d gather %s\n", rp.Rank, stepText(s))
			}
			for _, r := range rp.Reads {
				fmt.Fprintf(&b, "  read P%d %s+%d -> %s+%d len %d\n", rp.Rank, r.Remote, r.RemoteOff, r.Local, r.LocalOff, r.Len)
			}
		}
		for _, s := range p.Post {
			fmt.Fprintf(&b, "  post %s\n", stepText(s))
		}
	}
	return b.String(), nil
}

func stepText(s Step) string {
	if s.Kind == StepTranspose {
		return fmt.Sprintf("transpose %s+%d -> %s+%d %dx%d x %dB", s.Src, s.SrcOff, s.Dst, s.DstOff, s.Rows, s.Cols, s.ItemBytes)
	}
	return fmt.Sprintf("copy %s+%d -> %s+%d len %d", s.Src, s.SrcOff, s.Dst, s.DstOff, s.Len)
}

// TestGoldenPlans compares plans of named cases with testdata/golden (run
// with -update to rewrite them after an intended change, and read the diff).
func TestGoldenPlans(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := dump(c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "golden", c.name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenPlans -update)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}
