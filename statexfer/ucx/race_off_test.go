//go:build !race

package ucx

const raceEnabled = false
