package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/hybridxfer/hybridxfer/engine"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// inspect prints the pools, groups and leases of a real engine behind its
// HTTP API, and a held request's lease and blocks.
func TestInspectPrintsAnInstance(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hs := &engine.MemHandshake{}
	p, err := engine.New(engine.Config{Role: backend.RolePrefill, EngineID: "P-inspect", Model: m, Seed: 7, Instance: groups.InstanceConfig{TP: 2},
		NumBlocks: 64, LeaseTTL: time.Hour, Serve: hs.Serve,
		Transports: func(_ int, h transport.Handlers) (transport.Transport, error) { return transport.NewInproc(h), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv := httptest.NewServer(openai.NewHandler(p, nil, nil))
	defer srv.Close()
	if _, err := p.Generate(context.Background(), backend.GenRequest{ID: "held-one", Prompt: "hold this prompt", MaxTokens: 1,
		KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		c := inspectCmd()
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(args)
		err := c.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run(srv.URL)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	for _, want := range []string{"P-inspect: prefill instance of qwen3.5-0.8b, tp 2", "per-layer blocks", "1 requests (1 held)",
		"full_attention", "recurrent", "leases: 1 held", "-held-one", "0 of 2", "peers: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(srv.URL, "--request", "held-one")
	if err != nil || !strings.Contains(out, "held,") || !strings.Contains(out, "group 0 blocks [") || !strings.Contains(out, "lease: expires in") {
		t.Errorf("inspect --request: %v\n%s", err, out)
	}
	if out, err := run(srv.URL, "--request", "nobody"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("inspect of an unknown request: %v\n%s", err, out)
	}
	if _, err := run("not-a-url"); err == nil {
		t.Error("inspect of a bad URL: no error")
	}
}
