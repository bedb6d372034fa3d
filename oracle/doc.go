// Package oracle is the ground truth tests and `hybridxfer verify` compare
// against, built without the planner's math (DESIGN section 8).
//
// For full-size models it provides a synthetic coordinate pattern: every
// byte of every request's state is a function of its GLOBAL coordinates
// (request, layer, K/V/scale part, global head, position, byte; or layer,
// conv segment, global channel, row; or layer, state tensor, global head).
// P fills its shards from its own geometry; D checks its shards against the
// pattern for its own geometry (tp, block size, layouts). Replicated heads
// and groups carry identical bytes on every rank because their global
// coordinates are the same. Visit enumerates the vectors of a layer's state
// with their offsets, from groups.LayerGeometry alone.
package oracle
