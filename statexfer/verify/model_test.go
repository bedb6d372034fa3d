package verify_test

import (
	"context"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
)

// TestModelCheckTurns: the model check's conversations (three turns on
// bidirectional engines, two rewritten histories, two expired exports)
// answer and end in the monolithic run's state, read turn 2+ back from
// decode, decline exactly the rewritten (hybrid model) and expired turns,
// compute nothing twice and release everything.
func TestModelCheckTurns(t *testing.T) {
	inproc := func(_ int, h transport.Handlers) (transport.Transport, error) { return transport.NewInproc(h), nil }
	for _, tc := range []struct {
		model string
		p, d  groups.InstanceConfig
		whole bool // reads only whole exports: every rewritten turn declines
	}{
		{"qwen3.5-27b", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1, AttnLayout: groups.NHD}, true},
		{"llama-3.1-8b", groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2, BlockSize: 32}, false},
	} {
		t.Run(tc.model, func(t *testing.T) {
			m, err := groups.Preset(tc.model, groups.PresetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := verify.RunModelCheck(context.Background(), verify.ModelCheck{Model: m, P: tc.p, D: tc.d, PromptTokens: 24, Requests: 8,
				MaxTokens: 6, Seed: 3, Turns: 3, PTransports: inproc, DTransports: inproc})
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() {
				t.Fatalf("model check failed: %s", res.FirstProblem)
			}
			switch {
			case res.Requests != 24 || res.Turns != 3 || res.Rewritten != 2 || res.Expired != 2:
				t.Fatalf("%d requests, %d turns, %d rewritten, %d expired", res.Requests, res.Turns, res.Rewritten, res.Expired)
			case res.TokensReusedFromDecode == 0 || res.ReusedPerTurn[1] == 0 || res.ReusedPerTurn[2] == 0 || res.BytesReadFromDecode == 0:
				t.Fatalf("read back from decode: %d tokens, per turn %v, %d bytes", res.TokensReusedFromDecode, res.ReusedPerTurn, res.BytesReadFromDecode)
			case res.Declines["expired"] != 2:
				t.Fatalf("declines %v, want 2 expired", res.Declines)
			case tc.whole && res.Declines["mismatch"] != 2:
				t.Fatalf("declines %v, want both rewritten turns declined as mismatched", res.Declines)
			case res.Declines["mismatch"]+res.Declines["cached"] > 2 || len(res.Declines) > 3:
				// Attention-only models read what precedes the rewrite; they
				// decline when that is nothing or already cached on P.
				t.Fatalf("declines %v: more than the two rewritten turns", res.Declines)
			case res.RecomputedAfterDecline == 0:
				t.Fatalf("no position recomputed after a decline")
			}
		})
	}
}
