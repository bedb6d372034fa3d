package transport_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

var (
	failFault       = transport.Fault{Kind: transport.FaultFail}
	dropFault       = transport.Fault{Kind: transport.FaultDrop}
	disconnectFault = transport.Fault{Kind: transport.FaultDisconnect}
)

func ratePlan(seed uint64) *transport.FaultPlan {
	return transport.NewFaultPlan(seed).
		Add(transport.Rule{Kind: transport.OpRead, Rate: 0.3, Fault: failFault}).
		Add(transport.Rule{Kind: transport.OpWrite, Ops: []int{1, 3}, Rate: 0.5, Fault: failFault}).
		Add(transport.Rule{Kind: transport.OpNotify, Rate: 0.2, Fault: dropFault})
}

// decisions evaluates plan over a grid of (kind, call, op).
func decisions(plan *transport.FaultPlan) []transport.Fault {
	var out []transport.Fault
	for _, k := range []transport.OpKind{transport.OpRead, transport.OpWrite, transport.OpNotify, transport.OpConnect} {
		for call := range 100 {
			for op := range 16 {
				out = append(out, plan.Decide(k, call, op))
			}
		}
	}
	return out
}

func TestFaultPlanDeterministic(t *testing.T) {
	d1, d2 := decisions(ratePlan(42)), decisions(ratePlan(42))
	if !slices.Equal(d1, d2) {
		t.Fatal("same seed, different decisions")
	}
	if slices.Equal(d1, decisions(ratePlan(43))) {
		t.Fatal("different seeds, same decisions")
	}
	// Rates are honored (deterministically, given the seed).
	hits := 0
	for call := range 100 {
		for op := range 16 {
			if ratePlan(42).Decide(transport.OpRead, call, op).Kind == transport.FaultFail {
				hits++
			}
		}
	}
	if hits < 1600*2/10 || hits > 1600*4/10 {
		t.Fatalf("rate 0.3 hit %d of 1600", hits)
	}
	// Decisions do not depend on the order or concurrency of calls.
	plan := ratePlan(42)
	got := make([]transport.Fault, len(d1))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := len(got) - 1 - g; i >= 0; i -= 8 {
				k := transport.OpKind(i / 1600)
				got[i] = plan.Decide(k, i%1600/16, i%16)
			}
		})
	}
	wg.Wait()
	if !slices.Equal(got, d1) {
		t.Fatal("concurrent decisions differ from sequential ones")
	}
}

func TestFaultPlanMatching(t *testing.T) {
	delay := transport.Fault{Kind: transport.FaultDelay, Delay: time.Second}
	plan := transport.NewFaultPlan(1).
		Add(transport.Rule{Kind: transport.OpRead, Calls: []int{2}, Ops: []int{0, 3}, Fault: failFault}).
		Add(transport.Rule{Kind: transport.OpRead, Calls: []int{2}, Fault: delay}).
		Add(transport.Rule{Kind: transport.OpNotify, Calls: []int{1}, Ops: []int{5}, Fault: dropFault})
	for _, c := range []struct {
		kind     transport.OpKind
		call, op int
		want     transport.Fault
	}{
		{transport.OpRead, 2, 0, failFault},
		{transport.OpRead, 2, 3, failFault},
		{transport.OpRead, 2, 1, delay}, // first matching rule decides
		{transport.OpRead, 1, 0, transport.Fault{}},
		{transport.OpWrite, 2, 0, transport.Fault{}},
		{transport.OpNotify, 1, 0, dropFault}, // Ops is ignored for notify
		{transport.OpNotify, 0, 0, transport.Fault{}},
	} {
		if got := plan.Decide(c.kind, c.call, c.op); got != c.want {
			t.Errorf("Decide(%v, %d, %d) = %v, want %v", c.kind, c.call, c.op, got, c.want)
		}
	}
}

func TestFaultPlanInvalidRules(t *testing.T) {
	for _, r := range []transport.Rule{
		{Kind: transport.OpRead},
		{Kind: transport.OpRead, Fault: dropFault},
		{Kind: transport.OpConnect, Fault: dropFault},
		{Kind: transport.OpNotify, Fault: transport.Fault{Kind: transport.FaultDelay}},
		{Kind: transport.OpRead, Rate: 1.5, Fault: failFault},
		{Kind: transport.OpRead, Calls: []int{-1}, Fault: failFault},
		{Kind: transport.OpKind(9), Fault: failFault},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Add(%+v) did not panic", r)
				}
			}()
			transport.NewFaultPlan(0).Add(r)
		}()
	}
}

