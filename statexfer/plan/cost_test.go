package plan

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// TestCostPerReadDecidesAuto: gpt-oss-120b 4 -> 8 at 8,192 tokens reads
// 2 KiB pieces. With DefaultCost's 500 ns per read Auto stages it (three
// copies of every byte), which bench transfer measured 4-6x slower than
// direct on the UCX mapped path, where a read costs tens of nanoseconds;
// with that path's per-read cost Auto reads directly. qwen3.5-27b 2 -> 4
// (about 10 KiB per read) is direct under both.
func TestCostPerReadDecidesAuto(t *testing.T) {
	mapped := DefaultCost
	mapped.PerReadNs = 50
	for _, tc := range []struct {
		model         string
		p, d          int
		tokens        int
		defaultStaged bool
	}{
		{"gpt-oss-120b", 4, 8, 8192, true},
		{"qwen3.5-27b", 2, 4, 8192, false},
	} {
		m, err := groups.Preset(tc.model, groups.PresetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pl, req, err := Synthetic(m, groups.InstanceConfig{TP: tc.p}, groups.InstanceConfig{TP: tc.d}, tc.tokens, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name   string
			cost   CostModel
			staged bool
		}{{"default", DefaultCost, tc.defaultStaged}, {"mapped", mapped, false}} {
			pl.Cost = c.cost
			p, err := pl.Plan(0, req, Auto)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Mode == Staged; got != c.staged {
				t.Errorf("%s %d->%d, %s cost (%.0f ns/read, %d reads of %d bytes): staged %v, want %v",
					tc.model, tc.p, tc.d, c.name, c.cost.PerReadNs, p.NumReads(), p.Bytes(), got, c.staged)
			}
		}
	}
}
