//go:build race

package ucx

// raceEnabled shrinks the large transfers under the race detector.
const raceEnabled = true
