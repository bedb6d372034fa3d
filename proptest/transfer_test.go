package proptest

import (
	"testing"

	"pgregory.net/rapid"
)

func TestTransferByteExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		CheckTransfer(t, GenTransferCase().Draw(t, "case"))
	})
}

// TestTransferBothDirections: the planner has no direction. Each drawn
// pair of instances moves state both ways, A -> B and B -> A, byte-exact
// (a multi-turn conversation's turn 2 reads from the decode instance the
// state of turn 1 that went from prefill to decode: engine.Config.Bidirectional).
func TestTransferBothDirections(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := GenTransferCase().Draw(t, "case")
		CheckTransfer(t, c)
		c.P, c.D = c.D, c.P
		CheckTransfer(t, c)
	})
}
