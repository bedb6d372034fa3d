package specdec

import (
	"github.com/hybridxfer/hybridxfer/groups"
)

// DraftGroups returns the ids of the KV cache groups that hold draft
// layers. Their blocks are transferred like any attention group's; the
// allocator drops the last block of their prefix hits.
func DraftGroups(g *groups.Geometry) []int {
	var out []int
	for _, gg := range g.Groups {
		if gg.Eagle {
			out = append(out, gg.ID)
		}
	}
	return out
}

// Lookahead is the number of lookahead slots an allocation reserves: the
// model's speculative tokens, except on D's first allocation of a request
// whose state P computed (firstAfterTransfer): P sent no draft positions and
// D has not proposed any yet, so reserving them would allocate blocks P
// never filled.
func Lookahead(m *groups.Model, firstAfterTransfer bool) int {
	if firstAfterTransfer {
		return 0
	}
	return m.NumSpeculativeTokens
}

// ExtraConvRows is how many rows the speculative tokens add to every conv
// state (conv rows = conv_kernel - 1 + num_speculative_tokens).
func ExtraConvRows(m *groups.Model) int { return m.NumSpeculativeTokens }

// ScratchBlocks is the number of speculative scratch blocks a recurrent
// group holds per request; they are never cached and never transferred.
func ScratchBlocks(m *groups.Model) int { return m.NumSpeculativeTokens }
