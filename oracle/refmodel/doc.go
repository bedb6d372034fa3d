// Package refmodel is the reference model of DESIGN section 8: a tiny,
// deterministic hybrid model whose every KV and recurrent state lives in
// per-rank cache memory in the real layouts, so that a monolithic run and
// a disaggregated run (P computes positions [0, H), the state moves to D by
// the planner, D continues from H) can be compared bit for bit.
//
// # The miniature
//
// Miniature turns any groups.Model into a miniature: the same layers,
// kinds, order, draft layers, speculative token count and head / unit
// counts (so tensor parallelism shards it exactly like the original, with
// the same KV cache groups), but tiny dimensions and every dtype fp32. All
// computation and storage is float32, so results are exact and
// reproducible; dtype handling is the planner's and is checked by the byte
// patterns of package oracle.
//
// # The model
//
// New draws weights from a seed (vocabulary Vocab, residual width Hidden).
// A position t runs, in order, every target decoder layer as a residual
// block x += layer(rmsnorm(x)) (a layer and the Parallel layers after it
// read the same rmsnorm(x) and their outputs are added: Falcon-H1), then logits = U·rmsnorm(x) and a greedy argmax;
// draft layers then run on the drafter's input + embed(next) and give a
// draft token through the target's LM head: the input is rmsnorm(x) for
// MTP drafts, the normalized sum of the normalized hidden states after
// target layers 2, L/2 and L-3 for Eagle3 (vLLM's default auxiliary
// layers). Draft chains a proposal from the drafter's own hidden state.
//
// # Speculative decoding
//
// A Decoder decodes greedily with the drafter's proposals (see Decoder):
// a verify pass computes the step's input and its drafts, recurrent state
// of each speculative position goes to a scratch slot of a SlotStore
// (MapStore and RankStore have them), and only the accepted position's
// state is kept, so the tokens and states equal plain decoding's.
//
// Layers:
//
//   - full / sliding-window / chunked-local attention: per KV head,
//     softmax attention of q over the K/V of positions [Layer.LiveStart(t), t];
//     with Attention.Scales, K and V are stored divided by their max-abs
//     scale and the scales are stored too (real state, read back);
//   - MLA: one latent ‖ rope vector per token; indexer: one vector of
//     IndexerFloats values per token (its fp8 bytes and fp32 scales read as
//     float32); attention over [0, t] with those vectors as keys;
//   - recurrent: a causal conv over the last ConvRows rows plus the new
//     input, then per state head a gated delta rule (GDN, KDA) or a
//     selective-scan update (Mamba2, Mamba1); see update for the formulas.
//
// Arithmetic is float32 in a fixed order with explicitly rounded products
// (no FMA contraction), no transcendental functions, no maps in the
// computation, no clock, no global randomness, and goroutines only where
// each computes a disjoint part with the same operations (see below): the
// same inputs give the same bits on every platform and every schedule.
//
// # Stores
//
// The model keeps no state: Forward reads earlier positions from a Store
// and writes position t's state, by GLOBAL coordinates (oracle.Coord, see
// VectorLen). MapStore is the obviously correct store. RankStore stores
// one request in the cache memory of every rank of an instance
// (plan.RankMemory) through its geometries and block table, exactly where
// the allocator, the planner and the kernels expect it: replicated
// coordinates are written to every rank holding them, reads of a null
// block are ErrMissingState. A disaggregated run is therefore P's model
// on a RankStore over P's memories, the planner moving bytes, and the same
// model on a RankStore over D's memories; Snapshot and Diff compare final
// states by coordinates, CopyState is the naive coordinate-wise transfer.
//
// Within one call (Prefill, PrefillContext, Generate) consecutive
// positions share a run cache (runcache.go): each earlier position's
// per-token state is read from the store once per call and recurrent
// state is written back once at the end, with the same bits as
// position-by-position Forward calls (TestOutputsUnchanged holds every
// preset to digests recorded before the cache existed). Each attention
// head keeps its dequantized keys and values flat for the run
// (keyarray.go), extended by one position per step; a layer's heads run
// on several goroutines once they attend over enough keys, each writing
// only its own output. Attention sums four keys (dotsFlat, scores4) or
// four output values (attendFlat) and computes four softmax weights
// (softmaxWeights) at a time, and matVec four rows, each its own chain in
// the original order; a recurrent layer computes all its heads' gates as
// one matVec and reuses its scratch.
//
// A prefill of 16 positions or more on a store the run cache carries
// recurrent state for splits the target layers across two goroutines
// (pipeline.go): the first computes layers [0, k) of position t+1 while
// the second computes layers [k, L), the LM head and the drafts of
// position t, each with its own layers' cache; k balances an estimate of
// the two halves' cost. The second goroutine writes a position only after
// both halves computed it, so the store passes through the same states as
// with one goroutine, on success, failure and cancellation alike
// (TestSplitPrefill*). BenchmarkPrefill measures it: on qwen3.5-27b's
// miniature (tp 2, 2 cores) 2,000 tokens take about 0.9 s.
package refmodel
