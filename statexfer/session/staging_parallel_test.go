package session

// Staged gathers on P run off the transport's handler goroutine, several
// at once: one decode rank's slow gather does not hold up another's, and
// every guarantee of a serial gather still holds (a range per gather, taken
// and recorded before the answer; a forgotten request's range freed exactly
// once; pool-full answers are Retry; grants checked; the per-rank limit on
// staging requests in flight; nothing left on Close).

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// spLog is a slog handler that keeps every record at Warn or above.
type spLog struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l spLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l spLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.buf, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(l.buf, " %s=%v", a.Key, a.Value); return true })
	l.buf.WriteByte('\n')
	return nil
}
func (l spLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l spLog) WithGroup(string) slog.Handler      { return l }

// spHolds is the owner of the holds: an abort forgets the request at once.
type spHolds struct {
	pre      atomic.Pointer[Prefill]
	released atomic.Int64
}

func (h *spHolds) Released(string, int) { h.released.Add(1) }
func (h *spHolds) Extend(string) (time.Time, bool) {
	return time.Now().Add(time.Minute), true
}
func (h *spHolds) Abort(req string) {
	if p := h.pre.Load(); p != nil {
		p.Forget(req)
	}
}

// spGate is the gather hook: it reports each gather that reaches its copy
// and holds it until its decode rank is let go.
type spGate struct {
	entered chan int // decode rank of every gather that reached the hook
	mu      sync.Mutex
	held    map[int]chan struct{}
	wait    func(drank int) // extra wait before the gather goes on (nil: none)
	in, max atomic.Int64    // gathers inside the hook now, and the most at once
}

func newGate() *spGate {
	return &spGate{entered: make(chan int, 1024), held: map[int]chan struct{}{}}
}

func (g *spGate) hold(dranks ...int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range dranks {
		g.held[r] = make(chan struct{})
	}
}

// release lets drank's gathers go on (idempotent).
func (g *spGate) release(drank int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch := g.held[drank]; ch != nil {
		close(ch)
		delete(g.held, drank)
	}
}

func (g *spGate) releaseAll() {
	g.mu.Lock()
	var rs []int
	for r := range g.held {
		rs = append(rs, r)
	}
	g.mu.Unlock()
	for _, r := range rs {
		g.release(r)
	}
}

func (g *spGate) hook(_ string, drank int) {
	n := g.in.Add(1)
	for m := g.max.Load(); n > m && !g.max.CompareAndSwap(m, n); m = g.max.Load() {
	}
	defer g.in.Add(-1)
	g.entered <- drank
	g.mu.Lock()
	ch := g.held[drank]
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
	if g.wait != nil {
		g.wait(drank)
	}
}

// awaitEntered waits until a gather of drank reached the hook.
func (g *spGate) awaitEntered(t *testing.T, drank int) {
	t.Helper()
	timeout := time.After(10 * time.Second) // only turns a hang into a failure
	for {
		select {
		case r := <-g.entered:
			if r == drank {
				return
			}
		case <-timeout:
			t.Fatalf("no gather of decode rank %d started in 10 s", drank)
		}
	}
}

// spRig is one prefill rank (tp 1, inproc) and a decode endpoint that keeps
// every answer.
type spRig struct {
	t     *testing.T
	pre   *Prefill
	holds *spHolds
	gate  *spGate
	geo   *groups.Geometry
	d     transport.Transport
	peer  transport.Peer

	logMu sync.Mutex
	log   bytes.Buffer

	mu  sync.Mutex
	got []*statexfer.Message
}

