// Package openai is the OpenAI-compatible HTTP API of an instance:
// POST /v1/completions and /v1/chat/completions (streaming or not),
// GET /v1/models, /health, /metrics, POST /v1/kv/abort (the proxy
// releasing a prefill hold) and the /debug views, over any
// backend.Backend. NewHandler and NewHandlerWithOptions build it;
// HandlerOptions carries client API keys and the cluster's internal token
// (auth.go). Requests are validated before the backend sees them
// (validate.go: what the reference model cannot honour is a 400 naming the
// field), and backend errors become OpenAI error objects (Classify).
//
// The proxy shares the request decoding, validation, authentication and
// error writing exported here (BeginRequest, DecodeGenBody, Authenticator,
// WriteError, ...), so a request an instance would refuse is refused
// before anything is held for it. openaitest has a deterministic fake
// Backend and HTTP helpers for tests of the API and of proxies.
package openai
