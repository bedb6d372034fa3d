package statexfer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// ReadRuns: one run per consecutive region pair, op i of the runs is read
// i, staging offsets shifted on the side they belong to, and a read outside
// either side's region is refused naming it, before anything is posted.
func TestReadRuns(t *testing.T) {
	pl, ptr := testLocal(t, 1, 0)
	dl, dtr := testLocal(t, 1, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rem, err := Import(ctx, dtr, pl.Meta("p", 0, ptr.Address(), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	var cache plan.Region
	for r := range pl.Regions {
		if r != plan.Staging {
			cache = r
			break
		}
	}
	rp := &plan.RemotePlan{Rank: 0, Reads: []plan.Read{
		{Remote: cache, RemoteOff: 0, Local: cache, LocalOff: 64, Len: 16},
		{Remote: cache, RemoteOff: 32, Local: cache, LocalOff: 0, Len: 8},
		{Remote: plan.Staging, RemoteOff: 10, Local: plan.Staging, LocalOff: 20, Len: 30},
		{Remote: plan.Staging, RemoteOff: 40, Local: cache, LocalOff: 100, Len: 4},
	}}
	runs, err := ReadRuns(rp, rem, dl, 100, 500)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("%d runs, want 3 (one per consecutive region pair)", len(runs))
	}
	ops := transport.Flatten(runs)
	if len(ops) != len(rp.Reads) {
		t.Fatalf("%d ops for %d reads", len(ops), len(rp.Reads))
	}
	want := []transport.Range{{LocalOff: 64, RemoteOff: 0, Len: 16}, {LocalOff: 0, RemoteOff: 32, Len: 8},
		{LocalOff: 520, RemoteOff: 110, Len: 30}, {LocalOff: 100, RemoteOff: 140, Len: 4}}
	for i, op := range ops {
		if g := (transport.Range{LocalOff: op.LocalOff, RemoteOff: op.RemoteOff, Len: op.Len}); g != want[i] {
			t.Errorf("op %d: %+v, want %+v", i, g, want[i])
		}
		rd := rp.Reads[i]
		if op.Local != dl.Regions[rd.Local] || op.Remote != rem.Region(rd.Remote) {
			t.Errorf("op %d: memories are not read %d's regions", i, i)
		}
	}
	stagingLen := int64(len(pl.Regions[plan.Staging].Bytes()))
	for _, c := range []struct {
		name string
		rd   plan.Read
		want string
	}{
		{"remote end", plan.Read{Remote: plan.Staging, RemoteOff: stagingLen - 100 - 4, Local: cache, Len: 8}, "outside prefill rank 0"},
		{"local end", plan.Read{Remote: cache, Local: plan.Staging, LocalOff: stagingLen - 500 - 2, Len: 4}, "outside local region"},
		{"zero length", plan.Read{Remote: cache, Local: cache}, "outside prefill rank 0"},
		{"negative offset", plan.Read{Remote: cache, RemoteOff: -1, Local: cache, Len: 1}, "outside prefill rank 0"},
		{"no such region", plan.Read{Remote: plan.Region{Pool: 7}, Local: cache, Len: 1}, "has no region"},
	} {
		bad := &plan.RemotePlan{Rank: 0, Reads: append(append([]plan.Read(nil), rp.Reads[:2]...), c.rd)}
		_, err := ReadRuns(bad, rem, dl, 100, 500)
		if !errors.Is(err, ErrBounds) || !strings.Contains(err.Error(), "read 2") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBounds naming read 2 (%q)", c.name, err, c.want)
		}
	}
}
