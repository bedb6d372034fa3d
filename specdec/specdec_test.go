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

func TestGreedyVerification(t *testing.T) {
	for _, tc := range []struct {
		drafts, targets []uint32
		want            int
	}{
		{nil, []uint32{5}, 0},
		{[]uint32{1, 2, 3}, []uint32{1, 2, 3, 4}, 3},
		{[]uint32{1, 2, 3}, []uint32{1, 9, 3, 4}, 1},
		{[]uint32{7, 2, 3}, []uint32{1, 2, 3, 4}, 0},
	} {
		if got := Accept(tc.drafts, tc.targets); got != tc.want {
			t.Errorf("Accept(%v, %v) = %d, want %d", tc.drafts, tc.targets, got, tc.want)
		}
	}
	// Position 0 updates the state slot; position j reads j-1's slot and
	// writes slot j, which is kept when j drafts are accepted.
	for j := 0; j < 5; j++ {
		r, w := StateSlots(j)
		if w != j || (j > 0 && r != j-1) || (j == 0 && r != 0) || KeepSlot(j) != w {
			t.Errorf("StateSlots(%d) = %d, %d; KeepSlot = %d", j, r, w, KeepSlot(j))
		}
	}
}

func TestDraftsPerStep(t *testing.T) {
	m, err := groups.Preset("qwen3.5-9b", groups.PresetOptions{MTP: true, NumSpeculativeTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := groups.Preset("qwen3.5-9b", groups.PresetOptions{NumSpeculativeTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m         *groups.Model
		first     bool
		remaining int
		want      int
	}{
		{m, true, 10, 0},      // no proposal yet on an instance's first step
		{m, false, 10, 3},     // K drafts
		{m, false, 3, 2},      // no more than the output still needs
		{m, false, 1, 0},      // the bonus token alone
		{plain, false, 10, 0}, // conv rows widened, but no drafter
	} {
		if got := Drafts(tc.m, tc.first, tc.remaining); got != tc.want {
			t.Errorf("Drafts(%s draft=%q, first=%t, remaining=%d) = %d, want %d", tc.m.Name, tc.m.Draft, tc.first, tc.remaining, got, tc.want)
		}
	}
}

// TestPlacements checks the placement rule against a direct simulation:
// states are named by their token counts, a block holds the state its
// last write put there, and after a step every block the positions
// reached holds the state the mode requires.
func TestPlacements(t *testing.T) {
	for _, perBlock := range []bool{false, true} {
		for bs := 1; bs <= 5; bs++ {
			for pos := 0; pos < 12; pos++ {
				for acc := 0; acc <= 4; acc++ {
					end := pos + 1 + acc
					slot := func(j int) int { return pos + 1 + j } // the verify pass's states
					block := map[int]int{pos / bs: slot(0)}        // written in place by position pos
					if !perBlock {
						block = map[int]int{0: slot(0)} // one state block, index 0 here
					}
					for _, p := range Placements(pos, acc, bs, perBlock) {
						if p.Slot < 1 || p.Slot > acc {
							t.Fatalf("bs %d t %d a %d: placement %+v reads slot %d", bs, pos, acc, p, p.Slot)
						}
						i := 0
						if perBlock {
							i = (p.Tokens - 1) / bs
							if (i+1)*bs <= pos+1 {
								t.Fatalf("bs %d t %d a %d: %+v overwrites block %d, full before the step", bs, pos, acc, p, i)
							}
						}
						block[i] = slot(p.Slot)
					}
					if !perBlock {
						if block[0] != end {
							t.Fatalf("bs %d t %d a %d: state %d, want %d", bs, pos, acc, block[0], end)
						}
						continue
					}
					for i := pos / bs; i <= (end-1)/bs; i++ {
						if want := min((i+1)*bs, end); block[i] != want {
							t.Fatalf("bs %d t %d a %d: block %d holds state %d, want %d", bs, pos, acc, i, block[i], want)
						}
					}
				}
			}
		}
	}
}
