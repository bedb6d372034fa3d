// Package specdec holds the speculative-decoding rules that the prefill
// and decode engines share: which KV cache groups hold draft (MTP / Eagle)
// layers and must travel with the target's state, how many lookahead slots
// an allocation reserves (none on D's first allocation of a transferred
// request: P never computed draft positions), and how many conv-state rows
// and recurrent scratch blocks the speculative tokens add. Pure functions of
// a groups.Model / groups.Geometry, no IO.
package specdec