// runScenario drives a fixed sequence of calls through a plan and returns
// what it injected.
func runScenario(t *testing.T, plan *transport.FaultPlan) []transport.Injection {
	a, _ := newFaulty(t, plan)
	b, _ := newInproc(t)
	p := mustConnect(t, a, b)
	local, remote := mustAlloc(t, a, 4096), mustAlloc(t, b, 4096)
	rm := mustImport(t, p, remote)
	for i := range 20 {
		post := p.Read
		if i%2 == 1 {
			post = p.Write
		}
		bt, err := post(opsOf(local, rm, 8, 512))
		if err != nil {
			t.Fatal(err)
		}
		settle(t, bt)
		_ = p.Notify([]byte{byte(i)})
	}
	return plan.Injected()
}

func TestFaultInjectionDeterministic(t *testing.T) {
	i1, i2 := runScenario(t, ratePlan(7)), runScenario(t, ratePlan(7))
	if len(i1) == 0 {
		t.Fatal("scenario injected nothing")
	}
	if !slices.EqualFunc(i1, i2, func(a, b transport.Injection) bool {
		return a.Kind == b.Kind && a.Call == b.Call && a.Op == b.Op && a.Fault == b.Fault
	}) {
		t.Fatalf("same seed, different injections:\n%+v\n%+v", i1, i2)
	}
}

func TestFaultFail(t *testing.T) {
	plan := transport.NewFaultPlan(1).
		Add(transport.Rule{Kind: transport.OpWrite, Calls: []int{1}, Ops: []int{0, 2}, Fault: failFault}).
		Add(transport.Rule{Kind: transport.OpNotify, Calls: []int{0}, Fault: failFault}).
		Add(transport.Rule{Kind: transport.OpConnect, Calls: []int{0}, Fault: failFault})
	a, _ := newFaulty(t, plan)
	b, bev := newInproc(t)
	if _, err := a.Connect(context.Background(), b.Address()); !errors.Is(err, transport.ErrInjected) {
		t.Fatalf("Connect call 0: %v, want ErrInjected", err)
	}
	p := mustConnect(t, a, b)
	local, remote := mustAlloc(t, a, 4096), mustAlloc(t, b, 4096)
	rm := mustImport(t, p, remote)
	for i := range local.Bytes() {
		local.Bytes()[i] = byte(i%251 + 1)
	}

	// Write call 0 is clean; bounds rejections are not counted as calls.
	if _, err := p.Write([]transport.Op{{Local: local, Remote: rm, Len: 5000}}); !errors.Is(err, transport.ErrOutOfBounds) {
		t.Fatalf("out of bounds write: %v", err)
	}
	bt, err := p.Write(opsOf(local, rm, 1, 8))
	if err != nil {
		t.Fatal(err)
	}
	if res := settle(t, bt); res.Err != nil {
		t.Fatalf("write call 0: %+v", res)
	}
	clear(remote.Bytes())
	bt, err = p.Write(opsOf(local, rm, 4, 1024))
	if err != nil {
		t.Fatal(err)
	}
	res := settle(t, bt)
	if !errors.Is(res.Err, transport.ErrInjected) || !slices.Equal(res.Failed, []int{0, 2}) {
		t.Fatalf("write call 1: %+v, want ops 0 and 2 injected", res)
	}
	for i, wantSent := range []bool{false, true, false, true} {
		got, src := remote.Bytes()[i*1024:(i+1)*1024], local.Bytes()[i*1024:(i+1)*1024]
		if sent := bytes.Equal(got, src); sent != wantSent {
			t.Errorf("op %d landed: %v, want %v", i, sent, wantSent)
		}
	}

	if err := p.Notify([]byte("lost")); !errors.Is(err, transport.ErrInjected) {
		t.Fatalf("Notify call 0: %v, want ErrInjected", err)
	}
	if err := p.Notify([]byte("kept")); err != nil {
		t.Fatal(err)
	}
	if n := recv(t, bev.notes, "notification"); string(n.msg) != "kept" {
		t.Fatalf("got %q, want only the second notification", n.msg)
	}

	want := []transport.Injection{
		{Kind: transport.OpConnect, Call: 0, Fault: failFault},
		{Kind: transport.OpWrite, Call: 1, Op: 0, Peer: p.ID(), Fault: failFault},
		{Kind: transport.OpWrite, Call: 1, Op: 2, Peer: p.ID(), Fault: failFault},
		{Kind: transport.OpNotify, Call: 0, Peer: p.ID(), Fault: failFault},
	}
	if got := plan.Injected(); !slices.Equal(got, want) {
		t.Fatalf("Injected:\n%+v\nwant\n%+v", got, want)
	}
	if plan.Calls(transport.OpWrite) != 2 || plan.Calls(transport.OpConnect) != 2 || plan.Calls(transport.OpNotify) != 2 {
		t.Fatalf("calls counted: write %d connect %d notify %d", plan.Calls(transport.OpWrite),
			plan.Calls(transport.OpConnect), plan.Calls(transport.OpNotify))
	}
}

