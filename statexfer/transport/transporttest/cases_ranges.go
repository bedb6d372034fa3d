package transporttest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// testReadRanges posts runs over two local and two remote memories, with
// empty runs between them, through ReadRanges: the destinations equal a
// model of the flattened ops, byte for byte. A bad range in a later run
// fails the call with ErrOutOfBounds naming its index across the runs, and
// nothing is read.
func testReadRanges(t *testing.T, env Env) {
	rng := rand.New(rand.NewPCG(0x7a9, 5))
	a, b := newNode(t, env), newNode(t, env)
	p := connect(t, a.tr, b.tr)
	locals := []transport.Memory{alloc(t, a.tr, 256<<10+7), alloc(t, a.tr, 128<<10+1)}
	var remotes []transport.RemoteMemory
	var srcs [][]byte
	for i, size := range []int{200<<10 + 3, 300 << 10} {
		m := alloc(t, b.tr, size)
		fill(m.Bytes(), uint64(40+i))
		remotes = append(remotes, importMem(t, p, m))
		srcs = append(srcs, slices.Clone(m.Bytes()))
	}
	models := [][]byte{make([]byte, len(locals[0].Bytes())), make([]byte, len(locals[1].Bytes()))}
	for round := range 6 {
		// Each local memory is split in windows so that no two runs of a
		// round write the same bytes.
		var runs []transport.Ranges
		var flat [][3]int // per flattened op: local, remote, range index in its run
		for li, lm := range locals {
			win := uint64(len(lm.Bytes())) / 2
			for w := range 2 {
				ri := rng.IntN(2)
				ops := randomOpsIn(rng, false, lm, window{uint64(w) * win, win}, remotes[ri], window{0, remotes[ri].Desc().Len}, 1+rng.IntN(40), 3000)
				run := transport.Ranges{Local: lm, Remote: remotes[ri]}
				for _, op := range ops {
					run.Ranges = append(run.Ranges, transport.Range{LocalOff: op.LocalOff, RemoteOff: op.RemoteOff, Len: op.Len})
					flat = append(flat, [3]int{li, ri, len(run.Ranges) - 1})
				}
				runs = append(runs, run, transport.Ranges{Local: lm, Remote: remotes[ri]}) // and an empty run
			}
		}
		bt, err := p.ReadRanges(runs)
		if err != nil {
			t.Fatalf("round %d: ReadRanges: %v", round, err)
		}
		mustSucceed(t, bt, len(flat))
		for _, op := range transport.Flatten(runs) {
			li := slices.Index(locals, op.Local)
			ri := slices.Index(remotes, op.Remote)
			copy(models[li][op.LocalOff:op.LocalOff+op.Len], srcs[ri][op.RemoteOff:op.RemoteOff+op.Len])
		}
		for li, lm := range locals {
			if d := diff(lm.Bytes(), models[li]); d != "" {
				t.Fatalf("round %d: local %d differs from the model of the flattened ops: %s", round, li, d)
			}
		}
	}

	// A bad range in the second run: the call fails and reads nothing.
	before := [][]byte{slices.Clone(locals[0].Bytes()), slices.Clone(locals[1].Bytes())}
	good := transport.Ranges{Local: locals[0], Remote: remotes[0], Ranges: []transport.Range{{LocalOff: 0, RemoteOff: 0, Len: 100}, {LocalOff: 200, RemoteOff: 5, Len: 50}}}
	rl := remotes[1].Desc().Len
	bad := transport.Ranges{Local: locals[1], Remote: remotes[1], Ranges: []transport.Range{{LocalOff: 0, RemoteOff: 0, Len: 10}, {LocalOff: 10, RemoteOff: rl - 5, Len: 6}}}
	_, err := p.ReadRanges([]transport.Ranges{good, bad})
	if !errors.Is(err, transport.ErrOutOfBounds) || !strings.Contains(err.Error(), fmt.Sprintf("op %d", 3)) {
		t.Fatalf("ReadRanges with a range past the remote end: %v, want ErrOutOfBounds naming op 3", err)
	}
	_, err = p.ReadRanges([]transport.Ranges{good, {Remote: remotes[0], Ranges: []transport.Range{{Len: 1}}}})
	if !errors.Is(err, transport.ErrOutOfBounds) {
		t.Fatalf("ReadRanges with a nil local memory: %v, want ErrOutOfBounds", err)
	}
	for li, lm := range locals {
		if d := diff(lm.Bytes(), before[li]); d != "" {
			t.Fatalf("a rejected ReadRanges changed local %d: %s", li, d)
		}
	}
}
