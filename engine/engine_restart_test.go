package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// samePort is a handshake registry where every prefill instance serves on
// one port: a restarted P takes over its predecessor's address.
type samePort struct {
	mu      sync.Mutex
	payload []byte
}

func (s *samePort) serve(_ string, _ [32]byte, _ map[string]string, payload []byte) (int, func() error, error) {
	s.mu.Lock()
	s.payload = payload
	s.mu.Unlock()
	return 45000, func() error { return nil }, nil
}

func (s *samePort) fetch(context.Context, string, int, [32]byte, map[string]string) (session.Handshake, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.payload == nil {
		return session.Handshake{}, errors.New("nothing listens")
	}
	return session.Handshake{Payload: s.payload}, nil
}

// A prefill instance killed and started again on the same address is a new
// peer: requests it prefills after the restart are served (with the right
// answer), and a request whose state died with the old incarnation fails
// with a load error under policy fail, or is recomputed under recompute,
// never answered from the dead instance's memory.
func TestPrefillRestartOnSameAddress(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	for _, mode := range []plan.Mode{plan.Direct, plan.Staged} {
		for _, policy := range []string{backend.PolicyFail, backend.PolicyRecompute} {
			t.Run(fmt.Sprintf("%v/%s", mode, policy), func(t *testing.T) {
				hs := &samePort{}
				newP := func() *Engine {
					p, err := New(Config{Role: backend.RolePrefill, EngineID: "P", Model: m, Seed: 7, Instance: groups.InstanceConfig{TP: 2}, NumBlocks: 256,
						LeaseTTL: time.Hour, Transports: inprocTransports(nil), Serve: hs.serve, Log: quietLog})
					if err != nil {
						t.Fatal(err)
					}
					return p
				}
				d, err := New(Config{Role: backend.RoleDecode, EngineID: "D", Model: m, Seed: 7, Instance: groups.InstanceConfig{TP: 1, AttnLayout: groups.NHD},
					NumBlocks: 256, Mode: mode, FailurePolicy: policy, TransferTimeout: 5 * time.Second, Transports: inprocTransports(nil), Fetch: hs.fetch, Log: quietLog})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				ctx := context.Background()
				run := func(p *Engine, id, prompt string) ([]uint32, error) {
					pr, err := p.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
					if err != nil {
						t.Fatalf("prefill %s: %v", id, err)
					}
					dr, err := d.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: 4, KV: pr.KV}, nil)
					if err != nil {
						return nil, err
					}
					return dr.Tokens, nil
				}
				check := func(id, prompt string, got []uint32) {
					t.Helper()
					if want := reference(t, d, prompt, 4); fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("%s: %v, monolithic %v", id, got, want)
					}
				}
				p1 := newP()
				prompt := "the same prompt on both incarnations"
				got, err := run(p1, "warm", prompt)
				if err != nil {
					t.Fatal(err)
				}
				check("warm", prompt, got)
				// A request held by the first incarnation when it dies.
				orphan, err := p1.Generate(ctx, backend.GenRequest{ID: "orphan", Prompt: "state that dies with its prefill", MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				for r := range p1.side.Ranks {
					p1.pre.Transport(r).(*transport.Inproc).Kill()
				}
				p1.Close()
				p2 := newP()
				defer p2.Close()
				// Same address, same engine id, same block ids: only the
				// incarnation tells them apart.
				for i := range 3 {
					id := fmt.Sprintf("after-%d", i)
					got, err := run(p2, id, prompt)
					if err != nil {
						t.Fatalf("%s on the restarted prefill: %v", id, err)
					}
					check(id, prompt, got)
				}
				dr, err := d.Generate(ctx, backend.GenRequest{ID: "orphan", Prompt: "state that dies with its prefill", MaxTokens: 4, KV: orphan.KV}, nil)
				switch {
				case policy == backend.PolicyFail && !errors.Is(err, backend.ErrKVLoad):
					t.Fatalf("orphan under fail: %v (tokens %v), want a load error", err, dr)
				case policy == backend.PolicyRecompute && err != nil:
					t.Fatalf("orphan under recompute: %v", err)
				case policy == backend.PolicyRecompute:
					check("orphan", "state that dies with its prefill", dr.Tokens)
				}
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				if err := p2.WaitIdle(wctx); err != nil {
					t.Error(err)
				}
				if err := d.WaitIdle(wctx); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

var quietLog = slog.New(slog.DiscardHandler)

// D heartbeats a request while its reads are slow: P's lease (1 s) is
// extended by each answer, so a read that takes 2.5 s still completes
// against live state, the answer is right and P releases on notification
// (not on expiry).
func TestHeartbeatsKeepTheLeaseAlive(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	faults := transport.NewFaultPlan(1).Add(transport.Rule{Kind: transport.OpRead, Calls: []int{0}, Ops: []int{0},
		Fault: transport.Fault{Kind: transport.FaultDelay, Delay: 2500 * time.Millisecond}})
	x := newPD(t, m, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 1}, func(p, d *Config) {
		p.LeaseTTL = time.Second
		d.Transports = inprocTransports(faults)
		d.HeartbeatInterval = 50 * time.Millisecond
		d.Mode = plan.Direct
	})
	prompt := "a slow transfer outlives the first lease"
	_, dr, err := x.run(context.Background(), "slow", prompt, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(faults.Injected()) == 0 {
		t.Fatal("the delay was not injected")
	}
	if want := reference(t, x.d, prompt, 4); fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
		t.Fatalf("%v, monolithic %v", dr.Tokens, want)
	}
	if swept := x.p.Sweep(); len(swept) != 0 {
		t.Fatalf("leases expired: %v", swept)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := x.p.WaitIdle(wctx); err != nil {
		t.Fatal(err)
	}
}
