package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy limits.
const (
	// maxPrefillResponseBytes bounds P's JSON answer (one token plus params).
	maxPrefillResponseBytes = 16 << 20
	// maxUpstreamErrorBytes bounds how much of an upstream error body is read.
	maxUpstreamErrorBytes = 64 << 10
	// healthTimeout bounds one upstream /health probe.
	healthTimeout = 5 * time.Second
)

// Proxy is the P/D disaggregation proxy (DESIGN section 5, steps 1 and 4).
// For POST /v1/completions and /v1/chat/completions it sends the request to
// a prefill instance with kv_transfer_params {"do_remote_decode": true},
// stream false and max_tokens 1; then sends the client's original request
// to a decode instance with kv_transfer_params replaced by the prefill's
// answer, and streams the decode instance's response back as it arrives.
// Instances of each role are chosen round robin. Both hops carry the same
// X-Request-Id.
//
// GET /health is 200 when every instance's /health is, else 503 listing
// the unhealthy ones; GET /v1/models is answered by a decode instance.
type Proxy struct {
	prefill, decode []string // base URLs, no trailing slash
	nextP, nextD    atomic.Uint64
	client          *http.Client
	log             *slog.Logger
	mux             *http.ServeMux
}

// Upstream roles, as the proxy's error messages name them.
const (
	sidePrefill = "prefill"
	sideDecode  = "decode"
)

