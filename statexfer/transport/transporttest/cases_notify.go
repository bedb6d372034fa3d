package transporttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// message returns notification i of a sender: its index then filler bytes.
func message(sender byte, i int) []byte {
	msg := make([]byte, 5+(i*37)%2048)
	msg[0] = sender
	binary.LittleEndian.PutUint32(msg[1:], uint32(i))
	fill(msg[5:], uint64(sender)<<32|uint64(i))
	return msg
}

// testNotifyOrder sends notifications from two transports to a third, with
// sizes up to 2 KiB: each sender's messages arrive byte-exact, in order,
// with one from ID per sender, distinct between senders.
func testNotifyOrder(t *testing.T, env Env) {
	a, c, b := newNode(t, env), newNode(t, env), newNode(t, env)
	pa, pc := connect(t, a.tr, b.tr), connect(t, c.tr, b.tr)
	const n = 200
	var wg sync.WaitGroup
	for _, s := range []struct {
		id byte
		p  transport.Peer
	}{{'a', pa}, {'c', pc}} {
		wg.Go(func() {
			for i := range n {
				if err := s.p.Notify(message(s.id, i)); err != nil {
					t.Errorf("Notify %c%d: %v", s.id, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	notes := b.rec.waitNotes(t, 2*n)
	next := map[byte]int{}
	from := map[byte]transport.PeerID{}
	for _, nt := range notes {
		if len(nt.msg) < 5 {
			t.Fatalf("short notification %x", nt.msg)
		}
		s := nt.msg[0]
		i := next[s]
		if want := message(s, i); !bytes.Equal(nt.msg, want) {
			t.Fatalf("sender %c: got message %d (%d bytes), want %d (%d bytes)",
				s, binary.LittleEndian.Uint32(nt.msg[1:]), len(nt.msg), i, len(want))
		}
		next[s] = i + 1
		if f, ok := from[s]; ok && f != nt.from {
			t.Fatalf("sender %c: from %d, earlier %d", s, nt.from, f)
		}
		from[s] = nt.from
	}
	if next['a'] != n || next['c'] != n {
		t.Fatalf("got %d and %d messages, want %d each", next['a'], next['c'], n)
	}
	if from['a'] == from['c'] {
		t.Fatalf("two senders share from ID %d", from['a'])
	}
}

// Rounds of the ordering tests: each round moves orderOps ops of an
// unaligned length (about 1 MiB in all, so a backend that reports completion
// early is caught with the data still moving), with gaps between them.
const (
	orderRounds   = 8
	orderOps      = 32
	orderLen      = 32<<10 + 1
	orderStride   = 32<<10 + 64
	orderRoundLen = orderOps * orderStride
	orderSize     = orderRounds * orderRoundLen
)

// roundOps returns the ops of round k; local and remote offsets are equal.
func roundOps(local transport.Memory, remote transport.RemoteMemory, k int) []transport.Op {
	ops := make([]transport.Op, orderOps)
	for i := range ops {
		off := uint64(k*orderRoundLen + i*orderStride)
		ops[i] = transport.Op{Local: local, Remote: remote, LocalOff: off, RemoteOff: off, Len: orderLen}
	}
	return ops
}

// roundDiff compares the ranges of round k in got and want.
func roundDiff(got, want []byte, k int) string {
	for i := range orderOps {
		off := k*orderRoundLen + i*orderStride
		if d := diff(got[off:off+orderLen], want[off:off+orderLen]); d != "" {
			return fmt.Sprintf("op %d: %s", i, d)
		}
	}
	return ""
}

// roundFill sets the ranges of round k to c.
func roundFill(buf []byte, k int, c byte) {
	for i := range orderOps {
		off := k*orderRoundLen + i*orderStride
		r := buf[off : off+orderLen]
		for j := range r {
			r[j] = c
		}
	}
}

// testNotifyAfterWrite writes round k, waits for completion, then notifies
// k; the receiver checks, inside its Notify handler, that round k already
// holds the written bytes.
func testNotifyAfterWrite(t *testing.T, env Env) {
	var remote transport.Memory // set before the first notification
	var want []byte
	var mu sync.Mutex
	var bad []string
	rec := newRecorder()
	rec.onNotify = func(_ transport.PeerID, msg []byte) {
		var k int
		if _, err := fmt.Sscanf(string(msg), "w%d", &k); err != nil || k < 0 || k >= orderRounds {
			mu.Lock()
			bad = append(bad, fmt.Sprintf("bad message %q", msg))
			mu.Unlock()
			return
		}
		if d := roundDiff(remote.Bytes(), want, k); d != "" {
			mu.Lock()
			bad = append(bad, fmt.Sprintf("round %d: data not all there when the notification arrived: %s", k, d))
			mu.Unlock()
		}
	}
	a, b := newNode(t, env), newNodeWith(t, env, rec)
	p := connect(t, a.tr, b.tr)
	local := alloc(t, a.tr, orderSize)
	remote = alloc(t, b.tr, orderSize)
	rm := importMem(t, p, remote)
	fill(local.Bytes(), 31)
	want = slices.Clone(local.Bytes())

	for k := range orderRounds {
		bt, err := p.Write(roundOps(local, rm, k))
		if err != nil {
			t.Fatalf("Write %d: %v", k, err)
		}
		mustSucceed(t, bt, orderOps)
		if err := p.Notify(fmt.Appendf(nil, "w%d", k)); err != nil {
			t.Fatalf("Notify %d: %v", k, err)
		}
	}
	notes := b.rec.waitNotes(t, orderRounds)
	for k, nt := range notes {
		if string(nt.msg) != fmt.Sprintf("w%d", k) {
			t.Errorf("notification %d is %q", k, nt.msg)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range bad {
		t.Error(s)
	}
}

// testNotifyAfterRead reads round k, waits for completion, then notifies k;
// the receiver's handler overwrites round k at once (as P reuses a block
// once D says it is done). The reader must still hold the original bytes:
// the read finished before the notification could be seen.
func testNotifyAfterRead(t *testing.T, env Env) {
	var remote transport.Memory // set before the first notification
	rec := newRecorder()
	rec.onNotify = func(_ transport.PeerID, msg []byte) {
		var k int
		if _, err := fmt.Sscanf(string(msg), "r%d", &k); err == nil && k >= 0 && k < orderRounds {
			roundFill(remote.Bytes(), k, 0xff)
		}
	}
	a, b := newNode(t, env), newNodeWith(t, env, rec)
	p := connect(t, a.tr, b.tr)
	local := alloc(t, a.tr, orderSize)
	remote = alloc(t, b.tr, orderSize)
	rm := importMem(t, p, remote)
	fill(remote.Bytes(), 32)
	want := slices.Clone(remote.Bytes())

	for k := range orderRounds {
		bt, err := p.Read(roundOps(local, rm, k))
		if err != nil {
			t.Fatalf("Read %d: %v", k, err)
		}
		mustSucceed(t, bt, orderOps)
		if err := p.Notify(fmt.Appendf(nil, "r%d", k)); err != nil {
			t.Fatalf("Notify %d: %v", k, err)
		}
	}
	b.rec.waitNotes(t, orderRounds)
	for k := range orderRounds {
		if d := roundDiff(local.Bytes(), want, k); d != "" {
			t.Errorf("round %d: data read differs (read still running when the notification arrived?): %s", k, d)
		}
	}
}

// testNotifyClosedPeer: Notify (and posting) through a closed Peer fails
// with ErrClosed, through a peer whose remote closed with ErrDisconnected
// (once PeerFailed reported it), and through a closed transport with
// ErrClosed; Connect to a closed transport fails.
func testNotifyClosedPeer(t *testing.T, env Env) {
	a, b := newNode(t, env), newNode(t, env)
	local := alloc(t, a.tr, 64)
	remoteMem := alloc(t, b.tr, 64)

	p1 := connect(t, a.tr, b.tr)
	rm := importMem(t, p1, remoteMem)
	if err := p1.Close(); err != nil {
		t.Errorf("Peer.Close: %v", err)
	}
	if err := p1.Notify([]byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Notify on a closed peer: %v, want ErrClosed", err)
	}
	if bt, err := p1.Read([]transport.Op{{Local: local, Remote: rm, Len: 64}}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Read on a closed peer: %v, want ErrClosed", err)
		if bt != nil {
			mustSettle(t, bt, 1)
		}
	}
	_ = p1.Close()

	p2 := connect(t, a.tr, b.tr)
	if err := b.tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := a.rec.waitFailed(t, p2.ID()); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("PeerFailed error %v, want ErrDisconnected", err)
	}
	if err := p2.Notify([]byte("x")); !errors.Is(err, transport.ErrDisconnected) {
		t.Errorf("Notify to a closed remote: %v, want ErrDisconnected", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleWait)
	defer cancel()
	if p, err := a.tr.Connect(ctx, b.tr.Address()); err == nil {
		_ = p.Close()
		t.Errorf("Connect to a closed transport succeeded")
	}

	c, d := newNode(t, env), newNode(t, env)
	p3 := connect(t, c.tr, d.tr)
	if err := c.tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p3.Notify([]byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Notify on a closed transport: %v, want ErrClosed", err)
	}
	if _, err := c.tr.Alloc(64, transport.HostMemory); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Alloc on a closed transport: %v, want ErrClosed", err)
	}
	if _, err := c.tr.Connect(ctx, d.tr.Address()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Connect on a closed transport: %v, want ErrClosed", err)
	}
}

// testPeerIDs checks the IDs handlers receive. A transport has one PeerID
// per remote transport: the Peer from Connect has it, notifications from that
// remote carry it as from, and PeerFailed reports it.
func testPeerIDs(t *testing.T, env Env) {
	a, b, c := newNode(t, env), newNode(t, env), newNode(t, env)
	pab := connect(t, a.tr, b.tr)
	pba := connect(t, b.tr, a.tr)
	pcb := connect(t, c.tr, b.tr)

	if err := pab.Notify([]byte("from a")); err != nil {
		t.Fatal(err)
	}
	notes := b.rec.waitNotes(t, 1)
	if notes[0].from != pba.ID() {
		t.Errorf("b got a's notification from %d, want b's peer to a %d", notes[0].from, pba.ID())
	}
	if err := pcb.Notify([]byte("from c")); err != nil {
		t.Fatal(err)
	}
	notes = b.rec.waitNotes(t, 2)
	cid := notes[1].from
	if cid == pba.ID() {
		t.Errorf("c's notifications carry a's ID %d", cid)
	}
	pbc := connect(t, b.tr, c.tr)
	if pbc.ID() != cid {
		t.Errorf("b's peer to c has ID %d, c's notifications came from %d", pbc.ID(), cid)
	}
	if err := pba.Notify([]byte("from b")); err != nil {
		t.Fatal(err)
	}
	if got := a.rec.waitNotes(t, 1)[0].from; got != pab.ID() {
		t.Errorf("a got b's notification from %d, want a's peer to b %d", got, pab.ID())
	}

	if err := b.tr.Close(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		name string
		n    *node
		p    transport.Peer
	}{{"a", a, pab}, {"c", c, pcb}} {
		if err := x.n.rec.waitFailed(t, x.p.ID()); !errors.Is(err, transport.ErrDisconnected) {
			t.Errorf("%s: PeerFailed error %v, want ErrDisconnected", x.name, err)
		}
		for _, f := range x.n.rec.failures() {
			if f.peer != x.p.ID() {
				t.Errorf("%s: PeerFailed for unknown peer %d", x.name, f.peer)
			}
		}
		if n := len(x.n.rec.failures()); n != 1 {
			t.Errorf("%s: PeerFailed called %d times, want once", x.name, n)
		}
	}
}
