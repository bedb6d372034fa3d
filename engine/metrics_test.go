package engine

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// exercise calls every Metrics method once or more.
func exercise(m *Metrics) {
	m.Transfer(3*time.Millisecond, time.Millisecond, 1<<20, 12)
	m.Transfer(5*time.Millisecond, 2*time.Millisecond, 3<<20, 4)
	m.TransferFailed("peer")
	m.NotificationFailed()
	m.Handshake(2*time.Millisecond, nil)
	m.Handshake(0, errors.New("refused"))
	m.BytesByKind("full_attention", 1000)
	m.BytesByKind("recurrent", 24)
	m.Request(10, 5, time.Second, nil)
	m.Request(3, 0, time.Millisecond, backend.ErrOverloaded)
	m.Recomputed(6)
	m.SpecDecode(3, 2)
	m.SpecDecode(3, 0)
	m.SpecDecode(0, 0) // a plain step: not a speculative one
	m.PrefixCache(40, 32)
	m.PrefixCache(8, 0)
	m.ConversationRead(64, 1<<16)
	m.ConversationDeclined("mismatch")
	m.ConversationExported()
}

// metricNames are every metric NewMetrics registers (the Collector's are
// checked against the docs by TestMetricsMatchDocs).
var metricNames = []string{
	"hybridxfer_transfer_seconds", "hybridxfer_transfer_post_seconds", "hybridxfer_transfer_bytes",
	"hybridxfer_transfer_reads", "hybridxfer_transfer_bytes_total", "hybridxfer_transfer_failures_total",
	"hybridxfer_transfer_bytes_by_kind_total", "hybridxfer_notification_failures_total",
	"hybridxfer_handshake_seconds", "hybridxfer_handshake_failures_total",
	"hybridxfer_requests_total", "hybridxfer_request_seconds", "hybridxfer_prompt_tokens_total",
	"hybridxfer_completion_tokens_total", "hybridxfer_recomputed_tokens_total",
	"hybridxfer_spec_decode_num_drafts_total", "hybridxfer_spec_decode_num_draft_tokens_total",
	"hybridxfer_spec_decode_num_accepted_tokens_total", "hybridxfer_spec_decode_num_accepted_tokens_per_pos_total",
	"hybridxfer_prefix_cache_queries_total", "hybridxfer_prefix_cache_hits_total",
	"hybridxfer_conversation_reused_tokens_total", "hybridxfer_conversation_read_bytes_total",
	"hybridxfer_conversation_declines_total", "hybridxfer_conversation_exports_total",
}

func TestMetricsEndpoint(t *testing.T) {
	reg := prometheus.NewRegistry()
	exercise(NewMetrics(reg, "d0", backend.RoleDecode))
	srv := httptest.NewServer(openai.NewHandler(&openaitest.Backend{}, reg, nil))
	defer srv.Close()
	resp := openaitest.Get(t, srv.URL+"/metrics")
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	text := string(b)
	for _, name := range metricNames {
		if !strings.Contains(text, "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, line := range []string{
		`hybridxfer_transfer_bytes_total{engine_id="d0",role="decode"} 4.194304e+06`,
		`hybridxfer_transfer_failures_total{engine_id="d0",reason="peer",role="decode"} 1`,
		`hybridxfer_requests_total{engine_id="d0",role="decode",status="ok"} 1`,
		`hybridxfer_requests_total{engine_id="d0",role="decode",status="overloaded"} 1`,
		`hybridxfer_prompt_tokens_total{engine_id="d0",role="decode"} 10`,
		`hybridxfer_transfer_reads_count{engine_id="d0",role="decode"} 2`,
		`hybridxfer_transfer_reads_sum{engine_id="d0",role="decode"} 16`,
		`hybridxfer_handshake_seconds_count{engine_id="d0",role="decode"} 1`,
		`hybridxfer_handshake_failures_total{engine_id="d0",role="decode"} 1`,
		`hybridxfer_recomputed_tokens_total{engine_id="d0",role="decode"} 6`,
		`hybridxfer_spec_decode_num_drafts_total{engine_id="d0",role="decode"} 2`,
		`hybridxfer_spec_decode_num_draft_tokens_total{engine_id="d0",role="decode"} 6`,
		`hybridxfer_spec_decode_num_accepted_tokens_total{engine_id="d0",role="decode"} 2`,
		`hybridxfer_spec_decode_num_accepted_tokens_per_pos_total{engine_id="d0",position="0",role="decode"} 1`,
		`hybridxfer_spec_decode_num_accepted_tokens_per_pos_total{engine_id="d0",position="1",role="decode"} 1`,
		`hybridxfer_prefix_cache_queries_total{engine_id="d0",role="decode"} 48`,
		`hybridxfer_prefix_cache_hits_total{engine_id="d0",role="decode"} 32`,
		`hybridxfer_conversation_reused_tokens_total{engine_id="d0",role="decode"} 64`,
		`hybridxfer_conversation_read_bytes_total{engine_id="d0",role="decode"} 65536`,
		`hybridxfer_conversation_declines_total{engine_id="d0",reason="mismatch",role="decode"} 1`,
		`hybridxfer_conversation_exports_total{engine_id="d0",role="decode"} 1`,
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestMetricsValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	exercise(NewMetrics(reg, "p0", backend.RolePrefill))
	// A second engine on the same registry: distinct const labels.
	exercise(NewMetrics(reg, "p1", backend.RolePrefill))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	if len(byName) != len(metricNames) {
		t.Errorf("%d families, want %d", len(byName), len(metricNames))
	}
	for _, name := range metricNames {
		f := byName[name]
		if f == nil {
			t.Errorf("%s not gathered", name)
			continue
		}
		engines := map[string]bool{}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["role"] != "prefill" {
				t.Errorf("%s: role label %q", name, labels["role"])
			}
			engines[labels["engine_id"]] = true
		}
		if !engines["p0"] || !engines["p1"] || len(engines) != 2 {
			t.Errorf("%s: engine_id labels %v", name, engines)
		}
	}
	bytes := byName["hybridxfer_transfer_bytes"].GetMetric()[0].GetHistogram()
	if bytes.GetSampleCount() != 2 || bytes.GetSampleSum() != 4<<20 {
		t.Errorf("transfer_bytes: count %d sum %g", bytes.GetSampleCount(), bytes.GetSampleSum())
	}
	kinds := map[string]float64{}
	for _, m := range byName["hybridxfer_transfer_bytes_by_kind_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "kind" {
				kinds[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	if kinds["full_attention"] != 2000 || kinds["recurrent"] != 48 {
		t.Errorf("bytes by kind %v", kinds)
	}
}

func TestMetricsNil(t *testing.T) {
	var m *Metrics
	exercise(m) // must not panic
}

func TestBuckets(t *testing.T) {
	check := func(name string, b []float64, lo, hi float64) {
		t.Helper()
		if len(b) < 2 || b[0] != lo || b[len(b)-1] < hi*0.999 || b[len(b)-1] > hi*1.001 {
			t.Errorf("%s buckets %v, want %g..%g", name, b, lo, hi)
		}
	}
	check("seconds", secondsBuckets, 50e-6, 30)
	check("bytes", bytesBuckets, 4<<10, 64<<30)
	check("reads", readsBuckets, 1, 1<<20)
}
