package proxy

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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/prometheus/client_golang/prometheus"
)

// Proxy limits and defaults.
const (
	// maxPrefillResponseBytes bounds P's JSON answer (one token plus params).
	maxPrefillResponseBytes = 16 << 20
	// maxUpstreamErrorBytes bounds how much of an upstream error body is read.
	maxUpstreamErrorBytes = 64 << 10
	// healthTimeout bounds one upstream /health probe.
	healthTimeout = 5 * time.Second
	// DefaultHealthInterval is how often the proxy probes its upstreams.
	DefaultHealthInterval = time.Second
	// DefaultAbortTimeout bounds one POST /v1/kv/abort to a prefill instance.
	DefaultAbortTimeout = 2 * time.Second
)

// Proxy is the P/D disaggregation proxy (DESIGN section 5, steps 1 and 4).
// For POST /v1/completions and /v1/chat/completions it decodes and
// validates the request exactly as the instances' API does (all but the
// model name, which only the instances know), so a request D would refuse
// is refused before P holds state for it. It then sends the request to a
// prefill instance with kv_transfer_params {"do_remote_decode": true},
// stream false and max_tokens 1; then sends the client's original request
// to a decode instance with kv_transfer_params replaced by the prefill's
// answer, and streams the decode instance's response back as it arrives.
// Both hops carry the same X-Request-Id.
//
// Instances of each role are chosen by least outstanding requests (this
// proxy's own in-flight counts) among those not excluded, ties round robin
// with the roles' starts offset so equal loads walk every (P, D) pair.
// An instance is excluded when a connection to it fails, its /health
// probe fails, or it answers 503 draining or shutting_down; a background
// checker probes every instance each HealthInterval and re-admits an
// excluded one once its /health is 200. A prefill leg that fails
// (connection failure, 5xx, or a bad answer) is retried on another
// prefill instance, each at most once per request; a 4xx from P is the
// client's answer. A decode leg is retried on another decode instance
// only when D refused with 503 draining or shutting_down (it did nothing:
// P's hold is untouched); when one fails otherwise, or the client goes
// away before D's answer is complete, the proxy sends POST /v1/kv/abort to
// the P that prefilled, so P releases the request's state at once instead
// of at lease expiry. With no instance of a role available the answer is
// 503.
//
// GET /health is 200 when every instance's /health is, else 503 listing
// the unhealthy ones; GET /v1/models is answered by a decode instance.
//
// Multi-turn conversations: a client may send the kv_transfer_params of
// its previous turn's response (a decode instance's export, with
// --bidirectional) back as previous_kv_transfer_params; the proxy passes
// it to the prefill instance as kv_transfer_params.remote_prefix and keeps
// no conversation state (PreviousTurnField).
//
// Clients never set kv_transfer_params: a client request carrying them
// (under any spelling encoding/json would match, even null) is refused
// with 400 before anything is sent upstream. With ProxyOptions.APIKeys
// every request but GET /health needs "Authorization: Bearer KEY" (401
// otherwise, before any upstream call). The client's Authorization header
// is never forwarded; every request the proxy makes to an instance
// (both legs, aborts, /v1/models, /health probes) carries
// ProxyOptions.InternalToken as X-Hybridxfer-Internal instead (auth.go).
type Proxy struct {
	ups          atomic.Pointer[upstreamSet] // the instances routed to now (SetUpstreams swaps it)
	next         atomic.Uint64               // requests so far: where each starts (routeStarts)
	client       *http.Client
	log          *slog.Logger
	mux          *http.ServeMux
	handler      http.Handler // mux behind the client API key check
	interval     time.Duration
	abortTimeout time.Duration
	auth         *openai.Authenticator
	internal     string // sent as HeaderInternal to instances; may be empty
	metrics      *proxyMetrics

	stop    context.CancelFunc // stops the health checker
	checker sync.WaitGroup

	mu     sync.Mutex
	closed bool
	aborts sync.WaitGroup // aborts in flight; Added under mu while !closed
}

