package proptest

import (
	"testing"

	"pgregory.net/rapid"
)

// TestServingEqualsMonolithic draws several P and D instances and up to 64
// requests in flight at once.
func TestServingEqualsMonolithic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckServing(t, GenServeCase(64).Draw(t, "case"))
	})
}

// TestServingSequential is the one-request-at-a-time special case (its
// failures are the easiest to read).
func TestServingSequential(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckServing(t, GenServeCase(1).Draw(t, "case"))
	})
}

// TestServingSpeculative is the property for speculative decoding: models
// with a drafter and K in 1..4, D's drafter steered to the true
// continuation at 0-100% of positions, both handoffs, faults with both
// policies. Answers equal the monolithic run WITHOUT speculation, every
// position's state is applied once (rejected drafts count as never
// applied), transfers hold no scratch block, everything is released.
func TestServingSpeculative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckServing(t, GenSpeculativeServeCase(8).Draw(t, "case"))
	})
}

// TestConversationsEqualMonolithic: multi-turn conversations on
// bidirectional P and D instances, several at once, with rewritten
// histories, foreign exports and exports swept while they are read
// (CheckConversations).
func TestConversationsEqualMonolithic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckConversations(t, GenConvCase().Draw(t, "case"))
	})
}
