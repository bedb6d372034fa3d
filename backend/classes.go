package backend

import (
	"context"
	"errors"
)

// StatusClientClosedRequest is the (nginx) status logged for a request
// whose client went away before it finished.
const StatusClientClosedRequest = 499

// errorClasses maps the engine's sentinels, and context errors, to HTTP.
// Sentinels come first: the engine's own classification wins.
var errorClasses = []struct {
	err    error
	status int
	typ    string
	code   string
}{
	{ErrGrant, 400, "invalid_request_error", "invalid_grant"},
	{ErrConsumed, 409, "invalid_request_error", "grant_consumed"},
	{ErrBadRequest, 400, "invalid_request_error", "bad_request"},
	{ErrWrongRole, 400, "invalid_request_error", "wrong_role"},
	{ErrOverloaded, 503, "overloaded_error", "overloaded"},
	{ErrShuttingDown, 503, "unavailable_error", "shutting_down"},
	{ErrDraining, 503, "unavailable_error", "draining"},
	{ErrKVLoad, 502, "kv_transfer_error", "kv_load_failed"},
	{ErrPeer, 502, "kv_transfer_error", "peer_unreachable"},
	{context.Canceled, StatusClientClosedRequest, "client_closed_request", "canceled"},
	{context.DeadlineExceeded, 504, "timeout_error", "deadline_exceeded"},
}

// RequestStatuses are the values of the status label of
// hybridxfer_requests_total: ok and every code classify returns.
func RequestStatuses() []string {
	out := []string{"ok"}
	for _, c := range errorClasses {
		out = append(out, c.code)
	}
	return append(out, "internal_error")
}

// ErrorClass is how the API answers an error from Backend.Generate: the
// HTTP status, OpenAI's error type and our code (also the status label of
// hybridxfer_requests_total).
type ErrorClass struct {
	Status     int
	Type, Code string
}

// ClassOf classifies err: the first sentinel it wraps, else a 500
// internal_error.
func ClassOf(err error) ErrorClass {
	for _, c := range errorClasses {
		if errors.Is(err, c.err) {
			return ErrorClass{Status: c.status, Type: c.typ, Code: c.code}
		}
	}
	return ErrorClass{Status: 500, Type: "server_error", Code: "internal_error"}
}