// newRig starts a prefill session with a staging pool of staging bytes and
// the gate as its gather hook; tweak runs before any message is sent.
func newRig(t *testing.T, staging int64, blocks func(*groups.Geometry) [][]int, tweak func(*Prefill)) *spRig {
	t.Helper()
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	side, err := plan.NewSide(m, groups.InstanceConfig{TP: 1}, func(int, *groups.Geometry) int { return 8 })
	if err != nil {
		t.Fatal(err)
	}
	rig := &spRig{t: t, holds: &spHolds{}, gate: newGate(), geo: side.Ranks[0]}
	logger := slog.New(spLog{mu: &rig.logMu, buf: &rig.log})
	pre, err := NewPrefill(PrefillConfig{EngineID: "P", Side: side, StagingBytes: staging, Log: logger, Holds: rig.holds,
		Transports: func(_ int, h transport.Handlers) (transport.Transport, error) { return transport.NewInproc(h), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pre.Close() })
	rig.pre = pre
	rig.holds.pre.Store(pre)
	pre.gatherHook = rig.gate.hook
	if tweak != nil {
		tweak(pre)
	}
	t.Cleanup(rig.gate.releaseAll) // runs before Close: a failed test does not hang
	// Every source byte of pool 0 is distinct enough to catch a wrong copy.
	src := pre.Local(0).Mem.Region(plan.Region{Pool: 0})
	for i := range src {
		src[i] = byte(i*7 + i/251)
	}
	var grant [][]int
	if blocks != nil {
		grant = blocks(rig.geo)
	}
	if err := pre.Register("r", 42, grant); err != nil {
		t.Fatal(err)
	}
	rig.d = transport.NewInproc(transport.Handlers{Notify: func(_ transport.PeerID, msg []byte) {
		m, err := statexfer.DecodeMessage(msg)
		if err != nil {
			return
		}
		rig.mu.Lock()
		rig.got = append(rig.got, m)
		rig.mu.Unlock()
	}})
	t.Cleanup(func() { rig.d.Close() })
	if rig.peer, err = rig.d.Connect(context.Background(), pre.Transport(0).Address()); err != nil {
		t.Fatal(err)
	}
	return rig
}

func (rig *spRig) send(m statexfer.Message) {
	rig.t.Helper()
	m.Reply = rig.d.Address()
	if m.ReqID == "" {
		m.ReqID, m.Grant = "r", 42
	}
	if err := rig.peer.Notify(statexfer.AppendMessage(nil, &m)); err != nil {
		rig.t.Fatal(err)
	}
}

// stage asks for a one-part gather of n bytes at src offset off of pool 0
// into offset dst of the range, for decode rank drank under load xfer.
func (rig *spRig) stage(xfer uint64, drank int, off, n int64) {
	rig.t.Helper()
	rig.send(statexfer.Message{Type: statexfer.MsgStage, Xfer: xfer, DRank: drank, Parts: 1,
		Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 0}, SrcOff: off, Dst: plan.Staging, Len: n}}})
}

// answer waits for P's MsgStaged to load xfer.
func (rig *spRig) answer(xfer uint64) *statexfer.Message {
	rig.t.Helper()
	timeout := time.Now().Add(10 * time.Second) // only turns a hang into a failure
	for {
		rig.mu.Lock()
		for _, m := range rig.got {
			if m.Type == statexfer.MsgStaged && m.Xfer == xfer {
				rig.mu.Unlock()
				return m
			}
		}
		rig.mu.Unlock()
		if time.Now().After(timeout) {
			rig.t.Fatalf("no staging answer to load %d in 10 s", xfer)
		}
		time.Sleep(time.Millisecond)
	}
}

// answered reports whether P answered load xfer yet.
func (rig *spRig) answered(xfer uint64) bool {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	for _, m := range rig.got {
		if m.Type == statexfer.MsgStaged && m.Xfer == xfer {
			return true
		}
	}
	return false
}

// staged checks that the range at the answer's offset holds the bytes
// gathered from pool 0 at off.
func (rig *spRig) staged(a *statexfer.Message, off, n int64) {
	rig.t.Helper()
	if a.Err != "" {
		rig.t.Fatalf("load %d: %s", a.Xfer, a.Err)
	}
	mem := rig.pre.Local(0).Mem
	got := mem.Staging[a.Offset : a.Offset+n]
	want := mem.Region(plan.Region{Pool: 0})[off : off+n]
	if !bytes.Equal(got, want) {
		rig.t.Fatalf("load %d: staged bytes at %d differ from the source", a.Xfer, a.Offset)
	}
}

// noPoolErrors: no staging range was freed twice or never handed out.
func (rig *spRig) noPoolErrors() {
	rig.t.Helper()
	rig.logMu.Lock()
	defer rig.logMu.Unlock()
	if strings.Contains(rig.log.String(), "staging pool") {
		rig.t.Fatalf("staging pool errors:\n%s", rig.log.String())
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // only turns a hang into a failure
			t.Fatalf("%s: not reached in 10 s", what)
		}
	}
}

// The serialisation this replaces: decode rank 0's gather is held inside
// its copy; decode rank 1's gather, asked for afterwards, still completes
// (on the handler goroutine it would wait for rank 0's).
func TestStagingGathersOfDecodeRanksRunConcurrently(t *testing.T) {
	rig := newRig(t, 1<<20, nil, nil)
	stride := int64(rig.geo.Pools[0].PageStride)
	rig.gate.hold(0)
	rig.stage(1, 0, 1*stride, 4096)
	rig.gate.awaitEntered(t, 0)
	rig.stage(2, 1, 2*stride, 8192)
	a2 := rig.answer(2)
	rig.staged(a2, 2*stride, 8192)
	if rig.answered(1) {
		t.Fatal("decode rank 0's gather answered while it was held")
	}
	rig.gate.release(0)
	a1 := rig.answer(1)
	rig.staged(a1, 1*stride, 4096)
	if a1.Offset == a2.Offset {
		t.Fatalf("two gathers share staging offset %d", a1.Offset)
	}
	// Both ranges were recorded before the answers: each decode rank's
	// read-completion frees its own.
	if n := rig.pre.StagingInUse(); n != 4096+8192 {
		t.Fatalf("staging in use %d, want %d", n, 4096+8192)
	}
	rig.send(statexfer.Message{Type: statexfer.MsgDone, Xfer: 2, DRank: 1, Consumers: 2})
	waitUntil(t, "rank 1's range freed", func() bool { return rig.pre.StagingInUse() == 4096 })
	rig.send(statexfer.Message{Type: statexfer.MsgDone, Xfer: 1, DRank: 0, Consumers: 2})
	waitUntil(t, "release", func() bool { return rig.holds.released.Load() == 1 })
	if n := rig.pre.StagingInUse(); n != 0 {
		t.Fatalf("staging in use %d after both read completions", n)
	}
	rig.noPoolErrors()
}

