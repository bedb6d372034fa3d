// Package proptest holds reusable property-test machinery for hybridxfer:
// rapid (pgregory.net/rapid) generators, state machines, reference models
// and invariant checkers that other projects can run in their own CI.
//
// For the allocator (package hma): HMAMachine drives an hma.Allocator and
// the simple reference HMAModel with the same random operations and compares
// them after every step; CheckAllocator runs it for one Config; GenHMAConfig
// and GenHMAPresetConfig draw random hybrid configurations and the group
// structures of the model presets with small pools. The number of runs and
// steps follow rapid's -rapid.checks and -rapid.steps flags.
package proptest
