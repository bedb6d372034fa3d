package plan

import (
	"errors"
	"strings"
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

// NoDirect (a side stages through host memory) makes Auto stage plans the
// cost model would read directly, and refuses Direct with the reason.
func TestNoDirectForcesStaging(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pl, req, err := Synthetic(m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 4}, 4096, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := pl.Plan(0, req, Auto); err != nil || p.Mode != Direct {
		t.Fatalf("auto without NoDirect: %v %v, want direct (the case this test turns)", err, p)
	}
	pl.NoDirect = "prefill rank 0 stages through host memory"
	p, err := pl.Plan(0, req, Auto)
	if err != nil || p.Mode != Staged || p.Remotes[0].Reads[0].Remote != Staging {
		t.Fatalf("auto with NoDirect: %v, mode %v", err, p)
	}
	if _, err := pl.Plan(0, req, Direct); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), pl.NoDirect) {
		t.Fatalf("direct with NoDirect: %v", err)
	}
	if p, err := pl.Plan(1, req, Staged); err != nil || p.Mode != Staged {
		t.Fatalf("staged with NoDirect: %v", err)
	}
}

// Auto stages a plan only when its gathers fit every P rank's staging pool
// and its scratch fits D's; pools unknown (nil) keep the cost model's
// choice.
func TestAutoStagesOnlyWhatFits(t *testing.T) {
	m, err := groups.Preset("gpt-oss-120b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pl, req, err := Synthetic(m, groups.InstanceConfig{TP: 4}, groups.InstanceConfig{TP: 8}, 8192, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	staged, err := pl.Plan(0, req, Staged)
	if err != nil {
		t.Fatal(err)
	}
	need := staged.Remotes[0].StagingBytes
	for _, c := range []struct {
		name     string
		pools    []int64
		scratch  int64
		wantMode Mode
	}{
		{"unknown", nil, 0, Staged},
		{"ample", []int64{need + StagingAlign, need + StagingAlign, need + StagingAlign, need + StagingAlign}, staged.ScratchBytes + StagingAlign, Staged},
		{"P pool too small", []int64{need, need, need, need}, 1 << 40, Direct},
		{"no P pool", []int64{0, 0, 0, 0}, 1 << 40, Direct},
		{"D scratch too small", []int64{1 << 40, 1 << 40, 1 << 40, 1 << 40}, staged.ScratchBytes, Direct},
	} {
		pl.PStaging, pl.DScratch = c.pools, c.scratch
		p, err := pl.Plan(0, req, Auto)
		if err != nil || p.Mode != c.wantMode {
			t.Errorf("%s: %v, mode %v, want %v", c.name, err, p.Mode, c.wantMode)
		}
	}
}
