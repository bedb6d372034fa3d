package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/proxy"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// docMetric is one row of a metrics table in docs/metrics.md.
type docMetric struct {
	typ    string
	labels []string
}

// readMetricsDoc parses docs/metrics.md: the metric tables (name, type,
// labels) and the label values table (label -> metric prefix -> values).
func readMetricsDoc(t *testing.T) (map[string]docMetric, map[string][]string) {
	t.Helper()
	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string]docMetric{}
	values := map[string][]string{} // "label metric" -> values
	tick := regexp.MustCompile("`([^`]+)`")
	ticks := func(cell string) []string {
		var out []string
		for _, m := range tick.FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			continue
		}
		first := strings.TrimSpace(cells[1])
		if m := regexp.MustCompile("^`(hybridxfer_[a-z_]+)`$").FindStringSubmatch(first); m != nil {
			if _, dup := metrics[m[1]]; dup {
				t.Errorf("docs/metrics.md documents %s twice", m[1])
			}
			metrics[m[1]] = docMetric{typ: strings.TrimSpace(cells[2]), labels: ticks(cells[3])}
			continue
		}
		// Label values rows: | `label` | metrics | `v1`, `v2` |
		if labels := ticks(first); len(labels) == 1 && len(cells) == 5 {
			for _, metric := range ticks(cells[2]) {
				values[labels[0]+" "+metric] = ticks(cells[3])
			}
		}
	}
	return metrics, values
}

