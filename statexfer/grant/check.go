package grant

import (
	"fmt"
	"slices"
)

// Params are the kv_transfer_params fields a grant binds (P's when it
// issues the grant, D's as it received them).
type Params struct {
	EngineID   string // remote_engine_id
	BootID     string // remote_boot_id
	DP         int    // remote_dp_rank
	Host       string // remote_host
	Port       int    // remote_port
	TP         int    // tp_size
	ReqID      string // remote_request_id
	NumTokens  int    // num_tokens
	Handoff    string // handoff
	FirstToken *uint32
	BlockIDs   [][]int // remote_block_ids
	Expiry     int64   // lease_expiry, Unix nanoseconds on P's clock
}

// ExpirySlack is how far lease_expiry may differ from the grant's expiry:
// kv_transfer_params carry it as float seconds, which loses nanoseconds.
const ExpirySlack = 1000 // nanoseconds

// Check compares D's params and prompt tokens with what g binds; the first
// difference is a *FieldError naming the kv_transfer_params field.
func (g *Grant) Check(p Params, prompt []uint32) error {
	if g.Handoff == HandoffExport {
		return &FieldError{Field: "handoff", Msg: "a decode instance's export is not a prefill's grant"}
	}
	if err := g.checkParams(p); err != nil {
		return err
	}
	if PromptHash(prompt) != g.Prompt {
		return &FieldError{Field: "prompt", Msg: "the prompt's tokens are not those the grant was issued for"}
	}
	return nil
}

// checkParams compares every field of p with the grant's copy.
func (g *Grant) checkParams(p Params) error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case p.EngineID != g.EngineID:
		return bad("remote_engine_id", "%q, the grant is for %q", p.EngineID, g.EngineID)
	case p.BootID != g.BootID:
		return bad("remote_boot_id", "%q, the grant is for %q", p.BootID, g.BootID)
	case p.DP != g.DP:
		return bad("remote_dp_rank", "%d, the grant is for %d", p.DP, g.DP)
	case p.Host != g.Host:
		return bad("remote_host", "%q, the grant is for %q", p.Host, g.Host)
	case p.Port != g.Port:
		return bad("remote_port", "%d, the grant is for %d", p.Port, g.Port)
	case p.TP != g.TP:
		return bad("tp_size", "%d, the grant is for %d", p.TP, g.TP)
	case p.ReqID != g.ReqID:
		return bad("remote_request_id", "%q, the grant is for %q", p.ReqID, g.ReqID)
	case p.NumTokens != g.NumTokens:
		return bad("num_tokens", "%d, the grant is for %d", p.NumTokens, g.NumTokens)
	case p.Handoff != g.Handoff:
		return bad("handoff", "%q, the grant is for %q", p.Handoff, g.Handoff)
	case (p.FirstToken == nil) != (g.FirstToken == nil) || (p.FirstToken != nil && *p.FirstToken != *g.FirstToken):
		return bad("first_token", "differs from the grant's")
	case !slices.EqualFunc(p.BlockIDs, g.BlockIDs, slices.Equal[[]int]):
		return bad("remote_block_ids", "differ from the blocks the grant names")
	case p.Expiry < g.Expiry-ExpirySlack || p.Expiry > g.Expiry+ExpirySlack:
		return bad("lease_expiry", "differs from the grant's")
	}
	return nil
}