// NewProxy returns a proxy over the given prefill and decode base URLs
// (http or https, optionally with a path prefix). Both lists must be non
// empty. client nil means a client with no overall timeout (responses
// stream for as long as generation runs; the client's context bounds
// them); log may be nil.
func NewProxy(prefill, decode []string, client *http.Client, log *slog.Logger) (*Proxy, error) {
	p := &Proxy{client: client, log: log}
	var err error
	if p.prefill, err = checkUpstreams(sidePrefill, prefill); err != nil {
		return nil, err
	}
	if p.decode, err = checkUpstreams(sideDecode, decode); err != nil {
		return nil, err
	}
	if p.client == nil {
		p.client = &http.Client{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.mux = http.NewServeMux()
	routeMethod(p.mux, http.MethodPost, "/v1/completions", http.HandlerFunc(p.generate))
	routeMethod(p.mux, http.MethodPost, "/v1/chat/completions", http.HandlerFunc(p.generate))
	routeMethod(p.mux, http.MethodGet, "/v1/models", http.HandlerFunc(p.models))
	routeMethod(p.mux, http.MethodGet, "/health", http.HandlerFunc(p.health))
	p.mux.HandleFunc("/", notFound)
	return p, nil
}

// checkUpstreams validates and normalizes one role's base URLs.
func checkUpstreams(side string, urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("serve: proxy needs at least one %s URL", side)
	}
	out := make([]string, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("serve: %s URL %q: %w", side, s, err)
		case u.Scheme != "http" && u.Scheme != "https":
			return nil, fmt.Errorf("serve: %s URL %q: scheme must be http or https", side, s)
		case u.Host == "":
			return nil, fmt.Errorf("serve: %s URL %q: no host", side, s)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			return nil, fmt.Errorf("serve: %s URL %q: want scheme://host[:port][/prefix] only", side, s)
		}
		out[i] = strings.TrimRight(u.String(), "/")
	}
	return out, nil
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

func roundRobin(urls []string, next *atomic.Uint64) string {
	return urls[(next.Add(1)-1)%uint64(len(urls))]
}

// generate runs one request through a P and then a D.
func (p *Proxy) generate(w http.ResponseWriter, r *http.Request) {
	id, e := requestID(r)
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set(HeaderRequestID, id)
	body, e := readBody(w, r)
	var fields map[string]json.RawMessage
	if e == nil {
		e = decodeJSON(body, &fields)
	}
	if e == nil && fields == nil {
		e = badRequest("", "request body must be a JSON object")
	}
	if e == nil {
		// Checked here too, so P does not hold state for a request D rejects.
		e = checkMaxTokens(fields)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	ctx := r.Context()
	log := p.log.With("id", id, "path", r.URL.Path)

	// Prefill: compute the prompt and hold its state for D.
	pURL := roundRobin(p.prefill, &p.nextP)
	pFields := maps.Clone(fields)
	pFields["kv_transfer_params"] = json.RawMessage(`{"do_remote_decode":true}`)
	pFields["stream"] = json.RawMessage(`false`)
	pFields["max_tokens"] = json.RawMessage(`1`)
	if _, ok := pFields["max_completion_tokens"]; ok {
		pFields["max_completion_tokens"] = json.RawMessage(`1`)
	}
	delete(pFields, "stream_options")
	resp, err := p.post(ctx, pURL, r, id, pFields)
	if err != nil {
		p.unreachable(w, r, log, sidePrefill, pURL, err)
		return
	}
	kv, e := prefillParams(resp, pURL)
	if e != nil {
		log.Warn("prefill failed", "url", pURL, "status", e.Status, "err", e.Message)
		writeError(w, e)
		return
	}

	// Decode: the client's request, with P's params unchanged.
	dURL := roundRobin(p.decode, &p.nextD)
	dFields := maps.Clone(fields)
	dFields["kv_transfer_params"] = kv
	resp, err = p.post(ctx, dURL, r, id, dFields)
	if err != nil {
		p.unreachable(w, r, log, sideDecode, dURL, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := upstreamError(sideDecode, dURL, resp)
		log.Warn("decode failed", "url", dURL, "status", e.Status, "err", e.Message)
		writeError(w, e)
		return
	}
	for _, k := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyFlush(w, resp.Body); err != nil && ctx.Err() == nil {
		log.Warn("decode response broke off", "url", dURL, "err", err)
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			e := &apiError{
				Status:  http.StatusBadGateway,
				Message: fmt.Sprintf("%s %s: response broke off: %v", sideDecode, dURL, err),
				Type:    "upstream_error",
				Code:    "upstream_broken",
			}
			b, _ := json.Marshal(map[string]*apiError{"error": e})
			_, _ = fmt.Fprintf(w, "data: %s\n\n", b)
			_ = http.NewResponseController(w).Flush()
		}
		return
	}
	log.Debug("request done", "prefill", pURL, "decode", dURL)
}

// checkMaxTokens applies the API's max_tokens rules to a raw body.
func checkMaxTokens(fields map[string]json.RawMessage) *apiError {
	for _, k := range []string{"max_tokens", "max_completion_tokens"} {
		raw, ok := fields[k]
		if !ok || string(raw) == "null" {
			continue
		}
		var n int
		if err := json.Unmarshal(raw, &n); err != nil {
			return badRequest(k, "invalid value for %q: want an integer, got JSON %s", k, raw)
		}
		if _, e := maxTokens(k, &n); e != nil {
			return e
		}
	}
	return nil
}

// prefillParams reads P's answer and returns its kv_transfer_params.
func prefillParams(resp *http.Response, pURL string) (json.RawMessage, *apiError) {
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, upstreamError(sidePrefill, pURL, resp)
	}
	bad := func(format string, args ...any) *apiError {
		return &apiError{
			Status:  http.StatusBadGateway,
			Message: fmt.Sprintf("%s %s: ", sidePrefill, pURL) + fmt.Sprintf(format, args...),
			Type:    "upstream_error",
			Code:    "bad_prefill_response",
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPrefillResponseBytes+1))
	if err != nil {
		return nil, bad("reading response: %v", err)
	}
	if len(body) > maxPrefillResponseBytes {
		return nil, bad("response exceeds %d bytes", maxPrefillResponseBytes)
	}
	var ans struct {
		KV json.RawMessage `json:"kv_transfer_params"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, bad("response is not a JSON object: %v", err)
	}
	if len(ans.KV) == 0 || string(ans.KV) == "null" {
		return nil, bad("response has no kv_transfer_params (is it serving with role prefill?)")
	}
	return ans.KV, nil
}

// post sends fields as a JSON body to base+r's path.
func (p *Proxy) post(ctx context.Context, base string, r *http.Request, id string, fields map[string]json.RawMessage) (*http.Response, error) {
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderRequestID, id)
	if a := r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	return p.client.Do(req)
}

// unreachable answers a request whose upstream could not be reached: 502,
// or 499 when the client itself went away.
func (p *Proxy) unreachable(w http.ResponseWriter, r *http.Request, log *slog.Logger, side, u string, err error) {
	if r.Context().Err() != nil {
		log.Info("client went away", "side", side, "url", u)
		e := classify(r.Context().Err())
		writeError(w, &e)
		return
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	e := &apiError{
		Status:  http.StatusBadGateway,
		Message: fmt.Sprintf("%s %s unreachable: %v", side, u, err),
		Type:    "upstream_error",
		Code:    "upstream_unreachable",
	}
	log.Warn("upstream unreachable", "side", side, "url", u, "err", err)
	writeError(w, e)
}

// upstreamError turns an upstream's error response into the client's: the
// upstream status, and a message naming the side and URL that failed and
// carrying the upstream's own message.
func upstreamError(side, u string, resp *http.Response) *apiError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamErrorBytes))
	e := &apiError{Status: resp.StatusCode, Type: "upstream_error", Code: "upstream_error"}
	msg := strings.TrimSpace(string(body))
	var up struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Param   string `json:"param"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &up) == nil && up.Error != nil && up.Error.Message != "" {
		msg, e.Param = up.Error.Message, up.Error.Param
		if up.Error.Type != "" {
			e.Type = up.Error.Type
		}
		if c, ok := up.Error.Code.(string); ok && c != "" {
			e.Code = c
		}
	}
	if msg == "" {
		msg = resp.Status
	}
	e.Message = fmt.Sprintf("%s %s failed with status %d: %s", side, u, resp.StatusCode, msg)
	return e
}

// copyFlush copies an upstream body to w, flushing after every read so
// Server-Sent Events reach the client as they arrive.
func copyFlush(w http.ResponseWriter, body io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// models forwards GET /v1/models to a decode instance.
func (p *Proxy) models(w http.ResponseWriter, r *http.Request) {
	dURL := roundRobin(p.decode, &p.nextD)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, dURL+"/v1/models", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = p.client.Do(req); err == nil {
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "" {
				w.Header().Set("Content-Type", ct)
			}
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
			return
		}
	}
	p.unreachable(w, r, p.log, sideDecode, dURL, err)
}

// upstreamHealth is one unhealthy upstream in the proxy's /health answer.
type upstreamHealth struct {
	Role  string `json:"role"`
	URL   string `json:"url"`
	Error string `json:"error"`
}

// health probes every upstream's /health concurrently.
func (p *Proxy) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	type target struct{ side, url string }
	var targets []target
	for _, u := range p.prefill {
		targets = append(targets, target{sidePrefill, u})
	}
	for _, u := range p.decode {
		targets = append(targets, target{sideDecode, u})
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { errs[i] = p.probe(ctx, t.url) })
	}
	wg.Wait()
	bad := []upstreamHealth{}
	for i, t := range targets {
		if errs[i] != nil {
			bad = append(bad, upstreamHealth{Role: t.side, URL: t.url, Error: errs[i].Error()})
		}
	}
	if len(bad) > 0 {
		p.log.Warn("unhealthy upstreams", "unhealthy", bad)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "unhealthy": bad})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// probe returns nil when base's /health answers 200.
func (p *Proxy) probe(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
