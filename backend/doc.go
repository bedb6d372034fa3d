// Package backend is the contract between the OpenAI-compatible API
// (openai) and what serves it (engine.Engine, test fakes): GenRequest and
// GenResult, vLLM's kv_transfer_params (KVTransferParams), the Backend,
// HoldAborter, Drainer (scale-down) and Inspector interfaces, the /debug
// views, instance roles, handoff modes and failure policies, and the
// sentinel errors a backend returns with the class (HTTP status, OpenAI
// error type, code) the API answers each with (ClassOf). It imports no HTTP: the engine and the
// property suite depend on it without depending on a server.
package backend
