package transport_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

func TestInprocForeignMemory(t *testing.T) {
	a, _ := newInproc(t)
	b, _ := newInproc(t)
	c, _ := newInproc(t)
	pab, pac := mustConnect(t, a, b), mustConnect(t, a, c)
	local := mustAlloc(t, a, 64)
	bm, cm := mustAlloc(t, b, 64), mustAlloc(t, c, 64)

	if _, err := pab.Import(cm.Desc()); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("importing c's memory through a peer to b: %v, want ErrBadKey", err)
	}
	d := bm.Desc()
	d.Len++
	if _, err := pab.Import(d); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("importing a desc with a wrong length: %v, want ErrBadKey", err)
	}
	rmB, rmC := mustImport(t, pab, bm), mustImport(t, pac, cm)
	if _, err := pab.Read([]transport.Op{{Local: local, Remote: rmC, Len: 8}}); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("op with memory imported through another peer: %v, want ErrBadKey", err)
	}
	if _, err := pab.Read([]transport.Op{{Local: bm, Remote: rmB, Len: 8}}); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("op with local memory of another transport: %v, want ErrBadKey", err)
	}

	// Released memory cannot be imported or used.
	if err := bm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pab.Import(bm.Desc()); !errors.Is(err, transport.ErrBadKey) {
		t.Errorf("importing released memory: %v, want ErrBadKey", err)
	}
	bt, err := pab.Read([]transport.Op{{Local: local, Remote: rmB, Len: 8}})
	if err != nil {
		t.Fatal(err)
	}
	if res := settle(t, bt); !errors.Is(res.Err, transport.ErrBadKey) {
		t.Errorf("reading released remote memory: %+v, want ErrBadKey", res)
	}
}

func TestInprocConnect(t *testing.T) {
	a, _ := newInproc(t)
	for _, addr := range []string{"", "tcp://x", "inproc:x", "inproc:999999999"} {
		if _, err := a.Connect(context.Background(), []byte(addr)); !errors.Is(err, transport.ErrDisconnected) {
			t.Errorf("Connect(%q): %v, want ErrDisconnected", addr, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Connect(ctx, a.Address()); !errors.Is(err, context.Canceled) {
		t.Errorf("Connect with canceled ctx: %v", err)
	}

	// Loopback: a transport reads its own memory.
	self := mustConnect(t, a, a)
	src, dst := mustAlloc(t, a, 100), mustAlloc(t, a, 100)
	copy(src.Bytes(), bytes.Repeat([]byte("ab"), 50))
	bt, err := self.Read([]transport.Op{{Local: dst, Remote: mustImport(t, self, src), Len: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if res := settle(t, bt); res.Err != nil || !bytes.Equal(src.Bytes(), dst.Bytes()) {
		t.Fatalf("loopback read: %+v", res)
	}

	// Empty batches complete at once.
	bt, err = self.Read(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !isDone(bt) || bt.Result().Err != nil {
		t.Fatal("empty batch not complete")
	}
}

// A graceful Close delivers what the closing side already sent, then
// PeerFailed.
func TestInprocCloseFlushesNotifications(t *testing.T) {
	a, _ := newInproc(t)
	b, bev := newInproc(t)
	p := mustConnect(t, a, b)
	const n = 100
	for i := range n {
		if err := p.Notify([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if nt := recv(t, bev.notes, "notification"); nt.msg[0] != byte(i) {
			t.Fatalf("notification %d is %d", i, nt.msg[0])
		}
	}
	if f := recv(t, bev.failed, "PeerFailed"); !errors.Is(f.err, transport.ErrDisconnected) {
		t.Fatalf("PeerFailed error %v", f.err)
	}
}

// Kill may lose notifications in flight, but what arrives is an in-order
// prefix, followed by PeerFailed.
func TestInprocKill(t *testing.T) {
	a, _ := newInproc(t)
	b, bev := newInproc(t)
	p := mustConnect(t, a, b)
	const n = 100
	for i := range n {
		if err := p.Notify([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	a.(*transport.Inproc).Kill()
	f := recv(t, bev.failed, "PeerFailed")
	if !errors.Is(f.err, transport.ErrDisconnected) {
		t.Fatalf("PeerFailed error %v", f.err)
	}
	// Handlers run one at a time, so every delivered notification is
	// already buffered.
	for next := 0; ; next++ {
		select {
		case nt := <-bev.notes:
			if nt.msg[0] != byte(next) {
				t.Fatalf("notification %d arrived as number %d", nt.msg[0], next)
			}
			continue
		default:
		}
		t.Logf("%d of %d notifications delivered before the kill", next, n)
		break
	}
	a.(*transport.Inproc).Kill() // twice is harmless
}
