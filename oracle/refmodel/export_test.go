package refmodel

// MiniUnitsForTest exposes miniUnits to the external tests.
func MiniUnitsForTest(u int) int { return miniUnits(u) }
