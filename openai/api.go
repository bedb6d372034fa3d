package openai

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/internal/ratelog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// API limits and defaults.
const (
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes = 1 << 20
	// DefaultMaxTokens is max_tokens when a request does not set it.
	DefaultMaxTokens = 16
	// MaxMaxTokens is the largest max_tokens accepted.
	MaxMaxTokens = 4096
	// maxRequestIDLen bounds a client-given X-Request-Id.
	maxRequestIDLen = 128
)

// HeaderRequestID carries a request's id, from the client or generated,
// on requests and responses.
const HeaderRequestID = "X-Request-Id"

// apiError is an error as OpenAI reports it: {"error": apiError}, with
// "param" null when the error is about no field.
type APIError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param"`
	Code    string `json:"code"`
}

// MarshalJSON writes e as OpenAI does: "param" is null when empty.
func (e APIError) MarshalJSON() ([]byte, error) {
	var param *string
	if e.Param != "" {
		param = &e.Param
	}
	return json.Marshal(struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}{e.Message, e.Type, param, e.Code})
}

// badRequest is a 400 about one field of the request (param may be empty).
func BadRequest(param, format string, args ...any) *APIError {
	return &APIError{
		Status:  http.StatusBadRequest,
		Message: fmt.Sprintf(format, args...),
		Type:    "invalid_request_error",
		Param:   param,
		Code:    "bad_request",
	}
}

// classify turns an error from Backend.Generate into the API error the
// client sees. Its Code is also the status label of
// hybridxfer_requests_total.
func Classify(err error) APIError {
	var pe *backend.ParamError
	param := ""
	if errors.As(err, &pe) {
		param = pe.Param
	}
	c := backend.ClassOf(err)
	return APIError{Status: c.Status, Message: err.Error(), Type: c.Type, Param: param, Code: c.Code}
}

// writeJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// writeError writes e in OpenAI's error format.
func WriteError(w http.ResponseWriter, e *APIError) {
	WriteJSON(w, e.Status, map[string]*APIError{"error": e})
}

// requestID returns the request's X-Request-Id, or a fresh random one
// when it has none. A client-given id must be 1 to 128 visible ASCII
// characters: it names the request on P and D and in their logs.
func requestID(r *http.Request) (string, *APIError) {
	id := r.Header.Get(HeaderRequestID)
	if id == "" {
		return rand.Text(), nil
	}
	if len(id) > maxRequestIDLen {
		return "", BadRequest("", "%s is longer than %d characters", HeaderRequestID, maxRequestIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return "", BadRequest("", "%s must be visible ASCII characters", HeaderRequestID)
		}
	}
	return id, nil
}

// readBody reads a request body of at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *APIError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &APIError{
				Status:  http.StatusRequestEntityTooLarge,
				Message: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit),
				Type:    "invalid_request_error",
				Code:    "body_too_large",
			}
		}
		return nil, BadRequest("", "reading request body: %v", err)
	}
	return body, nil
}

