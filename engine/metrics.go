package engine

import (
	"strconv"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/prometheus/client_golang/prometheus"
)

// Histogram buckets.
var (
	// secondsBuckets: 50us to 30s, exponential.
	secondsBuckets = prometheus.ExponentialBucketsRange(50e-6, 30, 24)
	// bytesBuckets: 4 KiB to 64 GiB, powers of 4.
	bytesBuckets = prometheus.ExponentialBuckets(4<<10, 4, 13)
	// readsBuckets: 1 to 1Mi reads, powers of 4.
	readsBuckets = prometheus.ExponentialBuckets(1, 4, 11)
)

// Metrics are an engine's Prometheus metrics, registered on a caller-given
// registry (never the global one). Every metric carries the constant labels
// engine_id and role. docs/metrics.md documents each one.
//
// A nil *Metrics is valid: every method is then a no-op, so an engine can
// run without metrics.
type Metrics struct {
	transferSeconds     prometheus.Histogram
	transferPostSeconds prometheus.Histogram
	transferBytes       prometheus.Histogram
	transferReads       prometheus.Histogram
	transferBytesTotal  prometheus.Counter
	transferFailures    *prometheus.CounterVec
	bytesByKind         *prometheus.CounterVec
	notificationFails   prometheus.Counter
	handshakeSeconds    prometheus.Histogram
	handshakeFailures   prometheus.Counter
	requests            *prometheus.CounterVec
	requestSeconds      prometheus.Histogram
	promptTokens        prometheus.Counter
	completionTokens    prometheus.Counter
	recomputedTokens    prometheus.Counter
	specDrafts          prometheus.Counter
	specDraftTokens     prometheus.Counter
	specAccepted        prometheus.Counter
	specAcceptedPerPos  *prometheus.CounterVec
	prefixQueries       prometheus.Counter
	prefixHits          prometheus.Counter
	convReused          prometheus.Counter
	convBytes           prometheus.Counter
	convDeclines        *prometheus.CounterVec
	convExports         prometheus.Counter
}

// NewMetrics creates an engine's metrics and registers them on reg. It
// panics if reg already holds metrics with the same engine_id and role, a
// programming error.
func NewMetrics(reg *prometheus.Registry, engineID string, role backend.Role) *Metrics {
	cl := prometheus.Labels{"engine_id": engineID, "role": string(role)}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: name, Help: help, ConstLabels: cl, Buckets: buckets,
		})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: cl})
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: cl}, labels)
	}
	m := &Metrics{
		transferSeconds: hist("hybridxfer_transfer_seconds",
			"Time from the start of a request's state transfer on D to the completion of all its reads.", secondsBuckets),
		transferPostSeconds: hist("hybridxfer_transfer_post_seconds",
			"Time D spent planning and posting a transfer's reads.", secondsBuckets),
		transferBytes: hist("hybridxfer_transfer_bytes",
			"Bytes read per completed state transfer.", bytesBuckets),
		transferReads: hist("hybridxfer_transfer_reads",
			"Reads (descriptors, after coalescing) per completed state transfer.", readsBuckets),
		transferBytesTotal: counter("hybridxfer_transfer_bytes_total",
			"Bytes read by completed state transfers."),
		transferFailures: counterVec("hybridxfer_transfer_failures_total",
			"State transfers that failed, by reason.", "reason"),
		bytesByKind: counterVec("hybridxfer_transfer_bytes_by_kind_total",
			"Bytes read by state transfers, by state kind.", "kind"),
		notificationFails: counter("hybridxfer_notification_failures_total",
			"Completion notifications from D to a P rank that could not be delivered."),
		handshakeSeconds: hist("hybridxfer_handshake_seconds",
			"Duration of successful handshakes with a peer.", secondsBuckets),
		handshakeFailures: counter("hybridxfer_handshake_failures_total",
			"Handshakes with a peer that failed."),
		requests: counterVec("hybridxfer_requests_total",
			"Generation requests finished, by status (ok or an error code).", "status"),
		requestSeconds: hist("hybridxfer_request_seconds",
			"Duration of generation requests, successful or not.", secondsBuckets),
		promptTokens: counter("hybridxfer_prompt_tokens_total",
			"Prompt tokens of successful requests."),
		completionTokens: counter("hybridxfer_completion_tokens_total",
			"Completion tokens of successful requests."),
		recomputedTokens: counter("hybridxfer_recomputed_tokens_total",
			"Prompt positions D recomputed because their state could not be loaded."),
		// vLLM's spec-decode metric set (vllm:spec_decode_*).
		specDrafts: counter("hybridxfer_spec_decode_num_drafts_total",
			"Decode steps that verified at least one draft token."),
		specDraftTokens: counter("hybridxfer_spec_decode_num_draft_tokens_total",
			"Draft tokens proposed."),
		specAccepted: counter("hybridxfer_spec_decode_num_accepted_tokens_total",
			"Draft tokens accepted by greedy verification."),
		specAcceptedPerPos: counterVec("hybridxfer_spec_decode_num_accepted_tokens_per_pos_total",
			"Accepted draft tokens by draft position (0: the first draft of a step).", "position"),
		// vLLM's prefix cache pair (vllm:prefix_cache_queries / _hits).
		prefixQueries: counter("hybridxfer_prefix_cache_queries_total",
			"Prompt positions looked up in the prefix cache (P: the positions it computes for D; D: the positions P sends)."),
		prefixHits: counter("hybridxfer_prefix_cache_hits_total",
			"Looked-up positions whose state came from the prefix cache (not computed, not transferred)."),
		// Multi-turn conversations read back from decode (D -> P).
		convReused: counter("hybridxfer_conversation_reused_tokens_total",
			"Prompt positions a prefill instance read back from a decode instance's export of the conversation instead of computing them."),
		convBytes: counter("hybridxfer_conversation_read_bytes_total",
			"Bytes a prefill instance read from decode instances' conversation exports (D -> P)."),
		convDeclines: counterVec("hybridxfer_conversation_declines_total",
			"Conversation exports a prefill instance did not read (it computed the prefix instead), by reason.", "reason"),
		convExports: counter("hybridxfer_conversation_exports_total",
			"Finished requests a decode instance holds for the conversation's next turn (kv_transfer_params handoff decode-export)."),
	}
	reg.MustRegister(
		m.transferSeconds, m.transferPostSeconds, m.transferBytes, m.transferReads,
		m.transferBytesTotal, m.transferFailures, m.bytesByKind, m.notificationFails,
		m.handshakeSeconds, m.handshakeFailures,
		m.requests, m.requestSeconds, m.promptTokens,
		m.completionTokens, m.recomputedTokens, m.specDrafts, m.specDraftTokens, m.specAccepted,
		m.specAcceptedPerPos, m.prefixQueries, m.prefixHits,
		m.convReused, m.convBytes, m.convDeclines, m.convExports,
	)
	return m
}

