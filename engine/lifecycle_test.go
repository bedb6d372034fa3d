package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
)

// recordLog collects one instance's JSON log records.
type recordLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *recordLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *recordLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// events are the lifecycle records of each request_id, in log order.
func (l *recordLog) events(t *testing.T) map[string][]map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["event"] == nil {
			continue
		}
		id, _ := rec["request_id"].(string)
		out[id] = append(out[id], rec)
	}
	return out
}

func names(recs []map[string]any) []string {
	var s []string
	for _, r := range recs {
		s = append(s, r["event"].(string))
	}
	return s
}

// waitEvents waits until request id's story on l ends with last.
func waitEvents(t *testing.T, l *recordLog, id, last string) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		recs := l.events(t)[id]
		if len(recs) > 0 && recs[len(recs)-1]["event"] == last {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s: events %v, never %q", id, names(recs), last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Every request transition is one record naming the request (the same
// request_id on P and D), in order, exactly once each, with many requests
// in flight; holds that end by abort or expiry and loads that fail say
// so, with the phase and the cause.
func TestLifecycleEvents(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var plog, dlog recordLog
	var skew atomic.Int64 // P's clock offset (expiry)
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, func(p, d *Config) {
		p.Log, d.Log = plog.logger(), dlog.logger()
		p.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, _, errs[i] = x.run(ctx, fmt.Sprintf("ok%d", i), fmt.Sprintf("request %d of the lifecycle test, long enough for blocks", i), 3)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	pWant := []string{"received", "prefilled", "held", "finished", "released"}
	dWant := []string{"received", "handshaked", "reads_posted", "read_done", "finished"}
	for i := range n {
		id := fmt.Sprintf("ok%d", i)
		if got := names(waitEvents(t, &plog, id, "released")); !slices.Equal(got, pWant) {
			t.Errorf("P %s: events %v, want %v", id, got, pWant)
		}
		drecs := dlog.events(t)[id]
		if got := names(drecs); !slices.Equal(got, dWant) {
			t.Errorf("D %s: events %v, want %v", id, got, dWant)
			continue
		}
		for _, r := range drecs[1:4] {
			if r["peer"] == nil || !strings.HasSuffix(r["remote_request_id"].(string), "-"+id) || !strings.HasPrefix(r["instance_request_id"].(string), "d-") {
				t.Errorf("D %s %s: record %v lacks the peer or the ids", id, r["event"], r)
			}
		}
	}

	// A hold the proxy aborts, then D's load of it: P says aborted, D
	// says failed in the claim phase, with the cause.
	pr, err := x.p.Generate(ctx, backend.GenRequest{ID: "ab", Prompt: "a request whose hold is aborted", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.p.AbortHold(pr.KV.RemoteRequestID, pr.KV.RemoteGrant); err != nil {
		t.Fatal(err)
	}
	if got := names(waitEvents(t, &plog, "ab", "aborted")); !slices.Equal(got, []string{"received", "prefilled", "held", "finished", "aborted"}) {
		t.Errorf("P ab: events %v", got)
	}
	if _, err := x.d.Generate(ctx, backend.GenRequest{ID: "ab", Prompt: "a request whose hold is aborted", MaxTokens: 2, KV: pr.KV}, nil); err == nil {
		t.Fatal("D decoded a request whose hold was aborted")
	}
	drecs := dlog.events(t)["ab"]
	if got := names(drecs); len(got) < 3 || got[0] != "received" || got[len(got)-1] != "failed" || !slices.Contains(got, "failed") {
		t.Fatalf("D ab: events %v, want received ... failed", got)
	}
	var phases []string
	for _, r := range drecs {
		if r["event"] == "failed" {
			phases = append(phases, r["phase"].(string))
			if c, _ := r["cause"].(string); c == "" {
				t.Errorf("D ab: failed record without a cause: %v", r)
			}
		}
	}
	if len(phases) != 2 || phases[0] == "serve" || phases[1] != "serve" {
		t.Errorf("D ab: failure phases %v, want the session's (claim, stage or read) and then serve", phases)
	}

	// A hold nobody reads expires.
	if _, err := x.p.Generate(ctx, backend.GenRequest{ID: "ex", Prompt: "a request nobody decodes", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(2 * time.Hour))
	x.p.Sweep()
	if got := names(waitEvents(t, &plog, "ex", "expired")); !slices.Equal(got, []string{"received", "prefilled", "held", "finished", "expired"}) {
		t.Errorf("P ex: events %v", got)
	}
	for _, ev := range session.Events() {
		if ev == session.EventFailed {
			continue
		}
		seen := false
		for _, l := range []*recordLog{&plog, &dlog} {
			for _, recs := range l.events(t) {
				seen = seen || slices.Contains(names(recs), string(ev))
			}
		}
		if !seen {
			t.Errorf("event %s never logged", ev)
		}
	}
}

// docs/lifecycle.md's table lists every event, in the order Events gives.
func TestLifecycleDocs(t *testing.T) {
	b, err := os.ReadFile("../docs/lifecycle.md")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(b), "\n") {
		if m := regexp.MustCompile("^\\| `([a-z_]+)` \\|").FindStringSubmatch(line); m != nil {
			got = append(got, m[1])
		}
	}
	var want []string
	for _, ev := range session.Events() {
		want = append(want, string(ev))
	}
	if !slices.Equal(got, want) {
		t.Errorf("docs/lifecycle.md lists %v, session.Events() is %v", got, want)
	}
}
