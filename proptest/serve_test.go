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
