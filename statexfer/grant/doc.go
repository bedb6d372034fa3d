// Package grant issues and checks request-bound grants: the token a
// prefill instance (P) puts in a request's kv_transfer_params
// (remote_grant) that says which of its blocks a decode instance (D) may
// read for that request, and until when.
//
// A Grant binds P's engine id, incarnation (boot id), data-parallel rank,
// address, tp size, the request id, a random Token (the handle every
// control message about the request carries), the positions P computed,
// the handoff mode and first token, the per-group block ids, the lease
// expiry on P's clock, and a SHA-256 of the prompt's token ids. Seal
// encodes it (a versioned binary form, base64url) and, with the cluster
// Key, appends an HMAC-SHA256 over the encoding; Open decodes and, with a
// key, refuses a grant whose MAC is missing or wrong. So with a key
// configured on every instance nobody outside the cluster can forge,
// widen or re-target a grant: D compares every kv_transfer_params field
// with the grant's copy (Check), and the prompt it was asked to decode
// with the grant's prompt hash, before it touches the peer table or reads
// a byte.
//
// What a grant does not stop is a replay of genuine params: that is the
// job of the claim in the session protocol (statexfer/session): before
// D posts a read it claims the request's token with P, and P accepts one
// claim per decode rank while the hold lives, so consumed or concurrently
// replayed params are refused and nothing is read.
//
// A decode instance issues the same kind of grant for a finished
// request it holds for the conversation's next turn (D -> P): handoff
// HandoffExport, and instead of a prompt hash the ChainDigest of the
// request's TokenChain (one SHA-256 link per ChainBlock tokens), which
// the reader compares with its own prompt (ChainMatch) to find how much
// of it the export holds. CheckExport checks such a grant; Check refuses
// it, and CheckExport refuses a prefill's grant.
//
// Without a key, grants are still sealed and checked (they catch
// mismatched params and prompts from a buggy proxy) but anyone can mint
// them; serve warns at startup.
//
// Key is the cluster key (LoadKey reads it from --cluster-key-file: 32 or
// more random bytes, hex on one line, mode 0600, as `hybridxfer keys
// cluster` writes it). Key.InternalToken derives the secret the proxy
// presents to instances on their internal endpoints, so one file is all
// an operator distributes.
package grant