// ProxyOptions configures a proxy; the zero value means the defaults.
type Options struct {
	// Client sends every upstream request. nil means a client with no
	// overall timeout (responses stream for as long as generation runs;
	// the client's context bounds them).
	Client *http.Client
	// Log may be nil.
	Log *slog.Logger
	// HealthInterval is how often the health checker probes every
	// instance's /health (default DefaultHealthInterval).
	HealthInterval time.Duration
	// AbortTimeout bounds one abort sent to a prefill instance (default
	// DefaultAbortTimeout).
	AbortTimeout time.Duration
	// APIKeys, when not empty, are the keys a client must present as
	// "Authorization: Bearer KEY" on every request but /health (and
	// /metrics). LoadAPIKeys reads them.
	APIKeys []string
	// Registry, when not nil, receives the proxy's metrics
	// (docs/metrics.md, "Proxy"), served at GET /metrics without
	// credentials like an instance's.
	Registry *prometheus.Registry
	// Dynamic: the instances come from SetUpstreams (discovery), so the
	// lists given to NewWithOptions may be empty.
	Dynamic bool
	// InternalToken is sent as X-Hybridxfer-Internal on every request to
	// an instance: instances with the same HandlerOptions.InternalToken
	// accept kv_transfer_params and aborts only with it. Empty: no header.
	InternalToken string
}

// upstreamSet is the instances of both roles the proxy routes to; a
// request works on the set it loaded when it began.
type upstreamSet struct{ prefill, decode []*upstream }

// upstream is one instance the proxy routes to.
type upstream struct {
	side   string // sidePrefill or sideDecode
	url    string // base URL, no trailing slash
	compat string // the instance's compatibility hash when known (discovery), else ""

	excluded atomic.Bool
	inflight atomic.Int64 // requests this proxy has sent it that have not finished
	mu       sync.Mutex
	seq      uint64 // exclusions so far: a probe re-admits only if none happened since it began
}

// Upstream roles, as the proxy's error messages name them.
const (
	sidePrefill = "prefill"
	sideDecode  = "decode"
)

// NewProxy returns a proxy over the given prefill and decode base URLs
// with the default options but client and log (see ProxyOptions). Close
// stops its health checker.
func New(prefill, decode []string, client *http.Client, log *slog.Logger) (*Proxy, error) {
	return NewWithOptions(prefill, decode, Options{Client: client, Log: log})
}