// decodeJSON decodes a request body into v, naming the offending field
// when a value has the wrong type.
func DecodeJSON(body []byte, v any) *APIError {
	if len(bytes.TrimSpace(body)) == 0 {
		return BadRequest("", "request body is empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return BadRequest(te.Field, "invalid value for %q: got JSON %s, want %s", te.Field, te.Value, te.Type)
		case errors.As(err, &te):
			return BadRequest("", "request body must be a JSON object, got JSON %s", te.Value)
		case errors.As(err, &se):
			return BadRequest("", "malformed JSON body at offset %d: %v", se.Offset, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return BadRequest("", "malformed JSON body: unexpected end")
		default:
			return BadRequest("", "invalid request body: %v", err)
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return BadRequest("", "malformed JSON body: data after the object")
	}
	return nil
}

// maxTokens resolves a request's max_tokens (named param) to the default
// or a checked value.
func maxTokens(param string, v *int) (int, *APIError) {
	if v == nil {
		return DefaultMaxTokens, nil
	}
	if *v < 1 || *v > MaxMaxTokens {
		return 0, BadRequest(param, "%s must be between 1 and %d, got %d", param, MaxMaxTokens, *v)
	}
	return *v, nil
}

// completionRequest is a /v1/completions body. The OpenAI sampling
// fields are validated (validate.go) and, the reference model being
// greedy, do not change the output; unknown fields are ignored.
type CompletionRequest struct {
	Model     string                    `json:"model"`
	Prompt    json.RawMessage           `json:"prompt"`
	MaxTokens *int                      `json:"max_tokens"`
	Stream    bool                      `json:"stream"`
	KV        *backend.KVTransferParams `json:"kv_transfer_params"`
	samplingFields
	completionOnlyFields
}

// prompt returns the request's prompt: a string, or an array of exactly
// one string.
func (c *CompletionRequest) prompt() (string, *APIError) {
	p := bytes.TrimSpace(c.Prompt)
	if len(p) == 0 || string(p) == "null" {
		return "", BadRequest("prompt", "prompt is required")
	}
	var s string
	if json.Unmarshal(p, &s) == nil {
		return s, nil
	}
	var ss []string
	if json.Unmarshal(p, &ss) == nil && len(ss) == 1 {
		return ss[0], nil
	}
	return "", BadRequest("prompt", "prompt must be a string or an array of exactly one string")
}

// chatRequest is a /v1/chat/completions body (validated like
// completionRequest). Messages are checked (decodeMessages) before they
// are decoded as ChatMessage.
type chatRequest struct {
	Model               string                    `json:"model"`
	Messages            []json.RawMessage         `json:"messages"`
	MaxTokens           *int                      `json:"max_tokens"`
	MaxCompletionTokens *int                      `json:"max_completion_tokens"`
	Stream              bool                      `json:"stream"`
	KV                  *backend.KVTransferParams `json:"kv_transfer_params"`
	samplingFields
	chatOnlyFields
}

// apiHandler serves the OpenAI-compatible API of one Backend.
type apiHandler struct {
	b       backend.Backend
	log     *slog.Logger
	auth    *Authenticator
	started int64 // unix seconds, for /v1/models
	// refused limits the log lines of requests refused with a 4xx: a
	// client that sends garbage must not flood the log.
	refused *ratelog.Limiter
}

// HandlerOptions configures an instance's API (see auth.go); the zero
// value is NewHandler's: no authentication.
type HandlerOptions struct {
	// APIKeys, when not empty, are the keys a client must present as
	// "Authorization: Bearer KEY" on every request but /health and
	// /metrics (else 401). LoadAPIKeys reads them from a file.
	APIKeys []string
	// InternalToken, when set, is the cluster's secret the proxy presents
	// as X-Hybridxfer-Internal: requests carrying kv_transfer_params and
	// POST /v1/kv/abort need it (else 403), and a request with it needs
	// no API key.
	InternalToken string
}

// NewHandler returns the HTTP API of b:
//
//	POST /v1/completions       OpenAI completions, streaming or not
//	POST /v1/chat/completions  OpenAI chat completions, streaming or not
//	GET  /v1/models            the served model
//	GET  /health               200 when b.Ready() is nil, else 503
//	POST /v1/kv/abort          release the state held for {"remote_request_id", "remote_grant"}
//	                           at once (b must be a HoldAborter: else 501)
//	POST /admin/drain          begin draining for scale-down (b must be a backend.Drainer:
//	                           else 501): /health turns 503 at once, new requests 503
//	                           draining, those in flight finish; 202 {"status":"draining"}
//	GET  /metrics              reg in the Prometheus text format (when reg is not nil)
//	GET  /debug/pools, /debug/leases, /debug/peers, /debug/requests/{id}
//	                           JSON snapshots (when b is an Inspector; debug.go)
//
// /health and /metrics are always served without credentials (load
// balancers, Prometheus); with HandlerOptions every other path needs them.
//
// Requests carry kv_transfer_params (KVTransferParams) to and from the
// engine. Errors are OpenAI error objects with a status chosen from the
// engine's sentinel errors. log may be nil. Requests are validated as
// validate.go lists. NewHandler authenticates nothing: see
// NewHandlerWithOptions.
func NewHandler(b backend.Backend, reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return NewHandlerWithOptions(b, reg, log, HandlerOptions{})
}

// NewHandlerWithOptions is NewHandler with API keys and the internal
// token of o (auth.go): with o.APIKeys every request but GET /health and
// GET /metrics needs a key (401 invalid_api_key) or the internal token;
// with o.InternalToken, kv_transfer_params, POST /v1/kv/abort and POST
// /admin/drain need the token (403 internal_only).
func NewHandlerWithOptions(b backend.Backend, reg *prometheus.Registry, log *slog.Logger, o HandlerOptions) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &apiHandler{b: b, log: log, auth: NewAuthenticator(o.APIKeys, o.InternalToken), started: time.Now().Unix(),
		refused: ratelog.New(time.Second, 20)}
	mux := http.NewServeMux()
	RouteMethod(mux, http.MethodPost, "/v1/completions", http.HandlerFunc(h.completions))
	RouteMethod(mux, http.MethodPost, "/v1/chat/completions", http.HandlerFunc(h.chat))
	RouteMethod(mux, http.MethodGet, "/v1/models", http.HandlerFunc(h.models))
	RouteMethod(mux, http.MethodGet, "/health", http.HandlerFunc(h.health))
	RouteMethod(mux, http.MethodPost, "/v1/kv/abort", http.HandlerFunc(h.abortHold))
	RouteMethod(mux, http.MethodPost, "/admin/drain", http.HandlerFunc(h.drain))
	if reg != nil {
		RouteMethod(mux, http.MethodGet, "/metrics", MetricsHandler(reg, log))
	}
	if in, ok := b.(backend.Inspector); ok {
		h.debugRoutes(mux, in)
	}
	mux.HandleFunc("/", NotFound)
	return h.auth.Protect(mux, true)
}

// routeMethod serves method path with h, and other methods on path with 405.
func RouteMethod(mux *http.ServeMux, method, path string, h http.Handler) {
	mux.Handle(method+" "+path, h)
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method)
		WriteError(w, &APIError{
			Status:  http.StatusMethodNotAllowed,
			Message: fmt.Sprintf("%s %s: method not allowed; use %s", r.Method, path, method),
			Type:    "invalid_request_error",
			Code:    "method_not_allowed",
		})
	})
}

