// Package proxy is the P/D disaggregation proxy: an OpenAI-compatible
// front (openai's request rules, API keys and errors) that sends each
// request to a prefill instance, then to a decode instance with the
// prefill's kv_transfer_params, streams the answer back, routes each leg
// to the instance with the fewest requests in flight, retries prefill legs
// (and decode legs an instance refused because it drains) on another
// instance, excludes instances that fail and re-admits them by /health,
// and aborts prefill holds whose decode leg failed.
// Proxy (New, NewWithOptions, Options) is an http.Handler; its metrics
// are served at GET /metrics when Options.Registry is set.
package proxy
