package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/openai/openaitest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeProxy reads the proxy's GET /metrics (over HTTP, no credentials)
// and returns one sample's value, labels given as name=value pairs.
func scrapeProxy(t *testing.T, url string) func(name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return func(name string, labels ...string) float64 {
		f := fams[name]
		if f == nil {
			t.Fatalf("%s not exported", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("%s%v: no sample", name, labels)
		return 0
	}
}

// The proxy's /metrics counts what its clients saw (statuses, with many
// requests in flight), the prefill retries, the holds it aborted and the
// instances it excluded, and says which instances are in round robin.
func TestProxyMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	x := newProxyFixtureWith(t, 2, 2, Options{HealthInterval: time.Hour, APIKeys: []string{"k"}, Registry: reg})
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp := openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":2}`,
				openai.HeaderRequestID, fmt.Sprintf("ok%d", i), "Authorization", "Bearer k")
			openaitest.Decode(t, resp, http.StatusOK, &openaitest.CompletionResponse{})
		})
	}
	wg.Wait()
	// A 500 on P0: the next request P0 takes is retried on P1.
	x.ps[0].Err = errors.New("boom")
	for i := range 2 {
		resp := openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":2}`, openai.HeaderRequestID, fmt.Sprintf("r%d", i), "Authorization", "Bearer k")
		openaitest.Decode(t, resp, http.StatusOK, &openaitest.CompletionResponse{})
	}
	x.ps[0].Err = nil
	// D fails: a 502 and an abort of the hold.
	x.ds[0].Err, x.ds[1].Err = fmt.Errorf("read failed: %w", backend.ErrKVLoad), fmt.Errorf("read failed: %w", backend.ErrKVLoad)
	resp := openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":2}`, openai.HeaderRequestID, "bad", "Authorization", "Bearer k")
	openaitest.DecodeError(t, resp, http.StatusBadGateway)
	for _, p := range x.ps {
		for _, r := range p.Requests() {
			if r.ID == "bad" {
				waitAborts(t, p, openai.AbortRequest{RemoteRequestID: "bad", RemoteGrant: "grant-bad"})
			}
		}
	}
	// A decode instance that is gone is excluded.
	x.dSrv[1].Close()
	x.ds[0].Err = nil
	for i := range 2 {
		resp := openaitest.Post(t, x.proxy.URL+"/v1/completions", `{"prompt":"abc","max_tokens":2}`, openai.HeaderRequestID, fmt.Sprintf("gone%d", i), "Authorization", "Bearer k")
		resp.Body.Close()
	}

	// A client has its answer before the handler returns and counts it:
	// wait until the last handler is done.
	eventually(t, "every request counted and none in flight", func() bool {
		v := scrapeProxy(t, x.proxy.URL)
		return v("hybridxfer_proxy_request_seconds") == n+5 && v("hybridxfer_proxy_requests_in_flight") == 0
	})
	value := scrapeProxy(t, x.proxy.URL)
	ok := value("hybridxfer_proxy_requests_total", "status", "200")
	bad := value("hybridxfer_proxy_requests_total", "status", "502")
	if ok < n+2 || bad < 2 || ok+bad != n+2+1+2 {
		t.Errorf("requests: %v ok, %v 502, want %d in all (at least %d ok and 2 failed)", ok, bad, n+5, n+2)
	}
	if v := value("hybridxfer_proxy_request_seconds"); v != n+5 {
		t.Errorf("request_seconds counted %v answers, want %d", v, n+5)
	}
	if v := value("hybridxfer_proxy_prefill_retries_total"); v != 1 {
		t.Errorf("prefill retries %v, want 1", v)
	}
	// The abort for the gone D runs in the background.
	eventually(t, "two hold aborts sent (the D failure and the gone D)", func() bool {
		return scrapeProxy(t, x.proxy.URL)("hybridxfer_proxy_hold_aborts_total", "result", "sent") == 2
	})
	if v := value("hybridxfer_proxy_upstream_exclusions_total", "upstream", "decode"); v != 1 {
		t.Errorf("decode exclusions %v, want 1", v)
	}
	if a, e := value("hybridxfer_proxy_upstreams", "upstream", "decode", "state", "admitted"), value("hybridxfer_proxy_upstreams", "upstream", "decode", "state", "excluded"); a != 1 || e != 1 {
		t.Errorf("decode upstreams: %v admitted, %v excluded, want 1 and 1", a, e)
	}
	if v := value("hybridxfer_proxy_requests_in_flight"); v != 0 {
		t.Errorf("%v requests in flight after all answered", v)
	}
	if !strings.HasPrefix(x.dSrv[1].URL, "http://") {
		t.Fatal("fixture")
	}
}