// notFound answers unknown paths in OpenAI's error format.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, &APIError{
		Status:  http.StatusNotFound,
		Message: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path),
		Type:    "invalid_request_error",
		Code:    "not_found",
	})
}

func (h *apiHandler) health(w http.ResponseWriter, _ *http.Request) {
	if err := h.b.Ready(); err != nil {
		status := "unavailable"
		if errors.Is(err, backend.ErrDraining) {
			status = "draining"
		}
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status, "reason": err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// drain begins the backend's drain (POST /admin/drain, internal token).
func (h *apiHandler) drain(w http.ResponseWriter, r *http.Request) {
	if e := h.auth.requireInternal(r, ""); e != nil {
		h.reject(w, r, r.Header.Get(HeaderRequestID), e)
		return
	}
	d, ok := h.b.(backend.Drainer)
	if !ok {
		h.reject(w, r, r.Header.Get(HeaderRequestID), &APIError{
			Status:  http.StatusNotImplemented,
			Message: "this backend cannot drain",
			Type:    "invalid_request_error",
			Code:    "not_implemented",
		})
		return
	}
	d.BeginDrain()
	h.log.Info("drain requested", "remote", r.RemoteAddr)
	WriteJSON(w, http.StatusAccepted, map[string]string{"status": "draining"})
}

func (h *apiHandler) models(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	WriteJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []model{{ID: h.b.ModelName(), Object: "model", Created: h.started, OwnedBy: "hybridxfer"}},
	})
}

// checkModel rejects a request for a model this instance does not serve.
// An empty model means the served one.
func (h *apiHandler) checkModel(model string) *APIError {
	if served := h.b.ModelName(); model != "" && model != served {
		e := BadRequest("model", "model %q is not served here (serving %q)", model, served)
		e.Code = "model_not_found"
		return e
	}
	return nil
}

// beginRequest settles a generation request's id, which it also sets on
// the response, and reads its body. The API and the proxy both start here.
func BeginRequest(w http.ResponseWriter, r *http.Request) (string, []byte, *APIError) {
	id, e := requestID(r)
	if e != nil {
		return "", nil, e
	}
	w.Header().Set(HeaderRequestID, id)
	body, e := readBody(w, r)
	return id, body, e
}

