// Package serve runs disaggregated serving on top of the reference model:
// an Engine per instance (prefill, decode or both) with its TP ranks, each
// with its own registered memory and UCX endpoint, allocating through hma
// and moving state with statexfer; an OpenAI-compatible HTTP API
// (/v1/completions, /v1/chat/completions, streaming or not, /health,
// /metrics); and the proxy that sends a request to a prefill instance, then
// to a decode instance with the prefill's kv_transfer_params, and streams
// the decode instance's answer back.
package serve
