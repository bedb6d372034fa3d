package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// proxyMetrics are a proxy's Prometheus metrics (docs/metrics.md, "Proxy"),
// registered on ProxyOptions.Registry. The upstream gauge is read from the
// proxy's routing at scrape time; the rest count what the proxy did.
// A nil *proxyMetrics is valid: every method is then a no-op.
type proxyMetrics struct {
	requests   *prometheus.CounterVec
	seconds    prometheus.Histogram
	inFlight   prometheus.Gauge
	exclusions *prometheus.CounterVec
	retries    prometheus.Counter
	aborts     *prometheus.CounterVec
	broken     prometheus.Counter
}

// proxySecondsBuckets: 50us to 30s, exponential (the instances' too).
var proxySecondsBuckets = prometheus.ExponentialBucketsRange(50e-6, 30, 24)

// ProxyAbortResults are the values of hybridxfer_proxy_hold_aborts_total's
// result label.
var AbortResults = []string{"sent", "failed"}

func newProxyMetrics(reg *prometheus.Registry, p *Proxy) *proxyMetrics {
	m := &proxyMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hybridxfer_proxy_requests_total",
			Help: "Generation requests the proxy answered, by HTTP status."}, []string{"status"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hybridxfer_proxy_request_seconds",
			Help: "Time from a generation request's arrival at the proxy to the end of its answer.", Buckets: proxySecondsBuckets}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hybridxfer_proxy_requests_in_flight",
			Help: "Generation requests the proxy is serving now."}),
		exclusions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hybridxfer_proxy_upstream_exclusions_total",
			Help: "Times an instance was taken out of routing (failed connection, /health probe, or a 503 draining or shutting_down answer), by upstream role."}, []string{"upstream"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "hybridxfer_proxy_prefill_retries_total",
			Help: "Prefill legs retried on another prefill instance."}),
		aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hybridxfer_proxy_hold_aborts_total",
			Help: "Aborts of prefill holds whose decode leg failed, by result."}, []string{"result"}),
		broken: prometheus.NewCounter(prometheus.CounterOpts{Name: "hybridxfer_proxy_responses_broken_total",
			Help: "Decode answers that broke off after the status was sent."}),
	}
	for _, r := range AbortResults {
		m.aborts.WithLabelValues(r)
	}
	for _, r := range []string{sidePrefill, sideDecode} {
		m.exclusions.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.seconds, m.inFlight, m.exclusions, m.retries, m.aborts, m.broken, upstreamCollector{p})
	return m
}

func (m *proxyMetrics) exclusion(upstream string) {
	if m != nil {
		m.exclusions.WithLabelValues(upstream).Inc()
	}
}

func (m *proxyMetrics) retry() {
	if m != nil {
		m.retries.Inc()
	}
}

func (m *proxyMetrics) abort(ok bool) {
	if m == nil {
		return
	}
	r := AbortResults[1]
	if ok {
		r = AbortResults[0]
	}
	m.aborts.WithLabelValues(r).Inc()
}

func (m *proxyMetrics) brokenOff() {
	if m != nil {
		m.broken.Inc()
	}
}

// track wraps a generation handler: requests in flight, then the status
// and the duration of each answer.
func (m *proxyMetrics) track(next http.HandlerFunc) http.HandlerFunc {
	if m == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Inc()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			m.inFlight.Dec()
			status := sw.status
			if status == 0 {
				status = http.StatusOK // nothing written: net/http answers 200
			}
			m.requests.WithLabelValues(strconv.Itoa(status)).Inc()
			m.seconds.Observe(time.Since(start).Seconds())
		}()
		next(sw, r)
	}
}

// statusWriter remembers the status a handler sent; Unwrap keeps
// http.ResponseController's Flush working through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// UpstreamStates are the values of hybridxfer_proxy_upstreams' state label.
var UpstreamStates = []string{"admitted", "excluded"}

// upstreamCollector reports the proxy's instances by role and state.
type upstreamCollector struct{ p *Proxy }

var upstreamsDesc = prometheus.NewDesc("hybridxfer_proxy_upstreams",
	"Instances the proxy routes to, by upstream role and state (excluded: out of routing until /health answers 200).",
	[]string{"upstream", "state"}, nil)

func (c upstreamCollector) Describe(ch chan<- *prometheus.Desc) { ch <- upstreamsDesc }

func (c upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, side := range []struct {
		role string
		ups  []*upstream
	}{{sidePrefill, c.p.ups.Load().prefill}, {sideDecode, c.p.ups.Load().decode}} {
		excluded := 0
		for _, u := range side.ups {
			if u.excluded.Load() {
				excluded++
			}
		}
		ch <- prometheus.MustNewConstMetric(upstreamsDesc, prometheus.GaugeValue, float64(len(side.ups)-excluded), side.role, UpstreamStates[0])
		ch <- prometheus.MustNewConstMetric(upstreamsDesc, prometheus.GaugeValue, float64(excluded), side.role, UpstreamStates[1])
	}
}