// genBody is a generation request's body, decoded and validated.
type genBody struct {
	Model     string
	Prompt    string // completions: the prompt; chat: the rendered messages
	MaxTokens int
	Stream    bool
	KV        *backend.KVTransferParams
}

// decodeGenBody decodes and validates the body of a /v1/completions (chat
// false) or /v1/chat/completions (chat true) request: every rule the API
// applies before the engine sees a request. checkModel, when not nil,
// checks the model name; the proxy, which does not know the served model,
// passes nil and otherwise refuses exactly what the API refuses, with the
// same error.
func DecodeGenBody(chat bool, body []byte, checkModel func(string) *APIError) (genBody, *APIError) {
	if chat {
		return decodeChat(body, checkModel)
	}
	return decodeCompletion(body, checkModel)
}

func decodeCompletion(body []byte, checkModel func(string) *APIError) (genBody, *APIError) {
	var req CompletionRequest
	e := DecodeJSON(body, &req)
	if e == nil && checkModel != nil {
		e = checkModel(req.Model)
	}
	var prompt string
	if e == nil {
		prompt, e = req.prompt()
	}
	var n int
	if e == nil {
		n, e = maxTokens("max_tokens", req.MaxTokens)
	}
	if e == nil {
		e = req.samplingFields.validate()
	}
	if e == nil {
		e = req.completionOnlyFields.validate()
	}
	if e != nil {
		return genBody{}, e
	}
	return genBody{Model: req.Model, Prompt: prompt, MaxTokens: n, Stream: req.Stream, KV: req.KV}, nil
}

func decodeChat(body []byte, checkModel func(string) *APIError) (genBody, *APIError) {
	var req chatRequest
	e := DecodeJSON(body, &req)
	if e == nil && checkModel != nil {
		e = checkModel(req.Model)
	}
	var msgs []ChatMessage
	if e == nil {
		msgs, e = decodeMessages(req.Messages)
	}
	var n int
	if e == nil {
		if req.MaxCompletionTokens != nil {
			n, e = maxTokens("max_completion_tokens", req.MaxCompletionTokens)
		} else {
			n, e = maxTokens("max_tokens", req.MaxTokens)
		}
	}
	if e == nil {
		e = req.samplingFields.validate()
	}
	if e == nil {
		e = req.chatOnlyFields.validate()
	}
	if e != nil {
		return genBody{}, e
	}
	return genBody{Model: req.Model, Prompt: RenderChat(msgs), MaxTokens: n, Stream: req.Stream, KV: req.KV}, nil
}

func (h *apiHandler) completions(w http.ResponseWriter, r *http.Request) { h.serveGen(w, r, false) }
func (h *apiHandler) chat(w http.ResponseWriter, r *http.Request)        { h.serveGen(w, r, true) }

// serveGen serves /v1/completions (chat false) or /v1/chat/completions.
func (h *apiHandler) serveGen(w http.ResponseWriter, r *http.Request, chat bool) {
	id, body, e := BeginRequest(w, r)
	var req genBody
	if e == nil {
		req, e = DecodeGenBody(chat, body, h.checkModel)
	}
	if e == nil && req.KV != nil {
		e = h.auth.requireInternal(r, "kv_transfer_params")
	}
	if e != nil {
		h.reject(w, r, id, e)
		return
	}
	out := responder{chat: chat, id: "cmpl-" + id, created: time.Now().Unix(), model: h.b.ModelName()}
	if chat {
		out.id = "chatcmpl-" + id
	}
	h.generate(w, r, backend.GenRequest{ID: id, Prompt: req.Prompt, MaxTokens: req.MaxTokens, KV: req.KV}, out, req.Stream)
}

// abortRequest is the body of POST /v1/kv/abort.
type AbortRequest struct {
	RemoteRequestID string `json:"remote_request_id"`
	RemoteGrant     string `json:"remote_grant,omitempty"`
}

