package groups_test

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/proptest"
	"pgregory.net/rapid"
)

var allTPs = []int{1, 2, 3, 4, 6, 8, 16, 32, 64}

// coverage checks that the shards of units over tp ranks cover every unit
// exactly as often as the shard says it is replicated.
func coverage(t *rapid.T, what string, units, tp int, shard func(r int) groups.Shard) {
	count := make([]int, units)
	rep := 0
	for r := 0; r < tp; r++ {
		s := shard(r)
		if s.Count <= 0 || s.First < 0 || s.First+s.Count > units {
			t.Fatalf("%s tp %d rank %d: shard %+v outside %d units", what, tp, r, s, units)
		}
		if r > 0 && s.Replicas != rep {
			t.Fatalf("%s tp %d: replicas differ between ranks", what, tp)
		}
		rep = s.Replicas
		for u := s.First; u < s.First+s.Count; u++ {
			count[u]++
		}
	}
	for u, c := range count {
		if c != rep {
			t.Fatalf("%s tp %d: unit %d held by %d ranks, shards say %d", what, tp, u, c, rep)
		}
	}
	if rep*units != 0 && (tp*shard(0).Count) != rep*units {
		t.Fatalf("%s tp %d: %d ranks x %d units != %d replicas x %d units", what, tp, tp, shard(0).Count, rep, units)
	}
}

// Every valid tp partitions every layer's global state exactly: each KV
// head, conv unit and state head is held by exactly Replicas ranks, all
// ranks hold the same amount, and rank bytes add up to the global bytes
// times the replication.
func TestShardsPartitionGlobalState(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := proptest.GenModel().Draw(t, "model")
		for _, tp := range allTPs {
			if m.CheckTP(tp) != nil {
				continue
			}
			for i := range m.Layers {
				l := &m.Layers[i]
				g, err := m.Shape(i, 1, 0)
				if err != nil {
					t.Fatal(err)
				}
				shapes := make([]groups.LayerShape, tp)
				for r := range shapes {
					if shapes[r], err = m.Shape(i, tp, r); err != nil {
						t.Fatalf("CheckTP accepted tp %d but rank %d: %v", tp, r, err)
					}
					if shapes[r].TokenBytes != shapes[0].TokenBytes || shapes[r].StateBytes != shapes[0].StateBytes {
						t.Fatalf("layer %d tp %d: ranks hold different amounts", i, tp)
					}
				}
				switch {
				case l.Attention != nil:
					coverage(t, l.Name+" kv heads", l.Attention.KVHeads, tp, func(r int) groups.Shard { return shapes[r].Heads })
					if got, want := tp*shapes[0].TokenBytes, shapes[0].Heads.Replicas*g.TokenBytes; got != want {
						t.Fatalf("%s tp %d: ranks hold %d B/token, global %d x %d replicas", l.Name, tp, got, g.TokenBytes, shapes[0].Heads.Replicas)
					}
				case l.Recurrent != nil:
					for si, seg := range l.Recurrent.Segments {
						coverage(t, l.Name+" segment "+seg.Name, seg.Units, tp, func(r int) groups.Shard { return shapes[r].Segments[si].Shard })
					}
					for si, st := range l.Recurrent.States {
						coverage(t, l.Name+" state "+st.Name, st.Heads, tp, func(r int) groups.Shard { return shapes[r].States[si].Shard })
					}
					var conv int
					for _, s := range shapes[0].Segments {
						conv += s.Channels() * tp / s.Replicas
					}
					if conv != g.ConvDim {
						t.Fatalf("%s tp %d: conv channels add up to %d, global %d", l.Name, tp, conv, g.ConvDim)
					}
				default: // MLA, indexer: replicated whole
					if shapes[0].TokenBytes != g.TokenBytes || shapes[0].Heads.Replicas != tp {
						t.Fatalf("%s tp %d: latent not replicated whole", l.Name, tp)
					}
				}
			}
		}
	})
}

