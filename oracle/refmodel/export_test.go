package refmodel

import "context"

// MiniUnitsForTest exposes miniUnits to the external tests.
func MiniUnitsForTest(u int) int { return miniUnits(u) }

// SplitPointsForTest are the boundaries at which m's prefill can split
// its target layers across two goroutines.
func SplitPointsForTest(m *Model) []int { return m.splitPoints() }

// PrefillSplitForTest is PrefillContext with the target layers split at
// k (one of SplitPointsForTest; 0: one goroutine).
func PrefillSplitForTest(ctx context.Context, m *Model, s Store, tokens []uint32, from, to, k int) (uint32, error) {
	return m.prefillCall(ctx, s, tokens, from, to, k)
}

// GenerateSplitForTest is Generate with the prompt's target layers split
// at k (0: one goroutine).
func GenerateSplitForTest(m *Model, s Store, prompt []uint32, from, n, k int) ([]uint32, error) {
	return m.generateCall(s, prompt, from, n, k)
}
