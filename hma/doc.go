// Package hma is the hybrid memory allocator of hybridxfer: the block
// allocator that P (prefill) and D (decode) engines of hybrid LLMs allocate
// their per-request state through, modelled on vLLM's hybrid KV-cache
// manager, plus the transfer holds P keeps while D reads.
//
// It is pure and deterministic: no clock (Time is a parameter), no IO, no
// goroutines, no logging, no metrics; Stats and return values are plain Go
// values. An Allocator is not safe for concurrent use.
//
// # Model
//
// A Config lists groups (layers sharing one block table, GroupSpec) and
// pools (PoolSpec). With one pool every group draws from it (unified layout,
// vLLM); with several, each group names its pool (separate layout, SGLang).
// Block ids are per pool and id 0 of each pool is the null block: it fills
// table positions whose state is no longer (or not) needed and is never
// freed, counted, cached or handed out.
//
// A pool keeps ref counts and a free queue: an intrusive doubly linked list
// in LRU order where freed fresh blocks go to the head (reused first) and
// prefix-cached blocks to the tail (kept longest). The prefix cache maps
// (BlockHash, group) to a block; a block taken from the free queue for reuse
// loses its hash. Hashes are chains (HashBlock) over each group's own block
// size.
//
// Each group is managed by its kind's rule for skipped tokens: full
// attention, MLA and indexer keep everything; sliding window W skips
// max(0, n-W+1) tokens, chunked local C floor(n/C)*C, recurrent groups keep
// only the newest state. Skipped positions become null and their blocks go
// back to the pool. Recurrent groups work in one of three RecurrentModes
// (none, align, all) and get NumSpeculativeTokens scratch blocks per request
// that are never cached and never transferred. StateBlock names the block
// that holds a recurrent group's state after n tokens in each mode: the
// engine moves the state there when a step begins a new block.
//
// # Requests
//
// A request's life, in the token layout of vLLM's allocate_slots
// [computed | prefix hits | external | new | lookahead]:
//
//	AddRequest        register the prompt tokens
//	LookupPrefix      hybrid prefix-cache hit over all groups
//	Allocate          reserve slots, all or nothing (AllocSpec)
//	Commit            tokens computed: cache full blocks, drop skipped ones
//	AppendTokens      sampled tokens
//	LoadDone          external tokens (P/D) arrived: cache them
//	LoadFailed        some loads failed: PolicyFail or PolicyRecompute
//	Free              finished without transfer
//	Hold              finished, blocks kept for a transfer
//
// A hold ends exactly once: on the expected number of Notify calls, on
// Abort, or on the first Sweep at or after its expiry (Extend never shortens
// it). Lease calls for ids that are not held are ignored and counted in
// LeaseStats.
//
// TransferBlocks gives, per group, the blocks D must read: no null ids, no
// scratch blocks, sliding window only its live blocks, recurrent groups
// exactly the state slot. BlockTable, ScratchBlocks, Request and Stats are
// the other views. CheckInvariants verifies the allocator invariants of the
// design brief (section 9) and is cheap enough to run after every step.
//
// Package proptest holds the rapid state machine that checks this package
// against a simple reference model.
package hma