// abortHold serves POST /v1/kv/abort: release at once the state a prefill
// backend holds for a request (HoldAborter).
func (h *apiHandler) abortHold(w http.ResponseWriter, r *http.Request) {
	var req AbortRequest
	e := h.auth.requireInternal(r, "")
	var body []byte
	if e == nil {
		body, e = readBody(w, r)
	}
	if e == nil {
		e = DecodeJSON(body, &req)
	}
	if e == nil && req.RemoteRequestID == "" {
		e = BadRequest("remote_request_id", "remote_request_id is required")
	}
	if e != nil {
		h.reject(w, r, r.Header.Get(HeaderRequestID), e)
		return
	}
	ab, ok := h.b.(backend.HoldAborter)
	if !ok {
		h.reject(w, r, r.Header.Get(HeaderRequestID), &APIError{
			Status:  http.StatusNotImplemented,
			Message: "this instance holds no state for remote decode (its backend cannot abort holds)",
			Type:    "invalid_request_error",
			Code:    "not_implemented",
		})
		return
	}
	if err := ab.AbortHold(req.RemoteRequestID, req.RemoteGrant); err != nil {
		e := Classify(fmt.Errorf("abort of %q: %w", req.RemoteRequestID, err))
		h.log.Warn("abort failed", "id", r.Header.Get(HeaderRequestID), "remote_request_id", req.RemoteRequestID,
			"status", e.Status, "err", err)
		WriteError(w, &e)
		return
	}
	h.log.Info("hold aborted", "id", r.Header.Get(HeaderRequestID), "remote_request_id", req.RemoteRequestID)
	WriteJSON(w, http.StatusOK, map[string]bool{"aborted": true})
}

// reject answers a request that never reached the engine.
func (h *apiHandler) reject(w http.ResponseWriter, r *http.Request, id string, e *APIError) {
	h.refused.Log(h.log, slog.LevelInfo, "rejected request", "id", id, "path", r.URL.Path, "status", e.Status, "err", e.Message)
	WriteError(w, e)
}

// generate runs req on the backend and writes its result, as one JSON
// response or, when stream is set, as Server-Sent Events.
func (h *apiHandler) generate(w http.ResponseWriter, r *http.Request, req backend.GenRequest, out responder, stream bool) {
	start := time.Now()
	var s *sseStream
	var emit func(string) error // nil: not streaming
	if stream {
		s = &sseStream{w: w, rc: http.NewResponseController(w), out: out}
		emit = s.emit
	}
	res, err := h.b.Generate(r.Context(), req, emit)
	if err == nil && res == nil {
		err = errNoResult
	}
	switch {
	case s != nil && s.finish(res, err):
	case err != nil:
		e := Classify(err)
		WriteError(w, &e)
	default:
		WriteJSON(w, http.StatusOK, out.full(res))
	}
	attrs := []any{"id", req.ID, "path", r.URL.Path, "stream", stream, "duration", time.Since(start)}
	if err != nil {
		e := Classify(err)
		if e.Status < 500 {
			h.refused.Log(h.log, slog.LevelInfo, "request failed", append(attrs, "status", e.Status, "err", err)...)
			return
		}
		h.log.Warn("request failed", append(attrs, "status", e.Status, "err", err)...)
		return
	}
	h.log.Debug("request done", append(attrs, "prompt_tokens", res.PromptTokens,
		"completion_tokens", res.CompletionTokens, "finish_reason", res.FinishReason)...)
}

// errNoResult stands for a Backend that returned neither a result nor an error.
var errNoResult = errors.New("openai: backend returned no result")

// errStreamClosed is returned by an emit called after Generate returned.
var ErrStreamClosed = errors.New("openai: emit after the request finished")

// sseStream writes a streaming response. The response starts (status 200,
// event-stream headers) with the first token, so an error before any
// token still gets a plain error response with its own status.
type sseStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	out responder

	mu      sync.Mutex
	started bool
	done    bool
	sent    strings.Builder // text emitted so far
	err     error           // first write error: the client is gone
}

// emit is the Backend's emit callback: one event per token.
func (s *sseStream) emit(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.done:
		return ErrStreamClosed
	case s.err != nil:
		return s.err
	case text == "":
		return nil
	}
	s.startLocked()
	s.sent.WriteString(text)
	s.eventLocked(s.out.delta(text))
	return s.err
}

// finish ends the stream after Generate returned res, err. On success it
// sends text not yet emitted, the final chunk and [DONE]. On error after
// the stream started it sends an error event; before, it returns false
// and the caller writes a plain error response.
func (s *sseStream) finish(res *backend.GenResult, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if err != nil {
		if !s.started {
			return false
		}
		e := Classify(err)
		s.eventLocked(map[string]*APIError{"error": &e})
		return true
	}
	s.startLocked()
	if rest, ok := strings.CutPrefix(res.Text, s.sent.String()); ok && rest != "" {
		s.eventLocked(s.out.delta(rest))
	}
	s.eventLocked(s.out.final(res))
	s.writeLocked([]byte("data: [DONE]\n\n"))
	return true
}

