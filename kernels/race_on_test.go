//go:build race

package kernels_test

// raceEnabled shrinks the exhaustive alignment sweeps under the race
// detector (the copies are assembly or runtime code it does not see; the
// Go reference loops around them are what it slows down).
const raceEnabled = true
