package discovery

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func startEtcd(t *testing.T) *Embedded {
	t.Helper()
	e, err := StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// waitFor reads snapshots until one satisfies ok (a hang guard, not a
// timing assertion).
func waitFor(t *testing.T, ch <-chan []Instance, what string, ok func([]Instance) bool) []Instance {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case s := <-ch:
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func ids(s []Instance) []string {
	var out []string
	for _, in := range s {
		out = append(out, in.Role+"/"+in.EngineID)
	}
	return out
}

// TestRegisterWatchDeregisterExpire runs against a real (embedded) etcd:
// a watcher sees instances appear when they register, disappear at once
// when one deregisters (a drain), and disappear when one stops keeping its
// lease alive (a killed process) once the lease expires.
func TestRegisterWatchDeregisterExpire(t *testing.T) {
	e := startEtcd(t)
	cli, err := Connect(e.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan []Instance, 64)
	go Watch(ctx, cli, "/test", nil, func(s []Instance) { snaps <- s })
	waitFor(t, snaps, "the empty list", func(s []Instance) bool { return len(s) == 0 })

	p := Instance{Role: "prefill", Model: "m", CompatHash: "abc", TP: 2, URL: "http://127.0.0.1:1", EngineID: "p0"}
	d := Instance{Role: "decode", Model: "m", CompatHash: "abc", TP: 4, DPRank: 1, URL: "http://127.0.0.1:2", EngineID: "d0-dp1"}
	rp, err := Register(ctx, cli, "/test", p, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The decode instance's registration lives on its own client, which
	// "dies" below without revoking.
	dcli, err := Connect(e.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Register(ctx, dcli, "/test", d, 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, snaps, "both instances", func(s []Instance) bool { return len(s) == 2 })
	if !slices.Equal(ids(got), []string{"decode/d0-dp1", "prefill/p0"}) || got[0] != d || got[1] != p {
		t.Fatalf("watched %+v", got)
	}
	// Leases are kept alive: after more than a TTL both are still there.
	time.Sleep(3 * time.Second) // longer than the 2 s lease: what is being shown is the keep-alive
	if resp, err := cli.Get(ctx, "/test/instances/", clientOpts()...); err != nil || resp.Count != 2 {
		t.Fatalf("after a TTL: %v records (%v), want 2 kept alive", resp.Count, err)
	}
	if err := rp.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rp.Deregister(ctx); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	waitFor(t, snaps, "the prefill gone after Deregister", func(s []Instance) bool {
		return slices.Equal(ids(s), []string{"decode/d0-dp1"})
	})
	dcli.Close() // kill: no revoke, the keep-alive just stops
	waitFor(t, snaps, "the decode gone when its lease expired", func(s []Instance) bool { return len(s) == 0 })
}

func TestEndpointsAndRecords(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"etcd://127.0.0.1:2379", []string{"http://127.0.0.1:2379"}},
		{"etcd://a:1,b:2", []string{"http://a:1", "http://b:2"}},
		{"etcd://a:1,etcd://b:2", []string{"http://a:1", "http://b:2"}},
	} {
		got, err := Endpoints(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Endpoints(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:2379", "etcd://", "etcd://a", "etcd://a:1/x", "http://a:1"} {
		if _, err := Endpoints(bad); !errors.Is(err, ErrEndpoint) {
			t.Errorf("Endpoints(%q): %v, want ErrEndpoint", bad, err)
		}
	}
	for _, in := range []Instance{
		{Role: "router", URL: "http://a:1", EngineID: "x"},
		{Role: "prefill", URL: "http://a:1", EngineID: ""},
		{Role: "prefill", URL: "http://a:1", EngineID: "a/b"},
		{Role: "decode", URL: "a:1", EngineID: "x"},
	} {
		if err := in.check(); !errors.Is(err, ErrRecord) {
			t.Errorf("check(%+v): %v, want ErrRecord", in, err)
		}
	}
}

func clientOpts() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}