// NewProxyWithOptions returns a proxy over the given prefill and decode
// base URLs (http or https, optionally with a path prefix). Both lists
// must be non empty. It starts the proxy's health checker; Close stops it.
func NewWithOptions(prefill, decode []string, opts Options) (*Proxy, error) {
	p := &Proxy{client: opts.Client, log: opts.Log, interval: opts.HealthInterval, abortTimeout: opts.AbortTimeout,
		auth: openai.NewAuthenticator(opts.APIKeys, ""), internal: opts.InternalToken}
	set := &upstreamSet{}
	var err error
	if set.prefill, err = checkUpstreams(sidePrefill, prefill, nil, opts.Dynamic); err != nil {
		return nil, err
	}
	if set.decode, err = checkUpstreams(sideDecode, decode, nil, opts.Dynamic); err != nil {
		return nil, err
	}
	p.ups.Store(set)
	if p.client == nil {
		p.client = &http.Client{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.interval <= 0 {
		p.interval = DefaultHealthInterval
	}
	if p.abortTimeout <= 0 {
		p.abortTimeout = DefaultAbortTimeout
	}
	p.mux = http.NewServeMux()
	if opts.Registry != nil {
		p.metrics = newProxyMetrics(opts.Registry, p)
		openai.RouteMethod(p.mux, http.MethodGet, "/metrics", openai.MetricsHandler(opts.Registry, p.log))
	}
	openai.RouteMethod(p.mux, http.MethodPost, "/v1/completions", p.metrics.track(p.generate(false)))
	openai.RouteMethod(p.mux, http.MethodPost, "/v1/chat/completions", p.metrics.track(p.generate(true)))
	openai.RouteMethod(p.mux, http.MethodGet, "/v1/models", http.HandlerFunc(p.models))
	openai.RouteMethod(p.mux, http.MethodGet, "/health", http.HandlerFunc(p.health))
	p.mux.HandleFunc("/", openai.NotFound)
	p.handler = p.auth.Protect(p.mux, false)
	ctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.checker.Go(func() { p.checkHealth(ctx) })
	return p, nil
}

// Close stops the health checker and waits for it and for the aborts in
// flight (each bounded by AbortTimeout). Requests still running after
// Close send their aborts synchronously. Close is idempotent.
func (p *Proxy) Close() error {
	p.stop()
	p.checker.Wait()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.aborts.Wait()
	return nil
}

// checkUpstreams validates and normalizes one role's base URLs (none is
// an error unless allowEmpty); an instance already in old (same URL) is
// kept, with its in-flight count and exclusion.
func checkUpstreams(side string, urls []string, old []*upstream, allowEmpty bool) ([]*upstream, error) {
	if len(urls) == 0 && !allowEmpty {
		return nil, fmt.Errorf("proxy: proxy needs at least one %s URL", side)
	}
	out := make([]*upstream, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("proxy: %s URL %q: %w", side, s, err)
		case u.Scheme != "http" && u.Scheme != "https":
			return nil, fmt.Errorf("proxy: %s URL %q: scheme must be http or https", side, s)
		case u.Host == "":
			return nil, fmt.Errorf("proxy: %s URL %q: no host", side, s)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			return nil, fmt.Errorf("proxy: %s URL %q: want scheme://host[:port][/prefix] only", side, s)
		}
		norm := strings.TrimRight(u.String(), "/")
		for _, o := range old {
			if o.url == norm {
				out[i] = o
			}
		}
		if out[i] == nil {
			out[i] = &upstream{side: side, url: norm}
		}
	}
	return out, nil
}

// Upstream is one instance for SetUpstreams: its base URL and, when known,
// its compatibility hash (decode legs then go only to decode instances
// with the prefill instance's hash).
type Upstream struct {
	URL        string
	CompatHash string
}

// SetUpstreams replaces the instances the proxy routes to (discovery
// calls it whenever the registered instances change). Instances that stay
// keep their in-flight counts and exclusion; requests in flight finish on
// the set they began with. Empty lists are allowed: requests then get 503
// no_upstream until an instance appears.
func (p *Proxy) SetUpstreams(prefill, decode []Upstream) error {
	old := p.ups.Load()
	set := &upstreamSet{}
	for _, side := range []struct {
		name string
		in   []Upstream
		old  []*upstream
		out  *[]*upstream
	}{{sidePrefill, prefill, old.prefill, &set.prefill}, {sideDecode, decode, old.decode, &set.decode}} {
		urls := make([]string, len(side.in))
		for i, u := range side.in {
			urls[i] = u.URL
		}
		ups, err := checkUpstreams(side.name, urls, side.old, true)
		if err != nil {
			return err
		}
		for i, u := range ups {
			want := side.in[i].CompatHash
			if u.compat == want {
				continue
			}
			if slices.Contains(side.old, u) {
				// Requests in flight read the kept instance's hash: an
				// instance whose hash changed (restarted with another
				// model) is a new one, with fresh counts.
				ups[i] = &upstream{side: u.side, url: u.url, compat: want}
			} else {
				u.compat = want // not shared yet
			}
		}
		*side.out = ups
	}
	p.ups.Store(set)
	p.log.Info("upstreams updated", "prefill", len(set.prefill), "decode", len(set.decode))
	return nil
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// pick returns the instance of ups with the fewest requests in flight
// from this proxy (least outstanding requests) that is not excluded, not
// tried (tried may be nil) and, when compat and the instance's hash are
// both known, of compatibility hash compat; ties go to the first from
// position start on; nil when there is none. A request takes one start per role
// (routeStarts), so its retries do not shift where the next request
// starts.
func pick(ups []*upstream, start uint64, tried map[*upstream]bool, compat string) *upstream {
	n := uint64(len(ups))
	var best *upstream
	var bestLoad int64
	for i := range n {
		u := ups[(start+i)%n]
		if u.excluded.Load() || tried[u] || (compat != "" && u.compat != "" && u.compat != compat) {
			continue
		}
		if load := u.inflight.Load(); best == nil || load < bestLoad {
			best, bestLoad = u, load
		}
	}
	return best
}

// routeStarts are request seq's round-robin starts among nP prefill and
// decode instances: prefill seq, decode seq/nP, so that when loads tie
// consecutive requests walk every (prefill, decode) pair instead of
// always pairing the same two (independent counters advance together).
func routeStarts(seq uint64, nP int) (prefill, decode uint64) {
	return seq, seq / uint64(max(nP, 1))
}

// begin counts a request in flight on u until the returned func is
// called.
func (u *upstream) begin() (end func()) {
	u.inflight.Add(1)
	return func() { u.inflight.Add(-1) }
}

// available reports whether some instance of ups is not excluded.
func available(ups []*upstream) bool {
	for _, u := range ups {
		if !u.excluded.Load() {
			return true
		}
	}
	return false
}

// exclude takes u out of routing until a health probe re-admits it.
func (p *Proxy) exclude(u *upstream, why error) {
	u.mu.Lock()
	u.seq++
	was := u.excluded.Swap(true)
	u.mu.Unlock()
	if !was {
		p.metrics.exclusion(u.side)
		p.log.Warn("upstream excluded", "role", u.side, "url", u.url, "err", why)
	}
}

// admit re-admits u after a successful probe that began when u's
// exclusion count was seq; an exclusion since then wins.
func (p *Proxy) admit(u *upstream, seq uint64) {
	u.mu.Lock()
	was := u.seq == seq && u.excluded.Swap(false)
	u.mu.Unlock()
	if was {
		p.log.Info("upstream re-admitted", "role", u.side, "url", u.url)
	}
}

func (u *upstream) exclusions() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seq
}

// noneAvailable is the answer when every instance of a role is excluded.
func noneAvailable(side string, ups []*upstream) *openai.APIError {
	msg := fmt.Sprintf("no %s instance available: all %d are excluded after failed connections, /health probes or drains "+
		"(each is re-admitted once its /health answers 200)", side, len(ups))
	if len(ups) == 0 {
		msg = fmt.Sprintf("no %s instance available: none is registered (discovery lists no %s instance)", side, side)
	}
	return &openai.APIError{
		Status:  http.StatusServiceUnavailable,
		Message: msg,
		Type:    "unavailable_error",
		Code:    "no_upstream",
	}
}

// checkHealth probes every instance each interval until ctx ends.
func (p *Proxy) checkHealth(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		set := p.ups.Load()
		all := append(slices.Clone(set.prefill), set.decode...)
		var wg sync.WaitGroup
		for _, u := range all {
			wg.Go(func() { p.check(ctx, u) })
		}
		wg.Wait()
	}
}

