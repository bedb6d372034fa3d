// Package specdec holds the speculative-decoding rules that the allocator,
// the reference model and the engines share, as pure functions of a
// groups.Model / groups.Geometry (no clock, no IO):
//
//   - which KV cache groups hold draft (MTP / Eagle) layers and travel with
//     the target's state (DraftGroups), and the prefix-cache rule for them
//     (ExtraHitBlocks: the last hit block is dropped);
//   - lookahead slots per allocation (Lookahead: none on D's first
//     allocation of a transferred request, P never computed draft
//     positions), conv rows (ExtraConvRows) and recurrent scratch blocks
//     (ScratchBlocks: one per speculative token, never cached or
//     transferred);
//   - a decode step: how many drafts it proposes (Drafts: none on an
//     instance's first step, which has no proposal yet, so D's first
//     decode step after a transfer is plain and its first drafts come from
//     its own hidden state), greedy verification (Accept), where each
//     verify position keeps its recurrent state (StateSlots), which
//     slot becomes the state (KeepSlot), and where the kept states go in
//     each recurrent mode (Placements: the final one, or with a state per
//     block the state at the end of every block an accepted run reaches).
//
// The grouping of draft layers itself (join a same-spec target group or
// form their own) is groups.KVGroups', since the geometry is built from it.
package specdec
