// Package engine is the engine driver: an Engine per instance (prefill,
// decode or both) runs the reference model on its TP ranks, each with its
// own registered memory and transport, allocates through hma, moves state
// with the P/D protocol of statexfer/session, and implements
// backend.Backend (Generate, AbortHold), backend.Drainer (BeginDrain,
// WaitDrained: refuse new requests, finish those in flight, wait for held
// leases) and backend.Inspector (the /debug views). It is a library, not a server: openai serves an Engine over
// HTTP, proxy routes requests between instances, cmd wires them.
//
// With Config.Bidirectional (conversation.go) a decode instance holds
// each finished request for the conversation's next turn and answers with
// its export, and a prefill instance given an export (kv_transfer_params
// remote_prefix) reads the prefix of its prompt that the export holds
// instead of computing it, or declines and computes (ConversationStats,
// the hybridxfer_conversation_* metrics).
//
// Main types: Engine and Config; Metrics (the engine's Prometheus metrics)
// and Collector (instance state read at scrape time); MemHandshake (an
// in-process handshake for tests and tools). The model check (verify
// --check model) that runs two engines against the monolithic reference
// model lives in statexfer/verify.
package engine