// Within one block, the byte offsets of a rank's geometry tile the real
// page exactly: every vector lies inside the page, none overlap, and they
// cover PageBytes bytes, for every layout, kernel block and tp.
func TestPageOffsetsTilePage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := proptest.GenTransferModel().Draw(t, "model")
		c := proptest.GenInstance(t, "inst", rapid.SampledFrom([]int{1, 2, 4, 8}).Draw(t, "tp"))
		rank := rapid.IntRange(0, c.TP-1).Draw(t, "rank")
		g, err := groups.NewGeometry(m, c, rank)
		if err != nil {
			t.Fatal(err)
		}
		for li := range m.Layers {
			l := g.Layer(li)
			seen := make([]bool, l.PageBytes)
			covered := 0
			table := func(int) int { return 1 }
			oracle.Visit(g, li, table, 0, l.BlockSize, func(off int64, n int, _ oracle.Coord) {
				in := int(off - l.PageOffset(1))
				if in < 0 || in+n > l.PageBytes {
					t.Fatalf("layer %d: vector [%d,+%d) outside page of %d bytes", li, in, n, l.PageBytes)
				}
				for b := in; b < in+n; b++ {
					if seen[b] {
						t.Fatalf("layer %d: byte %d written twice", li, b)
					}
					seen[b] = true
				}
				covered += n
			})
			if covered != l.PageBytes {
				t.Fatalf("layer %d (%s): vectors cover %d of %d page bytes", li, m.Layers[li].Kind, covered, l.PageBytes)
			}
			if l.PageBytes > l.PageStride {
				t.Fatalf("layer %d: page %d larger than stride %d", li, l.PageBytes, l.PageStride)
			}
		}
	})
}

// Every layer of a group has its own page within each block, inside the
// block's stride: per layer, a region per slot with the page at the
// block's start; cross-layer, one region with the group's pages packed
// back to back, so a block of a group is contiguous across its layers.
func TestBlockLayoutPlacesSlots(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := proptest.GenTransferModel().Draw(t, "model")
		c := proptest.GenInstance(t, "inst", rapid.SampledFrom([]int{1, 2, 4, 8}).Draw(t, "tp"))
		g, err := groups.NewGeometry(m, c, rapid.IntRange(0, c.TP-1).Draw(t, "rank"))
		if err != nil {
			t.Fatal(err)
		}
		b := rapid.IntRange(0, 1000).Draw(t, "block")
		type place struct{ group, region, slot int }
		at := map[place][2]int64{}
		for li := range m.Layers {
			l := g.Layer(li)
			pg := &g.Pools[l.Pool]
			if pg.CrossLayer != (c.BlockLayout == groups.CrossLayer) {
				t.Fatalf("pool %d: cross-layer %v under %s", l.Pool, pg.CrossLayer, c.BlockLayout)
			}
			if l.Region < 0 || l.Region >= pg.Regions() {
				t.Fatalf("layer %d: region %d of %d", li, l.Region, pg.Regions())
			}
			lo := l.PageOffset(b)
			hi := lo + int64(l.PageBytes)
			if lo < int64(b)*int64(l.BlockStride) || hi > int64(b+1)*int64(l.BlockStride) {
				t.Fatalf("layer %d: page [%d,%d) outside block %d of stride %d", li, lo, hi, b, l.BlockStride)
			}
			if c.BlockLayout == groups.CrossLayer && l.SlotOffset != l.Slot*l.PageBytes {
				t.Fatalf("layer %d slot %d: page at %d of its block, want %d (packed)", li, l.Slot, l.SlotOffset, l.Slot*l.PageBytes)
			}
			at[place{l.Group, l.Region, l.Slot}] = [2]int64{lo, lo + int64(l.PageBytes)}
		}
		// Groups of one unified pool share its block ids (a block belongs to
		// one group at a time): a group's layers must not overlap.
		for p, r := range at {
			for q, s := range at {
				if p != q && p.group == q.group && p.region == q.region && r[0] < s[1] && s[0] < r[1] {
					t.Fatalf("slots %+v [%d,%d) and %+v [%d,%d) overlap", p, r[0], r[1], q, s[0], s[1])
				}
			}
		}
	})
}