// check probes u's /health (bounded by healthTimeout) and excludes or
// re-admits u by the answer, unless ctx ended first.
func (p *Proxy) check(ctx context.Context, u *upstream) error {
	seq := u.exclusions()
	pctx, cancel := context.WithTimeout(ctx, healthTimeout)
	err := p.probe(pctx, u.url)
	cancel()
	switch {
	case ctx.Err() != nil:
	case err != nil:
		p.exclude(u, fmt.Errorf("health probe: %w", err))
	default:
		p.admit(u, seq)
	}
	return err
}

// hold names the state a prefill instance holds for one request.
type hold struct {
	url    string // the prefill instance
	id     string // remote_request_id
	grant  string // remote_grant
	compat string // the prefill instance's compatibility hash, when known
}

// generate returns the handler of /v1/completions (chat false) or
// /v1/chat/completions: one request through a P and then a D.
func (p *Proxy) generate(chat bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, body, e := openai.BeginRequest(w, r)
		if e == nil {
			// The API's own decoding and rules: P must not hold state for a
			// request D refuses.
			_, e = openai.DecodeGenBody(chat, body, nil)
		}
		var fields map[string]json.RawMessage
		if e == nil {
			e = openai.DecodeJSON(body, &fields)
		}
		if e == nil && fields == nil {
			e = openai.BadRequest("", "request body must be a JSON object")
		}
		if e == nil {
			e = refuseClientKV(fields)
		}
		var prev json.RawMessage
		if e == nil {
			prev, e = previousTurn(fields)
		}
		if e != nil {
			openai.WriteError(w, e)
			return
		}
		ctx := r.Context()
		log := p.log.With("id", id, "path", r.URL.Path)
		set := p.ups.Load()
		if !available(set.decode) {
			log.Warn("no decode instance available")
			openai.WriteError(w, noneAvailable(sideDecode, set.decode))
			return
		}

		// Prefill: compute the prompt and hold its state for D.
		pStart, dStart := routeStarts(p.next.Add(1)-1, len(set.prefill))
		kv, h, e := p.prefillLeg(ctx, r, log, id, fields, prev, set.prefill, pStart)
		if e != nil {
			openai.WriteError(w, e)
			return
		}

		// Decode: the client's request, with P's params unchanged.
		dFields := maps.Clone(fields)
		setField(dFields, "kv_transfer_params", kv)
		d, resp, e := p.decodeLeg(ctx, r, log, id, dFields, set.decode, dStart, h.compat)
		if e != nil {
			p.abortHold(h, log, "decode failed")
			openai.WriteError(w, e)
			return
		}
		defer d.begin()()
		defer resp.Body.Close()
		for _, k := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering"} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		if err := copyFlush(w, resp.Body); err != nil {
			// D's state may still be loading from P: release it.
			p.abortHold(h, log, "decode response incomplete")
			if ctx.Err() != nil {
				log.Info("client went away", "side", sideDecode, "url", d.url)
				return
			}
			log.Warn("decode response broke off", "url", d.url, "err", err)
			p.metrics.brokenOff()
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				e := &openai.APIError{
					Status:  http.StatusBadGateway,
					Message: fmt.Sprintf("%s %s: response broke off: %v", sideDecode, d.url, err),
					Type:    "upstream_error",
					Code:    "upstream_broken",
				}
				b, _ := json.Marshal(map[string]*openai.APIError{"error": e})
				_, _ = fmt.Fprintf(w, "data: %s\n\n", b)
				_ = http.NewResponseController(w).Flush()
			}
			return
		}
		log.Debug("request done", "prefill", h.url, "decode", d.url)
	}
}