func (s *sseStream) startLocked() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // no proxy buffering
	s.w.WriteHeader(http.StatusOK)
	if first := s.out.first(); first != nil {
		s.eventLocked(first)
	}
}

func (s *sseStream) eventLocked(v any) {
	b, err := json.Marshal(v)
	if err != nil { // our own types: cannot happen
		panic(err)
	}
	s.writeLocked(slices.Concat([]byte("data: "), b, []byte("\n\n")))
}

// writeLocked writes and flushes one event; after a failure it does
// nothing and s.err holds the failure.
func (s *sseStream) writeLocked(b []byte) {
	if s.err != nil {
		return
	}
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.err = err
	}
}

// Response bodies.
type (
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}
	completionChoice struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		Logprobs     any     `json:"logprobs"` // always null
		FinishReason *string `json:"finish_reason"`
	}
	chatMessageOut struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	chatDelta struct {
		Role    string `json:"role,omitempty"`
		Content string `json:"content,omitempty"`
	}
	chatChoice struct {
		Index        int             `json:"index"`
		Message      *chatMessageOut `json:"message,omitempty"`
		Delta        *chatDelta      `json:"delta,omitempty"`
		Logprobs     any             `json:"logprobs"` // always null
		FinishReason *string         `json:"finish_reason"`
	}
	// apiResponse is a completion, chat completion, or a chunk of either.
	apiResponse struct {
		ID      string                    `json:"id"`
		Object  string                    `json:"object"`
		Created int64                     `json:"created"`
		Model   string                    `json:"model"`
		Choices any                       `json:"choices"`
		Usage   *Usage                    `json:"usage,omitempty"`
		KV      *backend.KVTransferParams `json:"kv_transfer_params,omitempty"`
	}
)

// responder builds the response bodies of one request.
type responder struct {
	chat    bool
	id      string
	created int64
	model   string
}

func (o responder) body(object string, choices any) *apiResponse {
	return &apiResponse{ID: o.id, Object: object, Created: o.created, Model: o.model, Choices: choices}
}

func usageOf(res *backend.GenResult) *Usage {
	return &Usage{res.PromptTokens, res.CompletionTokens, res.PromptTokens + res.CompletionTokens}
}

// full is the non-streaming response.
func (o responder) full(res *backend.GenResult) *apiResponse {
	var b *apiResponse
	if o.chat {
		b = o.body("chat.completion", []chatChoice{{
			Message:      &chatMessageOut{Role: "assistant", Content: res.Text},
			FinishReason: &res.FinishReason,
		}})
	} else {
		b = o.body("text_completion", []completionChoice{{Text: res.Text, FinishReason: &res.FinishReason}})
	}
	b.Usage, b.KV = usageOf(res), res.KV
	return b
}

// first is the chunk that opens a stream, or nil: chat announces the
// assistant's role.
func (o responder) first() *apiResponse {
	if !o.chat {
		return nil
	}
	return o.body("chat.completion.chunk", []chatChoice{{Delta: &chatDelta{Role: "assistant"}}})
}

// delta is the chunk carrying streamed text.
func (o responder) delta(text string) *apiResponse {
	if o.chat {
		return o.body("chat.completion.chunk", []chatChoice{{Delta: &chatDelta{Content: text}}})
	}
	return o.body("text_completion", []completionChoice{{Text: text}})
}

// final is the chunk that ends a stream: finish reason, usage and the
// result's kv_transfer_params.
func (o responder) final(res *backend.GenResult) *apiResponse {
	var b *apiResponse
	if o.chat {
		b = o.body("chat.completion.chunk", []chatChoice{{Delta: &chatDelta{}, FinishReason: &res.FinishReason}})
	} else {
		b = o.body("text_completion", []completionChoice{{FinishReason: &res.FinishReason}})
	}
	b.Usage, b.KV = usageOf(res), res.KV
	return b
}

// metricsHandler serves reg at GET /metrics (instances and the proxy).
func MetricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)})
}
