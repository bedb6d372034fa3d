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

// Drafts is how many tokens a decode step proposes: the model's
// speculative tokens, but none on the first step of a request on an
// instance (there is no proposal yet: P's draft is not sent, and D's first
// allocation reserves no lookahead slots), and never more than the
// remaining output needs (remaining counts the tokens still to emit,
// including the step's bonus token).
func Drafts(m *groups.Model, first bool, remaining int) int {
	if first || m.Draft == groups.DraftNone {
		return 0
	}
	return max(0, min(m.NumSpeculativeTokens, remaining-1))
}

// Accept is greedy verification: the number of leading drafts that equal
// the target's greedy tokens at the same positions (targets[i] is what
// the target predicts after the i-th input of the verify pass). The step
// then emits drafts[:n] and the bonus token targets[n]. targets has one
// more entry than drafts.
func Accept(drafts, targets []uint32) int {
	n := 0
	for n < len(drafts) && n < len(targets) && drafts[n] == targets[n] {
		n++
	}
	return n
}

// StateSlots is where verify-pass position j (0: the step's first input,
// j: the j-th draft) reads and writes recurrent state: position 0 updates
// the state slot in place (its input is known to be right), position j
// >= 1 reads the slot position j-1 wrote and writes scratch slot j. After
// accepting n drafts, slot n holds the state to keep (KeepSlot).
func StateSlots(j int) (read, write int) {
	if j == 0 {
		return 0, 0
	}
	return j - 1, j
}

// KeepSlot is the slot whose recurrent state becomes the request's state
// after n drafts were accepted (0: the state slot already holds it); the
// other scratch slots are garbage, never cached and never transferred.
func KeepSlot(accepted int) int { return accepted }

// ExtraHitBlocks is how many cached blocks past a prefix hit a group
// needs: a draft group (Eagle / MTP layers) needs one, because vLLM drops
// the last hit block of such a group so that the drafter recomputes the
// hidden state it reads; a hit of L tokens then needs the blocks through
// L + one block cached.
func ExtraHitBlocks(draftGroup bool) int {
	if draftGroup {
		return 1
	}
	return 0
}
