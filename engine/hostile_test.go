package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// hostile is one P and two Ds sharing a handshake, each D's reads counted.
type hostile struct {
	p      *Engine
	d      [2]*Engine
	reads  [2]*transport.FaultPlan
	victim *backend.KVTransferParams // a held request nobody loaded yet
	prompt string
}

func newHostile(t *testing.T, pKey, dKey *grant.Key, dmod ...func(d int, c *Config)) *hostile {
	t.Helper()
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	hs := &MemHandshake{}
	x := &hostile{prompt: "the victim's prompt, long enough to fill a few blocks of every group"}
	var err error
	x.p, err = New(Config{Role: backend.RolePrefill, EngineID: "P", Model: m, Seed: 7, Instance: groups.InstanceConfig{TP: 1}, NumBlocks: 256,
		LeaseTTL: time.Hour, Transports: inprocTransports(nil), Serve: hs.Serve, ClusterKey: pKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.p.Close() })
	for i := range x.d {
		x.reads[i] = transport.NewFaultPlan(uint64(i + 1))
		c := Config{Role: backend.RoleDecode, EngineID: "D", Model: m, Seed: 7, Instance: groups.InstanceConfig{TP: 1}, NumBlocks: 256,
			Transports: inprocTransports(x.reads[i]), Fetch: hs.Fetch, ClusterKey: dKey}
		for _, f := range dmod {
			f(i, &c)
		}
		x.d[i], err = New(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.d[i].Close() })
	}
	x.victim = x.prefill(t, x.prompt)
	return x
}

