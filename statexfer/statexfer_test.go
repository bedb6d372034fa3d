package statexfer

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"pgregory.net/rapid"
)

func genMessage(t *rapid.T) *Message {
	m := &Message{
		Type:      MsgType(rapid.IntRange(int(MsgDone), int(MsgClaimed)).Draw(t, "type")),
		ReqID:     rapid.StringN(0, 40, maxReqID).Draw(t, "req"),
		Grant:     rapid.Uint64().Draw(t, "grant"),
		Xfer:      rapid.Uint64().Draw(t, "xfer"),
		Expiry:    rapid.Int64().Draw(t, "expiry"),
		DRank:     rapid.IntRange(0, 1<<20).Draw(t, "drank"),
		PRank:     rapid.IntRange(0, 1<<20).Draw(t, "prank"),
		Consumers: rapid.IntRange(0, 1<<20).Draw(t, "consumers"),
		Part:      rapid.IntRange(0, 1<<20).Draw(t, "part"),
		Parts:     rapid.IntRange(0, 1<<20).Draw(t, "parts"),
		Offset:    rapid.Int64Range(0, 1<<50).Draw(t, "offset"),
		Err:       rapid.StringN(0, 30, maxErrLen).Draw(t, "err"),
		Retry:     rapid.Bool().Draw(t, "retry"),
	}
	if r := rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "reply"); len(r) > 0 {
		m.Reply = r
	}
	if r := rapid.SliceOfN(rapid.IntRange(0, 1<<20), 0, 8).Draw(t, "ranks"); len(r) > 0 {
		m.Ranks = r
	}
	n := rapid.IntRange(0, 5).Draw(t, "steps")
	for i := 0; i < n; i++ {
		reg := func(l string) plan.Region {
			return plan.Region{Pool: rapid.IntRange(-1, 9).Draw(t, l+"pool"), Slot: rapid.IntRange(0, 99).Draw(t, l+"slot")}
		}
		m.Steps = append(m.Steps, plan.Step{Kind: plan.StepKind(rapid.IntRange(1, 2).Draw(t, "kind")), Src: reg("s"), SrcOff: rapid.Int64().Draw(t, "so"),
			Dst: reg("d"), DstOff: rapid.Int64().Draw(t, "do"), Len: rapid.Int64().Draw(t, "len"),
			Rows: rapid.IntRange(-5, 1<<20).Draw(t, "rows"), Cols: rapid.IntRange(0, 1<<20).Draw(t, "cols"), ItemBytes: rapid.IntRange(0, 8).Draw(t, "item")})
	}
	return m
}

func TestMessageRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t)
		b := AppendMessage(nil, m)
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
		// Every strict prefix is an error, never a panic.
		for i := 0; i < len(b); i++ {
			if _, err := DecodeMessage(b[:i]); err == nil {
				t.Fatalf("prefix of %d bytes decoded", i)
			}
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(AppendMessage(nil, &Message{Type: MsgDone, ReqID: "r1", Consumers: 2}))
	f.Add(AppendMessage(nil, &Message{Type: MsgStage, ReqID: "r2", Steps: []plan.Step{{Kind: plan.StepCopy, Len: 5}}, Reply: []byte("addr")}))
	f.Add([]byte{msgMagic, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMessage) {
				t.Fatalf("error %v does not wrap ErrMessage", err)
			}
			return
		}
		again, err := DecodeMessage(AppendMessage(nil, m))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encode unstable: %v", err)
		}
	})
}

