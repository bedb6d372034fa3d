package backend

import (
	"context"
	"errors"
)

// Role is what an instance does.
type Role string

// Roles.
const (
	RolePrefill Role = "prefill" // computes prompts, holds their state for D
	RoleDecode  Role = "decode"  // loads state from P, decodes
	RoleBoth    Role = "both"    // monolithic: prefill and decode locally
)

// Handoff says which positions P computes.
type Handoff string

// Handoff modes. DecodeComputesLast (the default, vLLM-compatible): P
// computes [0, N-1), D computes token N-1 and samples the first output.
// PrefillSamplesFirst: P computes [0, N) and samples the first output token
// (so a proxy can stream it at once); D starts at position N with it.
const (
	DecodeComputesLast  Handoff = "decode-computes-last"
	PrefillSamplesFirst Handoff = "prefill-samples-first"
	// DecodeExport marks a decode instance's answer: the state of the
	// conversation so far (prompt and answer), held for the next turn's
	// prefill to read back (D -> P), not a handoff to decode.
	DecodeExport Handoff = "decode-export"
)

// Failure policies for state that could not be loaded.
const (
	PolicyFail      = "fail"
	PolicyRecompute = "recompute"
)

// KVTransferParams travel in OpenAI request and response bodies under
// "kv_transfer_params" (DESIGN section 5). A client (the proxy) sets
// DoRemoteDecode on the request to P; P's response carries the rest, which
// the proxy passes to D unchanged.
type KVTransferParams struct {
	DoRemoteDecode  bool   `json:"do_remote_decode,omitempty"`
	DoRemotePrefill bool   `json:"do_remote_prefill,omitempty"`
	RemoteEngineID  string `json:"remote_engine_id,omitempty"`
	RemoteRequestID string `json:"remote_request_id,omitempty"`
	RemoteHost      string `json:"remote_host,omitempty"`
	RemotePort      int    `json:"remote_port,omitempty"` // P's handshake (ZeroMQ) port
	TPSize          int    `json:"tp_size,omitempty"`
	// RemoteDPRank is P's data-parallel rank (serve --data-parallel-size);
	// 0, and left out, for a single rank. remote_port is that rank's
	// handshake port.
	RemoteDPRank    int     `json:"remote_dp_rank,omitempty"`
	RemoteBlockIDs  [][]int `json:"remote_block_ids,omitempty"` // per KV cache group
	NumTokens       int     `json:"num_tokens,omitempty"`       // H: positions P computed
	LeaseExpiryUnix float64 `json:"lease_expiry,omitempty"`     // seconds since the epoch, P's clock
	Handoff         Handoff `json:"handoff,omitempty"`
	FirstToken      *uint32 `json:"first_token,omitempty"` // PrefillSamplesFirst: P's sampled token
	// KVLoadFailurePolicy overrides D's policy for this request: fail or recompute.
	KVLoadFailurePolicy string `json:"kv_load_failure_policy,omitempty"`
	RemoteBootID        string `json:"remote_boot_id,omitempty"` // P's incarnation
	RemoteGrant         string `json:"remote_grant,omitempty"`   // a token binding the request's blocks
	// TokenChain (decode exports): the hash chain of the num_tokens tokens
	// whose state the blocks hold (grant.TokenChain), bound by the grant.
	TokenChain string `json:"token_chain,omitempty"`
	// RemotePrefix (prefill requests of a later turn): a decode instance's
	// export of the conversation so far; P reads the longest prefix of its
	// prompt that the export holds instead of computing it, or computes
	// everything when it cannot (expired, history rewritten, unreachable).
	RemotePrefix *KVTransferParams `json:"remote_prefix,omitempty"`
}

// GenRequest is one generation request as the engine sees it, after the
// HTTP layer decoded /v1/completions or /v1/chat/completions.
type GenRequest struct {
	ID        string
	Prompt    string // completions: the prompt; chat: the rendered messages
	MaxTokens int
	// KV are the request's kv_transfer_params (nil when absent).
	KV *KVTransferParams
}

// GenResult is a finished generation.
type GenResult struct {
	Text             string
	Tokens           []uint32
	PromptTokens     int
	CompletionTokens int
	FinishReason     string            // "length" or "stop"
	KV               *KVTransferParams // P's answer to a do_remote_decode request
}

// Backend is what the HTTP layer serves: an engine of one role. Generate
// runs the request (role both: monolithic; prefill: computes the prompt,
// holds the state and returns KV params; decode: loads the state described
// by req.KV and decodes). emit, when not nil, receives each output token's
// text as soon as it is sampled (streaming); an error from emit aborts the
// request. Errors wrap the sentinels below so the HTTP layer can choose a
// status code.
type Backend interface {
	Generate(ctx context.Context, req GenRequest, emit func(text string) error) (*GenResult, error)
	// ModelName is the served model's name.
	ModelName() string
	// Ready reports whether the engine can take requests (for /health).
	Ready() error
}

// HoldAborter is implemented by prefill backends: AbortHold releases the
// state P holds for remote request id at once (the proxy calls it when the
// decode leg fails or the client went away). grant is the request's
// kv_transfer_params remote_grant (may be empty); an unknown id is not an
// error.
type HoldAborter interface {
	AbortHold(id, grant string) error
}

// Drainer is implemented by backends that drain for scale-down: after
// BeginDrain, Ready and Generate answer ErrDraining (a 503 the proxy
// routes around) while the requests in flight finish; WaitDrained
// returns once none is left and, on a prefill instance, every held lease
// is released or expired (or ctx ends, with what is still held).
type Drainer interface {
	BeginDrain()
	// Draining is closed once BeginDrain was called (by a signal or POST
	// /admin/drain), so whoever runs the backend can wait and exit.
	Draining() <-chan struct{}
	WaitDrained(ctx context.Context) error
}

// Sentinel errors of the engine, mapped to HTTP statuses by the API layer.
var (
	ErrBadRequest   = errors.New("backend: bad request")            // 400
	ErrOverloaded   = errors.New("backend: no memory for request")  // 503
	ErrKVLoad       = errors.New("backend: kv load failed")         // 502
	ErrPeer         = errors.New("backend: peer unreachable")       // 502
	ErrWrongRole    = errors.New("backend: wrong role for request") // 400
	ErrShuttingDown = errors.New("backend: shutting down")          // 503
	// ErrDraining: the instance is draining for scale-down and takes no
	// new request (503; nothing was done, another instance may take it).
	ErrDraining = errors.New("backend: draining") // 503
	// ErrGrant: kv_transfer_params whose grant does not open, verify or
	// match the params and the prompt (400, naming the field).
	ErrGrant = errors.New("backend: kv_transfer_params refused")
	// ErrConsumed: P refused D's claim: the params were consumed already,
	// expired, or are being used by another load (409; nothing was read).
	ErrConsumed = errors.New("backend: kv_transfer_params already used or no longer held")
)

// ParamError names the request field an error is about (the API reports
// it as the OpenAI error's "param").
type ParamError struct {
	Param string
	Err   error
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Err.Error() }
func (e *ParamError) Unwrap() error { return e.Err }