func TestFaultDrop(t *testing.T) {
	plan := transport.NewFaultPlan(1).
		Add(transport.Rule{Kind: transport.OpNotify, Calls: []int{0, 2}, Fault: dropFault})
	a, _ := newFaulty(t, plan)
	b, bev := newInproc(t)
	p := mustConnect(t, a, b)
	for i := range 4 {
		if err := p.Notify([]byte{byte(i)}); err != nil {
			t.Fatalf("Notify %d: %v", i, err)
		}
	}
	// Delivery is in order, so messages 0 and 2 would have come first.
	for _, want := range []byte{1, 3} {
		if n := recv(t, bev.notes, "notification"); !bytes.Equal(n.msg, []byte{want}) {
			t.Fatalf("got message %v, want %d", n.msg, want)
		}
	}
	if got := len(plan.Injected()); got != 2 {
		t.Fatalf("%d injections recorded, want 2", got)
	}
}

func TestFaultDelayBatch(t *testing.T) {
	sl := newManualSleep()
	delay := transport.Fault{Kind: transport.FaultDelay, Delay: 250 * time.Millisecond}
	plan := transport.NewFaultPlan(1).SetSleep(sl.sleep).
		Add(transport.Rule{Kind: transport.OpRead, Ops: []int{2}, Fault: delay})
	a, _ := newFaulty(t, plan)
	b, _ := newInproc(t)
	p := mustConnect(t, a, b)
	local, remote := mustAlloc(t, a, 4096), mustAlloc(t, b, 4096)
	rm := mustImport(t, p, remote)
	for i := range remote.Bytes() {
		remote.Bytes()[i] = byte(i * 7)
	}

	bt, err := p.Read(opsOf(local, rm, 4, 1024))
	if err != nil {
		t.Fatal(err)
	}
	if d := recv(t, sl.calls, "sleep"); d != delay.Delay {
		t.Fatalf("slept %v, want %v", d, delay.Delay)
	}
	if isDone(bt) {
		t.Fatal("delayed batch settled before its delay ended")
	}
	sl.release <- struct{}{}
	if res := settle(t, bt); res.Err != nil {
		t.Fatalf("delayed batch: %+v", res)
	}
	if !bytes.Equal(local.Bytes(), remote.Bytes()) {
		t.Fatal("delayed batch: data differs")
	}

	// Canceling during the delay fails exactly the delayed op.
	bt, err = p.Read(opsOf(local, rm, 4, 1024))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sl.calls, "sleep")
	bt.Cancel()
	res := settle(t, bt)
	if !errors.Is(res.Err, transport.ErrCanceled) || !slices.Equal(res.Failed, []int{2}) {
		t.Fatalf("canceled during delay: %+v, want op 2 canceled", res)
	}

	// Closing the wrapper during the delay fails it with ErrClosed.
	bt, err = p.Read(opsOf(local, rm, 4, 1024))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sl.calls, "sleep")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	res = bt.Result()
	if !isDone(bt) || !errors.Is(res.Err, transport.ErrClosed) {
		t.Fatalf("after Close: done %v, %+v; want settled with ErrClosed", isDone(bt), res)
	}
}

func TestFaultDelayNotifyAndConnect(t *testing.T) {
	sl := newManualSleep()
	delay := transport.Fault{Kind: transport.FaultDelay, Delay: time.Minute}
	plan := transport.NewFaultPlan(1).SetSleep(sl.sleep).
		Add(transport.Rule{Kind: transport.OpNotify, Calls: []int{0}, Fault: delay}).
		Add(transport.Rule{Kind: transport.OpConnect, Calls: []int{0, 1}, Fault: delay})
	a, _ := newFaulty(t, plan)
	b, bev := newInproc(t)

	// A canceled context ends a delayed connect.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := a.Connect(ctx, b.Address())
		errc <- err
	}()
	recv(t, sl.calls, "sleep")
	cancel()
	if err := recv(t, errc, "Connect"); !errors.Is(err, context.Canceled) {
		t.Fatalf("delayed Connect with canceled ctx: %v", err)
	}
	// A released one connects.
	pc := make(chan transport.Peer, 1)
	go func() {
		p, err := a.Connect(context.Background(), b.Address())
		if err != nil {
			t.Error(err)
		}
		pc <- p
	}()
	recv(t, sl.calls, "sleep")
	sl.release <- struct{}{}
	p := recv(t, pc, "Connect")
	if p == nil {
		t.FailNow()
	}

	sent := make(chan error, 1)
	go func() { sent <- p.Notify([]byte("slow")) }()
	recv(t, sl.calls, "sleep")
	select {
	case n := <-bev.notes:
		t.Fatalf("notification %q arrived during its delay", n.msg)
	default:
	}
	sl.release <- struct{}{}
	if err := recv(t, sent, "Notify"); err != nil {
		t.Fatal(err)
	}
	if err := p.Notify([]byte("fast")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"slow", "fast"} {
		if n := recv(t, bev.notes, "notification"); string(n.msg) != want {
			t.Fatalf("got %q, want %q", n.msg, want)
		}
	}
}

