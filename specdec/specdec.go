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

// Placement says that the recurrent state after Tokens tokens (the block
// that holds it: the request's one state block, or in the align and all
// recurrent modes the block of position Tokens-1) must receive the state in
// slot Slot of a verify pass (0: the state slot, k >= 1: scratch slot k).
type Placement struct {
	Tokens int
	Slot   int
}

// Placements lists where a decode step's recurrent states go once
// accepted of its drafts are accepted. t is the step's input position: the
// verify pass left the state after t+1 tokens in the state slot (the block
// of position t) and the state after t+1+j tokens in scratch slot j. With
// one state per request (perBlock false: recurrent modes none and align) only
// the final state after t+1+accepted tokens is kept, and it moves only when
// a draft was accepted. With a state per block (perBlock true: mode all)
// every block the accepted positions reach gets the state at its end, or the
// final one for the last block: block i holds the state after
// min((i+1)*blockSize, t+1+accepted) tokens. Placements never target a block
// that was already full after t+1 tokens (it may be prefix-cached), and
// never read slot 0 (its state is in place).
func Placements(t, accepted, blockSize int, perBlock bool) []Placement {
	end := t + 1 + accepted
	if accepted == 0 {
		return nil
	}
	if !perBlock {
		return []Placement{{Tokens: end, Slot: accepted}}
	}
	var out []Placement
	for i := t / blockSize; i <= (end-1)/blockSize; i++ {
		n := min((i+1)*blockSize, end)
		if j := n - t - 1; j > 0 {
			out = append(out, Placement{Tokens: n, Slot: j})
		}
	}
	return out
}