// A full pool is answered Retry at once while another gather holds its
// range; once that range is freed the retry succeeds.
func TestStagingPoolFullIsRetryWhileGathering(t *testing.T) {
	rig := newRig(t, 8192, nil, nil)
	stride := int64(rig.geo.Pools[0].PageStride)
	rig.gate.hold(0)
	rig.stage(1, 0, 0, 8192)
	rig.gate.awaitEntered(t, 0)
	rig.stage(2, 1, stride, 64)
	if a := rig.answer(2); !a.Retry || !strings.Contains(a.Err, "staging") {
		t.Fatalf("pool full: %+v, want a Retry", a)
	}
	rig.gate.release(0)
	rig.staged(rig.answer(1), 0, 8192)
	rig.send(statexfer.Message{Type: statexfer.MsgDone, Xfer: 1, DRank: 0, Consumers: 2})
	waitUntil(t, "range freed", func() bool { return rig.pre.StagingInUse() == 0 })
	rig.stage(3, 1, stride, 64)
	rig.staged(rig.answer(3), stride, 64)
	rig.noPoolErrors()
}

// A request forgotten (or aborted by D) while its gather runs: the gather's
// range is freed exactly once and D is told the request went away.
func TestStagingForgottenWhileGathering(t *testing.T) {
	for _, how := range []string{"forget", "abort"} {
		t.Run(how, func(t *testing.T) {
			rig := newRig(t, 1<<20, nil, nil)
			rig.gate.hold(0)
			rig.stage(1, 0, 0, 4096)
			rig.gate.awaitEntered(t, 0)
			if how == "forget" {
				rig.pre.Forget("r")
			} else {
				rig.send(statexfer.Message{Type: statexfer.MsgAbort, Xfer: 1})
				waitUntil(t, "abort", func() bool { return rig.pre.Granted() == 0 })
			}
			rig.gate.release(0)
			if a := rig.answer(1); !strings.Contains(a.Err, "released while staging") {
				t.Fatalf("answer %+v, want released while staging", a)
			}
			if n := rig.pre.StagingInUse(); n != 0 {
				t.Fatalf("staging in use %d after the forgotten gather", n)
			}
			rig.noPoolErrors()
		})
	}
}

// Forget racing with many gathers that finish at any moment: every range
// comes back exactly once (no hook holds anything).
func TestStagingForgetRacesGathers(t *testing.T) {
	rig := newRig(t, 1<<20, nil, nil)
	stride := int64(rig.geo.Pools[0].PageStride)
	for round := range 20 {
		req := fmt.Sprintf("q%d", round)
		if err := rig.pre.Register(req, 7, nil); err != nil {
			t.Fatal(err)
		}
		for dr := range 4 {
			rig.send(statexfer.Message{Type: statexfer.MsgStage, ReqID: req, Grant: 7, Xfer: uint64(100*round + dr), DRank: dr, Parts: 1,
				Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 0}, SrcOff: int64(dr) * stride, Dst: plan.Staging, Len: 16384}}})
		}
		if round%2 == 0 {
			rig.answer(uint64(100*round + round%4)) // forget after some have finished
		}
		rig.pre.Forget(req)
		for dr := range 4 {
			rig.answer(uint64(100*round + dr))
		}
	}
	if n := rig.pre.StagingInUse(); n != 0 {
		t.Fatalf("staging in use %d after every request was forgotten", n)
	}
	rig.noPoolErrors()
}