// decodeLeg sends the decode request to a decode instance and returns
// the instance and its 2xx response, or the client's error. An instance
// that refuses with 503 draining or shutting_down did nothing (P's hold
// is untouched), so the next instance is tried; any other failure is the
// answer (D may have begun reading P's state).
func (p *Proxy) decodeLeg(ctx context.Context, r *http.Request, log *slog.Logger, id string,
	fields map[string]json.RawMessage, ups []*upstream, start uint64, compat string) (*upstream, *http.Response, *openai.APIError) {
	tried := map[*upstream]bool{}
	var last *openai.APIError
	for attempt := range ups {
		d := pick(ups, start, tried, compat)
		if d == nil {
			break
		}
		if attempt > 0 {
			p.metrics.retry()
		}
		tried[d] = true
		end := d.begin()
		resp, err := p.post(ctx, d.url, r, id, fields)
		end()
		if err != nil {
			if ctx.Err() == nil {
				p.exclude(d, err)
			}
			return nil, nil, p.failure(r, log, d, err)
		}
		if resp.StatusCode/100 == 2 {
			return d, resp, nil
		}
		e := upstreamError(sideDecode, d.url, resp)
		resp.Body.Close()
		log.Warn("decode failed", "url", d.url, "status", e.Status, "err", e.Message)
		if !refusedUntouched(e) || ctx.Err() != nil {
			return nil, nil, e
		}
		p.exclude(d, errors.New(e.Message))
		last = e
	}
	if last == nil {
		log.Warn("no decode instance available")
		last = noneAvailable(sideDecode, ups)
		if compat != "" && available(ups) {
			last.Message = fmt.Sprintf("no decode instance available with the prefill instance's compatibility hash %s", compat)
		}
	}
	return nil, nil, last
}

// refusedUntouched reports whether an instance's error says it refused
// the request before doing anything: it is draining or shutting down.
func refusedUntouched(e *openai.APIError) bool {
	return e.Status == http.StatusServiceUnavailable && (e.Code == "draining" || e.Code == "shutting_down")
}

