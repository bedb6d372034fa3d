package statexfer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// A rank that stages through host memory registers its staging buffer only
// (host-pinned), publishes its cache regions with their sizes and kind but
// no key, and the metadata says why it cannot be read directly; a peer
// importing it gets the staging buffer and the same reason.
func TestHostStagingMetadata(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := groups.NewGeometry(m, groups.InstanceConfig{TP: 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr := transport.NewInproc(transport.Handlers{})
	t.Cleanup(func() { tr.Close() })
	if _, err := NewLocal(tr, g, []int{5}, 0, MemoryConfig{HostStaging: true}); !errors.Is(err, ErrMemory) {
		t.Fatalf("host staging without a staging buffer: %v, want ErrMemory", err)
	}
	if _, err := NewLocal(tr, g, []int{5}, 1024, MemoryConfig{Kind: transport.DeviceMemory(0), HostStaging: true}); !errors.Is(err, ErrMemory) {
		t.Fatalf("device cache with the CPU engine: %v, want ErrMemory", err)
	}
	if _, err := NewLocal(tr, g, []int{5}, 1024, MemoryConfig{Kind: transport.DeviceMemory(0)}); !errors.Is(err, transport.ErrUnsupported) {
		t.Fatalf("device cache registered with inproc: %v, want ErrUnsupported", err)
	}
	l, err := NewLocal(tr, g, []int{5}, 1024, MemoryConfig{HostStaging: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Regions) != 1 || l.Regions[plan.Staging] == nil || l.Regions[plan.Staging].Kind() != transport.PinnedMemory {
		t.Fatalf("registered %d regions (%v), want the host-pinned staging buffer only", len(l.Regions), l.Regions)
	}
	for p, pg := range g.Pools {
		for s := 0; s < pg.Regions(); s++ {
			r := plan.Region{Pool: p, Slot: s}
			if want := int64(5 * pg.BlockStride()); int64(len(l.Mem.Region(r))) != want || l.Len(r) != want {
				t.Fatalf("%s: %d host bytes, Len %d, want %d", r, len(l.Mem.Region(r)), l.Len(r), want)
			}
		}
	}
	meta := l.Meta("p", 0, tr.Address(), time.Unix(0, 1))
	b, err := EncodeRankMetas([]RankMeta{meta})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := DecodeRankMetas(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms[0].CheckAgainst(g); err != nil {
		t.Fatalf("host-staging metadata against its own geometry: %v", err)
	}
	if ok, why := ms[0].Direct(); ok || !strings.Contains(why, "prefill rank 1 stages through host memory") {
		t.Fatalf("Direct() = %v %q", ok, why)
	}
	peerTr := transport.NewInproc(transport.Handlers{})
	t.Cleanup(func() { peerTr.Close() })
	rem, err := Import(context.Background(), peerTr, ms[0])
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := rem.Direct(); ok || why == "" || rem.Region(plan.Staging) == nil || rem.Region(plan.Region{}) != nil {
		t.Fatalf("imported: direct %v %q, staging %v, cache %v", ok, why, rem.Region(plan.Staging), rem.Region(plan.Region{}))
	}

	// A staging buffer without a key, or a region of an unknown kind, is
	// refused at decode.
	for name, mut := range map[string]func(*RankMeta){
		"keyless staging": func(m *RankMeta) { m.Regions[len(m.Regions)-1].Key = nil },
		"bad kind":        func(m *RankMeta) { m.Regions[0].Kind = transport.MemKind{Type: 7} },
	} {
		bad := ms[0]
		bad.Regions = append([]RegionMeta(nil), ms[0].Regions...)
		mut(&bad)
		b, err := EncodeRankMetas([]RankMeta{bad})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRankMetas(b); !errors.Is(err, ErrMetadata) {
			t.Errorf("%s: %v, want ErrMetadata", name, err)
		}
	}
}