// gatherAll returns the families of an exercised Metrics and of the
// collectors of a prefill instance holding a request and the decode
// instance that then loads it and one still waiting, with every labelled
// family present.
func gatherAll(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	exercise(NewMetrics(reg, "d0", backend.RoleDecode))
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, nil)
	reg.MustRegister(NewCollector(x.p, "p0", backend.RolePrefill), NewCollector(x.d, "d1", backend.RoleDecode))
	// One request end to end, one held on P (a lease to report).
	if _, _, err := x.run(context.Background(), "done", "a prompt of some tokens", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := x.p.Generate(context.Background(), backend.GenRequest{ID: "held", Prompt: "another prompt", MaxTokens: 1,
		KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil); err != nil {
		t.Fatal(err)
	}
	exerciseProxy(t, reg)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// exerciseProxy registers a proxy's metrics on reg and has every family
// report: a refused request (400) and one whose prefill instance is
// unreachable.
func exerciseProxy(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	p, err := proxy.NewWithOptions([]string{"http://127.0.0.1:9"}, []string{"http://127.0.0.1:9"},
		proxy.Options{Registry: reg, HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/completions", strings.NewReader("not json")))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("proxy answered %d to a bad body", rec.Code)
	}
	// The prefill instance is unreachable: a 502 and one exclusion; the
	// counters without traffic are exported at zero.
	rec = httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/completions", strings.NewReader(`{"prompt":"a","max_tokens":1}`)))
	if rec.Code/100 != 5 {
		t.Fatalf("proxy answered %d with its prefill instance unreachable", rec.Code)
	}
}

// TestMetricsMatchDocs: docs/metrics.md documents exactly the metrics an
// instance exports, with their types, labels and label values; the
// exposition passes promlint (and promtool check metrics where installed).
func TestMetricsMatchDocs(t *testing.T) {
	doc, values := readMetricsDoc(t)
	fams := gatherAll(t)
	seen := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		seen[name] = true
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s is exported but not in docs/metrics.md", name)
			continue
		}
		if want := strings.ToLower(f.GetType().String()); d.typ != want {
			t.Errorf("%s: documented as %s, exported as %s", name, d.typ, want)
		}
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				if l.GetName() == "engine_id" || l.GetName() == "role" {
					continue
				}
				labels = append(labels, l.GetName())
				allowed, enumerated := values[l.GetName()+" "+name]
				if !enumerated {
					// A row naming a family by prefix (hybridxfer_pool_blocks_*).
					for k, v := range values {
						label, metric, _ := strings.Cut(k, " ")
						if label == l.GetName() && strings.HasSuffix(metric, "*") && strings.HasPrefix(name, strings.TrimSuffix(metric, "*")) {
							allowed, enumerated = v, true
						}
					}
				}
				if enumerated && !slices.Contains(allowed, l.GetValue()) && !(l.GetName() == "position") {
					t.Errorf("%s: label %s=%q is not among the documented values %v", name, l.GetName(), l.GetValue(), allowed)
				}
			}
			sort.Strings(labels)
			want := slices.Clone(d.labels)
			sort.Strings(want)
			if !slices.Equal(labels, want) {
				t.Errorf("%s: labels %v, documented %v", name, labels, want)
				break
			}
		}
	}
	for name := range doc {
		if !seen[name] {
			t.Errorf("docs/metrics.md documents %s, which is not exported", name)
		}
	}
	// The enumerations the code uses are the documented ones.
	var kinds []string
	for k := groups.FullAttention; k.Valid(); k++ {
		kinds = append(kinds, k.String())
	}
	for _, c := range []struct {
		key  string
		code []string
	}{
		{"kind hybridxfer_transfer_bytes_by_kind_total", kinds},
		{"reason hybridxfer_transfer_failures_total", FailureReasons},
		{"cause hybridxfer_leases_released_total", LeaseCauses},
		{"state hybridxfer_peers", PeerStates},
		{"state hybridxfer_loads_in_flight", LoadStates},
		{"status hybridxfer_requests_total", backend.RequestStatuses()},
		{"result hybridxfer_proxy_hold_aborts_total", proxy.AbortResults},
		{"state hybridxfer_proxy_upstreams", proxy.UpstreamStates},
		{"upstream hybridxfer_proxy_*", []string{"prefill", "decode"}},
	} {
		if !slices.Equal(values[c.key], c.code) {
			t.Errorf("docs/metrics.md label values of %q: %v, the code's %v", c.key, values[c.key], c.code)
		}
	}

	problems, err := promlint.NewWithMetricFamilies(fams).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed (Debian package prometheus): promlint above runs the same checks")
		return
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestCollectorReadsTheEngine: the scraped state is the engine's own, as
// it changes: a held request shows in the held gauges and the lease
// expiry, its release in the released counter.
func TestCollectorReadsTheEngine(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(x.p, "p0", backend.RolePrefill))
	value := func(name string, labels map[string]string) (float64, bool) {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		sum, found := 0.0, false
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
		metrics:
			for _, mt := range f.GetMetric() {
				for k, v := range labels {
					ok := false
					for _, l := range mt.GetLabel() {
						ok = ok || l.GetName() == k && l.GetValue() == v
					}
					if !ok {
						continue metrics
					}
				}
				found = true
				sum += mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
			}
		}
		return sum, found
	}
	if v, _ := value("hybridxfer_requests_held", nil); v != 0 {
		t.Fatalf("held %v before any request", v)
	}
	if _, ok := value("hybridxfer_lease_soonest_expiry_seconds", nil); ok {
		t.Fatal("a lease expiry without holds")
	}
	pr, err := x.p.Generate(context.Background(), backend.GenRequest{ID: "r", Prompt: "a prompt of some tokens", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pools := x.p.DebugPools()
	if v, _ := value("hybridxfer_requests_held", nil); v != 1 {
		t.Fatalf("held %v, want 1", v)
	}
	heldBlocks, _ := value("hybridxfer_pool_blocks_held", nil)
	usedBlocks, _ := value("hybridxfer_pool_blocks_used", nil)
	want := 0
	for _, g := range pools.Groups {
		want += g.Held
	}
	if heldBlocks == 0 || int(heldBlocks) != want || usedBlocks < heldBlocks {
		t.Fatalf("held blocks %v (debug %d), used %v", heldBlocks, want, usedBlocks)
	}
	if v, ok := value("hybridxfer_lease_soonest_expiry_seconds", nil); !ok || v <= 0 || v > 3600 {
		t.Fatalf("soonest lease expiry %v (%v), want within the hour's lease", v, ok)
	}
	if _, err := x.d.Generate(context.Background(), backend.GenRequest{ID: "r", Prompt: "a prompt of some tokens", MaxTokens: 2, KV: pr.KV}, nil); err != nil {
		t.Fatal(err)
	}
	if err := x.p.WaitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := value("hybridxfer_leases_released_total", map[string]string{"cause": "notified"}); v != 1 {
		t.Fatalf("released (notified) %v, want 1", v)
	}
	if v, _ := value("hybridxfer_requests_held", nil); v != 0 {
		t.Fatalf("held %v after the release", v)
	}
}

// TestFailureReasonsAreDocumented: every load failure maps to one of
// FailureReasons.
func TestFailureReasonsAreDocumented(t *testing.T) {
	for _, err := range []error{context.DeadlineExceeded, context.Canceled, statexfer.ErrBounds, session.ErrLeaseExpired,
		session.ErrClaimed, session.ErrNoHold, session.ErrPeer, session.ErrStaleIncarnation, errors.New("ucx: io error"),
		fmt.Errorf("wrapped: %w", session.ErrPeer)} {
		if r := failureReason(err); !slices.Contains(FailureReasons, r) {
			t.Errorf("failureReason(%v) = %q, not in %v", err, r, FailureReasons)
		}
	}
}

// TestGrafanaDashboard: docs/grafana-dashboard.json is valid JSON with a
// query per panel, and every metric a query names is one an instance
// exports (docs/metrics.md, checked against the exposition above).
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	doc, _ := readMetricsDoc(t)
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	name := regexp.MustCompile(`hybridxfer_[a-z_]+`)
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			names := name.FindAllString(q.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: %q names no metric", p.Title, q.Expr)
			}
			for _, n := range names {
				m, ok := doc[n]
				if !ok {
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if base, cut := strings.CutSuffix(n, suffix); cut && doc[base].typ == "histogram" {
							m, ok = doc[base], true
						}
					}
				}
				if !ok {
					t.Errorf("panel %q: %s is not an exported metric", p.Title, n)
				}
				if strings.Contains(q.Expr, n+"[") && m.typ == "gauge" {
					t.Errorf("panel %q: rate over the gauge %s", p.Title, n)
				}
			}
		}
	}
}
