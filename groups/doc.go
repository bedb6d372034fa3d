// Package groups describes what a model's per-request state looks like,
// globally and on each tensor-parallel rank. It is pure data and arithmetic:
// stdlib only, no cgo, no clock; the only IO is ParseModelFile reading the
// one file it is named.
//
// Main types:
//
//   - Model and Layer: a model spec, its cache layers in order (full,
//     sliding-window and chunked-local attention, MLA, the DeepSeek-V3.2
//     indexer cache, recurrent layers as ordered conv Segments plus State
//     tensors) and its speculative-decoding configuration (draft layers,
//     num_speculative_tokens). Built by the family builders (Qwen35,
//     DeepSeekMLA, NemotronH, ...), by Preset for the models of
//     shared/reference/models.md, from our JSON format or from a Hugging
//     Face config.json.
//   - Shard and LayerShape: what one rank holds of a layer. KV heads are
//     sharded, or replicated when tp > kv_heads; MLA latents are replicated;
//     every conv segment (q/k/v, x/B/C) is sharded on its own, Mamba2 groups
//     padded up to tp; SSM states sharded on heads.
//   - KVGroup: layers sharing one block table (vLLM's grouping rule).
//   - Geometry and LayerGeometry: one rank's memory: groups with their block
//     sizes, block pools (unified: one pool of equal, padded pages; separate:
//     a pool per layer spec), the slot of each layer, and the byte offset of
//     every element of a page for the HND/NHD and DS/SD layouts.
//   - Summary: exact per-rank bytes of one request (hybridxfer models).
//   - CompatHash: what P and D must agree on (not tp, block size or layouts).
//
// Errors wrap ErrInvalidSpec, ErrUnsupported, ErrUnknownPreset,
// ErrImpossibleTP or ErrBadGeometry; spec errors are *FieldError naming the
// field.
package groups
