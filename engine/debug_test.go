package engine

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/hybridxfer/hybridxfer/groups"
)

func getJSON(t *testing.T, h http.Handler, path string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v: %s", path, err, rec.Body.String())
		}
	}
	return rec.Code
}

// The /debug views show what the allocator and the session hold: a
// prefilled request's lease and blocks on P until D read it, D's peer
// after the handshake, and nothing held once the request finished.
func TestDebugViews(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1, BlockLayout: groups.CrossLayer}, nil)
	ph, dh := openai.NewHandler(x.p, nil, nil), openai.NewHandler(x.d, nil, nil)
	ctx := context.Background()
	pr, err := x.p.Generate(ctx, backend.GenRequest{ID: "dbg", Prompt: "inspect me please", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var leases backend.LeasesView
	if code := getJSON(t, ph, "/debug/leases", &leases); code != 200 || len(leases.Leases) != 1 ||
		leases.Leases[0].Request != pr.KV.RemoteRequestID || leases.Leases[0].Consumers != 2 || leases.Leases[0].RemainingMs <= 0 {
		t.Fatalf("P leases while held: %d %+v", code, leases)
	}
	var reqs []backend.RequestView
	if code := getJSON(t, ph, "/debug/requests/dbg", &reqs); code != 200 || len(reqs) != 1 || reqs[0].State != "held" ||
		reqs[0].Lease == nil || len(reqs[0].Blocks) != len(x.p.side.Ranks[0].Groups) {
		t.Fatalf("P request by client id: %d %+v", code, reqs)
	}
	for g, ids := range pr.KV.RemoteBlockIDs {
		tail := reqs[0].Blocks[g][len(reqs[0].Blocks[g])-len(ids):]
		for i := range ids {
			if tail[i] != ids[i] {
				t.Fatalf("group %d: /debug/requests shows %v, kv_transfer_params sent %v", g, reqs[0].Blocks[g], ids)
			}
		}
	}
	var pools backend.PoolsView
	if code := getJSON(t, ph, "/debug/pools", &pools); code != 200 || pools.Holds != 1 || pools.Role != backend.RolePrefill || pools.TP != 2 ||
		len(pools.Groups) != len(x.p.side.Ranks[0].Groups) || pools.Pools[0].Held == 0 || pools.Pools[0].Regions != x.p.side.Ranks[0].Pools[0].Slots {
		t.Fatalf("P pools while held: %d %+v", code, pools)
	}
	if _, err := x.d.Generate(ctx, backend.GenRequest{ID: "dbg", Prompt: "inspect me please", MaxTokens: 3, KV: pr.KV}, nil); err != nil {
		t.Fatal(err)
	}
	if err := x.p.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	var peers backend.PeersView
	if code := getJSON(t, dh, "/debug/peers", &peers); code != 200 || len(peers.Peers) != 1 || peers.Peers[0].State != "ready" ||
		peers.Peers[0].TP != 2 || peers.Peers[0].BootID != pr.KV.RemoteBootID || len(peers.Loads) != 0 {
		t.Fatalf("D peers after the load: %d %+v", code, peers)
	}
	var dpools backend.PoolsView
	if code := getJSON(t, dh, "/debug/pools", &dpools); code != 200 || dpools.BlockLayout != "cross-layer" || dpools.Pools[0].Regions != 1 || dpools.Requests != 0 {
		t.Fatalf("D pools: %d %+v", code, dpools)
	}
	if code := getJSON(t, ph, "/debug/leases", &leases); code != 200 || len(leases.Leases) != 0 || leases.ReleasedNotified != 1 {
		t.Fatalf("P leases after D read: %d %+v", code, leases)
	}
	if code := getJSON(t, ph, "/debug/requests/dbg", &reqs); code != http.StatusNotFound {
		t.Fatalf("a released request is still shown: %d", code)
	}
	var ppeers backend.PeersView
	if code := getJSON(t, ph, "/debug/peers", &ppeers); code != 200 || len(ppeers.Peers) != 0 {
		t.Fatalf("P peers: %d %+v", code, ppeers)
	}
}

// With API keys, the debug views need a key like every path but /health
// and /metrics.
func TestDebugViewsNeedAnAPIKey(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 1}, nil)
	h := openai.NewHandlerWithOptions(x.p, nil, nil, openai.HandlerOptions{APIKeys: []string{"sk-debug-test-key-0123456789"}})
	for _, path := range []string{"/debug/pools", "/debug/leases", "/debug/peers", "/debug/requests/x"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s without a key: %d", path, rec.Code)
		}
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer sk-debug-test-key-0123456789")
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if want := map[bool]int{true: http.StatusNotFound, false: http.StatusOK}[path == "/debug/requests/x"]; rec.Code != want {
			t.Errorf("%s with the key: %d, want %d", path, rec.Code, want)
		}
	}
}