func TestFaultDisconnect(t *testing.T) {
	sl := newManualSleep()
	delay := transport.Fault{Kind: transport.FaultDelay, Delay: time.Minute}
	plan := transport.NewFaultPlan(1).SetSleep(sl.sleep).
		Add(transport.Rule{Kind: transport.OpRead, Calls: []int{0}, Fault: delay}).
		Add(transport.Rule{Kind: transport.OpNotify, Calls: []int{0}, Fault: disconnectFault})
	a, aev := newFaulty(t, plan)
	b, _ := newInproc(t)
	c, _ := newInproc(t)
	p := mustConnect(t, a, b)
	local, remote := mustAlloc(t, a, 4096), mustAlloc(t, b, 4096)
	rm := mustImport(t, p, remote)

	// A batch held in flight by its delay fails when the peer does.
	inflight, err := p.Read(opsOf(local, rm, 2, 1024))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sl.calls, "sleep")
	if err := p.Notify([]byte("x")); !errors.Is(err, transport.ErrDisconnected) || !errors.Is(err, transport.ErrInjected) {
		t.Fatalf("Notify: %v, want an injected ErrDisconnected", err)
	}
	f := recv(t, aev.failed, "PeerFailed")
	if f.peer != p.ID() || !errors.Is(f.err, transport.ErrDisconnected) {
		t.Fatalf("PeerFailed(%d, %v), want peer %d with ErrDisconnected", f.peer, f.err, p.ID())
	}
	res := settle(t, inflight)
	if !errors.Is(res.Err, transport.ErrDisconnected) || !slices.Equal(res.Failed, []int{0, 1}) {
		t.Fatalf("in-flight batch: %+v, want every op failed with ErrDisconnected", res)
	}
	if _, err := p.Read(opsOf(local, rm, 1, 8)); !errors.Is(err, transport.ErrDisconnected) {
		t.Fatalf("Read after disconnect: %v", err)
	}
	if err := p.Notify([]byte("y")); !errors.Is(err, transport.ErrDisconnected) {
		t.Fatalf("Notify after disconnect: %v", err)
	}

	// The real failure of the same peer is not reported twice. The inproc
	// event loop reports b's failure before c's.
	pc := mustConnect(t, a, c)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if f := recv(t, aev.failed, "PeerFailed"); f.peer != pc.ID() {
		t.Fatalf("PeerFailed(%d): want only c's peer %d after b's injected failure", f.peer, pc.ID())
	}
}

func TestFaultDisconnectBatchAndConnect(t *testing.T) {
	plan := transport.NewFaultPlan(1).
		Add(transport.Rule{Kind: transport.OpWrite, Calls: []int{0}, Ops: []int{1}, Fault: disconnectFault}).
		Add(transport.Rule{Kind: transport.OpConnect, Calls: []int{1}, Fault: disconnectFault})
	a, aev := newFaulty(t, plan)
	b, _ := newInproc(t)
	c, _ := newInproc(t)
	p := mustConnect(t, a, b)
	local, remote := mustAlloc(t, a, 4096), mustAlloc(t, b, 4096)
	rm := mustImport(t, p, remote)
	for i := range local.Bytes() {
		local.Bytes()[i] = 1
	}
	bt, err := p.Write(opsOf(local, rm, 3, 1024))
	if err != nil {
		t.Fatal(err)
	}
	res := settle(t, bt)
	if !errors.Is(res.Err, transport.ErrDisconnected) || !slices.Equal(res.Failed, []int{0, 1, 2}) {
		t.Fatalf("write: %+v, want every op failed with ErrDisconnected", res)
	}
	if slices.ContainsFunc(remote.Bytes(), func(c byte) bool { return c != 0 }) {
		t.Fatal("a batch that hit a disconnect posted ops")
	}
	if f := recv(t, aev.failed, "PeerFailed"); f.peer != p.ID() {
		t.Fatalf("PeerFailed(%d), want %d", f.peer, p.ID())
	}

	pc, err := a.Connect(context.Background(), c.Address())
	if err != nil {
		t.Fatalf("Connect with disconnect fault: %v", err)
	}
	if f := recv(t, aev.failed, "PeerFailed"); f.peer != pc.ID() || !errors.Is(f.err, transport.ErrInjected) {
		t.Fatalf("PeerFailed(%d, %v), want %d injected", f.peer, f.err, pc.ID())
	}
	if err := pc.Notify(nil); !errors.Is(err, transport.ErrDisconnected) {
		t.Fatalf("Notify on a peer that failed at connect: %v", err)
	}
}
