package engine

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/groups"
)

// TestDrainWaitsForHeldLeases: a draining prefill instance refuses new
// requests with ErrDraining (Ready too, so /health is 503) and is not
// drained while it holds a lease for decode; the decode instance still
// reads it, the answer equals the monolithic one, and then the drain
// completes with nothing held.
func TestDrainWaitsForHeldLeases(t *testing.T) {
	m, err := groups.Preset("qwen3.5-27b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := newPD(t, m, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, nil)
	ctx := context.Background()
	const prompt = "drain me gently"
	pr, err := x.p.Generate(ctx, backend.GenRequest{ID: "held", Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x.p.BeginDrain()
	x.p.BeginDrain() // idempotent
	select {
	case <-x.p.Draining():
	default:
		t.Fatal("Draining not closed after BeginDrain")
	}
	if err := x.p.Ready(); !errors.Is(err, backend.ErrDraining) {
		t.Fatalf("Ready while draining: %v", err)
	}
	_, err = x.p.Generate(ctx, backend.GenRequest{ID: "late", Prompt: "x", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if !errors.Is(err, backend.ErrDraining) || backend.ClassOf(err).Status != 503 {
		t.Fatalf("new request while draining: %v", err)
	}
	// Not drained: the lease is held. An expired context says what is left.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := x.p.WaitDrained(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitDrained with a lease held: %v, want the context's error naming what is left", err)
	}
	dr, err := x.d.Generate(ctx, backend.GenRequest{ID: "held", Prompt: prompt, MaxTokens: 4, KV: pr.KV}, nil)
	if err != nil {
		t.Fatalf("decode of a draining prefill's hold: %v", err)
	}
	if want := reference(t, x.p, prompt, 4); !slices.Equal(dr.Tokens, want) {
		t.Fatalf("decode after drain began: %v, monolithic %v", dr.Tokens, want)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute) // a hang guard
	defer wcancel()
	if err := x.p.WaitDrained(wctx); err != nil {
		t.Fatalf("drain after the lease was released: %v", err)
	}
	if err := x.p.CheckIdle(); err != nil {
		t.Fatalf("drained but not idle: %v", err)
	}
}
