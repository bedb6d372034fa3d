// Package plan is the transfer planner: pure and deterministic, no IO, no
// clock. Given P's and D's per-rank geometry (Side: tp size, block sizes,
// kernel blocks, attention and conv layouts, memory layout, pools) and one
// request's block ids on both sides (Request), Planner.Plan returns one D
// rank's Plan:
//
//   - Remotes: per P rank, the reads (remote region, offset) -> (local
//     region, offset), length; coalesced so that there is exactly one read
//     per maximal run contiguous on both sides (direct mode), or P-side
//     gather steps into a staging buffer plus one large read (staged mode);
//   - Post: the steps D runs after the reads (scatter from staging, DS<->SD
//     transposes of conv states through scratch);
//   - Notify: the P ranks D notifies, by the static notification plan
//     (Notifications: each D rank notifies its natural P ranks; P rank p
//     expects Consumers(p) notifications).
//
// Rules: tp ratios in both directions (one must divide the other); KV heads
// replicated when tp > kv_heads (D reads each distinct head once, from a P
// rank in its natural range); MLA read once per D rank; every conv segment
// (q/k/v, x/B/C) and SSM head range sliced on its own; sliding windows and
// chunked-local layers only their live positions; D prefix hits trimmed;
// block sizes in both directions, kernel blocks, HND/NHD and DS/SD; unified
// or separate pools on either side. A plan is built per KV cache group as
// a template for one layer and instantiated per layer, so planning cost does
// not grow with the layer count. CostModel picks direct or staged (Auto).
//
// Execute runs a plan in process between RankMemory byte slices (the
// in-process executor of tests and `hybridxfer verify`); statexfer.Executor
// runs it over a transport.
package plan
