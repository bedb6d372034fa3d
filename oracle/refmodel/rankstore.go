package refmodel

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
)

// BlockTable is one request's block table on one instance: the block id of
// block index k of KV cache group g (for per-token groups the block of
// positions [k*bs, (k+1)*bs); for recurrent groups index 0, the state
// slot), 0 for null. It must return 0 for indexes it does not hold.
type BlockTable func(group, k int) int

// SliceTable is the BlockTable of per-group id slices (0 = null).
func SliceTable(tab [][]int) BlockTable {
	return func(g, k int) int {
		if g < 0 || g >= len(tab) || k < 0 || k >= len(tab[g]) {
			return 0
		}
		return tab[g][k]
	}
}

// RankStore is a Store over the cache memory of every rank of one instance
// (P or D), in the real layouts: one request, located through its block
// table and the ranks' geometries. Offsets come from groups.LayerGeometry
// alone: PageOffset(block id) + KOffset / VOffset / ScaleOffset /
// ConvOffset / StateOffset, in the layer's region (plan.LayerRegion).
//
// A write goes to every rank that holds the coordinate (replicated KV
// heads and Mamba2 groups, MLA and indexer caches on all ranks); a read
// comes from the first rank, in rank order, that holds it. Reading through
// a null block is ErrMissingState; writing through one is ErrNullBlock.
// Values are stored as little-endian float32, so the model must be fp32
// (a Miniature). Not safe for concurrent use.
type RankStore struct {
	spec    *groups.Model
	table   BlockTable
	scratch BlockTable // scratch slot k (1..) of recurrent group g: scratch(g, k-1)
	ranks   []rankView
}

// WithScratch gives the store the request's speculative scratch blocks
// (hma's ScratchBlocks: scratch(g, k-1) is slot k of recurrent group g)
// and returns it; without them only slot 0 exists.
func (s *RankStore) WithScratch(scratch BlockTable) *RankStore {
	s.scratch = scratch
	return s
}

// Slots implements SlotStore.
func (s *RankStore) Slots(from, to int) Store {
	return slotView{from: from, to: to,
		read:  func(k int, c oracle.Coord, dst []float32) error { return s.readSlot(k, c, dst) },
		write: func(k int, c oracle.Coord, src []float32) error { return s.writeSlot(k, c, src) }}
}

type rankView struct {
	mem    *plan.RankMemory
	layers []groups.LayerGeometry
}

// NewRankStore returns the store of one request over the memories of all
// ranks of an instance: geos[r] and mems[r] are rank r's geometry and
// memory (plan.Side.Ranks and plan.NewRankMemory give them), table the
// request's block table.
func NewRankStore(geos []*groups.Geometry, mems []*plan.RankMemory, table BlockTable) (*RankStore, error) {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: "+f, append([]any{ErrStoreConfig}, a...)...)
	}
	if len(geos) == 0 || len(geos) != len(mems) || table == nil {
		return nil, bad("%d geometries, %d memories, table set %t", len(geos), len(mems), table != nil)
	}
	spec := geos[0].Model
	if err := checkMiniature(spec); err != nil {
		return nil, err
	}
	s := &RankStore{spec: spec, table: table, ranks: make([]rankView, len(geos))}
	for r, g := range geos {
		switch {
		case g == nil || mems[r] == nil:
			return nil, bad("rank %d: nil geometry or memory", r)
		case g.Model != spec:
			return nil, bad("rank %d: geometry of another model", r)
		case g.Rank != r || g.Config.TP != len(geos):
			return nil, bad("rank %d: geometry of rank %d of tp %d", r, g.Rank, g.Config.TP)
		case len(mems[r].Pools) != len(g.Pools):
			return nil, bad("rank %d: memory has %d pools, geometry %d", r, len(mems[r].Pools), len(g.Pools))
		}
		for p := range g.Pools {
			if len(mems[r].Pools[p]) != g.Pools[p].Regions() {
				return nil, bad("rank %d pool %d: memory has %d regions, geometry %d", r, p, len(mems[r].Pools[p]), g.Pools[p].Regions())
			}
		}
		for gi := range g.Groups {
			if g.Groups[gi].BlockSize != geos[0].Groups[gi].BlockSize {
				return nil, bad("group %d: block size %d on rank %d, %d on rank 0", gi, g.Groups[gi].BlockSize, r, geos[0].Groups[gi].BlockSize)
			}
		}
		v := rankView{mem: mems[r], layers: make([]groups.LayerGeometry, len(spec.Layers))}
		for li := range spec.Layers {
			v.layers[li] = g.Layer(li)
		}
		s.ranks[r] = v
	}
	return s, nil
}

// TP is the number of ranks.
func (s *RankStore) TP() int { return len(s.ranks) }

// Read implements Store: from the first rank holding c.
func (s *RankStore) Read(c oracle.Coord, dst []float32) error {
	return s.readSlot(0, c, dst)
}