func (x *hostile) prefill(t *testing.T, prompt string) *backend.KVTransferParams {
	t.Helper()
	res, err := x.p.Generate(context.Background(), backend.GenRequest{Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.KV
}

func (x *hostile) decode(d int, prompt string, kv *backend.KVTransferParams) (*backend.GenResult, error) {
	c := *kv
	c.RemoteBlockIDs = slices.Clone(kv.RemoteBlockIDs)
	return x.d[d].Generate(context.Background(), backend.GenRequest{Prompt: prompt, MaxTokens: 4, KV: &c}, nil)
}

func (x *hostile) held(id string) bool {
	x.p.mu.Lock()
	defer x.p.mu.Unlock()
	_, ok := x.p.alloc.Holding(hma.ReqID(id))
	return ok
}

// refused asserts err is a 4xx refusal naming param, that D read nothing
// and is idle, and that the victim's hold is untouched.
func (x *hostile) refused(t *testing.T, name string, d int, readsBefore int, err error, sentinel error, param string) {
	t.Helper()
	var pe *backend.ParamError
	if !errors.Is(err, sentinel) || !errors.As(err, &pe) || pe.Param != param {
		t.Errorf("%s: got %v, want %v naming %s", name, err, sentinel, param)
	}
	if st := openai.Classify(err); st.Status/100 != 4 {
		t.Errorf("%s: status %d, want 4xx", name, st.Status)
	}
	if n := x.reads[d].Calls(transport.OpRead); n != readsBefore {
		t.Errorf("%s: D posted %d read batches", name, n-readsBefore)
	}
	if err := x.d[d].CheckIdle(); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	if !x.held(x.victim.RemoteRequestID) {
		t.Errorf("%s: the victim's hold was released", name)
	}
}

// Params sent straight to D are refused unless P granted exactly them, for
// this prompt: D reads nothing and the victim's state stays held.
func TestHostileParamsRefused(t *testing.T) {
	key := grant.RandomKey()
	x := newHostile(t, key, key)
	own := x.prefill(t, "the attacker's own prompt, also a few blocks long!!")
	cases := []struct {
		name   string
		prompt string
		mod    func(kv *backend.KVTransferParams)
		param  string
	}{
		{"victim's block ids in own params", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.RemoteBlockIDs = x.victim.RemoteBlockIDs
		}, "kv_transfer_params.remote_block_ids"},
		{"victim's request id in own params", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.RemoteRequestID = x.victim.RemoteRequestID
		}, "kv_transfer_params.remote_request_id"},
		{"victim's params with the attacker's prompt", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			*kv = *x.victim
		}, "prompt"},
		{"changed remote_engine_id", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.RemoteEngineID = "P2"
		}, "kv_transfer_params.remote_engine_id"},
		{"changed remote_port", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.RemotePort++
		}, "kv_transfer_params.remote_port"},
		{"longer lease", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.LeaseExpiryUnix += 3600
		}, "kv_transfer_params.lease_expiry"},
		{"unsigned grant", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			g, _ := grant.Open(kv.RemoteGrant, key)
			kv.RemoteGrant = grant.Seal(g, nil)
		}, "kv_transfer_params.remote_grant"},
		{"grant of another cluster", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			g, _ := grant.Open(kv.RemoteGrant, key)
			g.BlockIDs = x.victim.RemoteBlockIDs
			kv.RemoteGrant = grant.Seal(g, grant.RandomKey())
			kv.RemoteBlockIDs = x.victim.RemoteBlockIDs
		}, "kv_transfer_params.remote_grant"},
		{"garbage grant", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.RemoteGrant = "ff00"
		}, "kv_transfer_params.remote_grant"},
		{"no grant", "the attacker's own prompt, also a few blocks long!!", func(kv *backend.KVTransferParams) {
			kv.RemoteGrant = ""
		}, "kv_transfer_params.remote_grant"},
	}
	for _, c := range cases {
		kv := *own
		c.mod(&kv)
		before := x.reads[0].Calls(transport.OpRead)
		_, err := x.decode(0, c.prompt, &kv)
		x.refused(t, c.name, 0, before, err, backend.ErrGrant, c.param)
	}
	// The genuine params still work afterwards, on the same D (a forged
	// engine id did not break its peer table), and give the monolithic
	// answer.
	res, err := x.decode(0, x.prompt, x.victim)
	if err != nil {
		t.Fatalf("the victim's own request after the attacks: %v", err)
	}
	if want := reference(t, x.d[0], x.prompt, 4); !slices.Equal(res.Tokens, want) {
		t.Fatalf("victim's answer %v, monolithic %v", res.Tokens, want)
	}
	if _, err := x.decode(0, "the attacker's own prompt, also a few blocks long!!", own); err != nil {
		t.Fatalf("the attacker's own genuine params: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := x.p.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// Consumed params replayed, to the same D or another, are refused by P's
// claim before anything is read; two Ds given the same params at once:
// exactly one loads, the other is refused, and P releases once.
func TestReplayedParamsRefused(t *testing.T) {
	key := grant.RandomKey()
	x := newHostile(t, key, key)
	if _, err := x.decode(0, x.prompt, x.victim); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := x.p.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	for d := range x.d {
		before := x.reads[d].Calls(transport.OpRead)
		_, err := x.decode(d, x.prompt, x.victim)
		if !errors.Is(err, backend.ErrConsumed) || openai.Classify(err).Status != 409 {
			t.Errorf("replay to D%d: %v (status %d)", d, err, openai.Classify(err).Status)
		}
		if n := x.reads[d].Calls(transport.OpRead); n != before {
			t.Errorf("replay to D%d posted %d read batches", d, n-before)
		}
		if err := x.d[d].CheckIdle(); err != nil {
			t.Error(err)
		}
	}
	// Concurrent: the same fresh params to both Ds, many times.
	for round := range 10 {
		kv := x.prefill(t, x.prompt)
		var wg sync.WaitGroup
		var errs [2]error
		var res [2]*backend.GenResult
		for d := range x.d {
			wg.Go(func() { res[d], errs[d] = x.decode(d, x.prompt, kv) })
		}
		wg.Wait()
		ok := 0
		for d, err := range errs {
			switch {
			case err == nil:
				ok++
				if want := reference(t, x.d[d], x.prompt, 4); !slices.Equal(res[d].Tokens, want) {
					t.Fatalf("round %d: D%d answered %v, monolithic %v", round, d, res[d].Tokens, want)
				}
			case !errors.Is(err, backend.ErrConsumed):
				t.Fatalf("round %d: D%d: %v", round, d, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of 2 Ds loaded the same params (%v)", round, ok, errs)
		}
		if err := x.p.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for d := range x.d {
		if err := x.d[d].CheckIdle(); err != nil {
			t.Error(err)
		}
	}
}

// A D with a cluster key refuses the grants of a P without one, and a
// grant is still checked against its params when neither has a key.
func TestGrantsWithoutAKey(t *testing.T) {
	x := newHostile(t, nil, grant.RandomKey())
	before := x.reads[0].Calls(transport.OpRead)
	_, err := x.decode(0, x.prompt, x.victim)
	x.refused(t, "unsigned grant", 0, before, err, backend.ErrGrant, "kv_transfer_params.remote_grant")

	y := newHostile(t, nil, nil)
	kv := *y.victim
	kv.RemoteBlockIDs = [][]int{{1}, {2}, {3}, {4}}
	before = y.reads[0].Calls(transport.OpRead)
	_, err = y.decode(0, y.prompt, &kv)
	y.refused(t, "altered block ids, no key", 0, before, err, backend.ErrGrant, "kv_transfer_params.remote_block_ids")
	if _, err := y.decode(0, y.prompt, y.victim); err != nil {
		t.Fatalf("genuine params without keys: %v", err)
	}
}

// Params whose lease ran out before they reached D are refused (409)
// before anything is read, even while P has not swept them yet.
func TestExpiredParamsRefused(t *testing.T) {
	key := grant.RandomKey()
	x := newHostile(t, key, key, func(d int, c *Config) {
		if d == 1 {
			c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } // past P's 1 h lease
		}
	})
	before := x.reads[1].Calls(transport.OpRead)
	_, err := x.decode(1, x.prompt, x.victim)
	if !errors.Is(err, backend.ErrConsumed) || openai.Classify(err).Status != 409 {
		t.Fatalf("expired params: %v (status %d)", err, openai.Classify(err).Status)
	}
	if n := x.reads[1].Calls(transport.OpRead); n != before {
		t.Fatalf("expired params: %d read batches posted", n-before)
	}
}

// A lost claim is sent again: the load succeeds instead of waiting out
// its transfer timeout.
func TestLostClaimIsResent(t *testing.T) {
	drop := transport.NewFaultPlan(9).Add(transport.Rule{Kind: transport.OpNotify, Calls: []int{0}, Fault: transport.Fault{Kind: transport.FaultDrop}})
	x := newHostile(t, nil, nil, func(d int, c *Config) {
		if d == 0 {
			c.Transports, c.HeartbeatInterval, c.TransferTimeout = inprocTransports(drop), 20*time.Millisecond, time.Minute
		}
	})
	res, err := x.decode(0, x.prompt, x.victim)
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t, x.d[0], x.prompt, 4); !slices.Equal(res.Tokens, want) {
		t.Fatalf("answer %v, monolithic %v", res.Tokens, want)
	}
	if inj := drop.Injected(); len(inj) != 1 {
		t.Fatalf("injected %v, want the first notification (the claim) dropped", inj)
	}
}
