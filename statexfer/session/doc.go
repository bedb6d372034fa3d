// Package session owns the P/D protocol: everything that moves one
// request's state from a prefill instance (P) to a decode instance (D),
// on both sides, for any number of requests in flight and any number of
// peers. serve, verify and the transfer bench all use it; nothing else
// wires transports, executors or staging by hand.
//
// P side, Prefill (NewPrefill): the hosted ranks' registered memory, a
// staging Pool per rank, and the grants of the requests it holds. The
// owner of the held state (the allocator's leases) is reached through
// Holds; Register makes a held request visible to D under a random grant
// token, Forget ends it (released, expired or aborted: its staging ranges
// go back to the pools). P acts only on control messages whose request and
// grant match a registration: a message of an earlier incarnation, another
// D or a forger changes nothing. Each D rank's read-completion notification
// counts once per request and rank; every staged gather gets its own range
// of the pool (a full pool answers "retry": backpressure).
//
// D side, Decode (NewDecode): the hosted ranks' memory and scratch pools,
// the peer table, the per-request Machine and the routing of P's answers.
// Peers are keyed by engine id and address, and each entry is one
// incarnation (the boot id P publishes in its metadata and its
// kv_transfer_params): a request naming another incarnation evicts the
// entry and handshakes again (single flight, never under a lock other
// requests need), and a request naming an incarnation that is gone fails
// with ErrStaleIncarnation. A transport failure, a heartbeat that cannot
// be sent or a peer that stops answering heartbeats evicts the peer and
// fails the loads in flight on it. Answers are routed by transfer id
// (one per load attempt), so P instances whose request ids collide can
// stage to one D at once. Load checks P's lease (with the clock offset the
// handshake measured) before posting reads and after they complete, and
// reports failures as a *LoadError naming the peer, the request, the
// phase and the decode blocks that hold no valid state, so recompute can
// restart from the first invalid block of each group. A request whose
// reads completed succeeds even if its read-completion notification is
// lost (counted; P's lease reclaims).
//
// NewBidirectional opens one set of ranks for both sides (a decode
// instance that also serves its finished requests to the next turn's
// prefill, a prefill instance that also reads them): one transport and
// one registered memory per rank, each incoming message routed to the
// side whose type it is.
//
// Machine is the pure part: per request state (accepted, handshaking,
// loading, done, failed), leases as D knows them, heartbeats due, and the
// failures time alone decides (expired lease, silent peer). It never reads
// a clock; the shell calls Ready(now), acts, then Advance, in the style of
// raft's Ready/Advance. Pool's range allocator is pure as well.
//
// Lifecycle records (lifecycle.go): every request transition is one slog
// record, LogEvent with an Event (received, prefilled, held, handshaked,
// reads_posted, read_done, released, expired, aborted, finished, failed)
// through a RequestLog that binds the client's request_id; D's Load logs
// its own transitions through LoadRequest.Log. SampleEvents keeps the
// lifecycle records of 1 in N requests, by a hash of request_id, so every
// instance keeps the same ones. docs/lifecycle.md lists them.
package session