// testLocal registers tiny rank memory on an in-process transport.
func testLocal(t *testing.T, tp, rank int) (*Local, transport.Transport) {
	t.Helper()
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := groups.NewGeometry(m, groups.InstanceConfig{TP: tp}, rank)
	if err != nil {
		t.Fatal(err)
	}
	tr := transport.NewInproc(transport.Handlers{})
	t.Cleanup(func() { tr.Close() })
	l, err := NewLocal(tr, g, []int{5}, 1024, MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return l, tr
}

func TestRankMetaRoundTripAndChecks(t *testing.T) {
	l, tr := testLocal(t, 2, 1)
	meta := l.Meta("p", 0, tr.Address(), time.Unix(0, 42))
	b, err := EncodeRankMetas([]RankMeta{meta})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := DecodeRankMetas(b)
	if err != nil || len(ms) != 1 || !reflect.DeepEqual(ms[0], meta) {
		t.Fatalf("round trip: %v %+v", err, ms)
	}
	nb, err := ms[0].CheckAgainst(l.Geo)
	if err != nil || !reflect.DeepEqual(nb, []int{5}) {
		t.Fatalf("CheckAgainst own geometry: %v %v", nb, err)
	}
	// A peer whose geometry differs from what the metadata says is refused.
	other, _ := groups.NewGeometry(l.Geo.Model, groups.InstanceConfig{TP: 2, BlockSize: 64}, 1)
	if _, err := ms[0].CheckAgainst(other); !errors.Is(err, ErrMetadata) {
		t.Errorf("different block size accepted: %v", err)
	}
	// Regions registered per layer do not pass for a cross-layer geometry
	// (one region per pool, its stride a whole block of every slot), nor
	// the other way round.
	cross, _ := groups.NewGeometry(l.Geo.Model, groups.InstanceConfig{TP: 2, BlockLayout: groups.CrossLayer}, 1)
	if _, err := ms[0].CheckAgainst(cross); !errors.Is(err, ErrMetadata) || !strings.Contains(err.Error(), "cross-layer") {
		t.Errorf("per-layer regions accepted for a cross-layer geometry: %v", err)
	}
	tr2 := transport.NewInproc(transport.Handlers{})
	t.Cleanup(func() { tr2.Close() })
	lc, err := NewLocal(tr2, cross, []int{5}, 0, MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	cm := lc.Meta("p", 0, tr2.Address(), time.Unix(0, 42))
	if len(cm.Regions) != len(cross.Pools) || cm.Config.BlockLayout != groups.CrossLayer {
		t.Errorf("cross-layer rank registers %d regions for %d pools (layout %q)", len(cm.Regions), len(cross.Pools), cm.Config.BlockLayout)
	}
	if nb, err := cm.CheckAgainst(cross); err != nil || nb[0] != 5 {
		t.Errorf("cross-layer metadata against its own geometry: %v %v", nb, err)
	}
	if _, err := cm.CheckAgainst(l.Geo); !errors.Is(err, ErrMetadata) {
		t.Errorf("cross-layer regions accepted for a per-layer geometry: %v", err)
	}
	bad := meta
	bad.Regions = append([]RegionMeta(nil), meta.Regions...)
	bad.Regions[0].NumBlocks = 1 << 30
	if b, _ := EncodeRankMetas([]RankMeta{bad}); b != nil {
		if _, err := DecodeRankMetas(b); !errors.Is(err, ErrMetadata) {
			t.Errorf("region claiming more blocks than bytes accepted: %v", err)
		}
	}
}

func FuzzDecodeRankMetas(f *testing.F) {
	m := RankMeta{Version: MetadataVersion, TP: 1, Address: []byte{1}, Regions: []RegionMeta{{Len: 64, Stride: 16, NumBlocks: 4}}}
	b, _ := EncodeRankMetas([]RankMeta{m})
	f.Add(b)
	f.Add([]byte{0x81, 0xa1, 0x76, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := DecodeRankMetas(b)
		if err != nil {
			if !errors.Is(err, ErrMetadata) {
				t.Fatalf("error %v does not wrap ErrMetadata", err)
			}
			return
		}
		for _, m := range ms {
			if err := m.sane(); err != nil {
				t.Fatalf("accepted insane metadata: %v", err)
			}
		}
	})
}
