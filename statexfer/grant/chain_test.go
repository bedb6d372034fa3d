package grant_test

import (
	"errors"
	"testing"

	"pgregory.net/rapid"

	"github.com/hybridxfer/hybridxfer/statexfer/grant"
)

// TestChainMatchIsCommonPrefix: over random pairs of token sequences,
// ChainMatch is the longest common prefix rounded down to a chain block,
// or the whole chained sequence when the other one starts with it.
func TestChainMatchIsCommonPrefix(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := rapid.SliceOfN(rapid.Uint32Range(0, 3), 1, 100).Draw(t, "d")
		keep := rapid.IntRange(0, len(d)).Draw(t, "keep")
		p := append(append([]uint32(nil), d[:keep]...), rapid.SliceOfN(rapid.Uint32Range(0, 3), 0, 60).Draw(t, "suffix")...)
		common := 0
		for common < len(d) && common < len(p) && d[common] == p[common] {
			common++
		}
		want := common / grant.ChainBlock * grant.ChainBlock
		if common == len(d) {
			want = len(d)
		}
		got, err := grant.ChainMatch(grant.TokenChain(d), len(d), p)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("ChainMatch = %d, want %d (common prefix %d of %d and %d tokens)", got, want, common, len(d), len(p))
		}
	})
}

// TestChainMalformed: a chain that does not fit its token count, or is
// not hex, is refused, never read as a shorter match.
func TestChainMalformed(t *testing.T) {
	toks := make([]uint32, 40)
	chain := grant.TokenChain(toks)
	for name, c := range map[string]struct {
		chain string
		n     int
	}{
		"not hex":        {"zz" + chain[2:], 40},
		"one link short": {chain[:len(chain)-2*grant.LinkBytes], 40},
		"one link long":  {chain + chain[:2*grant.LinkBytes], 40},
		"wrong count":    {chain, 60},
	} {
		if _, err := grant.ChainMatch(c.chain, c.n, toks); !errors.Is(err, grant.ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

// TestExportGrant: an export grant checks against its params and chain;
// an altered chain or field is refused, and the two kinds of grant never
// pass each other's check.
func TestExportGrant(t *testing.T) {
	key := grant.RandomKey()
	toks := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}
	chain := grant.TokenChain(toks)
	p := grant.Params{EngineID: "d0", BootID: "b", Host: "127.0.0.1", Port: 9, TP: 2, ReqID: "d-1-x", NumTokens: len(toks),
		Handoff: grant.HandoffExport, BlockIDs: [][]int{{3, 4}}, Expiry: 1e18}
	g, err := grant.Open(grant.Seal(&grant.Grant{Params: p, Token: 7, Prompt: grant.ChainDigest(chain)}, key), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckExport(p, chain); err != nil {
		t.Fatalf("genuine export: %v", err)
	}
	other := grant.TokenChain(append([]uint32{0}, toks[1:]...))
	var fe *grant.FieldError
	if err := g.CheckExport(p, other); !errors.As(err, &fe) || fe.Field != "token_chain" {
		t.Errorf("altered chain: %v", err)
	}
	q := p
	q.NumTokens--
	if err := g.CheckExport(q, chain); !errors.As(err, &fe) || fe.Field != "num_tokens" {
		t.Errorf("altered num_tokens: %v", err)
	}
	if err := g.Check(p, toks); !errors.As(err, &fe) || fe.Field != "handoff" {
		t.Errorf("export grant as a prefill grant: %v", err)
	}
	pp := p
	pp.Handoff = "decode-computes-last"
	pg, _ := grant.Open(grant.Seal(&grant.Grant{Params: pp, Token: 7, Prompt: grant.PromptHash(toks)}, key), key)
	if err := pg.CheckExport(pp, chain); !errors.As(err, &fe) || fe.Field != "handoff" {
		t.Errorf("prefill grant as an export: %v", err)
	}
}
