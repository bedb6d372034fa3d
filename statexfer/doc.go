// Package statexfer moves one request's state from a prefill instance (P)
// to a decode instance (D) over a transport.Transport.
//
// Main types:
//
//   - RankMeta: what one rank publishes in the handshake (engine id, tp
//     size and rank, its InstanceConfig, per-region base address, length,
//     page stride and block count, packed remote keys, transport address,
//     a timestamp). EncodeRankMetas / DecodeRankMetas are the versioned,
//     fuzzed wire format of the handshake payload (carried by zmqchan).
//   - Remote: a P rank as D sees it after the handshake: its metadata
//     checked against the geometry D computes for P's InstanceConfig, its
//     imported regions. CheckPlan checks every region, offset and length a
//     plan touches against the remote's registered bounds before any read
//     is posted.
//   - Executor: runs a plan.Plan over a transport: staging requests to P
//     (staged mode), batched reads, D's post-processing, and the
//     read-completion notifications, reporting failed reads per request and
//     per block.
//   - Message: the small control messages carried by transport
//     notifications (read-done with consumer count, stage, staged,
//     heartbeat, abort).
//
// The planner itself (package statexfer/plan) is pure; this package adds
// the side effects: network, memory registration, time.
package statexfer
