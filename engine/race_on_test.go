//go:build race

package engine

// raceEnabled: compute-heavy tests run a reduced set under the race
// detector (make test runs them in full without it); the reference
// model's arithmetic is what it slows down tenfold.
const raceEnabled = true