// prefillLeg runs the request on a prefill instance, retrying on another
// when one fails with a connection failure, a 5xx or a bad answer (each
// instance at most once). It returns P's kv_transfer_params and the hold
// they name, or the client's error.
func (p *Proxy) prefillLeg(ctx context.Context, r *http.Request, log *slog.Logger, id string,
	fields map[string]json.RawMessage, prev json.RawMessage, ups []*upstream, start uint64) (json.RawMessage, hold, *openai.APIError) {
	pFields := maps.Clone(fields)
	pkv := json.RawMessage(`{"do_remote_decode":true}`)
	if prev != nil {
		pkv = json.RawMessage(`{"do_remote_decode":true,"remote_prefix":` + string(prev) + `}`)
	}
	setField(pFields, "kv_transfer_params", pkv)
	setField(pFields, "stream", json.RawMessage(`false`))
	setField(pFields, "max_tokens", json.RawMessage(`1`))
	if deleteField(pFields, "max_completion_tokens") {
		pFields["max_completion_tokens"] = json.RawMessage(`1`)
	}
	deleteField(pFields, "stream_options")
	tried := map[*upstream]bool{}
	var last *openai.APIError
	for attempt := range ups {
		u := pick(ups, start, tried, "")
		if u == nil {
			break
		}
		if attempt > 0 {
			p.metrics.retry()
		}
		tried[u] = true
		end := u.begin()
		resp, err := p.post(ctx, u.url, r, id, pFields)
		if err == nil {
			var kv json.RawMessage
			var h hold
			var e *openai.APIError
			kv, h, e = prefillParams(resp, u.url)
			end()
			if e == nil {
				h.compat = u.compat
				return kv, h, nil
			}
			log.Warn("prefill failed", "url", u.url, "status", e.Status, "err", e.Message)
			if refusedUntouched(e) {
				p.exclude(u, errors.New(e.Message))
			}
			last = e
		} else {
			end()
			if ctx.Err() == nil {
				p.exclude(u, err)
			}
			last = p.failure(r, log, u, err)
		}
		if ctx.Err() != nil || last.Status/100 == 4 {
			// The client went away, or P refused the request itself.
			return nil, hold{}, last
		}
	}
	if last == nil {
		log.Warn("no prefill instance available")
		last = noneAvailable(sidePrefill, ups)
	}
	return nil, hold{}, last
}

// refuseClientKV refuses a client body that carries kv_transfer_params,
// under any key encoding/json matches to the field (it matches names
// case-insensitively), null included: only the proxy sets them.
func refuseClientKV(fields map[string]json.RawMessage) *openai.APIError {
	for k := range fields {
		if strings.EqualFold(k, "kv_transfer_params") {
			return &openai.APIError{
				Status:  http.StatusBadRequest,
				Message: "kv_transfer_params are set by the proxy: a client request must not carry them",
				Type:    "invalid_request_error",
				Param:   "kv_transfer_params",
				Code:    "internal_only",
			}
		}
	}
	return nil
}

// PreviousTurnField is the request field in which a client sends back
// the kv_transfer_params of the previous turn's response (a decode
// instance's export of the conversation, with --bidirectional): the proxy
// hands them to the prefill instance, which reads the conversation's
// prefix from that decode instance instead of computing it. The proxy
// keeps no conversation state: what the client sends is all it carries.
const PreviousTurnField = "previous_kv_transfer_params"

// previousTurn takes the previous turn's export out of fields (every
// spelling) and returns it re-encoded, nil when absent or null. It must
// be a decode instance's export (handoff decode-export); the prefill
// instance checks its grant and everything else, and computes the prompt
// when it does not hold.
func previousTurn(fields map[string]json.RawMessage) (json.RawMessage, *openai.APIError) {
	var raw json.RawMessage
	for k, v := range fields {
		if strings.EqualFold(k, PreviousTurnField) {
			raw = v
			delete(fields, k)
		}
	}
	if len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	bad := func(msg string) *openai.APIError {
		return &openai.APIError{Status: http.StatusBadRequest, Message: PreviousTurnField + ": " + msg,
			Type: "invalid_request_error", Param: PreviousTurnField, Code: "invalid_value"}
	}
	var kv backend.KVTransferParams
	if err := json.Unmarshal(raw, &kv); err != nil {
		return nil, bad(fmt.Sprintf("not kv_transfer_params: %v", err))
	}
	if kv.Handoff != backend.DecodeExport || kv.DoRemoteDecode || kv.DoRemotePrefill || kv.RemotePrefix != nil {
		return nil, bad("not a decode instance's export of a conversation (send back the previous response's kv_transfer_params unchanged)")
	}
	out, err := json.Marshal(&kv)
	if err != nil {
		return nil, bad(err.Error())
	}
	return out, nil
}

