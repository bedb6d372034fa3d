package session_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
)

func inproc(r int, h transport.Handlers) (transport.Transport, error) {
	return transport.NewInproc(h), nil
}

func cloneMem(m *plan.RankMemory) *plan.RankMemory {
	c := &plan.RankMemory{Staging: bytes.Clone(m.Staging)}
	for _, pool := range m.Pools {
		var slots [][]byte
		for _, s := range pool {
			slots = append(slots, bytes.Clone(s))
		}
		c.Pools = append(c.Pools, slots)
	}
	return c
}

// Two prefill instances whose request ids collide stage to one decode
// instance at the same time: each load lands exactly what its own P holds
// (checked against the in-process executor run on copies of the memory),
// because answers are routed by transfer id, and each P's staging range is
// its own.
func TestCollidingRequestIDsFromTwoPrefills(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	j, err := verify.NewJob(verify.Config{Model: m, P: groups.InstanceConfig{TP: 2}, D: groups.InstanceConfig{TP: 1, AttnLayout: groups.NHD, ConvLayout: groups.SD},
		PromptTokens: 300, Requests: 8, Seed: 11, Mode: plan.Staged, HitPercent: -1})
	if err != nil {
		t.Fatal(err)
	}
	pool, scratch, err := j.Staging()
	if err != nil {
		t.Fatal(err)
	}
	var pres []*verify.Prefill
	payloads := map[int][]byte{}
	for i := range 2 {
		pre, err := j.StartP(nil, fmt.Sprintf("boot%d", i), inproc, pool) // one request's worth: the rest waits (backpressure)
		if err != nil {
			t.Fatal(err)
		}
		defer pre.Session.Close()
		// The second P holds other bytes at the same block ids.
		if i == 1 {
			for r := range j.PSide.Ranks {
				for _, slots := range pre.Session.Local(r).Mem.Pools {
					for _, b := range slots {
						for k := range b {
							b[k] ^= 0x5a
						}
					}
				}
			}
		}
		wire, err := statexfer.EncodeRankMetas(pre.Session.Metas())
		if err != nil {
			t.Fatal(err)
		}
		payloads[i+1] = wire
		pres = append(pres, pre)
	}
	fetch := func(_ context.Context, _ string, port int) (session.Handshake, error) {
		return session.Handshake{Payload: payloads[port]}, nil
	}
	dec, err := session.NewDecode(session.DecodeConfig{Model: m, Side: j.DSide, StagingBytes: 8 * scratch[0], Transports: inproc, Fetch: fetch}) // every load at once on D
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	// Request i comes from P (i%2)+1 under the id "same" for every request.
	before := cloneMem(dec.Local(0).Mem)
	for i := range j.Requests() {
		if err := pres[i%2].Session.Register(fmt.Sprintf("same-%d", i/2), uint64(100+i), j.Request(i).PBlocks); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, j.Requests())
	for i := range j.Requests() {
		wg.Go(func() {
			_, errs[i] = dec.Load(ctx, session.LoadRequest{Peer: session.PeerRef{EngineID: verify.PrefillEngineID, Host: "p", Port: i%2 + 1},
				ReqID: fmt.Sprintf("same-%d", i/2), Grant: uint64(100 + i), Req: j.Request(i), Mode: plan.Staged})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// The oracle: the same plans run in process on copies.
	want := before
	pmems := [][]*plan.RankMemory{}
	for _, pre := range pres {
		var ms []*plan.RankMemory
		for r := range j.PSide.Ranks {
			ms = append(ms, cloneMem(pre.Session.Local(r).Mem))
		}
		pmems = append(pmems, ms)
	}
	for i := range j.Requests() {
		p, err := j.PlanRequest(0, i)
		if err != nil {
			t.Fatal(err)
		}
		if err := plan.Execute(kernels.Default(), p, pmems[i%2], want); err != nil {
			t.Fatal(err)
		}
	}
	got := dec.Local(0).Mem
	for pi := range want.Pools {
		for s := range want.Pools[pi] {
			if !bytes.Equal(got.Pools[pi][s], want.Pools[pi][s]) {
				t.Fatalf("pool %d slot %d differs from the in-process run", pi, s)
			}
		}
	}
	for _, pre := range pres {
		if n := pre.Session.StagingInUse(); n != 0 {
			t.Errorf("prefill staging still in use: %d bytes", n)
		}
	}
	if n := dec.StagingInUse(); n != 0 {
		t.Errorf("decode scratch still in use: %d bytes", n)
	}
	// Inspection: both incarnations, ready, with their tp; no load left.
	peers := dec.Peers()
	if len(peers) != 2 {
		t.Fatalf("Peers: %+v, want the two prefills", peers)
	}
	for i, p := range peers {
		if p.State != "ready" || p.BootID != fmt.Sprintf("boot%d", i) || p.TP != 2 || p.Port != i+1 || p.BlockLayout != "per-layer" {
			t.Errorf("peer %d: %+v", i, p)
		}
	}
	if ls := dec.Loads(); len(ls) != 0 {
		t.Errorf("Loads after every load ended: %+v", ls)
	}
}

// holdsLog records what a prefill session tells the owner of its holds.
type holdsLog struct {
	mu                sync.Mutex
	released, aborted []string
	extended          int
}

func (h *holdsLog) Released(req string, rank int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = append(h.released, fmt.Sprintf("%s@%d", req, rank))
}
func (h *holdsLog) Extend(string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.extended++
	return time.Now().Add(time.Minute), true
}
func (h *holdsLog) Abort(req string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aborted = append(h.aborted, req)
}

// P acts on no message whose grant does not match: a forged or stale
// read-completion, abort or heartbeat changes nothing; a repeated
// notification from the same decode rank counts once; the right ones
// release exactly once.
func TestPrefillActsOnlyOnGrantedMessages(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	side, err := plan.NewSide(m, groups.InstanceConfig{TP: 1}, func(int, *groups.Geometry) int { return 8 })
	if err != nil {
		t.Fatal(err)
	}
	h := &holdsLog{}
	pre, err := session.NewPrefill(session.PrefillConfig{EngineID: "P", Side: side, Transports: inproc, Holds: h})
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	if err := pre.Register("r", 42, nil); err != nil {
		t.Fatal(err)
	}
	d := transport.NewInproc(transport.Handlers{})
	defer d.Close()
	peer, err := d.Connect(context.Background(), pre.Transport(0).Address())
	if err != nil {
		t.Fatal(err)
	}
	send := func(m statexfer.Message) {
		t.Helper()
		if err := peer.Notify(statexfer.AppendMessage(nil, &m)); err != nil {
			t.Fatal(err)
		}
	}
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 41, DRank: 0, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 41, DRank: 1, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgAbort, ReqID: "r", Grant: 7})
	send(statexfer.Message{Type: statexfer.MsgHeartbeat, ReqID: "r", Grant: 0})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "other", Grant: 42, DRank: 0, Consumers: 1})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, DRank: 0, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, DRank: 0, Consumers: 2}) // a repeat
	// Notifications are delivered in order: once the last is seen, all were.
	waitFor(t, func() bool { return pre.Ignored() >= 5 })
	h.mu.Lock()
	if len(h.released) != 0 || len(h.aborted) != 0 || h.extended != 0 {
		t.Fatalf("acted on foreign messages: released %v aborted %v extended %d", h.released, h.aborted, h.extended)
	}
	h.mu.Unlock()
	if got := pre.Ignored(); got != 5 {
		t.Fatalf("ignored %d messages, want 5", got)
	}
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, DRank: 1, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, DRank: 1, Consumers: 2})
	waitFor(t, func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.released) > 0 })
	send(statexfer.Message{Type: statexfer.MsgAbort, ReqID: "r", Grant: 42}) // ordered after both
	waitFor(t, func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.aborted) > 0 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if fmt.Sprint(h.released) != "[r@0]" {
		t.Fatalf("released %v, want exactly once on rank 0", h.released)
	}
	if fmt.Sprint(h.aborted) != "[r]" {
		t.Fatalf("aborted %v", h.aborted)
	}
}

// waitFor polls cond until it holds (the bound only turns a hang into a
// failure).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
	}
}