// Transfer records a completed state transfer: total is its duration, post
// the part spent planning and posting reads, bytes and reads its size.
func (m *Metrics) Transfer(total, post time.Duration, bytes int64, reads int) {
	if m == nil {
		return
	}
	m.transferSeconds.Observe(total.Seconds())
	m.transferPostSeconds.Observe(post.Seconds())
	m.transferBytes.Observe(float64(bytes))
	m.transferReads.Observe(float64(reads))
	m.transferBytesTotal.Add(float64(max(bytes, 0)))
}

// TransferFailed records a failed state transfer. reason should come from a
// small fixed set (e.g. "peer", "timeout", "bad_block_ids").
func (m *Metrics) TransferFailed(reason string) {
	if m == nil {
		return
	}
	m.transferFailures.WithLabelValues(reason).Inc()
}

// NotificationFailed records a completion notification that could not be
// delivered to P.
func (m *Metrics) NotificationFailed() {
	if m == nil {
		return
	}
	m.notificationFails.Inc()
}

// Handshake records a handshake with a peer: its duration when it
// succeeded, a failure otherwise.
func (m *Metrics) Handshake(d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.handshakeFailures.Inc()
		return
	}
	m.handshakeSeconds.Observe(d.Seconds())
}

// BytesByKind records n bytes of state of the given kind (e.g. "attention",
// "conv", "ssm") read by transfers.
func (m *Metrics) BytesByKind(kind string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.bytesByKind.WithLabelValues(kind).Add(float64(n))
}

// Request records a finished generation request: its status is "ok" when
// err is nil, else the error's code as the HTTP API reports it (see
// docs/metrics.md). Token counts are recorded for successful requests only.
func (m *Metrics) Request(promptTokens, completionTokens int, d time.Duration, err error) {
	if m == nil {
		return
	}
	status := "ok"
	if err != nil {
		status = backend.ClassOf(err).Code
	}
	m.requests.WithLabelValues(status).Inc()
	m.requestSeconds.Observe(d.Seconds())
	if err == nil {
		m.promptTokens.Add(float64(max(promptTokens, 0)))
		m.completionTokens.Add(float64(max(completionTokens, 0)))
	}
}

// Recomputed records prompt positions recomputed on D because their state
// could not be loaded (policy recompute).
func (m *Metrics) Recomputed(tokens int) {
	if m == nil || tokens <= 0 {
		return
	}
	m.recomputedTokens.Add(float64(tokens))
}

// SpecDecode records one decode step's speculation: drafted tokens
// proposed, accepted of them (the leading ones) accepted.
func (m *Metrics) SpecDecode(drafted, accepted int) {
	if m == nil || drafted == 0 {
		return
	}
	m.specDrafts.Inc()
	m.specDraftTokens.Add(float64(drafted))
	m.specAccepted.Add(float64(accepted))
	for i := 0; i < accepted; i++ {
		m.specAcceptedPerPos.WithLabelValues(strconv.Itoa(i)).Inc()
	}
}

// PrefixCache records one prefix-cache lookup: queried positions, hit of
// them found cached.
func (m *Metrics) PrefixCache(queried, hit int) {
	if m == nil {
		return
	}
	m.prefixQueries.Add(float64(queried))
	m.prefixHits.Add(float64(hit))
}

// ConversationRead records a read of a conversation's prefix from a decode
// instance: tokens positions not computed, bytes read.
func (m *Metrics) ConversationRead(tokens int, bytes int64) {
	if m == nil {
		return
	}
	m.convReused.Add(float64(max(tokens, 0)))
	m.convBytes.Add(float64(max(bytes, 0)))
}

// ConversationDeclined records an export not read, for reason (one of
// DeclineReasons).
func (m *Metrics) ConversationDeclined(reason string) {
	if m == nil {
		return
	}
	m.convDeclines.WithLabelValues(reason).Inc()
}

// ConversationExported records a finished request held for the next turn.
func (m *Metrics) ConversationExported() {
	if m == nil {
		return
	}
	m.convExports.Inc()
}