// Staging gathers still read only granted blocks, and a refused gather
// takes no range.
func TestStagingGatherChecksGrant(t *testing.T) {
	rig := newRig(t, 1<<20, func(geo *groups.Geometry) [][]int {
		b := make([][]int, len(geo.Groups))
		for g := range b {
			b[g] = []int{2}
		}
		return b
	}, nil)
	stride := int64(rig.geo.Pools[0].PageStride)
	rig.stage(1, 0, 3*stride, 64)
	if a := rig.answer(1); !strings.Contains(a.Err, "outside the blocks granted") || a.Retry {
		t.Fatalf("ungranted block: %+v", a)
	}
	rig.stage(2, 0, 2*stride, 64)
	rig.staged(rig.answer(2), 2*stride, 64)
	if n := rig.pre.StagingInUse(); n != 64 {
		t.Fatalf("staging in use %d, want the one granted gather's 64", n)
	}
	rig.send(statexfer.Message{Type: statexfer.MsgStage, ReqID: "r", Grant: 41, Xfer: 3, DRank: 0, Parts: 1,
		Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 0}, SrcOff: 2 * stride, Dst: plan.Staging, Len: 64}}})
	if a := rig.answer(3); a.Err != errNoSuchHold.Error() {
		t.Fatalf("wrong grant: %+v", a)
	}
}

// The per-rank bound on staging requests in flight counts gathers that
// run as well as requests being assembled: past it, Retry.
func TestStagingPendingLimitCountsRunningGathers(t *testing.T) {
	rig := newRig(t, 1<<20, nil, func(p *Prefill) { p.maxPending = 2 })
	rig.gate.hold(0, 1)
	rig.stage(1, 0, 0, 64)
	rig.gate.awaitEntered(t, 0)
	// A first part of a two-part request: it is assembled, not gathered.
	rig.send(statexfer.Message{Type: statexfer.MsgStage, Xfer: 2, DRank: 1, Part: 0, Parts: 2,
		Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 0}, SrcOff: 0, Dst: plan.Staging, Len: 64}}})
	rig.stage(3, 2, 0, 64)
	if a := rig.answer(3); !a.Retry || !strings.Contains(a.Err, "too many staging requests") {
		t.Fatalf("third request in flight: %+v, want Retry", a)
	}
	// The second part completes load 2 (it was counted already).
	rig.send(statexfer.Message{Type: statexfer.MsgStage, Xfer: 2, DRank: 1, Part: 1, Parts: 2,
		Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 0}, SrcOff: 64, Dst: plan.Staging, DstOff: 64, Len: 64}}})
	rig.gate.awaitEntered(t, 1)
	rig.gate.releaseAll()
	rig.staged(rig.answer(1), 0, 64)
	rig.staged(rig.answer(2), 0, 128)
	rig.stage(4, 2, 0, 64) // both finished: room again
	rig.staged(rig.answer(4), 0, 64)
	rig.noPoolErrors()
}

// At most p.slots gathers copy at once.
func TestStagingGathersAreBounded(t *testing.T) {
	rig := newRig(t, 1<<20, nil, func(p *Prefill) { p.slots = make(chan struct{}, 2) })
	rig.gate.hold(0, 1, 2, 3)
	for dr := range 4 {
		rig.stage(uint64(dr+1), dr, int64(dr)*4096, 4096)
	}
	for range 2 {
		select {
		case <-rig.gate.entered:
		case <-time.After(10 * time.Second): // only turns a hang into a failure
			t.Fatal("fewer than 2 gathers started in 10 s")
		}
	}
	rig.gate.releaseAll()
	for dr := range 4 {
		rig.staged(rig.answer(uint64(dr+1)), int64(dr)*4096, 4096)
	}
	if m := rig.gate.max.Load(); m > 2 {
		t.Fatalf("%d gathers ran at once, the bound is 2", m)
	}
}

// Close during a gather waits for the copy to end (the memory it copies
// stays mapped until then), drops its result and frees its range; gathers
// still waiting for a slot are dropped without copying.
func TestStagingCloseDuringGather(t *testing.T) {
	rig := newRig(t, 1<<20, nil, func(p *Prefill) { p.slots = make(chan struct{}, 1) })
	var copying atomic.Bool
	rig.gate.wait = func(drank int) {
		if drank != 0 {
			t.Errorf("decode rank %d's gather ran after Close began", drank)
			return
		}
		for !rig.pre.closing() { // the copy outlives the start of Close
			time.Sleep(time.Millisecond)
		}
		copying.Store(true)
	}
	rig.stage(1, 0, 0, 4096)
	rig.gate.awaitEntered(t, 0)
	rig.stage(2, 1, 4096, 4096) // waits for the only slot, holding no range
	waitUntil(t, "second gather handed off", func() bool {
		pr := rig.pre.ranks[0]
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return pr.gathering == 2
	})
	if err := rig.pre.Close(); err != nil {
		t.Fatal(err)
	}
	if !copying.Load() {
		t.Fatal("Close returned while a gather was still copying")
	}
	if n := rig.pre.StagingInUse(); n != 0 {
		t.Fatalf("staging in use %d after Close", n)
	}
	rig.noPoolErrors()
}
