package specdec

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

func TestDraftGroupsAndLookahead(t *testing.T) {
	m, err := groups.Preset("qwen3.5-9b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	g, err := groups.NewGeometry(m, groups.InstanceConfig{TP: 2}, 0)
	if err != nil {
		t.Fatal(err)
	}
	dg := DraftGroups(g)
	if len(dg) != 1 || g.Groups[dg[0]].Kind != groups.FullAttention {
		t.Fatalf("draft groups %v", dg)
	}
	found := false
	for _, l := range g.Groups[dg[0]].Layers {
		found = found || m.Layers[l].Draft
	}
	if !found {
		t.Fatal("draft group holds no draft layer")
	}
	if Lookahead(m, true) != 0 || Lookahead(m, false) != 3 {
		t.Errorf("lookahead first=%d later=%d", Lookahead(m, true), Lookahead(m, false))
	}
	// Conv rows grow by the speculative tokens: 4-1+3 = 6.
	s, _ := m.Shape(0, 1, 0)
	if s.ConvRows != 3+ExtraConvRows(m) || ScratchBlocks(m) != 3 {
		t.Errorf("conv rows %d scratch %d", s.ConvRows, ScratchBlocks(m))
	}
	plain, _ := groups.Preset("qwen3.5-9b", groups.PresetOptions{})
	pg, _ := groups.NewGeometry(plain, groups.InstanceConfig{TP: 1}, 0)
	if len(DraftGroups(pg)) != 0 || Lookahead(plain, false) != 0 {
		t.Error("model without drafts has draft groups or lookahead")
	}
}