// deleteField deletes every key of m that encoding/json would decode as
// field name (it matches case-insensitively) and reports whether there
// was one.
func deleteField(m map[string]json.RawMessage, name string) bool {
	found := false
	for k := range m {
		if strings.EqualFold(k, name) {
			delete(m, k)
			found = true
		}
	}
	return found
}

// setField sets field name of m to v, dropping other spellings of it
// first: the instance must not decode a client's "Max_Tokens" over the
// proxy's "max_tokens".
func setField(m map[string]json.RawMessage, name string, v json.RawMessage) {
	deleteField(m, name)
	m[name] = v
}

// prefillParams reads P's answer and returns its kv_transfer_params, as P
// sent them, and the hold they name.
func prefillParams(resp *http.Response, pURL string) (json.RawMessage, hold, *openai.APIError) {
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, hold{}, upstreamError(sidePrefill, pURL, resp)
	}
	bad := func(format string, args ...any) (json.RawMessage, hold, *openai.APIError) {
		return nil, hold{}, &openai.APIError{
			Status:  http.StatusBadGateway,
			Message: fmt.Sprintf("%s %s: ", sidePrefill, pURL) + fmt.Sprintf(format, args...),
			Type:    "upstream_error",
			Code:    "bad_prefill_response",
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPrefillResponseBytes+1))
	if err != nil {
		return bad("reading response: %v", err)
	}
	if len(body) > maxPrefillResponseBytes {
		return bad("response exceeds %d bytes", maxPrefillResponseBytes)
	}
	var ans struct {
		KV json.RawMessage `json:"kv_transfer_params"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return bad("response is not a JSON object: %v", err)
	}
	if len(ans.KV) == 0 || string(ans.KV) == "null" {
		return bad("response has no kv_transfer_params (is it serving with role prefill?)")
	}
	var kv struct {
		ID    string `json:"remote_request_id"`
		Grant string `json:"remote_grant"`
	}
	if err := json.Unmarshal(ans.KV, &kv); err != nil {
		return bad("bad kv_transfer_params: %v", err)
	}
	if kv.ID == "" {
		return bad("kv_transfer_params has no remote_request_id")
	}
	return ans.KV, hold{url: pURL, id: kv.ID, grant: kv.Grant}, nil
}

// post sends fields as a JSON body to base+r's path.
func (p *Proxy) post(ctx context.Context, base string, r *http.Request, id string, fields map[string]json.RawMessage) (*http.Response, error) {
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encoding the request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(openai.HeaderRequestID, id)
	return p.do(req)
}

// do sends a request to an instance, with the internal token and never
// the client's credentials (the proxy builds every upstream request
// itself; it copies no client header but X-Request-Id).
func (p *Proxy) do(req *http.Request) (*http.Response, error) {
	if p.internal != "" {
		req.Header.Set(openai.HeaderInternal, p.internal)
	}
	return p.client.Do(req)
}

// failure is the answer to a request whose upstream u could not be
// reached: 502, or 499 when the client itself went away.
func (p *Proxy) failure(r *http.Request, log *slog.Logger, u *upstream, err error) *openai.APIError {
	if r.Context().Err() != nil {
		log.Info("client went away", "side", u.side, "url", u.url)
		e := openai.Classify(r.Context().Err())
		return &e
	}
	log.Warn("upstream unreachable", "side", u.side, "url", u.url, "err", err)
	return unreachableError(u, err)
}

func unreachableError(u *upstream, err error) *openai.APIError {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &openai.APIError{
		Status:  http.StatusBadGateway,
		Message: fmt.Sprintf("%s %s unreachable: %v", u.side, u.url, err),
		Type:    "upstream_error",
		Code:    "upstream_unreachable",
	}
}

// abortHold tells the prefill instance of h to release h's state now
// (POST /v1/kv/abort). It runs in the background, with a context of its
// own bounded by AbortTimeout: the client's answer does not wait for it,
// and the client's context may already be over. Failures are logged.
func (p *Proxy) abortHold(h hold, log *slog.Logger, reason string) {
	run := func() { p.sendAbort(h, log, reason) }
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		run() // nothing waits for a goroutine any more
		return
	}
	p.aborts.Go(run)
	p.mu.Unlock()
}

func (p *Proxy) sendAbort(h hold, log *slog.Logger, reason string) {
	log = log.With("prefill", h.url, "remote_request_id", h.id, "reason", reason)
	err := p.postAbort(h)
	p.metrics.abort(err == nil)
	if err != nil {
		log.Warn("abort of the prefill hold failed; P frees it at lease expiry", "err", err)
		return
	}
	log.Info("prefill hold aborted")
}

func (p *Proxy) postAbort(h hold) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.abortTimeout)
	defer cancel()
	body, err := json.Marshal(openai.AbortRequest{RemoteRequestID: h.id, RemoteGrant: h.grant})
	if err != nil {
		return fmt.Errorf("encoding the abort: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/kv/abort", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building the abort: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.do(req)
	if err != nil {
		return fmt.Errorf("POST %s/v1/kv/abort: %w", h.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := upstreamError(sidePrefill, h.url, resp)
		return fmt.Errorf("POST %s/v1/kv/abort: %s", h.url, e.Message)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxUpstreamErrorBytes))
	return nil
}

// upstreamError turns an upstream's error response into the client's: the
// upstream status, and a message naming the side and URL that failed and
// carrying the upstream's own message.
func upstreamError(side, u string, resp *http.Response) *openai.APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamErrorBytes))
	e := &openai.APIError{Status: resp.StatusCode, Type: "upstream_error", Code: "upstream_error"}
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

// models forwards GET /v1/models to a decode instance, trying each
// available one at most once.
func (p *Proxy) models(w http.ResponseWriter, r *http.Request) {
	set := p.ups.Load()
	_, start := routeStarts(p.next.Add(1)-1, len(set.prefill))
	tried := map[*upstream]bool{}
	var last *openai.APIError
	for range set.decode {
		d := pick(set.decode, start, tried, "")
		if d == nil {
			break
		}
		tried[d] = true
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, d.url+"/v1/models", nil)
		if err != nil {
			last = p.failure(r, p.log, d, fmt.Errorf("building the request: %w", err))
			break
		}
		resp, err := p.do(req)
		if err != nil {
			if r.Context().Err() == nil {
				p.exclude(d, err)
			}
			if last = p.failure(r, p.log, d, err); r.Context().Err() != nil {
				break
			}
			continue
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	if last == nil {
		last = noneAvailable(sideDecode, set.decode)
	}
	openai.WriteError(w, last)
}

// upstreamHealth is one upstream in the proxy's /health answer.
type upstreamHealth struct {
	Role    string `json:"role"`
	URL     string `json:"url"`
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
}

// health probes every upstream's /health concurrently. Like the health
// checker it excludes and re-admits by the answers, so when the proxy's
// /health is 200 every instance is in routing. The body lists every
// instance ("upstreams": role, url, healthy; tools such as bench serve
// find the instances behind the proxy there) and, on 503, the unhealthy
// ones with their errors.
func (p *Proxy) health(w http.ResponseWriter, r *http.Request) {
	set := p.ups.Load()
	targets := append(slices.Clone(set.prefill), set.decode...)
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { errs[i] = p.check(r.Context(), t) })
	}
	wg.Wait()
	all, bad := []upstreamHealth{}, []upstreamHealth{}
	for i, t := range targets {
		u := upstreamHealth{Role: t.side, URL: t.url, Healthy: errs[i] == nil}
		if errs[i] != nil {
			u.Error = errs[i].Error()
			bad = append(bad, u)
		}
		all = append(all, u)
	}
	if len(bad) > 0 {
		p.log.Warn("unhealthy upstreams", "unhealthy", bad)
		openai.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "unhealthy": bad, "upstreams": all})
		return
	}
	openai.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "upstreams": all})
}

// probe returns nil when base's /health answers 200.
func (p *Proxy) probe(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return fmt.Errorf("building the probe: %w", err)
	}
	resp, err := p.do(req)
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
