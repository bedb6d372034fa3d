package session_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// inbox is a D endpoint that keeps every answer P sends it.
type inbox struct {
	mu  sync.Mutex
	got []*statexfer.Message
}

func (b *inbox) handle(_ transport.PeerID, msg []byte) {
	m, err := statexfer.DecodeMessage(msg)
	if err != nil {
		return
	}
	b.mu.Lock()
	b.got = append(b.got, m)
	b.mu.Unlock()
}

func (b *inbox) answer(t *testing.T, typ statexfer.MsgType, xfer uint64) *statexfer.Message {
	t.Helper()
	var ans *statexfer.Message
	waitFor(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, m := range b.got {
			if m.Type == typ && m.Xfer == xfer {
				ans = m
				return true
			}
		}
		return false
	})
	return ans
}

// P accepts one claim per decode rank while the hold lives; a second load
// claiming the same ranks is refused, and its completion notifications and
// aborts change nothing; the claimer's release exactly once. A staging
// gather reads only the blocks granted to the request.
func TestClaimsAndGrantedBlocks(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	side, err := plan.NewSide(m, groups.InstanceConfig{TP: 1}, func(int, *groups.Geometry) int { return 8 })
	if err != nil {
		t.Fatal(err)
	}
	h := &holdsLog{}
	pre, err := session.NewPrefill(session.PrefillConfig{EngineID: "P", Side: side, StagingBytes: 1 << 20, Transports: inproc, Holds: h})
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	geo := side.Ranks[0]
	blocks := make([][]int, len(geo.Groups))
	for g := range blocks {
		blocks[g] = []int{2} // every group granted block 2 only
	}
	if err := pre.Register("r", 42, blocks); err != nil {
		t.Fatal(err)
	}
	box := &inbox{}
	d := transport.NewInproc(transport.Handlers{Notify: box.handle})
	defer d.Close()
	peer, err := d.Connect(context.Background(), pre.Transport(0).Address())
	if err != nil {
		t.Fatal(err)
	}
	send := func(m statexfer.Message) {
		t.Helper()
		m.Reply = d.Address()
		if err := peer.Notify(statexfer.AppendMessage(nil, &m)); err != nil {
			t.Fatal(err)
		}
	}
	// Staging: a step inside block 2 of pool 0 is gathered; one reaching
	// into block 3, or another pool's block 5, is refused.
	stride := int64(geo.Pools[0].PageStride)
	stage := func(xfer uint64, off, n int64) *statexfer.Message {
		send(statexfer.Message{Type: statexfer.MsgStage, ReqID: "r", Grant: 42, Xfer: xfer, Parts: 1,
			Steps: []plan.Step{{Kind: plan.StepCopy, Src: plan.Region{Pool: 0}, SrcOff: off, Dst: plan.Staging, Len: n}}})
		return box.answer(t, statexfer.MsgStaged, xfer)
	}
	if a := stage(100, 2*stride, 64); a.Err != "" {
		t.Fatalf("granted block: %s", a.Err)
	}
	if a := stage(101, 3*stride-32, 64); !strings.Contains(a.Err, "outside the blocks granted") {
		t.Fatalf("reaching into block 3: %q", a.Err)
	}
	if a := stage(102, 5*stride, 16); !strings.Contains(a.Err, "outside the blocks granted") {
		t.Fatalf("block 5: %q", a.Err)
	}
	// Claims.
	if a := func() *statexfer.Message {
		send(statexfer.Message{Type: statexfer.MsgClaim, ReqID: "r", Grant: 42, Xfer: 1, Ranks: []int{0, 1}})
		return box.answer(t, statexfer.MsgClaimed, 1)
	}(); a.Err != "" || a.Expiry == 0 {
		t.Fatalf("first claim: %+v", a)
	}
	send(statexfer.Message{Type: statexfer.MsgClaim, ReqID: "r", Grant: 42, Xfer: 2, Ranks: []int{1}})
	if a := box.answer(t, statexfer.MsgClaimed, 2); !strings.Contains(a.Err, "claimed by another load") {
		t.Fatalf("second claim of rank 1: %+v", a)
	}
	send(statexfer.Message{Type: statexfer.MsgClaim, ReqID: "r", Grant: 41, Xfer: 3, Ranks: []int{2}})
	if a := box.answer(t, statexfer.MsgClaimed, 3); a.Err != "no such hold" {
		t.Fatalf("claim with a wrong grant: %+v", a)
	}
	// The refused load's notifications and abort change nothing.
	ignored := pre.Ignored()
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, Xfer: 2, DRank: 0, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, Xfer: 2, DRank: 1, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgAbort, ReqID: "r", Grant: 42, Xfer: 2})
	waitFor(t, func() bool { return pre.Ignored() >= ignored+3 })
	h.mu.Lock()
	if len(h.released) != 0 || len(h.aborted) != 0 {
		t.Fatalf("acted on the refused load: released %v aborted %v", h.released, h.aborted)
	}
	h.mu.Unlock()
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, Xfer: 1, DRank: 0, Consumers: 2})
	send(statexfer.Message{Type: statexfer.MsgDone, ReqID: "r", Grant: 42, Xfer: 1, DRank: 1, Consumers: 2})
	waitFor(t, func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.released) > 0 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if fmt.Sprint(h.released) != "[r@0]" || len(h.aborted) != 0 {
		t.Fatalf("released %v aborted %v, want [r@0] and none", h.released, h.aborted)
	}
}