func (s *RankStore) readSlot(slot int, c oracle.Coord, dst []float32) error {
	if err := checkLen(s.spec, c, len(dst)); err != nil {
		return err
	}
	for r := range s.ranks {
		ok, err := s.access(r, slot, c, dst, false)
		if ok || err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: %+v is held by no rank", ErrCoord, c)
}

// Write implements Store: to every rank holding c.
func (s *RankStore) Write(c oracle.Coord, src []float32) error {
	return s.writeSlot(0, c, src)
}

func (s *RankStore) writeSlot(slot int, c oracle.Coord, src []float32) error {
	if err := checkLen(s.spec, c, len(src)); err != nil {
		return err
	}
	held := false
	for r := range s.ranks {
		ok, err := s.access(r, slot, c, src, true)
		if err != nil {
			return err
		}
		held = held || ok
	}
	if !held {
		return fmt.Errorf("%w: %+v is held by no rank", ErrCoord, c)
	}
	return nil
}

// Holders lists, in rank order, the ranks that hold c.
func (s *RankStore) Holders(c oracle.Coord) []int {
	var out []int
	if _, err := VectorLen(s.spec, c); err != nil {
		return nil
	}
	for r := range s.ranks {
		if _, _, ok := s.locate(r, c); ok {
			out = append(out, r)
		}
	}
	return out
}

// ReadRank reads c from rank's memory only (to check replicas); a rank
// that does not hold c is ErrCoord.
func (s *RankStore) ReadRank(rank int, c oracle.Coord, dst []float32) error {
	if err := checkLen(s.spec, c, len(dst)); err != nil {
		return err
	}
	if rank < 0 || rank >= len(s.ranks) {
		return fmt.Errorf("%w: rank %d of %d", ErrCoord, rank, len(s.ranks))
	}
	ok, err := s.access(rank, 0, c, dst, false)
	if err == nil && !ok {
		err = fmt.Errorf("%w: rank %d does not hold %+v", ErrCoord, rank, c)
	}
	return err
}

// locate returns the layer geometry on rank r, the local head (attention,
// state) or local conv channel of c, and whether rank r holds c at all.
func (s *RankStore) locate(r int, c oracle.Coord) (*groups.LayerGeometry, int, bool) {
	lg := &s.ranks[r].layers[c.Layer]
	switch c.Part {
	case oracle.PartConv:
		ss := &lg.Segments[c.Index]
		local := c.Pos - ss.First*ss.UnitWidth
		return lg, ss.Offset + local, local >= 0 && local < ss.Channels()
	case oracle.PartState:
		st := &lg.States[c.Pos]
		h := c.Index - st.First
		return lg, h, h >= 0 && h < st.Count
	default:
		h := c.Index - lg.Heads.First
		return lg, h, h >= 0 && h < lg.Heads.Count
	}
}

// access reads (write=false) or writes vals at c on rank r, if r holds it;
// recurrent state in slot (0: the state slot, k: scratch slot k).
func (s *RankStore) access(r, slot int, c oracle.Coord, vals []float32, write bool) (bool, error) {
	lg, local, ok := s.locate(r, c)
	if !ok {
		return false, nil
	}
	var id, in int
	if lg.Layer.Kind == groups.Recurrent {
		switch {
		case slot == 0:
			id = s.table(lg.Group, 0)
		case s.scratch != nil:
			id = s.scratch(lg.Group, slot-1)
		}
	} else {
		id, in = s.table(lg.Group, c.Pos/lg.BlockSize), c.Pos%lg.BlockSize
	}
	if id == 0 {
		if write {
			return true, fmt.Errorf("%w: %+v (group %d)", ErrNullBlock, c, lg.Group)
		}
		return true, fmt.Errorf("%w: %+v: null block (group %d)", ErrMissingState, c, lg.Group)
	}
	buf := s.ranks[r].mem.Region(plan.LayerRegion(lg))
	if id < 0 || lg.PageOffset(id)+int64(lg.PageStride) > int64(len(buf)) {
		return true, fmt.Errorf("%w: block %d of group %d on rank %d (%d bytes per block, region of %d bytes)", ErrBadBlock, id, lg.Group, r, lg.BlockStride, len(buf))
	}
	at := lg.PageOffset(id)
	page := buf[at : at+int64(lg.PageStride)]
	var off int
	switch c.Part {
	case oracle.PartConv:
		for i := range vals {
			rw(page[lg.ConvOffset(local, c.Row+i):], vals[i:i+1], write)
		}
		return true, nil
	case oracle.PartState:
		off = lg.StateOffset(c.Pos, local)
	case oracle.PartK:
		off = lg.KOffset(in, local)
	case oracle.PartV:
		off = lg.VOffset(in, local)
	case oracle.PartKScale, oracle.PartVScale:
		off = lg.ScaleOffset(in, local, c.Part == oracle.PartVScale)
	}
	rw(page[off:], vals, write)
	return true, nil
}

// rw copies vals to (write) or from b as little-endian float32.
func rw(b []byte, vals []float32, write bool) {
	b = b[:4*len(vals)]
	for i := range vals {
		if write {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(vals[i]))
		} else {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
}