// ForgetUnclaimed ends only grants nobody claimed: a hold a reader has
// claimed may be being read one-sided at this moment, so freeing its
// blocks early (a draining decode instance releasing its conversation
// exports) would let the reader copy reused blocks while its lease check
// still passes. Once forgotten, a grant cannot be claimed.
func TestForgetUnclaimed(t *testing.T) {
	m, _ := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	side, err := plan.NewSide(m, groups.InstanceConfig{TP: 1}, func(int, *groups.Geometry) int { return 8 })
	if err != nil {
		t.Fatal(err)
	}
	h := &holdsLog{}
	pre, err := session.NewPrefill(session.PrefillConfig{EngineID: "P", Side: side, StagingBytes: 1 << 20, Transports: inproc, Holds: h})
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	for _, r := range []string{"claimed", "free", "proxy-aborted"} {
		if err := pre.Register(r, 42, nil); err != nil {
			t.Fatal(err)
		}
	}
	box := &inbox{}
	d := transport.NewInproc(transport.Handlers{Notify: box.handle})
	defer d.Close()
	peer, err := d.Connect(context.Background(), pre.Transport(0).Address())
	if err != nil {
		t.Fatal(err)
	}
	claim := func(req string, xfer uint64) *statexfer.Message {
		m := statexfer.Message{Type: statexfer.MsgClaim, ReqID: req, Grant: 42, Xfer: xfer, Ranks: []int{0}, Reply: d.Address()}
		if err := peer.Notify(statexfer.AppendMessage(nil, &m)); err != nil {
			t.Fatal(err)
		}
		return box.answer(t, statexfer.MsgClaimed, xfer)
	}
	if a := claim("claimed", 1); a.Err != "" {
		t.Fatalf("claim: %+v", a)
	}
	if pre.ForgetUnclaimed("claimed") {
		t.Fatal("forgot a claimed grant")
	}
	if !pre.ForgetUnclaimed("free") {
		t.Fatal("kept an unclaimed grant")
	}
	if pre.ForgetUnclaimed("free") || pre.ForgetUnclaimed("unknown") {
		t.Fatal("forgot a grant that is not there")
	}
	if a := claim("free", 2); a.Err == "" {
		t.Fatal("claimed a forgotten grant")
	}
	// The proxy's abort (POST /v1/kv/abort: the decode leg failed or the
	// client left) must not free a hold while its reader may be reading
	// it either; it frees an unclaimed one at once.
	if pre.Abort("claimed", 42) {
		t.Fatal("the proxy's abort released a claimed hold")
	}
	if !pre.Abort("proxy-aborted", 42) {
		t.Fatal("the proxy's abort kept an unclaimed hold")
	}
	h.mu.Lock()
	if fmt.Sprint(h.aborted) != "[proxy-aborted]" {
		t.Fatalf("aborted %v, want the unclaimed hold only", h.aborted)
	}
	h.mu.Unlock()
	if pre.Granted() != 1 {
		t.Fatalf("%d grants left, want the claimed one", pre.Granted())
	}
}
